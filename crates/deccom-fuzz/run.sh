#!/usr/bin/env bash
# Coverage-guided fuzzing of deccom-core with AFL++ (cargo-afl), on the stable toolchain.
#
#   ./run.sh build                 install cargo-afl if missing, build the instrumented targets
#   ./run.sh fuzz TARGET [EXECS]   fuzz one target until EXECS executions (default 10 million)
#   ./run.sh time TARGET SECONDS   fuzz one target for SECONDS
#   ./run.sh cmin TARGET           minimize the last run's queue into corpus/TARGET (afl-cmin)
#   ./run.sh ci [SECONDS]          build, fuzz every target for SECONDS (default 15) starting from
#                                  its checked-in corpus; fails if any target crashed or hung
#   ./run.sh targets               list the targets
#
# Inputs start from corpus/TARGET (checked in, minimized) plus fresh seeds from the test vectors
# and encoders (examples/seeds.rs). Runs write to target/afl/TARGET; crashes land in
# target/afl/TARGET/default/crashes (replay one with `target/release/TARGET < FILE`).
set -euo pipefail
cd "$(dirname "$0")"

AFL_VERSION=0.18.2
TARGETS="rudp_wire noise_wire noise_frame kad_wire records roundtrip reassembly rudp_endpoint noise_endpoint"
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_NO_CRASH_README=1
# A panic in a Rust target aborts, which is what AFL++ counts as a crash.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

build() {
  if ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
    cargo install cargo-afl --locked --version "$AFL_VERSION"
  fi
  # AFL++ itself is built from the sources bundled with cargo-afl (gcc + make), once.
  if ! cargo afl fuzz -h >/dev/null 2>&1; then
    cargo afl config --build
  fi
  cargo afl build --release --features afl --locked
  cargo run --release --locked --example seeds -- target/seeds >/dev/null 2>&1 || {
    rm -rf target/seeds
    cargo run --release --locked --example seeds -- target/seeds
  }
}

# Merges the checked-in corpus and the fresh seeds of TARGET into one input directory.
inputs() {
  local t=$1 dir=target/afl-in/$1
  rm -rf "$dir"; mkdir -p "$dir"
  if [ -d "corpus/$t" ]; then cp corpus/"$t"/* "$dir"/ 2>/dev/null || true; fi
  if [ -d "target/seeds/$t" ]; then cp target/seeds/"$t"/* "$dir"/ 2>/dev/null || true; fi
  echo "$dir"
}

fuzz() { # TARGET STOP-FLAG VALUE
  local t=$1 in; in=$(inputs "$t")
  rm -rf "target/afl/$t"; mkdir -p target/afl
  cargo afl fuzz -i "$in" -o "target/afl/$t" -t 2000 "$2" "$3" -- "target/release/$t"
  report "$t"
}

report() {
  local t=$1 s=target/afl/$1/default/fuzzer_stats
  local crashes hangs
  crashes=$(find "target/afl/$t/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
  hangs=$(find "target/afl/$t/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
  printf '%-15s execs=%s exec/s=%s run_time=%ss corpus=%s crashes=%s hangs=%s\n' "$t" \
    "$(awk '/^execs_done/{print $3}' "$s")" "$(awk '/^execs_per_sec/{print $3}' "$s")" \
    "$(awk '/^run_time/{print $3}' "$s")" "$(awk '/^corpus_count/{print $3}' "$s")" "$crashes" "$hangs"
  [ "$crashes" = 0 ] && [ "$hangs" = 0 ]
}

case "${1:-}" in
  build) build ;;
  fuzz) fuzz "$2" -E "${3:-10000000}" ;;
  time) fuzz "$2" -V "$3" ;;
  cmin)
    rm -rf "corpus/$2.new"
    cargo afl cmin -i "target/afl/$2/default/queue" -o "corpus/$2.new" -t 2000 -- "target/release/$2"
    rm -rf "corpus/$2"; mv "corpus/$2.new" "corpus/$2"
    ;;
  ci)
    build
    failed=0
    for t in $TARGETS; do fuzz "$t" -V "${2:-15}" >"target/afl-$t.log" 2>&1 || failed=1; tail -n 1 "target/afl-$t.log"; done
    if [ "$failed" != 0 ]; then
      echo "fuzzing found crashes or hangs: see target/afl/*/default/{crashes,hangs}" >&2
      exit 1
    fi
    ;;
  targets) echo "$TARGETS" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
