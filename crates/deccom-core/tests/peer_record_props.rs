//! Property tests for the peer record codec and identities.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use deccom_core::{verify, Identity, PeerRecord, PublicIdentity};
use proptest::prelude::*;

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
    ]
}

fn arb_identity() -> impl Strategy<Value = PublicIdentity> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|seed| Identity::from_seed(&seed).public_identity()),
        // Up to 63 chars of up to 4 bytes each: always 1..=252 bytes of UTF-8.
        prop::collection::vec(any::<char>(), 1..=63)
            .prop_map(|chars| PublicIdentity::Name(String::from_iter(chars).into_bytes())),
        "[a-z]{255}".prop_map(|s| PublicIdentity::Name(s.into_bytes())),
    ]
}

fn arb_record() -> impl Strategy<Value = PeerRecord> {
    (
        arb_identity(),
        arb_addr(),
        proptest::option::of(any::<u16>()),
        proptest::option::of(arb_addr()),
    )
        .prop_map(|(identity, udp, tcp_port, external)| {
            let mut record = PeerRecord::new(identity, udp);
            record.tcp_port = tcp_port;
            record.external = external;
            record
        })
}

/// When decoding succeeds, the record must re-encode to exactly the consumed prefix.
fn check_canonical(bytes: &[u8]) {
    if let Ok((record, used)) = PeerRecord::decode(bytes) {
        assert!(used <= bytes.len());
        assert!(used <= PeerRecord::MAX_ENCODED_LEN);
        assert_eq!(record.encode(), &bytes[..used]);
        assert_eq!(record.id, record.identity.id());
    }
}

proptest! {
    #[test]
    fn records_round_trip(record in arb_record(), trailing in prop::collection::vec(any::<u8>(), 0..8)) {
        let bytes = record.encode();
        prop_assert_eq!(bytes.len(), record.encoded_len());
        prop_assert!(bytes.len() <= PeerRecord::MAX_ENCODED_LEN);
        let (decoded, used) = PeerRecord::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &record);
        prop_assert_eq!(used, bytes.len());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&trailing);
        prop_assert_eq!(PeerRecord::decode(&longer), Ok((record, bytes.len())));
    }

    #[test]
    fn truncations_are_errors(record in arb_record(), cut in any::<prop::sample::Index>()) {
        let bytes = record.encode();
        let cut = cut.index(bytes.len());
        let err = PeerRecord::decode(&bytes[..cut]).unwrap_err();
        prop_assert_eq!(err.code(), "ERR_DECCOM_RECORD_TRUNCATED");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_canonical(&bytes);
    }

    #[test]
    fn arbitrary_bytes_with_valid_header_never_panic(
        flags in any::<u8>(),
        len in 0u16..300,
        rest in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        // Steer past the version byte so the deeper fields get exercised too.
        let mut bytes = vec![1, flags];
        bytes.extend_from_slice(rest.get(..32).unwrap_or(&rest));
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(rest.get(32..).unwrap_or_default());
        check_canonical(&bytes);
    }

    #[test]
    fn single_byte_mutations_never_panic(
        record in arb_record(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = record.encode();
        let at = at.index(bytes.len());
        bytes[at] = value;
        check_canonical(&bytes);
        // The id covers the identity: any change there or in the id is caught, unless the
        // mutation is a no-op.
        if (2..36 + record.identity.encoded_len()).contains(&at) && bytes != record.encode() {
            prop_assert!(PeerRecord::decode(&bytes).is_err());
        }
    }

    #[test]
    fn seed_identities_sign_and_verify(
        seed in any::<[u8; 32]>(),
        msg in prop::collection::vec(any::<u8>(), 0..256),
        other in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let identity = Identity::from_seed(&seed);
        let again = Identity::from_seed(&seed);
        prop_assert_eq!(identity.id(), again.id());
        prop_assert_eq!(identity.id(), deccom_core::node_id(&identity.public_identity_bytes()));
        let public = identity.public_identity();
        let key = public.ed25519_key().unwrap();
        let sig = identity.sign(&msg).unwrap();
        prop_assert_eq!(verify(key, &msg, &sig), Ok(true));
        prop_assert_eq!(verify(key, &other, &sig), Ok(other == msg));
        let round = Identity::from_key_file(&identity.to_key_file().unwrap()).unwrap();
        prop_assert_eq!(round.id(), identity.id());
        prop_assert_eq!(PublicIdentity::decode(&identity.public_identity_bytes()), Ok(public));
    }
}
