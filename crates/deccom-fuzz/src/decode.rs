//! Decode-then-re-encode targets: arbitrary bytes go into each decoder of deccom-core. A decoder
//! must never panic; what it accepts must re-encode to exactly the bytes it consumed (every format
//! here is canonical, except the content of FIND_NODE padding, which receivers ignore).

use std::net::SocketAddr;

use deccom_core::identity::{Identity, PublicIdentity};
use deccom_core::kad::wire::{encode_find_node, Message};
use deccom_core::noise::frame;
use deccom_core::noise::wire::{self as nwire, Packet};
use deccom_core::rudp::wire::{self as rwire, Datagram};
use deccom_core::wire::mux::{self, MuxFrame};
use deccom_core::wire::peer_record::PeerRecord;
use deccom_core::wire::{
    decode_raw_addr, decode_socket_addr, encode_raw_addr, encode_socket_addr,
    socket_addr_encoded_len, Reader, RAW_ADDR_LEN,
};

/// Reliable-UDP datagrams (`rudp/wire.rs`): the bytes as they are (almost always refused by the
/// checksum), then the bytes with their CRC32C appended, so that mutations reach every field
/// behind the checksum (a forger can compute it: it detects corruption, not forgery).
pub fn rudp_wire(data: &[u8]) {
    rudp_datagram(data);
    let mut fixed = data.to_vec();
    rwire::append_checksum(&mut fixed, 0);
    rudp_datagram(&fixed);
}

fn rudp_datagram(data: &[u8]) {
    let mut out = Vec::new();
    match rwire::decode(data) {
        Ok(Datagram::Data(h, payload)) => {
            assert!(h.src_epoch != 0 && h.seg_size >= 1);
            assert!(h.seg_index < rwire::segment_count(h.msg_len, h.seg_size));
            assert_eq!(
                payload.len() as u64,
                u64::from(rwire::segment_len(h.msg_len, h.seg_size, h.seg_index))
            );
            rwire::encode_data(&h, payload, &mut out);
            assert_eq!(
                out.len(),
                rwire::DATA_HEADER_LEN + payload.len() + rwire::CHECKSUM_LEN
            );
        }
        Ok(Datagram::Ack(a)) => {
            assert!(a.count <= rwire::MAX_ACK_RANGES && a.refused_count <= rwire::MAX_REFUSALS);
            let ranges = a.ranges();
            for w in ranges.windows(2) {
                // Descending, disjoint, with a gap of at least one packet number.
                assert!(w[1].1 < w[0].0 && w[1].1 + 1 < w[0].0);
            }
            assert!(ranges.iter().all(|&(s, e)| s <= e));
            assert!(a
                .refused()
                .iter()
                .all(|&(_, r)| r == rwire::REFUSE_BUSY || r == rwire::REFUSE_FINAL));
            rwire::encode_ack(&a, &mut out);
            assert_eq!(
                out.len(),
                rwire::ACK_FIXED_LEN
                    + rwire::ACK_RANGE_LEN * a.count
                    + rwire::REFUSAL_LEN * a.refused_count
            );
        }
        Err(_) => return,
    }
    assert_eq!(
        out, data,
        "a decoded reliable-UDP datagram re-encodes to its bytes"
    );
}

/// Noise datagrams (`noise/wire.rs`).
pub fn noise_wire(data: &[u8]) {
    let Ok(packet) = nwire::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    match packet {
        Packet::Plaintext { payload } => nwire::encode_plaintext(payload, &mut out),
        Packet::Signed {
            epoch,
            counter,
            signature,
            payload,
        } => {
            nwire::encode_signed(epoch, counter, &signature, payload, &mut out);
        }
        Packet::Transport {
            receiver,
            counter,
            ciphertext,
        } => {
            assert!(ciphertext.len() >= nwire::TAG_LEN && ciphertext.len() <= nwire::MAX_NOISE_LEN);
            nwire::encode_transport_header(receiver, counter, &mut out);
            assert_eq!(out, nwire::transport_header(receiver, counter));
            out.extend_from_slice(ciphertext);
        }
        Packet::Init {
            sender,
            pattern,
            mac,
            noise,
        } => {
            assert!(noise.len() >= nwire::KEY_LEN && noise.len() <= nwire::MAX_HANDSHAKE_NOISE_LEN);
            nwire::encode_init(sender, pattern, mac.as_ref(), noise, &mut out);
            // The MAC input is the initiation without the flag and the MAC.
            let mut mac_input = Vec::new();
            nwire::init_mac_input(sender, pattern, noise, &mut mac_input);
            let skip = 1 + mac.map_or(0, |m| m.len());
            assert_eq!(mac_input[..7], out[..7]);
            assert_eq!(mac_input[7..], out[7 + skip..]);
        }
        Packet::Response {
            sender,
            receiver,
            noise,
        } => {
            assert!(noise.len() <= nwire::MAX_HANDSHAKE_NOISE_LEN);
            nwire::encode_response(sender, receiver, noise, &mut out);
        }
        Packet::Final { receiver, noise } => {
            assert!(noise.len() <= nwire::MAX_HANDSHAKE_NOISE_LEN);
            nwire::encode_final(receiver, noise, &mut out);
        }
        Packet::Cookie { receiver, cookie } => nwire::encode_cookie(receiver, &cookie, &mut out),
    }
    assert_eq!(
        out, data,
        "a decoded Noise datagram re-encodes to its bytes"
    );
}

/// Noise frames (`noise/frame.rs`).
pub fn noise_frame(data: &[u8]) {
    let Ok(f) = frame::decode(data) else { return };
    if let frame::Frame::Chunk {
        total,
        offset,
        data: d,
        ..
    } = f
    {
        assert!(!d.is_empty() && u64::from(offset) + d.len() as u64 <= u64::from(total));
    }
    assert_eq!(f.tag(), data[0]);
    let mut out = Vec::new();
    f.encode(&mut out);
    assert_eq!(out, data, "a decoded frame re-encodes to its bytes");
}

/// Kademlia messages (`kad/wire.rs`).
pub fn kad_wire(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let out = msg.encode();
    match &msg {
        Message::FindNode {
            request_id,
            target,
            sender,
            ephemeral,
        } => {
            // Padding and the flags byte's unknown bits are ignored by receivers (not checked), so
            // only the message proper is canonical; padded to the input length it has the input's
            // length.
            let proper = out.len() - usize::from(*ephemeral);
            assert_eq!(out[..proper], data[..proper]);
            if *ephemeral {
                assert!(data[proper] & deccom_core::kad::wire::FIND_EPHEMERAL != 0);
            }
            let mut padded = Vec::new();
            encode_find_node(*request_id, target, sender, *ephemeral, data.len(), &mut padded);
            assert_eq!(padded.len(), data.len());
            assert_eq!(padded[..out.len()], out[..]);
            assert!(padded[out.len()..].iter().all(|&b| b == 0));
        }
        Message::Nodes { nodes, .. } => {
            assert!(nodes.len() <= deccom_core::kad::wire::MAX_NODES);
            assert_eq!(out, data);
        }
        _ => assert_eq!(out, data),
    }
    assert_eq!(Message::decode(&out).as_ref(), Ok(&msg));
}

/// Peer records, public identities, both address encodings and the key file (`wire/peer_record.rs`,
/// `wire/mod.rs`, `identity`). The first byte picks the decoder.
pub fn records(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok((rec, used)) = PeerRecord::decode(rest) {
                assert!(used <= rest.len() && used <= PeerRecord::MAX_ENCODED_LEN);
                assert_eq!(rec.encoded_len(), used);
                assert_eq!(
                    rec.encode(),
                    rest[..used],
                    "a record re-encodes to the bytes it used"
                );
                assert_eq!(rec.id, rec.identity.id());
            }
        }
        1 => {
            if let Ok(identity) = PublicIdentity::decode(rest) {
                assert_eq!(
                    identity.encode(),
                    rest,
                    "an identity re-encodes to its bytes"
                );
                assert_eq!(identity.encoded_len(), rest.len());
                assert_eq!(identity.id(), deccom_core::node_id(rest));
            }
        }
        2 => match decode_raw_addr(rest) {
            Some(addr) => assert_eq!(encode_raw_addr(addr), rest[..RAW_ADDR_LEN]),
            None => assert!(rest.len() < RAW_ADDR_LEN),
        },
        3 => {
            let mut r = Reader::new(rest);
            if let Ok(addr) = decode_socket_addr(&mut r) {
                let used = r.position();
                assert_eq!(socket_addr_encoded_len(&addr), used);
                let mut out = Vec::new();
                encode_socket_addr(&addr, &mut out);
                assert_eq!(out, rest[..used]);
                let back: SocketAddr = decode_raw_addr(&encode_raw_addr(addr)).expect("18 bytes");
                // The raw encoding folds IPv4-mapped IPv6 into IPv4; everything else survives.
                assert_eq!(back.port(), addr.port());
            }
        }
        4 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(id) = Identity::from_key_file(text) {
                    let again = id
                        .to_key_file()
                        .expect("a loaded identity writes a key file");
                    let id2 = Identity::from_key_file(&again).expect("a written key file loads");
                    assert_eq!(id.id(), id2.id());
                }
            }
        }
        _ => {
            if let Ok(id) = Identity::from_secret_key_bytes(rest) {
                assert!(id.is_keypair());
                let seed = id.secret_seed().expect("a keypair has a seed");
                assert_eq!(Identity::from_seed(&seed).id(), id.id());
            }
        }
    }
}

/// Connection frames (`wire/mux.rs`): decode, check the invariants a decoded frame promises the
/// connection layer, re-encode and compare (the format is canonical).
pub fn mux_decode(data: &[u8]) {
    let Ok(f) = mux::decode(data) else {
        return;
    };
    match f {
        MuxFrame::Hello(h) => assert_ne!(h.nonce, [0; 8]),
        MuxFrame::Data { stream, offset, data: payload, .. } => {
            assert!(stream != 0 && offset + payload.len() as u64 <= mux::MAX_SAFE);
            assert_eq!(payload.len() + mux::DATA_HEADER_LEN, data.len());
        }
        MuxFrame::MaxData { max, .. } => assert!(max <= mux::MAX_SAFE),
        MuxFrame::Reset { stream, final_size, .. } => {
            assert!(stream != 0 && final_size <= mux::MAX_SAFE)
        }
        MuxFrame::MaxStreams { .. } | MuxFrame::Close { .. } | MuxFrame::Message { .. } => {}
    }
    assert_eq!(f.kind(), data[0]);
    assert_eq!(f.encoded_len(), data.len());
    assert_eq!(
        f.to_vec(),
        data,
        "a decoded connection frame re-encodes to its bytes"
    );
}
