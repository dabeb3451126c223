//! Tests of identities, encodings, the key file and strict verification.

use super::verify::small_order_encodings;
use super::*;
use ed25519_dalek::Signature;

const SEED: [u8; 32] = [7u8; 32];

#[test]
fn name_id_is_sha256_of_encoded_identity() {
    let identity = Identity::from_name("alice").unwrap();
    let mut expected_input = vec![0x02];
    expected_input.extend_from_slice(b"alice");
    let expected: [u8; 32] = Sha256::digest(&expected_input).into();
    assert_eq!(identity.public_identity_bytes(), expected_input);
    assert_eq!(identity.id(), expected);
    assert_eq!(node_id(&expected_input), expected);
    assert_eq!(identity.public_identity().id(), expected);
    assert!(!identity.is_keypair());
    assert_eq!(identity.secret_seed(), None);
}

#[test]
fn sha256_known_vector() {
    // SHA-256("abc") from FIPS 180-2.
    let mut hex = String::new();
    push_hex(&mut hex, &node_id(b"abc"));
    assert_eq!(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn rfc8032_test_vector_1() {
    // RFC 8032 section 7.1, TEST 1 (empty message).
    let seed = hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let public = hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let identity = Identity::from_seed(&seed);
    assert_eq!(identity.public_identity(), PublicIdentity::Ed25519(public));
    let sig = identity.sign(b"").unwrap();
    let mut hex = String::new();
    push_hex(&mut hex, &sig);
    assert_eq!(
        hex,
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
         5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    assert_eq!(verify(&public, b"", &sig), Ok(true));
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn seed_is_deterministic() {
    let a = Identity::from_seed(&SEED);
    let b = Identity::from_secret_key_bytes(&SEED).unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(a.public_identity(), b.public_identity());
    assert_eq!(a.secret_seed(), Some(SEED));
    assert!(a.is_keypair());
    let encoded = a.public_identity_bytes();
    assert_eq!(encoded.len(), 33);
    assert_eq!(encoded[0], KIND_ED25519);
    assert_eq!(a.id(), node_id(&encoded));
    assert_ne!(a.id(), Identity::from_seed(&[8u8; 32]).id());
}

#[test]
fn generate_gives_distinct_keypairs() {
    let a = Identity::generate();
    let b = Identity::generate();
    assert!(a.is_keypair());
    assert_ne!(a.id(), b.id());
}

#[test]
fn signatures_are_byte_identical_to_ed25519_dalek() {
    for n in 0u8..8 {
        let seed = [n.wrapping_mul(37); 32];
        let identity = Identity::from_seed(&seed);
        let dalek = SigningKey::from_bytes(&seed);
        for len in [0usize, 1, 32, 200] {
            let msg: Vec<u8> = (0..len).map(|i| (i as u8) ^ n).collect();
            assert_eq!(identity.sign(&msg).unwrap(), dalek.sign(&msg).to_bytes());
        }
    }
}

/// The strict rules, checked against ed25519-dalek's `verify_strict` on signatures that the
/// plain cofactorless equation accepts but strict verification must not.
#[test]
fn verify_is_strict_like_verify_strict() {
    use curve25519_dalek::{EdwardsPoint, Scalar};
    use sha2::Sha512;
    let strict = |pk: &[u8; 32], msg: &[u8], sig: &[u8; 64]| {
        VerifyingKey::from_bytes(pk)
            .map(|k| k.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
            .unwrap_or(false)
    };
    let plain = |pk: &[u8; 32], msg: &[u8], sig: &[u8; 64]| {
        VerifyingKey::from_bytes(pk)
            .map(|k| ed25519_dalek::Verifier::verify(&k, msg, &Signature::from_bytes(sig)).is_ok())
            .unwrap_or(false)
    };
    // 1. A small-order key (the identity point) with R = identity and s = 0 satisfies the
    //    equation for every message.
    let mut weak_key = [0u8; 32];
    weak_key[0] = 1;
    let mut sig = [0u8; 64];
    sig[0] = 1;
    assert!(plain(&weak_key, b"any message", &sig));
    assert!(!strict(&weak_key, b"any message", &sig));
    assert_eq!(verify(&weak_key, b"any message", &sig), Ok(false));
    // 2. A real key and a small-order R: R = identity, s = k·a with k = H(R || A || M).
    let a = Scalar::from_bytes_mod_order([42; 32]);
    let public = EdwardsPoint::mul_base(&a).compress().to_bytes();
    let msg = b"small-order R";
    let mut h = Sha512::new();
    h.update(sig[..32].as_ref());
    h.update(public);
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let mut forged = [0u8; 64];
    forged[0] = 1;
    forged[32..].copy_from_slice((k * a).as_bytes());
    assert!(plain(&public, msg, &forged));
    assert!(!strict(&public, msg, &forged));
    assert_eq!(verify(&public, msg, &forged), Ok(false));
    // 3. Every small-order encoding as R, and random tampering, agree with verify_strict.
    let identity = Identity::from_seed(&[5; 32]);
    let PublicIdentity::Ed25519(pk) = identity.public_identity() else {
        panic!("expected Ed25519");
    };
    let good = identity.sign(b"m").unwrap();
    assert_eq!(verify(&pk, b"m", &good), Ok(true));
    for enc in small_order_encodings() {
        let mut s2 = good;
        s2[..32].copy_from_slice(enc);
        assert_eq!(verify(&pk, b"m", &s2), Ok(strict(&pk, b"m", &s2)));
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut s2 = good;
        s2[(x % 64) as usize] ^= 1 << ((x >> 8) % 8);
        assert_eq!(verify(&pk, b"m", &s2), Ok(strict(&pk, b"m", &s2)), "{x}");
    }
    // The 8 encodings are distinct and include the identity.
    let mut e = small_order_encodings().to_vec();
    e.sort_unstable();
    e.dedup();
    assert_eq!(e.len(), 8);
    assert!(e.contains(&weak_key));
}

#[test]
fn sign_verify_round_trip_and_tamper() {
    let identity = Identity::from_seed(&SEED);
    let PublicIdentity::Ed25519(pk) = identity.public_identity() else {
        panic!("expected Ed25519");
    };
    let sig = identity.sign(b"hello").unwrap();
    assert_eq!(verify(&pk, b"hello", &sig), Ok(true));
    assert_eq!(verify(&pk, b"hellp", &sig), Ok(false));
    for i in [0, 31, 32, 63] {
        let mut bad = sig;
        bad[i] ^= 0x01;
        assert_eq!(verify(&pk, b"hello", &bad), Ok(false), "flipped byte {i}");
    }
    let other = Identity::from_seed(&[9u8; 32]);
    let other_pk = other.public_identity().encode();
    assert_eq!(verify(&other_pk[1..], b"hello", &sig), Ok(false));
}

#[test]
fn verify_remembered_answers_as_verify_before_and_after_a_signature_is_remembered() {
    let identity = Identity::from_seed(&[11u8; 32]);
    let PublicIdentity::Ed25519(pk) = identity.public_identity() else {
        panic!("expected Ed25519");
    };
    let msg = b"a record stored at twenty nodes";
    let sig = identity.sign(msg).unwrap();
    for _ in 0..3 {
        assert!(verify_remembered(&pk, msg, &sig), "valid, then remembered");
    }
    // The remembered signature with anything else than its key and message: checked afresh.
    assert!(!verify_remembered(&pk, b"another message", &sig));
    let other = Identity::from_seed(&[12u8; 32]);
    let PublicIdentity::Ed25519(other_pk) = other.public_identity() else {
        panic!("expected Ed25519");
    };
    assert!(!verify_remembered(&other_pk, msg, &sig));
    // Key and message split differently (same concatenation): not the same check.
    let mut joined = pk.to_vec();
    joined.extend_from_slice(msg);
    assert!(!verify_remembered(&joined[..31], &joined[31..], &sig));
    for i in [0, 32, 63] {
        let mut bad = sig;
        bad[i] ^= 1;
        assert!(!verify_remembered(&pk, msg, &bad), "flipped byte {i}");
        assert!(!verify_remembered(&pk, msg, &bad), "a failure is not remembered as a success");
    }
    assert!(!verify_remembered(&pk, msg, &sig[..63]));
    assert!(!verify_remembered(&pk[..31], msg, &sig));
    assert!(verify_remembered(&pk, msg, &sig), "still valid");
}

#[test]
fn malformed_key_or_signature_lengths_are_errors() {
    let identity = Identity::from_seed(&SEED);
    let pk = identity.public_identity().encode();
    let sig = identity.sign(b"m").unwrap();
    assert_eq!(
        verify(&pk, b"m", &sig).unwrap_err().code(),
        "ERR_DECCOM_BAD_KEY"
    );
    assert_eq!(
        verify(&pk[1..5], b"m", &sig).unwrap_err().code(),
        "ERR_DECCOM_BAD_KEY"
    );
    assert_eq!(
        verify(&pk[1..], b"m", &sig[..63]).unwrap_err().code(),
        "ERR_DECCOM_BAD_SIGNATURE"
    );
    assert_eq!(
        Identity::from_secret_key_bytes(&[1u8; 31])
            .unwrap_err()
            .code(),
        "ERR_DECCOM_BAD_KEY"
    );
    assert_eq!(
        Identity::from_secret_key_bytes(&[1u8; 64])
            .unwrap_err()
            .code(),
        "ERR_DECCOM_BAD_KEY"
    );
}

#[test]
fn name_identity_cannot_sign_or_save() {
    let identity = Identity::from_name("bob").unwrap();
    assert_eq!(
        identity.sign(b"x").unwrap_err().code(),
        "ERR_DECCOM_NO_SECRET_KEY"
    );
    assert_eq!(identity.to_key_file().unwrap_err(), Error::NoSecretKey);
}

#[test]
fn name_bounds() {
    assert_eq!(
        Identity::from_name("").unwrap_err().code(),
        "ERR_DECCOM_BAD_IDENTITY"
    );
    assert!(Identity::from_name(&"a".repeat(255)).is_ok());
    assert_eq!(
        Identity::from_name(&"a".repeat(256)).unwrap_err().code(),
        "ERR_DECCOM_BAD_IDENTITY"
    );
    assert!(Identity::from_name("ünïcödé").is_ok());
}

#[test]
fn public_identity_decode() {
    let ed = Identity::from_seed(&SEED).public_identity();
    assert_eq!(PublicIdentity::decode(&ed.encode()), Ok(ed.clone()));
    let name = PublicIdentity::Name(b"carol".to_vec());
    assert_eq!(PublicIdentity::decode(&name.encode()), Ok(name));
    let code = |b: &[u8]| PublicIdentity::decode(b).unwrap_err().code();
    assert_eq!(code(&[]), "ERR_DECCOM_BAD_IDENTITY");
    assert_eq!(code(&[0x03, 1, 2]), "ERR_DECCOM_BAD_IDENTITY");
    assert_eq!(code(&[0x02]), "ERR_DECCOM_BAD_IDENTITY");
    assert_eq!(code(&[0x02, 0xff, 0xfe]), "ERR_DECCOM_BAD_IDENTITY");
    let mut long = vec![0x02];
    long.extend(std::iter::repeat_n(b'a', 256));
    assert_eq!(code(&long), "ERR_DECCOM_BAD_IDENTITY");
    let ed_bytes = ed.encode();
    assert_eq!(code(&ed_bytes[..32]), "ERR_DECCOM_BAD_IDENTITY");
    let mut ed_long = ed_bytes.clone();
    ed_long.push(0);
    assert_eq!(code(&ed_long), "ERR_DECCOM_BAD_IDENTITY");
    // y = 2 is not on the curve: a 32-byte key that does not decompress.
    let mut not_a_point = [0u8; 33];
    not_a_point[0] = KIND_ED25519;
    not_a_point[1] = 2;
    assert_eq!(code(&not_a_point), "ERR_DECCOM_BAD_KEY");
}

#[test]
fn key_file_round_trip() {
    let identity = Identity::from_seed(&SEED);
    let text = identity.to_key_file().unwrap();
    assert!(text.starts_with("deccom-ed25519-v1\n"));
    assert!(text.ends_with('\n'));
    assert_eq!(text.lines().nth(1).unwrap().len(), 64);
    let back = Identity::from_key_file(&text).unwrap();
    assert_eq!(back.id(), identity.id());
    // Tolerated variations.
    let crlf = text.replace('\n', "\r\n");
    assert_eq!(Identity::from_key_file(&crlf).unwrap().id(), identity.id());
    let trailing = format!("{}  \n\n \n", text.trim_end().replace('\n', " \t\n"));
    assert_eq!(
        Identity::from_key_file(&trailing).unwrap().id(),
        identity.id()
    );
    let upper = text
        .to_uppercase()
        .replace("DECCOM-ED25519-V1", "deccom-ed25519-v1");
    assert_eq!(Identity::from_key_file(&upper).unwrap().id(), identity.id());
    assert_eq!(
        Identity::from_key_file(text.trim_end()).unwrap().id(),
        identity.id()
    );
}

#[test]
fn malformed_key_files_are_rejected() {
    let good = Identity::from_seed(&SEED).to_key_file().unwrap();
    let hex = good.lines().nth(1).unwrap().to_owned();
    let cases = [
        String::new(),
        "\n".to_owned(),
        "deccom-ed25519-v1\n".to_owned(),
        format!("deccom-ed25519-v2\n{hex}\n"),
        format!(" deccom-ed25519-v1\n{hex}\n"),
        format!("deccom-ed25519-v1\n {hex}\n"),
        format!("deccom-ed25519-v1\n\n{hex}\n"),
        format!("deccom-ed25519-v1\n{}\n", &hex[..62]),
        format!("deccom-ed25519-v1\n{hex}00\n"),
        format!("deccom-ed25519-v1\n{}zz\n", &hex[..62]),
        format!("deccom-ed25519-v1\n{hex}\nextra\n"),
        format!("deccom-ed25519-v1\n{}é\n", &hex[..62]),
        format!("{hex}\n"),
    ];
    for case in cases {
        let err = Identity::from_key_file(&case).unwrap_err();
        assert_eq!(err.code(), "ERR_DECCOM_KEY_FILE", "{case:?}");
        assert!(!err.to_string().contains(&hex), "message leaks key");
    }
}

#[test]
fn debug_does_not_leak_secrets() {
    let identity = Identity::from_seed(&SEED);
    let dbg = format!("{identity:?}");
    let mut seed_hex = String::new();
    push_hex(&mut seed_hex, &SEED);
    assert!(!dbg.contains(&seed_hex[..8]), "{dbg}");
    assert!(!dbg.contains("[7, 7"), "{dbg}");
    let mut id_hex = String::new();
    push_hex(&mut id_hex, &identity.id());
    assert!(dbg.contains(&id_hex[..16]), "{dbg}");
    assert!(dbg.contains("ed25519"));
}

/// A y coordinate whose curve equation has no solution: not a point (the memo must never accept it).
fn invalid_key() -> [u8; 32] {
    (2u8..=255)
        .map(|b| {
            let mut k = [0u8; 32];
            k[0] = b;
            k
        })
        .find(|k| VerifyingKey::from_bytes(k).is_err())
        .expect("some y is off the curve")
}

#[test]
fn checked_keys_give_the_same_answers_as_a_fresh_check() {
    let public = Identity::from_seed(&[41u8; 32]).public_identity();
    let bytes = public.encode();
    // First decode checks and remembers; the second is answered from the memo.
    let (a, id_a) = decode_public_identity_with_id(&bytes).unwrap();
    let (b, id_b) = decode_public_identity_with_id(&bytes).unwrap();
    assert_eq!(a, public);
    assert_eq!(b, public);
    assert_eq!(id_a, public.id());
    assert_eq!(id_b, node_id(&bytes));
    assert!(checked::len() >= 1);
    // An invalid key is rejected every time (never remembered).
    let mut bad = vec![KIND_ED25519];
    bad.extend_from_slice(&invalid_key());
    for _ in 0..2 {
        assert!(matches!(PublicIdentity::decode(&bad), Err(Error::BadKey { .. })));
        assert!(decode_public_identity_with_id(&bad).is_err());
    }
    // Names are not memoised but give their id.
    let name = Identity::from_name("memo").unwrap().public_identity();
    assert_eq!(decode_public_identity_with_id(&name.encode()).unwrap().1, name.id());
}

#[test]
fn the_memo_stays_bounded() {
    for i in 0..(2 * checked::GENERATION + 10) as u32 {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[31] = 0x5a;
        checked::remember(k, [0u8; 32]);
    }
    assert!(checked::len() <= 2 * checked::GENERATION);
}
