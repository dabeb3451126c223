//! Test vectors of every wire format deccom-core implements (`test-vectors/*.json`, specified in
//! `docs/wire.md`).
//!
//! `vectors_decode_and_reencode` checks that every valid vector decodes to its recorded fields and
//! re-encodes byte-exact, and that every invalid one is rejected with the recorded error (for the
//! formats in `formats::checked()`, connection frames, the files come from `scripts/gen-vectors.mjs`
//! and the TypeScript codecs: both implementations check the same bytes);
//! `noise_transcripts_regenerate` replays the XX and IK handshakes from the recorded seeds and
//! compares every datagram byte for byte.
//!
//! The other JSON files were generated once from this implementation with
//! `cargo test -p deccom-core --test vectors -- --ignored generate_test_vectors` and then checked
//! by hand against `docs/wire.md`. Regenerate only on a deliberate format change.

#[path = "vectors/json.rs"]
mod json;
#[path = "vectors/formats.rs"]
mod formats;
#[path = "vectors/dht.rs"]
mod dht;

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
    let generated = formats::all().into_iter().map(|f| (f.file, f.decode));
    let checked = formats::checked().into_iter().map(|f| (f.file, f.decode));
    let mut count = 0;
    for (file, decode) in generated.chain(checked) {
        count += check_file(file, decode);
    }
    assert!(count > 120, "only {count} vectors");
}

/// Checks every vector of `test-vectors/<file>.json` with `decode`; returns how many there were.
fn check_file(file: &str, decode: fn(&[u8]) -> formats::Decoded) -> usize {
    let json = load(file);
    assert_eq!(json.at("format").as_str(), file);
    let valid = json.at("valid").as_arr();
    let invalid = json.at("invalid").as_arr();
    assert!(!valid.is_empty() && !invalid.is_empty(), "{file}: no vectors");
    for v in valid {
        let name = v.at("name").as_str();
        let bytes = v.at("hex").bytes();
        let (fields, again) = decode(&bytes).unwrap_or_else(|e| panic!("{file}/{name}: rejected: {e}"));
        assert!(fields.same(v.at("fields")), "{file}/{name}: decoded fields differ:\n{}\nvs\n{}", fields.pretty(), v.at("fields").pretty());
        assert_eq!(json::hex(&again), json::hex(&bytes), "{file}/{name}: re-encoding differs");
    }
    for v in invalid {
        let name = v.at("name").as_str();
        let bytes = v.at("hex").bytes();
        match decode(&bytes) {
            Ok((fields, _)) => panic!("{file}/{name}: accepted as {}", fields.pretty()),
            Err(e) => assert_eq!(e, v.at("error").as_str(), "{file}/{name}: wrong error"),
        }
    }
    valid.len() + invalid.len()
}

#[test]
fn noise_transcripts_regenerate() {
    let file = load("noise-handshake");
    let fresh = formats::noise_handshake_file();
    for key in ["identities", "xx", "xx_aes", "ik"] {
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
