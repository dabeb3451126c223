#!/usr/bin/env bash
# Coverage-guided fuzzing of deccom-core with AFL++ (cargo-afl), on the stable toolchain.
#
#   ./run.sh build                 install cargo-afl if missing, build the instrumented targets
#                                  and the seeds
#   ./run.sh fuzz TARGET [EXECS]   fuzz one target until EXECS executions (default 10 million)
#   ./run.sh time TARGET SECONDS   fuzz one target for SECONDS
#   ./run.sh cmin TARGET           minimize the last run's queue into corpus/TARGET (afl-cmin)
#   ./run.sh ci [SECONDS]          build, fuzz every target for SECONDS (default 15) starting from
#                                  its checked-in corpus; fails if any target crashed or hung
#   ./run.sh targets               list the targets
#
# Inputs start from corpus/TARGET (checked in, minimized) plus fresh seeds from the test vectors
# and encoders (examples/seeds.rs). Runs write to target/afl/TARGET; crashes land in
# target/afl/TARGET/default/crashes (replay one with `target/release/TARGET < FILE`, or without
# AFL: `DECCOM_FUZZ_CORPUS=DIR cargo test --release`, DIR holding TARGET/FILE).
set -euo pipefail
cd "$(dirname "$0")"

AFL_VERSION=0.18.2
TARGETS="rudp_wire noise_wire noise_frame kad_wire mux_decode records roundtrip reassembly rudp_endpoint noise_endpoint dht_wire"
# Shared machines: no CPU frequency governor check, no core dump pattern check, no binding to a
# core, no curses UI. A panic in a target aborts the process, which AFL++ counts as a crash.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
export AFL_NO_CRASH_README=1
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

build() {
  if ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
    cargo install cargo-afl --locked --version "$AFL_VERSION"
  fi
  # AFL++ itself is built from the sources bundled with cargo-afl (gcc + make) once per
  # toolchain; this fails harmlessly ("already built") after the first time.
  cargo afl config --build >/dev/null 2>&1 || true
  cargo afl build --release --features afl --locked
}

# Fresh seeds from the test vectors and encoders, once per target directory (the checked-in
# corpora already hold what of them adds coverage, so CI skips this).
seeds() {
  if [ ! -d "$TARGET_DIR/seeds" ]; then
    cargo afl run --release --locked --example seeds -- "$TARGET_DIR/seeds.new"
    mv "$TARGET_DIR/seeds.new" "$TARGET_DIR/seeds"
  fi
}

# Merges the checked-in corpus and the fresh seeds of TARGET into one input directory.
inputs() {
  local t=$1 dir=$TARGET_DIR/afl-in/$1
  rm -rf "$dir"; mkdir -p "$dir"
  if [ -d "corpus/$t" ]; then cp corpus/"$t"/* "$dir"/ 2>/dev/null || true; fi
  if [ -d "$TARGET_DIR/seeds/$t" ]; then cp "$TARGET_DIR/seeds/$t"/* "$dir"/ 2>/dev/null || true; fi
  echo "$dir"
}

fuzz() { # TARGET STOP-FLAG VALUE
  local t=$1 in; in=$(inputs "$t")
  rm -rf "$TARGET_DIR/afl/$t"; mkdir -p "$TARGET_DIR/afl"
  cargo afl fuzz -i "$in" -o "$TARGET_DIR/afl/$t" -t 2000 "$2" "$3" -- "$TARGET_DIR/release/$t"
  report "$t"
}

# One line of numbers for TARGET's last run. Fails on a crash, and on a hang that still hangs
# when replayed alone with a 60 s limit (a slow, loaded machine alone fails nothing).
report() {
  local t=$1 out=$TARGET_DIR/afl/$1/default f crashes hangs=0
  crashes=$(find "$out/crashes" -type f -name 'id:*' | wc -l)
  for f in $(find "$out/hangs" -type f -name 'id:*'); do
    if ! timeout 60 "$TARGET_DIR/release/$t" <"$f" >/dev/null 2>&1; then
      hangs=$((hangs + 1))
      echo "$t: $f hangs or crashes when replayed" >&2
    fi
  done
  printf '%-15s execs=%s exec/s=%s run_time=%ss corpus=%s crashes=%s hangs=%s\n' "$t" \
    "$(awk '/^execs_done/{print $3}' "$out/fuzzer_stats")" "$(awk '/^execs_per_sec/{print $3}' "$out/fuzzer_stats")" \
    "$(awk '/^run_time/{print $3}' "$out/fuzzer_stats")" "$(awk '/^corpus_count/{print $3}' "$out/fuzzer_stats")" \
    "$crashes" "$hangs"
  [ "$crashes" = 0 ] && [ "$hangs" = 0 ]
}

case "${1:-}" in
  build) build; seeds ;;
  fuzz) seeds; fuzz "$2" -E "${3:-10000000}" ;;
  time) seeds; fuzz "$2" -V "$3" ;;
  cmin)
    rm -rf "corpus/$2.new"
    # The shell afl-cmin (the Python one keeps nothing of a persistent-mode Rust target here).
    bin="${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/rustc-$(rustc -vV | sed -n 's/^release: //p')-$(rustc -vV | sed -n 's/^commit-hash: \(.......\).*/\1/p')/afl.rs-$AFL_VERSION/afl/bin"
    AFL_PATH="$bin" PATH="$bin:$PATH" "$bin/afl-cmin.bash" -i "$TARGET_DIR/afl/$2/default/queue" \
      -o "corpus/$2.new" -t 5000 -- "$TARGET_DIR/release/$2" | tr '\r' '\n' | grep -v Processing
    [ -n "$(ls "corpus/$2.new")" ]
    # Name each input by its content hash (AFL++'s names hold ':', which some file systems refuse).
    for f in "corpus/$2.new"/*; do mv "$f" "corpus/$2.new/$(sha256sum "$f" | cut -c1-16)"; done
    rm -rf "corpus/$2"; mv "corpus/$2.new" "corpus/$2"
    ;;
  ci)
    build
    failed=0
    for t in $TARGETS; do
      fuzz "$t" -V "${2:-15}" >"$TARGET_DIR/afl-$t.log" 2>&1 || failed=1
      tail -n 1 "$TARGET_DIR/afl-$t.log"
    done
    if [ "$failed" != 0 ]; then
      echo "fuzzing found crashes or hangs: see $TARGET_DIR/afl/*/default/{crashes,hangs} and $TARGET_DIR/afl-*.log" >&2
      exit 1
    fi
    ;;
  targets) echo "$TARGETS" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
