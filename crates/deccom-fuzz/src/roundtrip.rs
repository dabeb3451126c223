//! Encode-then-decode target: the input describes values (headers, acks, datagrams, frames, Kademlia
//! messages, records, addresses); each is encoded with deccom-core's encoder and must decode back
//! to the same value (`decode(encode(x)) == x`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::OnceLock;
use std::time::Instant;

use deccom_core::identity::{Identity, PublicIdentity};
use deccom_core::kad::wire::{encode_nodes, Message, FLAG_TRUNCATED, HEADER_LEN, MAX_NODES};
use deccom_core::noise::frame::{self, Pushed, Reassembly, ReassemblyLimits};
use deccom_core::noise::wire::{self as nwire, Packet, Pattern};
use deccom_core::rudp::wire::{self as rwire, AckFrame, DataHeader, Datagram};
use deccom_core::wire::peer_record::PeerRecord;
use deccom_core::wire::{decode_raw_addr, encode_raw_addr};

use crate::input::Input;

/// Runs every round trip the input describes.
pub fn roundtrip(data: &[u8]) {
    let mut input = Input::new(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 8 {
        steps += 1;
        match input.u8() % 8 {
            0 => rudp_data(&mut input),
            1 => rudp_ack(&mut input),
            2 => noise_packet(&mut input),
            3 => frames(&mut input),
            4 => kad(&mut input),
            5 => {
                let rec = record(&mut input);
                let bytes = rec.encode();
                assert_eq!(bytes.len(), rec.encoded_len());
                assert_eq!(PeerRecord::decode(&bytes), Ok((rec, bytes.len())));
            }
            6 => {
                let addr = addr(&mut input);
                let raw = encode_raw_addr(addr);
                let back = decode_raw_addr(&raw).expect("18 bytes decode");
                match addr {
                    SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
                        assert_eq!(
                            back,
                            SocketAddr::new(v6.ip().to_ipv4_mapped().unwrap().into(), v6.port())
                        );
                    }
                    _ => assert_eq!(back, addr),
                }
            }
            _ => {
                let identity = public_identity(&mut input);
                assert_eq!(PublicIdentity::decode(&identity.encode()), Ok(identity));
            }
        }
    }
}

fn rudp_data(input: &mut Input<'_>) {
    let msg_id = input.u64();
    let seg_size = input.u32() % 4096 + 1;
    let msg_len = input.u32();
    let count = rwire::segment_count(msg_len, seg_size);
    let h = DataHeader {
        src_epoch: input.u64().max(1),
        dst_epoch: input.u64(),
        pn: input.u64(),
        msg_id,
        floor_delta: (u64::from(input.u16()) % rwire::MESSAGE_SPAN).min(msg_id) as u16,
        msg_len,
        seg_size,
        seg_index: input.u32() % count,
        ack_now: input.bool(),
    };
    let len = rwire::segment_len(msg_len, seg_size, h.seg_index) as usize;
    let fill = input.u8();
    let payload = vec![fill; len];
    let mut out = Vec::new();
    rwire::encode_data(&h, &payload, &mut out);
    assert_eq!(rwire::decode(&out), Ok(Datagram::Data(h, &payload)));
}

fn rudp_ack(input: &mut Input<'_>) {
    let mut a = AckFrame {
        src_epoch: input.u64().max(1),
        dst_epoch: input.u64(),
        ack_delay_us: input.u32(),
        window: input.u32(),
        count: 0,
        ranges: [(0, 0); rwire::MAX_ACK_RANGES],
        refused_count: usize::from(input.u8()) % (rwire::MAX_REFUSALS + 1),
        refused: [(0, 0); rwire::MAX_REFUSALS],
    };
    // Ranges from the top down: each below the previous with a gap of at least one.
    let wanted = usize::from(input.u8()) % (rwire::MAX_ACK_RANGES + 1);
    let mut next_end = Some(input.u64());
    for slot in a.ranges.iter_mut().take(wanted) {
        let Some(end) = next_end else { break };
        let start = end.saturating_sub(u64::from(input.u16()));
        *slot = (start, end);
        a.count += 1;
        next_end = start.checked_sub(2 + u64::from(input.u16()));
    }
    for slot in a.refused.iter_mut().take(a.refused_count) {
        *slot = (
            input.u64(),
            if input.bool() {
                rwire::REFUSE_BUSY
            } else {
                rwire::REFUSE_FINAL
            },
        );
    }
    let mut out = Vec::new();
    rwire::encode_ack(&a, &mut out);
    assert_eq!(rwire::decode(&out), Ok(Datagram::Ack(a)));
}

fn noise_packet(input: &mut Input<'_>) {
    let kind = input.u8() % 7;
    let a = input.u32();
    let b = input.u32();
    let c = input.u64();
    let mut out = Vec::new();
    // Lengths within each type's documented bounds.
    let len = usize::from(input.u16());
    let fill = input.u8();
    let body = |min: usize, max: usize| vec![fill; min + len % (max - min + 1)];
    let expect = match kind {
        0 => {
            let payload = body(0, 2000);
            nwire::encode_plaintext(&payload, &mut out);
            nwire::decode(&out).map(|p| p == Packet::Plaintext { payload: &payload })
        }
        1 => {
            let payload = body(0, 2000);
            let signature = [fill ^ 0x5a; nwire::SIG_LEN];
            nwire::encode_signed(c, u64::from(a), &signature, &payload, &mut out);
            nwire::decode(&out).map(|p| {
                p == Packet::Signed {
                    epoch: c,
                    counter: u64::from(a),
                    signature,
                    payload: &payload,
                }
            })
        }
        2 => {
            let ciphertext = body(nwire::TAG_LEN, nwire::MAX_NOISE_LEN);
            nwire::encode_transport_header(a, c, &mut out);
            out.extend_from_slice(&ciphertext);
            nwire::decode(&out).map(|p| {
                p == Packet::Transport {
                    receiver: a,
                    counter: c,
                    ciphertext: &ciphertext,
                }
            })
        }
        3 => {
            let noise = body(nwire::KEY_LEN, nwire::MAX_HANDSHAKE_NOISE_LEN);
            let pattern = if b & 1 == 0 { Pattern::Xx } else { Pattern::Ik };
            let mac = (b & 2 != 0).then_some([fill; nwire::MAC_LEN]);
            nwire::encode_init(a, pattern, mac.as_ref(), &noise, &mut out);
            nwire::decode(&out).map(|p| {
                p == Packet::Init {
                    sender: a,
                    pattern,
                    mac,
                    noise: &noise,
                }
            })
        }
        4 => {
            let noise = body(
                nwire::KEY_LEN + nwire::TAG_LEN,
                nwire::MAX_HANDSHAKE_NOISE_LEN,
            );
            nwire::encode_response(a, b, &noise, &mut out);
            nwire::decode(&out).map(|p| {
                p == Packet::Response {
                    sender: a,
                    receiver: b,
                    noise: &noise,
                }
            })
        }
        5 => {
            let noise = body(
                nwire::KEY_LEN + 2 * nwire::TAG_LEN,
                nwire::MAX_HANDSHAKE_NOISE_LEN,
            );
            nwire::encode_final(a, &noise, &mut out);
            nwire::decode(&out).map(|p| {
                p == Packet::Final {
                    receiver: a,
                    noise: &noise,
                }
            })
        }
        _ => {
            let cookie = [fill; nwire::MAC_LEN];
            nwire::encode_cookie(a, &cookie, &mut out);
            nwire::decode(&out).map(|p| {
                p == Packet::Cookie {
                    receiver: a,
                    cookie,
                }
            })
        }
    };
    assert_eq!(expect, Ok(true), "Noise datagram type {kind} round-trips");
}

/// A message cut with `encode_part` decodes frame by frame and reassembles to itself, whatever
/// order the frames arrive in.
fn frames(input: &mut Input<'_>) {
    let tag = input.u8();
    let id = input.u32();
    let len = usize::from(input.u16() % 5000);
    let max_frame = usize::from(input.u16() % 1500) + 1;
    let seed = input.u8();
    let message: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let count = frame::frame_count(len, max_frame);
    if count == 0 {
        // Only an empty message under a limit too small for any header has no frame.
        assert!(len == 0 && max_frame < frame::WHOLE_HEADER_LEN);
        return;
    }
    if count > 300 {
        return;
    }
    let mut parts = Vec::with_capacity(count);
    for index in 0..count {
        let mut out = Vec::new();
        frame::encode_part(tag, id, &message, index, max_frame, &mut out);
        // A frame exceeds max_frame only when even one data byte per chunk does not fit.
        assert!(out.len() <= max_frame.max(frame::CHUNK_HEADER_LEN + 1));
        parts.push(out);
    }
    let rotate = usize::from(input.u8()) % count;
    parts.rotate_left(rotate);
    let limits = ReassemblyLimits {
        max_message: 8192,
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembly::new(limits);
    let now = Instant::now();
    let mut done = None;
    for (i, part) in parts.iter().enumerate() {
        let f = frame::decode(part).expect("an encoded frame decodes");
        let mut again = Vec::new();
        f.encode(&mut again);
        assert_eq!(&again, part);
        match r.push(now, 0u8, f) {
            Pushed::Stored => assert!(i + 1 < count),
            Pushed::Complete { tag: t, message: m } => {
                assert_eq!(i + 1, count);
                done = Some((t, m));
            }
            Pushed::Dropped(why) => panic!("frame {i} of {count} dropped: {why}"),
        }
    }
    assert_eq!(done, Some((tag, message)));
    assert_eq!(r.bytes(), 0);
}

fn kad(input: &mut Input<'_>) {
    let request_id = input.u64();
    let msg = match input.u8() % 4 {
        0 => Message::Ping { request_id },
        1 => Message::Pong { request_id },
        2 => Message::FindNode {
            request_id,
            target: input.array(),
            sender: record(input),
            ephemeral: input.u8() & 1 == 1,
        },
        _ => {
            let n = usize::from(input.u8()) % (MAX_NODES + 1);
            let sender = record(input);
            let nodes: Vec<PeerRecord> = (0..n).map(|_| record(input)).collect();
            // encode_nodes cuts the list to max_len and says so with the truncated flag.
            let max_len = usize::from(input.u16());
            let mut cut = Vec::new();
            match encode_nodes(request_id, &sender, &nodes, max_len, &mut cut) {
                Some(k) => {
                    assert!(cut.len() <= max_len && k <= n);
                    let Ok(Message::Nodes {
                        truncated,
                        nodes: got,
                        sender: s,
                        ..
                    }) = Message::decode(&cut)
                    else {
                        panic!("encode_nodes output does not decode")
                    };
                    assert_eq!(s, sender);
                    assert_eq!(got[..], nodes[..k]);
                    assert_eq!(truncated, k < n);
                    assert_eq!(cut[HEADER_LEN] & FLAG_TRUNCATED != 0, k < n);
                }
                None => assert!(HEADER_LEN + 2 + sender.encoded_len() > max_len),
            }
            Message::Nodes {
                request_id,
                truncated: input.bool(),
                sender,
                nodes,
            }
        }
    };
    assert_eq!(Message::decode(&msg.encode()), Ok(msg));
}

/// Ed25519 identities cost a key derivation: a small fixed pool, built once.
fn ed25519_pool() -> &'static [PublicIdentity] {
    static POOL: OnceLock<Vec<PublicIdentity>> = OnceLock::new();
    POOL.get_or_init(|| {
        (1..=4u8)
            .map(|s| Identity::from_seed(&[s; 32]).public_identity())
            .collect()
    })
}

fn public_identity(input: &mut Input<'_>) -> PublicIdentity {
    let which = input.u8();
    if which & 0x80 == 0 {
        return ed25519_pool()[usize::from(which) % 4].clone();
    }
    // A name: 1..=255 bytes of UTF-8 (lossy conversion keeps it valid; cut at a char boundary).
    let raw = input.chunk8();
    let mut name = String::from_utf8_lossy(raw).into_owned();
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() {
        name.push('n');
    }
    PublicIdentity::Name(name.into_bytes())
}

fn addr(input: &mut Input<'_>) -> SocketAddr {
    if input.bool() {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(input.u32()), input.u16()))
    } else {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(input.array::<16>()),
            input.u16(),
            0,
            0,
        ))
    }
}

fn record(input: &mut Input<'_>) -> PeerRecord {
    let flags = input.u8();
    let mut rec = PeerRecord::new(public_identity(input), addr(input));
    if flags & 1 != 0 {
        rec = rec.with_tcp_port(input.u16());
    }
    if flags & 2 != 0 {
        rec = rec.with_external(addr(input));
    }
    rec
}
