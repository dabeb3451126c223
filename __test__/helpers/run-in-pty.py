"""Runs a command in a pseudo terminal and bridges it to this process's pipes.

    python3 run-in-pty.py COMMAND [ARG...]

The command gets a new pty (120x40) as its controlling terminal, so its stdin and stdout are TTYs
(isatty is true, readline runs in terminal mode). What arrives on this process's stdin is typed
into the terminal; what the command writes to the terminal comes out on this process's stdout.
Exits with the command's exit code once the terminal closes (128 + N when signal N ended it).
End of stdin does not end the command; SIGTERM to this process is passed on to it.
"""
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])

fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))

inputs = [0, fd]
while True:
    try:
        ready, _, _ = select.select(inputs, [], [])
    except InterruptedError:
        continue
    if 0 in ready:
        data = os.read(0, 4096)
        if data:
            os.write(fd, data)
        else:
            inputs.remove(0)
    if fd in ready:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            data = b""
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
