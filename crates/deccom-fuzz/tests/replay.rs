//! Replays the checked-in corpora (`corpus/<target>/*`, minimized AFL++ queues) through every
//! target without AFL: a plain `cargo test` regression check that needs no fuzzer installed.
//! `DECCOM_FUZZ_CORPUS=DIR` replays another directory of the same layout (e.g. fresh seeds).

use std::fs;
use std::path::PathBuf;

#[test]
fn corpora_replay_without_panics() {
    let root = std::env::var_os("DECCOM_FUZZ_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut total = 0;
    for (name, target) in deccom_fuzz::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = fs::read_dir(&dir) else {
            panic!("no corpus for {name} in {}", dir.display());
        };
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            if !path.is_file() {
                continue;
            }
            let bytes = fs::read(&path).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
            n += 1;
        }
        assert!(n > 0, "the {name} corpus is empty");
        total += n;
    }
    eprintln!("replayed {total} inputs");
}
