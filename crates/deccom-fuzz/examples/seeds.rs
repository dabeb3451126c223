//! Writes starting inputs for every target into `OUT/<target>/`: the hex inputs of
//! `test-vectors/*.json` (valid and invalid) routed to the decoder they belong to, encoder outputs
//! of deccom-core, and short scenarios for the stateful targets.
//!
//! `cargo run --release --example seeds -- OUT` (run.sh does this, then minimizes with afl-cmin).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use deccom_core::identity::Identity;
use deccom_core::kad::wire::{encode_find_node, Message};
use deccom_core::noise::frame;
use deccom_core::noise::wire as nwire;
use deccom_core::rudp::wire::{self as rwire, AckFrame, DataHeader};
use deccom_core::wire::encode_raw_addr;
use deccom_core::wire::mux::{Hello, MuxFrame};
use deccom_core::PeerRecord;

/// The `"hex": "..."` values of one vector file.
fn hex_values(path: &Path) -> Vec<Vec<u8>> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for part in text.split("\"hex\": \"").skip(1) {
        let hex = part.split('"').next().unwrap_or_default();
        if hex.len() % 2 != 0 {
            continue;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect();
        if let Some(b) = bytes {
            out.push(b);
        }
    }
    out
}

struct Out {
    root: PathBuf,
    n: usize,
}

impl Out {
    fn put(&mut self, target: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("create the seed directory");
        self.n += 1;
        fs::write(dir.join(format!("seed-{:04}", self.n)), bytes).expect("write a seed");
    }
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: seeds OUT"));
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-vectors");
    let mut out = Out { root, n: 0 };

    // Test vectors, routed by format.
    for (file, targets) in [
        ("rudp.json", &["rudp_wire"][..]),
        ("noise.json", &["noise_wire"]),
        ("noise-handshake.json", &["noise_wire"]),
        ("noise-frame.json", &["noise_frame"]),
        ("kad.json", &["kad_wire"]),
        ("dht.json", &["dht_wire"]),
        ("connection.json", &["mux_decode"]),
    ] {
        for v in hex_values(&vectors.join(file)) {
            for t in targets {
                out.put(t, &v);
            }
        }
    }
    for v in hex_values(&vectors.join("peer-record.json")) {
        out.put("records", &[&[0u8][..], &v].concat());
    }
    for v in hex_values(&vectors.join("identity.json")) {
        out.put("records", &[&[1u8][..], &v].concat());
    }

    // Encoder outputs.
    let id = Identity::from_seed(&[7; 32]);
    let v4: SocketAddr = "192.0.2.1:4000".parse().expect("address");
    let v6: SocketAddr = "[2001:db8::1]:65535".parse().expect("address");
    let rec = PeerRecord::new(id.public_identity(), v4)
        .with_tcp_port(4001)
        .with_external(v6);
    out.put("records", &[&[0u8][..], &rec.encode()].concat());
    out.put("records", &[&[2u8][..], &encode_raw_addr(v4)].concat());
    out.put(
        "records",
        &[
            &[3u8, 6][..],
            &[0x20, 1, 0xd, 0xb8],
            &[0; 12],
            &[0xff, 0xff],
        ]
        .concat(),
    );
    out.put(
        "records",
        &[&[4u8][..], id.to_key_file().expect("key file").as_bytes()].concat(),
    );
    let h = DataHeader {
        src_epoch: 9,
        dst_epoch: 8,
        pn: 1,
        msg_id: 5,
        floor_delta: 2,
        msg_len: 10,
        seg_size: 4,
        seg_index: 2,
        ack_now: true,
    };
    let mut d = Vec::new();
    rwire::encode_data_header(&h, &mut d);
    d.extend_from_slice(&[0xaa, 0xbb]);
    out.put("rudp_wire", &d);
    let mut a = AckFrame {
        src_epoch: 3,
        dst_epoch: 4,
        ack_delay_us: 100,
        window: 64,
        count: 2,
        ranges: [(0, 0); rwire::MAX_ACK_RANGES],
        refused_count: 1,
        refused: [(0, 0); rwire::MAX_REFUSALS],
    };
    a.ranges[0] = (10, 20);
    a.ranges[1] = (2, 5);
    a.refused[0] = (7, rwire::REFUSE_BUSY);
    let mut d = Vec::new();
    rwire::encode_ack(&a, &mut d);
    out.put("rudp_wire", &d);
    let mut d = Vec::new();
    nwire::encode_init(7, nwire::Pattern::Ik, Some(&[1; 16]), &[2; 96], &mut d);
    out.put("noise_wire", &d);
    let mut d = Vec::new();
    nwire::encode_cookie(7, &[3; 16], &mut d);
    out.put("noise_wire", &d);
    for i in 0..3 {
        let mut d = Vec::new();
        frame::encode_part(2, 9, &[5; 40], i, 30, &mut d);
        out.put("noise_frame", &d);
    }
    let mut d = Vec::new();
    encode_find_node(1, &[4; 32], &rec, false, 400, &mut d);
    out.put("kad_wire", &d);
    let nodes = Message::Nodes {
        request_id: 2,
        truncated: true,
        sender: rec.clone(),
        nodes: vec![rec.clone()],
    };
    out.put("kad_wire", &nodes.encode());

    for f in [
        MuxFrame::Hello(Hello {
            nonce: [9; 8],
            echo: [1, 2, 3, 4, 5, 6, 7, 8],
            max_streams: 100,
            max_data: 1 << 20,
            stream_window: 1 << 16,
        }),
        MuxFrame::Data {
            stream: 5,
            offset: (1 << 53) - 4,
            fin: true,
            data: b"end",
        },
        MuxFrame::Reset {
            stream: 4,
            code: 7,
            finished: true,
            final_size: 300,
        },
        MuxFrame::Message { data: &[0; 64] },
    ] {
        out.put("mux_decode", &f.to_vec());
    }

    // Round trips: one of each kind (selector byte, then zeros/ones for the fields).
    for kind in 0..8u8 {
        out.put("roundtrip", &[&[kind][..], &[1; 40]].concat());
    }
    // Reassembly: three chunks of one message, a timeout, a whole frame.
    out.put(
        "reassembly",
        &[
            2, 0, 1, 1, 0, 30, 0, 0, 0, 10, 0, //
            2, 0, 1, 1, 0, 30, 0, 10, 0, 10, 0, //
            2, 0, 1, 1, 0, 30, 0, 20, 0, 10, 0, //
            5, 0x07, 0xd0, 6, 1, 7, 3, 3, 1, 2, 3, 0,
        ],
    );
    // Endpoints: configs, then send, pump, time, pump, ... (op bytes as in the targets).
    out.put(
        "rudp_endpoint",
        &[
            0x11, 0x40, 7, 0x22, 0x40, 7, 0, 0x10, 0, 3, 63, 8, 0, 10, 3, 63, 0, 0, 5, 3, 63,
        ],
    );
    out.put(
        "rudp_endpoint",
        &[
            0x11, 0x04, 2, 0x11, 0x04, 2, 0, 0x00, 20, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 1,
            2, 0, 8, 9, 9,
        ],
    );
    out.put(
        "noise_endpoint",
        &[
            2, 3, 0, 2, 3, 0, 0, 0, 1, 0, 40, 5, 20, 5, 20, 1, 0, 10, 5, 20, 10, 2, 0x1f, 0x40,
        ],
    );
    out.put(
        "noise_endpoint",
        &[
            2, 3, 0, 2, 3, 0, 0, 1, 5, 20, 3, 0, 30, 5, 20, 9, 0, 0, 2, 10, 3,
        ],
    );
    out.put(
        "noise_endpoint",
        &[0, 0, 0, 1, 0, 0, 1, 0, 8, 4, 0, 8, 5, 8, 13, 1, 5, 8],
    );
    eprintln!("wrote {} seeds", out.n);
}
