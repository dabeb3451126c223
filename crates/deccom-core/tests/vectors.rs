//! Test vectors of every Rust-implemented wire format (`test-vectors/*.json`, specified in
//! `docs/wire.md`).
//!
//! `vectors_decode_and_reencode` checks that every valid vector decodes to its recorded fields and
//! re-encodes byte-exact, and that every invalid one is rejected with the recorded error;
//! `noise_transcripts_regenerate` replays the XX and IK handshakes from the recorded seeds and
//! compares every datagram byte for byte.
//!
//! The JSON files were generated once from this implementation with
//! `cargo test -p deccom-core --test vectors -- --ignored generate_test_vectors` and then checked
//! by hand against `docs/wire.md`. Regenerate only on a deliberate format change.

#[path = "vectors/json.rs"]
mod json;
#[path = "vectors/formats.rs"]
mod formats;

use std::path::PathBuf;

use json::Json;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-vectors")
}

fn load(name: &str) -> Json {
    let path = dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Json::parse(&text)
}

#[test]
fn vectors_decode_and_reencode() {
    let mut checked = 0;
    for f in formats::all() {
        let file = load(f.file);
        assert_eq!(file.at("format").as_str(), f.file);
        let valid = file.at("valid").as_arr();
        let invalid = file.at("invalid").as_arr();
        assert!(!valid.is_empty() && !invalid.is_empty(), "{}: no vectors", f.file);
        for v in valid {
            let name = v.at("name").as_str();
            let bytes = v.at("hex").bytes();
            let (fields, again) = (f.decode)(&bytes).unwrap_or_else(|e| panic!("{}/{name}: rejected: {e}", f.file));
            assert!(fields.same(v.at("fields")), "{}/{name}: decoded fields differ:\n{}\nvs\n{}", f.file, fields.pretty(), v.at("fields").pretty());
            assert_eq!(json::hex(&again), json::hex(&bytes), "{}/{name}: re-encoding differs", f.file);
            checked += 1;
        }
        for v in invalid {
            let name = v.at("name").as_str();
            let bytes = v.at("hex").bytes();
            match (f.decode)(&bytes) {
                Ok((fields, _)) => panic!("{}/{name}: accepted as {}", f.file, fields.pretty()),
                Err(e) => assert_eq!(e, v.at("error").as_str(), "{}/{name}: wrong error", f.file),
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} vectors");
}

#[test]
fn noise_transcripts_regenerate() {
    let file = load("noise-handshake");
    let fresh = formats::noise_handshake_file();
    for key in ["identities", "xx", "ik"] {
        assert!(fresh.at(key).same(file.at(key)), "noise-handshake.json `{key}` differs from a fresh run:\n{}", fresh.at(key).pretty());
    }
}

/// Writes `test-vectors/*.json` from this implementation. Run once per deliberate format change.
#[test]
#[ignore = "writes test-vectors/*.json; run by hand on a deliberate format change"]
fn generate_test_vectors() {
    std::fs::create_dir_all(dir()).unwrap();
    for f in formats::all() {
        let mut valid = Vec::new();
        for (name, bytes) in (f.valid)() {
            let (fields, again) = (f.decode)(&bytes).unwrap_or_else(|e| panic!("{}/{name}: {e}", f.file));
            assert_eq!(again, bytes, "{}/{name}: does not round-trip", f.file);
            valid.push(obj!["name" => Json::str(name), "hex" => Json::hex(&bytes), "fields" => fields]);
        }
        let mut invalid = Vec::new();
        for (name, bytes, outcome) in (f.invalid)() {
            let error = (f.decode)(&bytes).err().unwrap_or_else(|| panic!("{}/{name}: accepted", f.file));
            invalid.push(obj!["name" => Json::str(name), "hex" => Json::hex(&bytes), "error" => Json::str(error), "outcome" => Json::str(outcome)]);
        }
        let file = obj![
            "format" => Json::str(f.file),
            "spec" => Json::str(format!("docs/wire.md#{}", f.anchor)),
            "notes" => Json::str(f.notes),
            "valid" => Json::Arr(valid),
            "invalid" => Json::Arr(invalid),
        ];
        std::fs::write(dir().join(format!("{}.json", f.file)), file.pretty()).unwrap();
    }
    std::fs::write(dir().join("noise-handshake.json"), formats::noise_handshake_file().pretty()).unwrap();
}
