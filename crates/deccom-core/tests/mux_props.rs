//! Property tests for the connection frame codec (`wire::mux`, tag 12).

use deccom_core::wire::mux::{self, kind, Hello, MuxError, MuxFrame, MAX_SAFE};
use proptest::prelude::*;

/// An owned frame description (a [`MuxFrame`] borrows its payload).
#[derive(Debug, Clone)]
enum Spec {
    Hello(Hello),
    Data { stream: u32, offset: u64, fin: bool, data: Vec<u8> },
    MaxData { stream: u32, max: u64 },
    MaxStreams { max: u32 },
    Reset { stream: u32, code: u32, finished: bool, final_size: u64 },
    Close { code: u32 },
    Message { data: Vec<u8> },
}

impl Spec {
    fn frame(&self) -> MuxFrame<'_> {
        match self {
            Spec::Hello(h) => MuxFrame::Hello(*h),
            Spec::Data { stream, offset, fin, data } => MuxFrame::Data { stream: *stream, offset: *offset, fin: *fin, data },
            Spec::MaxData { stream, max } => MuxFrame::MaxData { stream: *stream, max: *max },
            Spec::MaxStreams { max } => MuxFrame::MaxStreams { max: *max },
            Spec::Reset { stream, code, finished, final_size } => MuxFrame::Reset { stream: *stream, code: *code, finished: *finished, final_size: *final_size },
            Spec::Close { code } => MuxFrame::Close { code: *code },
            Spec::Message { data } => MuxFrame::Message { data },
        }
    }
}

/// A u64 a frame may carry, biased towards the edge at 2^53 − 1.
fn safe_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0..=MAX_SAFE, (0..=64u64).prop_map(|d| MAX_SAFE - d), Just(0u64)]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

/// Frames every receiver accepts.
fn valid_frame() -> impl Strategy<Value = Spec> {
    let hello = (any::<[u8; 8]>().prop_filter("a nonce is not all zeros", |n| *n != [0; 8]), any::<[u8; 8]>(), any::<u32>(), any::<u32>(), any::<u32>())
        .prop_map(|(nonce, echo, max_streams, max_data, stream_window)| Spec::Hello(Hello { nonce, echo, max_streams, max_data, stream_window }));
    let data = (1..=u32::MAX, safe_u64(), any::<bool>(), payload()).prop_map(|(stream, offset, fin, data)| {
        // Keep the end of the bytes at or below 2^53 − 1, as the format requires.
        let offset = offset.min(MAX_SAFE - data.len() as u64);
        Spec::Data { stream, offset, fin, data }
    });
    prop_oneof![
        hello,
        data,
        (any::<u32>(), safe_u64()).prop_map(|(stream, max)| Spec::MaxData { stream, max }),
        any::<u32>().prop_map(|max| Spec::MaxStreams { max }),
        (1..=u32::MAX, any::<u32>(), any::<bool>(), safe_u64()).prop_map(|(stream, code, finished, final_size)| Spec::Reset { stream, code, finished, final_size }),
        any::<u32>().prop_map(|code| Spec::Close { code }),
        payload().prop_map(|data| Spec::Message { data }),
    ]
}

/// Whatever `decode` accepts re-encodes to exactly the same bytes.
fn check_canonical(bytes: &[u8]) {
    if let Ok(f) = mux::decode(bytes) {
        assert_eq!(f.to_vec(), bytes);
        assert_eq!(f.encoded_len(), bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_canonical(&bytes);
    }

    /// Arbitrary bodies behind every known type byte (and some unknown ones), so that the field
    /// checks are reached and not only the type dispatch.
    #[test]
    fn decode_never_panics_behind_a_type(ty in 0u8..=9, body in prop::collection::vec(any::<u8>(), 0..40)) {
        let bytes = [&[ty][..], &body].concat();
        match mux::decode(&bytes) {
            Ok(f) => {
                prop_assert_eq!(f.kind(), ty);
                check_canonical(&bytes);
            }
            Err(MuxError::UnknownType(t)) => prop_assert!(t == ty && !(kind::HELLO..=kind::MESSAGE).contains(&ty)),
            Err(_) => prop_assert!((kind::HELLO..=kind::MESSAGE).contains(&ty)),
        }
    }

    #[test]
    fn encode_then_decode_round_trips(spec in valid_frame()) {
        let f = spec.frame();
        let bytes = f.to_vec();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(bytes[0], f.kind());
        prop_assert_eq!(mux::decode(&bytes), Ok(f));
        // Encoding appends: a frame after other bytes is the same frame.
        let mut out = vec![0xee; 3];
        f.encode(&mut out);
        prop_assert_eq!(&out[3..], &bytes[..]);
    }

    #[test]
    fn mutations_are_refused_or_canonical(spec in valid_frame(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = spec.frame().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        check_canonical(&bytes);
    }

    /// Cut short, a frame is refused, except DATA (down to its header) and MESSAGE, whose payload
    /// is the rest of the input.
    #[test]
    fn truncations_are_refused(spec in valid_frame(), cut in any::<prop::sample::Index>()) {
        let f = spec.frame();
        let bytes = f.to_vec();
        let cut = cut.index(bytes.len());
        let short = &bytes[..cut];
        let keeps_parsing = match f {
            MuxFrame::Data { .. } => cut >= mux::DATA_HEADER_LEN,
            MuxFrame::Message { .. } => cut >= 1,
            _ => false,
        };
        if keeps_parsing {
            check_canonical(short);
            prop_assert!(mux::decode(short).is_ok());
        } else {
            prop_assert_eq!(mux::decode(short), Err(MuxError::Truncated));
        }
    }
}
