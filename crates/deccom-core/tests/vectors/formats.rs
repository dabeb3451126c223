//! The formats under test: for each, a decoder that reports the decoded fields and the
//! re-encoding, the valid messages the generator encodes, and the invalid inputs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deccom_core::identity::{Identity, PublicIdentity};
use deccom_core::kad::wire::{encode_find_node, Message, HEADER_LEN};
use deccom_core::noise::frame::{self, Frame};
use deccom_core::noise::wire::{self as nwire, Packet, Pattern};
use deccom_core::noise::{Config, Endpoint, Event};
use deccom_core::rudp::wire::{self as rwire, AckFrame, DataHeader, Datagram, MAX_ACK_RANGES, MAX_REFUSALS};
use deccom_core::wire::mux::{self, MuxFrame};
use deccom_core::PeerRecord;

use crate::json::{hex, Json};
use crate::obj;

pub type Decoded = Result<(Json, Vec<u8>), String>;
type Valid = Vec<(&'static str, Vec<u8>)>;
type Invalid = Vec<(&'static str, Vec<u8>, &'static str)>;

/// A format generated from deccom-core (`generate_test_vectors` writes its file).
pub struct Format {
    pub file: &'static str,
    pub anchor: &'static str,
    pub notes: &'static str,
    pub decode: fn(&[u8]) -> Decoded,
    pub valid: fn() -> Valid,
    pub invalid: fn() -> Invalid,
}

pub fn all() -> Vec<Format> {
    vec![
        Format { file: "identity", anchor: "public-identity", notes: "One encoded public identity filling the input. Ed25519 keys come from Identity::from_seed([seed; 32]). error = ERR code + Rust error.", decode: identity, valid: identity_valid, invalid: identity_invalid },
        Format { file: "peer-record", anchor: "peer-record", notes: "One peer record filling the input (a record inside a message is followed by more bytes; the decoder reports how many it used). u64 values are decimal strings. error = ERR code + Rust error.", decode: record, valid: record_valid, invalid: record_invalid },
        Format { file: "kad", anchor: "kademlia-tag-3", notes: "The bytes after the layer tag 3. request_id is a decimal string (u64). Records are given as id + UDP address (their bytes are checked by peer-record.json). error = reason (the TS layer counts dropped_malformed and dropped_malformed_<reason>) + Rust error.", decode: kad, valid: kad_valid, invalid: kad_invalid },
        Format { file: "rudp", anchor: "reliable-udp-tag-2", notes: "The bytes after the layer tag 2 (version 2: every datagram ends with the CRC32C of the bytes before it). u64 values are decimal strings; ack ranges are [start, end] inclusive, most recent first. Every invalid datagram is dropped and counted in rudp_dropped_malformed (the reliable layer's stats); a checksum mismatch is also counted in rudp_dropped_checksum.", decode: rudp, valid: rudp_valid, invalid: rudp_invalid },
        Format { file: "noise", anchor: "noise-datagrams-tag-4", notes: "The bytes after the layer tag 4. u64 values are decimal strings. Every invalid datagram is dropped and counted in dropped_malformed. error = ERR code + Rust error.", decode: noise, valid: noise_valid, invalid: noise_invalid },
        Format { file: "noise-frame", anchor: "noise-frames", notes: "The plaintext of one Noise data message. error = the counter the Noise layer counts it in + Rust error.", decode: noise_frame, valid: frame_valid, invalid: frame_invalid },
        Format { file: "dht", anchor: "dht-tag-13", notes: "The bytes after the layer tag 13. u64 values are decimal strings; addresses are 18-byte raw addresses (hex). Records carry `verifies` (the signature checks). Every invalid datagram is dropped and counted in dht.dropped_malformed and dropped_malformed_<reason>. error = reason + Rust error.", decode: crate::dht::decode, valid: crate::dht::valid, invalid: crate::dht::invalid },
    ]
}

/// A format whose vectors another implementation generates (`scripts/gen-vectors.mjs` from
/// `ts/wire/`): checked here, never written.
pub struct Checked {
    pub file: &'static str,
    pub decode: fn(&[u8]) -> Decoded,
}

pub fn checked() -> Vec<Checked> {
    vec![Checked { file: "connection", decode: connection }]
}

fn u64s(n: u64) -> Json {
    Json::str(n.to_string())
}

fn ed(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn core_err(e: deccom_core::Error) -> String {
    format!("{} {e:?}", e.code())
}

// ---------------------------------------------------------------------------------------------
// Public identity

fn identity(b: &[u8]) -> Decoded {
    let id = PublicIdentity::decode(b).map_err(core_err)?;
    let fields = match &id {
        PublicIdentity::Ed25519(k) => obj!["kind" => Json::str("ed25519"), "key" => Json::hex(k), "node_id" => Json::hex(&id.id())],
        PublicIdentity::Name(n) => obj!["kind" => Json::str("name"), "name" => Json::str(String::from_utf8(n.clone()).unwrap()), "node_id" => Json::hex(&id.id())],
    };
    Ok((fields, id.encode()))
}

fn identity_valid() -> Valid {
    vec![
        ("ed25519 from seed 0x01", ed(1).public_identity().encode()),
        ("ed25519 from seed 0x02", ed(2).public_identity().encode()),
        ("name alice", Identity::from_name("alice").unwrap().public_identity().encode()),
        ("name of 255 bytes", Identity::from_name(&"n".repeat(255)).unwrap().public_identity().encode()),
    ]
}

fn identity_invalid() -> Invalid {
    let mut short = ed(1).public_identity().encode();
    short.pop();
    let mut long = ed(1).public_identity().encode();
    long.push(0);
    // y = 2 is not the encoding of a curve point.
    let mut bad_point = vec![1u8, 2];
    bad_point.resize(33, 0);
    let mut too_long_name = vec![2u8];
    too_long_name.resize(257, b'n');
    vec![
        ("empty", vec![], "rejected"),
        ("unknown kind 0x03", vec![3, 1, 2, 3], "rejected"),
        ("ed25519 key of 31 bytes", short, "rejected"),
        ("ed25519 key of 33 bytes", long, "rejected"),
        ("ed25519 key not a curve point", bad_point, "rejected"),
        ("empty name", vec![2], "rejected"),
        ("name not UTF-8", vec![2, 0xff, 0xfe], "rejected"),
        ("name of 256 bytes", too_long_name, "rejected"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Peer record

fn record_fields(r: &PeerRecord) -> Json {
    obj![
        "id" => Json::hex(&r.id),
        "identity" => Json::hex(&r.identity.encode()),
        "udp" => Json::str(r.udp.to_string()),
        "tcp_port" => r.tcp_port.map_or(Json::Null, Json::num),
        "external" => r.external.map_or(Json::Null, |a| Json::str(a.to_string())),
    ]
}

fn record(b: &[u8]) -> Decoded {
    let (r, used) = PeerRecord::decode(b).map_err(core_err)?;
    if used != b.len() {
        return Err(format!("trailing {} bytes after the record", b.len() - used));
    }
    Ok((record_fields(&r), r.encode()))
}

fn rec_a() -> PeerRecord {
    PeerRecord::new(ed(1).public_identity(), addr("192.0.2.1:4001"))
}

fn record_valid() -> Valid {
    vec![
        ("ed25519, IPv4, no options", rec_a().encode()),
        ("ed25519, IPv6, TCP port", PeerRecord::new(ed(2).public_identity(), addr("[2001:db8::2]:4002")).with_tcp_port(5002).encode()),
        (
            "ed25519, IPv4, TCP port and external address",
            PeerRecord::new(ed(3).public_identity(), addr("10.0.0.3:4003")).with_tcp_port(4003).with_external(addr("198.51.100.3:61003")).encode(),
        ),
        ("name identity, IPv4", PeerRecord::new(Identity::from_name("alice").unwrap().public_identity(), addr("127.0.0.1:9000")).encode()),
    ]
}

fn record_invalid() -> Invalid {
    let good = rec_a().encode();
    let mut version = good.clone();
    version[0] = 2;
    let mut flags = good.clone();
    flags[1] = 0x04;
    let mut id = good.clone();
    id[2] ^= 1;
    let mut zero_len = good.clone();
    zero_len[34..36].copy_from_slice(&[0, 0]);
    let mut big_len = good.clone();
    big_len[34..36].copy_from_slice(&257u16.to_be_bytes());
    let mut family = good.clone();
    family[36 + 33] = 5;
    let mut kind = good.clone();
    kind[36] = 9;
    let mut trunc_flag = good.clone();
    trunc_flag[1] = 0x01; // says a TCP port follows, but the record ends
    vec![
        ("empty", vec![], "rejected (ERR_DECCOM_RECORD_TRUNCATED); the message carrying it is dropped"),
        ("cut inside the UDP address", good[..good.len() - 1].to_vec(), "rejected"),
        ("version 2", version, "rejected (ERR_DECCOM_RECORD_VERSION)"),
        ("unknown flag 0x04", flags, "rejected"),
        ("id is not SHA-256 of the identity", id, "rejected (ERR_DECCOM_RECORD_ID_MISMATCH)"),
        ("identity length 0", zero_len, "rejected"),
        ("identity length 257", big_len, "rejected (ERR_DECCOM_RECORD_TOO_LARGE)"),
        ("unknown identity kind", kind, "rejected"),
        ("unknown address family 5", family, "rejected"),
        ("TCP-port flag without the port", trunc_flag, "rejected"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Kademlia

fn brief(r: &PeerRecord) -> Json {
    obj!["id" => Json::hex(&r.id), "udp" => Json::str(r.udp.to_string())]
}

fn kad(b: &[u8]) -> Decoded {
    let m = Message::decode(b).map_err(|e| format!("{} {e:?}", e.reason()))?;
    let (fields, again) = match &m {
        Message::Ping { request_id } => (obj!["type" => Json::str("PING"), "request_id" => u64s(*request_id)], m.encode()),
        Message::Pong { request_id } => (obj!["type" => Json::str("PONG"), "request_id" => u64s(*request_id)], m.encode()),
        Message::FindNode { request_id, target, sender, ephemeral } => {
            let mut out = Vec::new();
            encode_find_node(*request_id, target, sender, *ephemeral, b.len(), &mut out);
            // The flags byte (when set) is not padding.
            let unpadded = HEADER_LEN + 32 + sender.encoded_len() + usize::from(*ephemeral);
            (
                obj!["type" => Json::str("FIND_NODE"), "request_id" => u64s(*request_id), "target" => Json::hex(target), "sender" => brief(sender), "ephemeral" => Json::Bool(*ephemeral), "padding" => Json::num((b.len() - unpadded) as u64)],
                out,
            )
        }
        Message::Nodes { request_id, truncated, sender, nodes } => (
            obj![
                "type" => Json::str("NODES"),
                "request_id" => u64s(*request_id),
                "truncated" => Json::Bool(*truncated),
                "sender" => brief(sender),
                "nodes" => Json::Arr(nodes.iter().map(brief).collect()),
            ],
            m.encode(),
        ),
    };
    Ok((fields, again))
}

fn rec_n(i: u8) -> PeerRecord {
    PeerRecord::new(ed(0x10 + i).public_identity(), addr(&format!("192.0.2.{}:{}", 10 + i, 5000 + u16::from(i))))
}

fn kad_valid() -> Valid {
    let target = [0xabu8; 32];
    let mut find = Vec::new();
    encode_find_node(0x0102_0304_0506_0708, &target, &rec_a(), false, 0, &mut find);
    let mut padded = Vec::new();
    encode_find_node(9, &target, &rec_a(), false, 200, &mut padded);
    let mut ephemeral = Vec::new();
    encode_find_node(10, &target, &rec_a(), true, 200, &mut ephemeral);
    let nodes = Message::Nodes { request_id: 0x0102_0304_0506_0708, truncated: false, sender: rec_n(0), nodes: vec![rec_n(1), rec_n(2)] }.encode();
    let cut = Message::Nodes { request_id: 7, truncated: true, sender: rec_n(0), nodes: vec![] }.encode();
    vec![
        ("PING", Message::Ping { request_id: 0x0102_0304_0506_0708 }.encode()),
        ("PONG", Message::Pong { request_id: u64::MAX }.encode()),
        ("FIND_NODE without padding", find),
        ("FIND_NODE padded to 200 bytes", padded),
        ("FIND_NODE from an ephemeral node, padded to 200 bytes", ephemeral),
        ("NODES with two records", nodes),
        ("NODES truncated, empty", cut),
    ]
}

fn kad_invalid() -> Invalid {
    let ping = Message::Ping { request_id: 1 }.encode();
    let nodes = Message::Nodes { request_id: 7, truncated: false, sender: rec_n(0), nodes: vec![rec_n(1)] }.encode();
    let mut version = ping.clone();
    version[0] = 2;
    let mut kind = ping.clone();
    kind[1] = 5;
    let mut trailing = ping.clone();
    trailing.push(0);
    let mut flags = nodes.clone();
    flags[10] = 0x02;
    let mut count = nodes.clone();
    count[11] = 65;
    let mut missing = nodes.clone();
    missing[11] = 2;
    let mut bad_rec = nodes.clone();
    bad_rec[12 + 2] ^= 1; // the sender record's id
    vec![
        ("empty", vec![], "dropped, counted"),
        ("PING of 9 bytes", ping[..9].to_vec(), "dropped, counted"),
        ("version 2", version, "dropped, counted"),
        ("unknown type 5", kind, "dropped, counted"),
        ("PING with a trailing byte", trailing, "dropped, counted"),
        ("NODES with unknown flag 0x02", flags, "dropped, counted"),
        ("NODES count 65", count, "dropped, counted"),
        ("NODES count says 2, carries 1", missing, "dropped, counted"),
        ("NODES sender record with a wrong id", bad_rec, "dropped, counted"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Reliable UDP

fn rudp(b: &[u8]) -> Decoded {
    let d = rwire::decode(b).map_err(|e| format!("{e:?}"))?;
    let mut out = Vec::new();
    let fields = match d {
        Datagram::Data(h, payload) => {
            rwire::encode_data(&h, payload, &mut out);
            obj![
                "type" => Json::str("DATA"),
                "ack_now" => Json::Bool(h.ack_now),
                "src_epoch" => u64s(h.src_epoch),
                "dst_epoch" => u64s(h.dst_epoch),
                "pn" => u64s(h.pn),
                "msg_id" => u64s(h.msg_id),
                "floor_delta" => Json::num(h.floor_delta),
                "msg_len" => Json::num(h.msg_len),
                "seg_size" => Json::num(h.seg_size),
                "seg_index" => Json::num(h.seg_index),
                "payload" => Json::hex(payload),
            ]
        }
        Datagram::Ack(a) => {
            rwire::encode_ack(&a, &mut out);
            obj![
                "type" => Json::str("ACK"),
                "src_epoch" => u64s(a.src_epoch),
                "dst_epoch" => u64s(a.dst_epoch),
                "ack_delay_us" => Json::num(a.ack_delay_us),
                "window" => Json::num(a.window),
                "ranges" => Json::Arr(a.ranges().iter().map(|&(s, e)| Json::Arr(vec![u64s(s), u64s(e)])).collect()),
                "refused" => Json::Arr(a.refused().iter().map(|&(pn, r)| Json::Arr(vec![u64s(pn), Json::num(r)])).collect()),
            ]
        }
    };
    Ok((fields, out))
}

fn data(h: &DataHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rwire::encode_data(h, payload, &mut out);
    out
}

/// A reliable-UDP datagram changed after encoding, with its CRC32C trailer recomputed (so that
/// the change, not the checksum, is what the decoder refuses).
fn resealed(mut b: Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    b.truncate(b.len() - rwire::CHECKSUM_LEN);
    change(&mut b);
    rwire::append_checksum(&mut b, 0);
    b
}

fn data_h() -> DataHeader {
    DataHeader { src_epoch: 0x0102_0304_0506_0708, dst_epoch: 0x1112_1314_1516_1718, pn: 77, msg_id: 1000, floor_delta: 3, msg_len: 2500, seg_size: 1000, seg_index: 2, ack_now: false }
}

fn ack(ranges: &[(u64, u64)], refused: &[(u64, u8)]) -> Vec<u8> {
    let mut a = AckFrame { src_epoch: 5, dst_epoch: 6, ack_delay_us: 250, window: 512, count: ranges.len(), ranges: [(0, 0); MAX_ACK_RANGES], refused_count: refused.len(), refused: [(0, 0); MAX_REFUSALS] };
    a.ranges[..ranges.len()].copy_from_slice(ranges);
    a.refused[..refused.len()].copy_from_slice(refused);
    let mut out = Vec::new();
    rwire::encode_ack(&a, &mut out);
    out
}

fn rudp_valid() -> Valid {
    let first = DataHeader { dst_epoch: 0, pn: 1, msg_id: 0, floor_delta: 0, msg_len: 5, seg_size: 1200, seg_index: 0, ack_now: true, ..data_h() };
    let empty = DataHeader { msg_len: 0, seg_index: 0, ..data_h() };
    vec![
        ("DATA, single segment, ack-now, peer epoch unknown", data(&first, b"hello")),
        ("DATA, last segment (500 of 2500 bytes)", data(&data_h(), &[0x5a; 500])),
        ("DATA, empty message", data(&empty, &[])),
        ("ACK, no ranges", ack(&[], &[])),
        ("ACK, two ranges and a refusal", ack(&[(10, 12), (3, 8)], &[(9, rwire::REFUSE_BUSY)])),
        ("ACK, refusal final", ack(&[(1, 1)], &[(2, rwire::REFUSE_FINAL)])),
    ]
}

fn rudp_invalid() -> Invalid {
    let good = data(&data_h(), &[0x5a; 500]);
    let version = resealed(good.clone(), |b| b[0] = 1);
    let unsealed_v1 = {
        // The version-1 layout: no checksum trailer.
        let mut b = good[..good.len() - rwire::CHECKSUM_LEN].to_vec();
        b[0] = 1;
        b
    };
    let ty = resealed(good.clone(), |b| b[1] = 0x03);
    let flag = resealed(good.clone(), |b| b[1] = 0x21);
    let ack_flag = resealed(ack(&[], &[]), |b| b[1] = 0x12);
    let epoch0 = resealed(good.clone(), |b| b[2..10].fill(0));
    let seg0 = data(&DataHeader { seg_size: 0, ..data_h() }, &[]);
    let beyond = resealed(good.clone(), |b| b[44..48].copy_from_slice(&3u32.to_be_bytes()));
    let floor = data(&DataHeader { floor_delta: 1001, ..data_h() }, &[0x5a; 500]);
    let span = data(&DataHeader { msg_id: 40_000, floor_delta: 32_768, ..data_h() }, &[0x5a; 500]);
    let ranges = ack(&[(3, 8), (10, 12)], &[]);
    let adjacent = ack(&[(9, 12), (3, 8)], &[]);
    let backwards = ack(&[(12, 10)], &[]);
    let many = resealed(ack(&[], &[]), |b| b[26] = 33);
    let reason = resealed(ack(&[], &[(9, 1)]), |b| {
        let l = b.len();
        b[l - 1] = 3;
    });
    let trailing = resealed(ack(&[], &[]), |b| b.push(0));
    let short = resealed(good.clone(), |b| {
        b.pop();
    });
    let mut msg_bit = good.clone();
    msg_bit[33] ^= 0x01; // lowest bit of the message id
    let mut payload_bit = good.clone();
    payload_bit[300] ^= 0x80;
    let mut ack_bit = ack(&[(10, 12), (3, 8)], &[]);
    ack_bit[5] ^= 0x10; // inside the source epoch
    let mut crc_bit = good.clone();
    let l = crc_bit.len();
    crc_bit[l - 1] ^= 0x01;
    vec![
        ("empty", vec![], "rudp_dropped_malformed"),
        ("version 1", version, "rudp_dropped_malformed"),
        ("version 1 layout (no checksum)", unsealed_v1, "rudp_dropped_malformed"),
        ("unknown type 3", ty, "rudp_dropped_malformed"),
        ("DATA with unknown flag 0x20", flag, "rudp_dropped_malformed"),
        ("ACK with a flag", ack_flag, "rudp_dropped_malformed"),
        ("source epoch 0", epoch0, "rudp_dropped_malformed"),
        ("DATA header cut short", good[..40].to_vec(), "rudp_dropped_malformed"),
        ("DATA payload one byte short", short, "rudp_dropped_malformed"),
        ("DATA segment size 0", seg0, "rudp_dropped_malformed"),
        ("DATA segment index beyond the message", beyond, "rudp_dropped_malformed"),
        ("DATA floor delta above the message id", floor, "rudp_dropped_malformed"),
        ("DATA floor delta of 32768", span, "rudp_dropped_malformed"),
        ("ACK ranges ascending", ranges, "rudp_dropped_malformed"),
        ("ACK ranges adjacent", adjacent, "rudp_dropped_malformed"),
        ("ACK range start after end", backwards, "rudp_dropped_malformed"),
        ("ACK with 33 ranges", many, "rudp_dropped_malformed"),
        ("ACK refusal reason 3", reason, "rudp_dropped_malformed"),
        ("ACK with a trailing byte", trailing, "rudp_dropped_malformed"),
        ("DATA with one bit of the message id flipped", msg_bit, "rudp_dropped_malformed, rudp_dropped_checksum"),
        ("DATA with one payload bit flipped", payload_bit, "rudp_dropped_malformed, rudp_dropped_checksum"),
        ("ACK with one bit of the source epoch flipped", ack_bit, "rudp_dropped_malformed, rudp_dropped_checksum"),
        ("DATA with one checksum bit flipped", crc_bit, "rudp_dropped_malformed, rudp_dropped_checksum"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Noise datagrams

fn noise_err(e: deccom_core::noise::WireError) -> String {
    format!("{} {e:?}", e.code())
}

fn noise(b: &[u8]) -> Decoded {
    let p = nwire::decode(b).map_err(noise_err)?;
    let mut out = Vec::new();
    let fields = match p {
        Packet::Plaintext { payload } => {
            nwire::encode_plaintext(payload, &mut out);
            obj!["type" => Json::str("plaintext"), "payload" => Json::hex(payload)]
        }
        Packet::Signed { epoch, counter, signature, payload } => {
            nwire::encode_signed(epoch, counter, &signature, payload, &mut out);
            obj!["type" => Json::str("signed"), "epoch" => u64s(epoch), "counter" => u64s(counter), "signature" => Json::hex(&signature), "payload" => Json::hex(payload)]
        }
        Packet::Transport { receiver, counter, ciphertext } => {
            nwire::encode_transport_header(receiver, counter, &mut out);
            out.extend_from_slice(ciphertext);
            obj!["type" => Json::str("transport"), "receiver" => Json::num(receiver), "counter" => u64s(counter), "ciphertext" => Json::hex(ciphertext)]
        }
        Packet::Init { sender, pattern, mac, noise } => {
            nwire::encode_init(sender, pattern, mac.as_ref(), noise, &mut out);
            obj![
                "type" => Json::str("init"),
                "version" => Json::num(nwire::PROTOCOL_VERSION),
                "sender" => Json::num(sender),
                "pattern" => Json::str(if pattern == Pattern::Xx { "XX" } else { "IK" }),
                "mac" => mac.map_or(Json::Null, |m| Json::hex(&m)),
                "noise" => Json::hex(noise),
            ]
        }
        Packet::Response { sender, receiver, noise } => {
            nwire::encode_response(sender, receiver, noise, &mut out);
            obj!["type" => Json::str("response"), "sender" => Json::num(sender), "receiver" => Json::num(receiver), "noise" => Json::hex(noise)]
        }
        Packet::Final { receiver, noise } => {
            nwire::encode_final(receiver, noise, &mut out);
            obj!["type" => Json::str("final"), "receiver" => Json::num(receiver), "noise" => Json::hex(noise)]
        }
        Packet::Cookie { receiver, cookie } => {
            nwire::encode_cookie(receiver, &cookie, &mut out);
            obj!["type" => Json::str("cookie"), "receiver" => Json::num(receiver), "cookie" => Json::hex(&cookie)]
        }
    };
    Ok((fields, out))
}

fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out);
    out
}

fn noise_valid() -> Valid {
    let e = [0x11u8; 32];
    let sig = ed(1).sign(&nwire::signed_message(1_700_000_000_000, 1, b"signed hello")).unwrap();
    vec![
        ("plaintext", enc(|o| nwire::encode_plaintext(b"\x00\x00hello", o))),
        ("signed (real signature of seed-0x01 identity)", enc(|o| nwire::encode_signed(1_700_000_000_000, 1, &sig, b"signed hello", o))),
        ("transport (opaque ciphertext + tag)", enc(|o| {
            nwire::encode_transport_header(0x0a0b_0c0d, 7, o);
            o.extend_from_slice(&[0xcc; 21]);
        })),
        ("init XX without MAC (32-byte ephemeral)", enc(|o| nwire::encode_init(0x0102_0304, Pattern::Xx, None, &e, o))),
        ("init IK with cookie MAC", enc(|o| nwire::encode_init(0x0102_0304, Pattern::Ik, Some(&[0x22; 16]), &[0x33; 128], o))),
        ("response", enc(|o| nwire::encode_response(0x0506_0708, 0x0102_0304, &[0x44; 48], o))),
        ("final", enc(|o| nwire::encode_final(0x0506_0708, &[0x55; 64], o))),
        ("cookie reply", enc(|o| nwire::encode_cookie(0x0102_0304, &[0x66; 16], o))),
    ]
}

fn noise_invalid() -> Invalid {
    let init = enc(|o| nwire::encode_init(1, Pattern::Xx, None, &[0x11; 32], o));
    let mut version = init.clone();
    version[1] = 2;
    let mut pattern = init.clone();
    pattern[6] = 2;
    let mut flag = init.clone();
    flag[7] = 2;
    let mut big = init.clone();
    big.resize(8 + 1025, 0);
    let cookie = enc(|o| nwire::encode_cookie(1, &[0x66; 16], o));
    let mut cookie_long = cookie.clone();
    cookie_long.push(0);
    let transport = enc(|o| {
        nwire::encode_transport_header(1, 1, o);
        o.extend_from_slice(&[0; 15]);
    });
    vec![
        ("empty", vec![], "dropped_malformed"),
        ("unknown type 0x03", vec![0x03, 0, 0], "dropped_malformed"),
        ("unknown type 0x14", vec![0x14; 40], "dropped_malformed"),
        ("init version 2", version, "dropped_malformed"),
        ("init pattern 2", pattern, "dropped_malformed"),
        ("init MAC flag 2", flag, "dropped_malformed"),
        ("init Noise message of 31 bytes", init[..init.len() - 1].to_vec(), "dropped_malformed"),
        ("init Noise message of 1025 bytes", big, "dropped_malformed"),
        ("response Noise message of 47 bytes", enc(|o| nwire::encode_response(1, 2, &[0; 47], o)), "dropped_malformed"),
        ("final Noise message of 63 bytes", enc(|o| nwire::encode_final(1, &[0; 63], o)), "dropped_malformed"),
        ("cookie reply one byte short", cookie[..cookie.len() - 1].to_vec(), "dropped_malformed"),
        ("cookie reply with a trailing byte", cookie_long, "dropped_malformed"),
        ("transport ciphertext shorter than a tag", transport, "dropped_malformed"),
        ("signed without the whole signature", vec![0x01; 60], "dropped_malformed"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Noise frames

fn noise_frame(b: &[u8]) -> Decoded {
    let f = frame::decode(b).map_err(|e| format!("{} {e:?}", e.counter()))?;
    let mut out = Vec::new();
    f.encode(&mut out);
    let fields = match f {
        Frame::Whole { tag, data } => obj!["kind" => Json::str("whole"), "tag" => Json::num(tag), "data" => Json::hex(data)],
        Frame::Chunk { tag, id, total, offset, data } => obj![
            "kind" => Json::str("chunk"), "tag" => Json::num(tag), "id" => Json::num(id), "total" => Json::num(total), "offset" => Json::num(offset), "data" => Json::hex(data),
        ],
    };
    Ok((fields, out))
}

fn frame_valid() -> Valid {
    let msg: Vec<u8> = (0..40u8).collect();
    let part = |i| enc(|o| frame::encode_part(0, 0x0102_0304, &msg, i, 30, o));
    vec![
        ("whole, application tag 0", enc(|o| Frame::Whole { tag: 0, data: b"hello" }.encode(o))),
        ("whole, reliable-UDP tag 2 (one RUDP datagram)", enc(|o| Frame::Whole { tag: 2, data: &data(&DataHeader { dst_epoch: 0, pn: 1, msg_id: 0, floor_delta: 0, msg_len: 2, seg_size: 1200, seg_index: 0, ack_now: true, ..data_h() }, b"hi") }.encode(o))),
        ("whole, empty", enc(|o| Frame::Whole { tag: 0, data: b"" }.encode(o))),
        ("chunk 1 of 3 (40-byte message, 30-byte frames)", part(0)),
        ("chunk 3 of 3", part(2)),
    ]
}

fn frame_invalid() -> Invalid {
    vec![
        ("empty", vec![], "dropped_malformed_frame"),
        ("tag only", vec![0], "dropped_malformed_frame"),
        ("unknown kind 0x02", vec![0, 2, 1, 2, 3], "dropped_malformed_frame"),
        ("chunk header cut short", vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0], "dropped_malformed_frame"),
        ("chunk without data", vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0], "dropped_reassembly_invalid"),
        ("chunk past its total", vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 8, 1, 2], "dropped_reassembly_invalid"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Connection frames (tag 12; vectors from ts/wire/mux.ts)

fn connection(b: &[u8]) -> Decoded {
    let f = mux::decode(b).map_err(|e| e.counter().to_string())?;
    let fields = match f {
        MuxFrame::Hello(h) => obj![
            "type" => Json::str("HELLO"), "nonce" => Json::hex(&h.nonce), "echo" => Json::hex(&h.echo),
            "maxStreams" => Json::num(h.max_streams), "maxData" => Json::num(h.max_data), "streamWindow" => Json::num(h.stream_window),
        ],
        MuxFrame::Data { stream, offset, fin, data } => obj![
            "type" => Json::str("DATA"), "stream" => Json::num(stream), "offset" => Json::num(offset), "fin" => Json::Bool(fin), "data" => Json::hex(data),
        ],
        MuxFrame::MaxData { stream, max } => obj!["type" => Json::str("MAX_DATA"), "stream" => Json::num(stream), "max" => Json::num(max)],
        MuxFrame::MaxStreams { max } => obj!["type" => Json::str("MAX_STREAMS"), "max" => Json::num(max)],
        MuxFrame::Reset { stream, code, finished, final_size } => obj![
            "type" => Json::str("RESET"), "stream" => Json::num(stream), "code" => Json::num(code), "finished" => Json::Bool(finished), "finalSize" => Json::num(final_size),
        ],
        MuxFrame::Close { code } => obj!["type" => Json::str("CLOSE"), "code" => Json::num(code)],
        MuxFrame::Message { data } => obj!["type" => Json::str("MESSAGE"), "data" => Json::hex(data)],
    };
    Ok((fields, f.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// Noise handshake transcripts

/// Identity seeds and endpoint seeds of the transcripts.
const INITIATOR_IDENTITY_SEED: u8 = 0x01;
const RESPONDER_IDENTITY_SEED: u8 = 0x02;
const INITIATOR_ENDPOINT_SEED: u8 = 0xa1;
const RESPONDER_ENDPOINT_SEED: u8 = 0xb2;
/// Initiator and responder as peers of each other (any driver-side handle; not on the wire).
const I: u32 = 1;
const R: u32 = 2;

fn pump(now: Instant, a: &mut Endpoint<u32>, b: &mut Endpoint<u32>, log: &mut Vec<Json>, received: &mut Vec<Json>) {
    let mut buf = Vec::new();
    loop {
        let mut moved = false;
        for (from, to) in [(I, R), (R, I)] {
            let (src, dst) = if from == I { (&mut *a, &mut *b) } else { (&mut *b, &mut *a) };
            while let Some(peer) = src.poll_transmit(&mut buf) {
                assert_eq!(peer, to);
                let kind = match buf[0] {
                    nwire::T_INIT => "init",
                    nwire::T_RESPONSE => "response",
                    nwire::T_FINAL => "final",
                    nwire::T_TRANSPORT if buf.len() == nwire::TRANSPORT_HEADER_LEN + nwire::TAG_LEN => "transport (keepalive)",
                    nwire::T_TRANSPORT => "transport",
                    _ => "other",
                };
                log.push(obj![
                    "from" => Json::str(if from == I { "initiator" } else { "responder" }),
                    "type" => Json::str(kind),
                    "hex" => Json::hex(&buf),
                ]);
                dst.handle_datagram(now, from, &buf);
                moved = true;
            }
        }
        for (who, ep) in [("initiator", &mut *a), ("responder", &mut *b)] {
            while let Some(ev) = ep.poll_event() {
                match ev {
                    Event::Message { data, .. } => received.push(obj!["by" => Json::str(who), "plaintext" => Json::hex(&data)]),
                    Event::Connected { remote_id, .. } => received.push(obj!["by" => Json::str(who), "connected_to" => Json::hex(&remote_id)]),
                    other => panic!("unexpected event {other:?}"),
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn transcript(ik: bool, aes_gcm: bool) -> Json {
    let now = Instant::now();
    let (ia, ib) = (ed(INITIATOR_IDENTITY_SEED), ed(RESPONDER_IDENTITY_SEED));
    let config = || Config { aes_gcm: Some(aes_gcm), ..Config::default() };
    let mut a = Endpoint::<u32>::new(&ia, config(), now, [INITIATOR_ENDPOINT_SEED; 32]).unwrap();
    let mut b = Endpoint::<u32>::new(&ib, config(), now, [RESPONDER_ENDPOINT_SEED; 32]).unwrap();
    let (mut log, mut received) = (Vec::new(), Vec::new());
    a.connect(now, R, ik.then(|| b.local_static_public_key()));
    pump(now, &mut a, &mut b, &mut log, &mut received);
    let hash = a.handshake_hash(R).expect("handshake complete").to_vec();
    assert_eq!(Some(hash.as_slice()), b.handshake_hash(I));
    // One transport message each way: a whole frame from the initiator, a chunk from the responder.
    let whole = enc(|o| Frame::Whole { tag: 0, data: b"hello responder" }.encode(o));
    let chunk = enc(|o| Frame::Chunk { tag: 0, id: 1, total: 40, offset: 0, data: b"first 20 bytes of 40" }.encode(o));
    let later = now + Duration::from_millis(1);
    a.send(later, R, &whole).unwrap();
    pump(later, &mut a, &mut b, &mut log, &mut received);
    b.send(later, I, &chunk).unwrap();
    pump(later, &mut a, &mut b, &mut log, &mut received);
    obj![
        "pattern" => Json::str(if ik { "IK" } else { "XX" }),
        "aes_gcm" => Json::Bool(aes_gcm),
        "steps" => Json::str(if ik {
            "initiator.connect(responder, responder's static key); deliver every datagram in order; then initiator.send(frame whole), responder.send(frame chunk)"
        } else {
            "initiator.connect(responder); deliver every datagram in order; then initiator.send(frame whole), responder.send(frame chunk)"
        }),
        "datagrams" => Json::Arr(log),
        "delivered" => Json::Arr(received),
        "handshake_hash" => Json::hex(&hash),
    ]
}

pub fn noise_handshake_file() -> Json {
    let who = |role: &str, seed: u8, ep_seed: u8| {
        let id = ed(seed);
        obj![
            "role" => Json::str(role),
            "identity_seed" => Json::hex(&[seed; 32]),
            "endpoint_seed" => Json::hex(&[ep_seed; 32]),
            "ed25519_public_key" => Json::hex(id.public_identity().ed25519_key().unwrap()),
            "public_identity" => Json::hex(&id.public_identity().encode()),
            "node_id" => Json::hex(&id.id()),
            "x25519_static_public_key" => Json::hex(&deccom_core::noise::static_public_key(&id).unwrap()),
        ]
    };
    obj![
        "format" => Json::str("noise-handshake"),
        "spec" => Json::str("docs/wire.md#noise-handshake-transcripts"),
        "notes" => Json::str("Datagrams are the bytes after the layer tag 4. Both endpoints use the default configuration (encrypt mode) with `aes_gcm` as each transcript says, and one fixed instant; the endpoint seed makes every ephemeral key and session index deterministic. Plaintexts are Noise frames. `xx`: the initiation offers no AES-256-GCM (offer byte 0x00), the response chooses ChaCha20-Poly1305 (0x00); `xx_aes`: offer 0x01, choice 0x01, transport messages sealed with AES-256-GCM; `ik`: a first IK initiation (the initiator does not know yet that the responder reads offers) carries none, and the session uses ChaCha20-Poly1305."),
        "identities" => Json::Arr(vec![
            who("initiator", INITIATOR_IDENTITY_SEED, INITIATOR_ENDPOINT_SEED),
            who("responder", RESPONDER_IDENTITY_SEED, RESPONDER_ENDPOINT_SEED),
        ]),
        "xx" => transcript(false, false),
        "xx_aes" => transcript(false, true),
        "ik" => transcript(true, false),
    ]
}

#[allow(dead_code)]
fn unused() -> String {
    hex(&[])
}
