//! A bottleneck with a finite buffer and no random loss, in virtual time: the sender must not
//! overflow the buffer (by more than a small bound) — neither by slow start overshooting on a
//! path with a deep buffer (the delay-based slow-start exit sees the queue grow), nor on a fast,
//! low-latency path whose buffer is the receiver's socket (the receive window, set from that
//! buffer, bounds what may be in flight, as the native driver does from `SO_RCVBUF`).

mod rudp_net;

use std::time::Duration;

use deccom_core::rudp::{datagram_truesize, receive_window_for_socket_buffer, Config};
use rudp_net::{transfer, Link, MS};

#[test]
fn deep_buffer_slow_start_ends_before_the_buffer_overflows() {
    // 100 Mbit/s, 20 ms round trip (BDP 250 kB), 4 MiB of buffer at the bottleneck.
    let link = Link {
        latency: 10 * MS,
        bandwidth: Some(12_500_000),
        buffer: Some(4 << 20),
        ..Link::default()
    };
    let bytes = 64 << 20;
    let net = transfer(Config::default(), link, bytes, 21);
    let s = net.nodes[0].stats();
    let segments = (bytes / 1200) as u64;
    assert!(net.buffer_drops.is_empty(), "{} drops at the bottleneck, {s:?}", net.buffer_drops.len());
    assert!(s.retransmits * 100 <= segments, "{} retransmits of {segments} segments: {s:?}", s.retransmits);
    assert!(s.slow_start_exits >= 1, "{s:?}");
    // The queue stays far below the buffer: slow start ended when the RTT grew.
    assert!(net.max_queued < 1 << 20, "the bottleneck queue reached {} bytes", net.max_queued);
    // And the link is used: 64 MiB at 12.5 MB/s is 5.4 s.
    let t = net.elapsed();
    assert!(t < Duration::from_secs_f64(5.4 / 0.8), "{t:?} {s:?}");
}

#[test]
fn receiver_buffer_on_a_fast_low_latency_path_is_never_overflowed() {
    // Loopback-like: 1 GB/s, 50 µs each way, the bottleneck buffer is a receive socket buffer of
    // the Linux default size (212,992 bytes as SO_RCVBUF reports it): far smaller than the queue
    // (4 ms at 1 GB/s) the delay-based exit needs to notice, so only the window can protect it.
    let rcvbuf = 212_992;
    let link = Link {
        latency: Duration::from_micros(50),
        bandwidth: Some(1_000_000_000),
        buffer: Some(rcvbuf / datagram_truesize(1200) * 1300),
        ..Link::default()
    };
    let bytes = 32 << 20;
    let config = Config { receive_window: receive_window_for_socket_buffer(rcvbuf, 1200), ..Config::default() };
    assert_eq!(config.receive_window, 92);
    let net = transfer(config, link, bytes, 22);
    let s = net.nodes[0].stats();
    assert!(net.buffer_drops.is_empty(), "{} drops, first at {:?}: {s:?}", net.buffer_drops.len(), net.buffer_drops.first());
    assert_eq!(s.retransmits, 0, "{s:?}");

    // The same path with the old fixed window of 65,536 datagrams overflows the buffer.
    let net = transfer(Config::default(), link, bytes, 22);
    assert!(!net.buffer_drops.is_empty(), "without the socket-sized window the buffer overflows");
}

#[test]
fn receive_window_for_socket_buffers() {
    assert_eq!(datagram_truesize(1200), 2304);
    assert_eq!(receive_window_for_socket_buffer(8 << 20, 1200), (8 << 20) / 2304);
    assert_eq!(receive_window_for_socket_buffer(0, 1200), 16);
    assert_eq!(receive_window_for_socket_buffer(usize::MAX, 1200), 65_536);
}
