//! DHT (tag 13) vectors: every message type, and the invalid inputs receivers drop and count.

use deccom_core::dht::records::{AnnounceRecord, MutableRecord};
use deccom_core::dht::wire::{self, Message, ReplyHead};
use deccom_core::dht::{Kind, Status};
use deccom_core::identity::Identity;

use crate::formats::Decoded;
use crate::json::Json;
use crate::obj;

type Valid = Vec<(&'static str, Vec<u8>)>;
type Invalid = Vec<(&'static str, Vec<u8>, &'static str)>;

fn u64s(v: u64) -> Json {
    Json::str(v.to_string())
}

fn announce_json(r: &AnnounceRecord, topic: &[u8; 32]) -> Json {
    obj![
        "identity" => Json::hex(&r.identity),
        "addr" => Json::hex(&r.addr),
        "seq" => u64s(r.seq),
        "ttl" => Json::num(u64::from(r.ttl)),
        "signature" => Json::hex(&r.signature),
        "verifies" => Json::Bool(r.verify(topic)),
    ]
}

fn mutable_json(r: &MutableRecord) -> Json {
    obj![
        "public_key" => Json::hex(&r.public_key),
        "salt" => Json::hex(&r.salt),
        "seq" => u64s(r.seq),
        "value" => Json::hex(&r.value),
        "signature" => Json::hex(&r.signature),
        "key" => Json::hex(&r.key()),
        "verifies" => Json::Bool(r.verify()),
    ]
}

pub fn decode(b: &[u8]) -> Decoded {
    let m = wire::decode(b).map_err(|e| format!("{} {e:?}", e.name()))?;
    let fields = match &m {
        Message::Get { rid, kind, key, token, offset, len } => obj![
            "type" => Json::str("GET"), "request_id" => u64s(*rid), "kind" => Json::num(*kind as u64), "key" => Json::hex(key),
            "token" => Json::hex(token), "offset" => Json::num(u64::from(*offset)), "padding" => Json::num((len - wire::GET_LEN) as u64),
        ],
        Message::Reply { rid, truncated, kind, key, token, observed, total, nodes, records } => obj![
            "type" => Json::str("REPLY"), "request_id" => u64s(*rid), "truncated" => Json::Bool(*truncated), "kind" => Json::num(*kind as u64),
            "key" => Json::hex(key), "token" => Json::hex(token), "observed" => Json::hex(observed), "total" => Json::num(u64::from(*total)),
            "nodes" => Json::Arr(nodes.iter().map(|(id, a)| obj!["id" => Json::hex(id), "addr" => Json::hex(a)]).collect()),
            "records" => Json::Arr(records.iter().map(|r| Json::hex(r)).collect()),
        ],
        Message::Announce { rid, token, topic, record } => obj![
            "type" => Json::str("ANNOUNCE"), "request_id" => u64s(*rid), "token" => Json::hex(token), "topic" => Json::hex(topic),
            "record" => announce_json(record, topic),
        ],
        Message::Put { rid, token, value } => obj![
            "type" => Json::str("PUT"), "request_id" => u64s(*rid), "token" => Json::hex(token), "value" => Json::hex(value),
        ],
        Message::PutMutable { rid, token, record, cas } => obj![
            "type" => Json::str("PUT_MUTABLE"), "request_id" => u64s(*rid), "token" => Json::hex(token), "record" => mutable_json(record),
            "cas" => cas.map_or(Json::Null, u64s),
        ],
        Message::Ack { rid, status } => obj!["type" => Json::str("ACK"), "request_id" => u64s(*rid), "status" => Json::str(status.name())],
        Message::Notify { topic, record } => obj!["type" => Json::str("NOTIFY"), "topic" => Json::hex(topic), "record" => announce_json(record, topic)],
    };
    Ok((fields, m.encode()))
}

fn signed_announce(topic: &[u8; 32], ttl: u32) -> AnnounceRecord {
    let id = Identity::from_seed(&[0x21; 32]);
    let addr = deccom_core::wire::encode_raw_addr("192.0.2.1:4000".parse().unwrap());
    let identity: [u8; 33] = id.public_identity_bytes().try_into().unwrap();
    let signature = id.sign(&AnnounceRecord::message(topic, &addr, 1_700_000_000_000, ttl)).unwrap();
    AnnounceRecord { identity, addr, seq: 1_700_000_000_000, ttl, signature }
}

fn signed_mutable() -> MutableRecord {
    let id = Identity::from_seed(&[0x22; 32]);
    let public_key: [u8; 32] = id.public_identity_bytes()[1..].try_into().unwrap();
    let signature = id.sign(&MutableRecord::message(b"salt", 7, b"hello")).unwrap();
    MutableRecord { public_key, salt: b"salt".to_vec(), seq: 7, value: b"hello".to_vec(), signature }
}

pub fn valid() -> Valid {
    let topic = [0x31u8; 32];
    let token = [0x41u8; 16];
    let observed = deccom_core::wire::encode_raw_addr("198.51.100.7:5000".parse().unwrap());
    let node = ([0x51u8; 32], deccom_core::wire::encode_raw_addr("203.0.113.9:6000".parse().unwrap()));
    let ann = signed_announce(&topic, 1200);
    let mut ann_bytes = Vec::new();
    ann.encode_into(&mut ann_bytes);
    let head = ReplyHead { rid: 0x0102_0304_0506_0708, kind: Kind::Topic, key: &topic, token: &token, observed: &observed, total: 1 };
    let reply = wire::encode_reply(&head, &[node], &[&ann_bytes], 1400).unwrap();
    let m = signed_mutable();
    let mut m_bytes = Vec::new();
    m.encode_into(&mut m_bytes);
    let mkey = m.key();
    let mhead = ReplyHead { rid: 2, kind: Kind::Mutable, key: &mkey, token: &token, observed: &observed, total: 1 };
    let mreply = wire::encode_reply(&mhead, &[], &[&m_bytes], 1400).unwrap();
    vec![
        ("GET topic without padding", wire::encode_get(0x0102_0304_0506_0708, Kind::Topic, &topic, &[0; 16], 0, 0)),
        ("GET immutable padded to 100 bytes, with a token and offset 3", wire::encode_get(5, Kind::Immutable, &topic, &token, 3, 100)),
        ("REPLY topic with one node and one announce record", reply),
        ("REPLY mutable with its record", mreply),
        ("ANNOUNCE", wire::encode_announce(9, &token, &topic, &ann)),
        ("ANNOUNCE withdrawal (ttl 0)", wire::encode_announce(10, &token, &topic, &signed_announce(&topic, 0))),
        ("PUT", wire::encode_put(11, &token, b"immutable value")),
        ("PUT_MUTABLE without cas", wire::encode_put_mutable(12, &token, &m, None)),
        ("PUT_MUTABLE with cas 6", wire::encode_put_mutable(13, &token, &m, Some(6))),
        ("ACK ok", wire::encode_ack(14, Status::Ok)),
        ("ACK cas mismatch", wire::encode_ack(15, Status::CasMismatch)),
        ("NOTIFY", wire::encode_notify(&topic, &ann)),
    ]
}

pub fn invalid() -> Invalid {
    let token = [0x41u8; 16];
    let ack = wire::encode_ack(1, Status::Ok);
    let put = wire::encode_put(1, &token, b"v");
    let get = wire::encode_get(1, Kind::Topic, &[0; 32], &[0; 16], 0, 0);
    let mut version = ack.clone();
    version[0] = 2;
    let mut kind = ack.clone();
    kind[1] = 8;
    let mut status = ack.clone();
    status[10] = 9;
    let mut trailing = ack.clone();
    trailing.push(0);
    let mut get_kind = get.clone();
    get_kind[10] = 4;
    let mut big = wire::encode_put(1, &token, &[0; 1000]);
    big[26..28].copy_from_slice(&1001u16.to_be_bytes());
    big.push(0);
    let mut short_put = put.clone();
    short_put.pop();
    let head = ReplyHead { rid: 1, kind: Kind::Topic, key: &[0; 32], token: &token, observed: &[0; 18], total: 0 };
    let reply = wire::encode_reply(&head, &[], &[], 1400).unwrap();
    let mut flags = reply.clone();
    flags[10] = 0x02;
    let mut nodes = reply.clone();
    let at = wire::REPLY_FIXED - 2;
    nodes[at] = 21;
    let m = signed_mutable();
    let mut cas = wire::encode_put_mutable(1, &token, &m, None);
    *cas.last_mut().unwrap() = 2;
    let mut ann = wire::encode_announce(1, &token, &[0; 32], &signed_announce(&[0; 32], 1));
    ann[26 + 32 + 1] = 0x02; // identity kind: a name
    vec![
        ("empty", vec![], "dropped, counted"),
        ("version 2", version, "dropped, counted"),
        ("unknown type 8", kind, "dropped, counted"),
        ("ACK with unknown status 9", status, "dropped, counted"),
        ("ACK with a trailing byte", trailing, "dropped, counted"),
        ("GET of unknown kind 4", get_kind, "dropped, counted"),
        ("GET cut short", get[..40].to_vec(), "dropped, counted"),
        ("PUT of 1001 bytes", big, "dropped, counted"),
        ("PUT one byte short", short_put, "dropped, counted"),
        ("REPLY with unknown flag 0x02", flags, "dropped, counted"),
        ("REPLY with 21 nodes", nodes, "dropped, counted"),
        ("PUT_MUTABLE with cas flag 2", cas, "dropped, counted"),
        ("ANNOUNCE whose identity is not Ed25519", ann, "dropped, counted"),
    ]
}
