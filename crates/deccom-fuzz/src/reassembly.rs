//! Stateful target for the frame [`Reassembly`]: a sequence of chunks from a few peers, clock
//! steps, timeouts and dropped peers, checked against a simple model of what must come out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deccom_core::noise::frame::{self, Frame, Pushed, Reassembly, ReassemblyLimits};

use crate::input::Input;

const LIMITS: ReassemblyLimits = ReassemblyLimits {
    max_message: 4096,
    max_per_peer: 6000,
    max_total: 10_000,
    timeout: Duration::from_secs(1),
};

/// A stored partial message in the model: its tag, total, chunks and last progress.
struct Model {
    tag: u8,
    total: u32,
    chunks: Vec<(u32, Vec<u8>)>,
    last: Instant,
}

/// Runs one sequence of operations.
pub fn reassembly(data: &[u8]) {
    let mut input = Input::new(data);
    let start = Instant::now();
    let mut now = start;
    let mut r: Reassembly<u8> = Reassembly::new(LIMITS);
    let mut model: HashMap<(u8, u32), Model> = HashMap::new();
    let mut steps = 0;
    while !input.is_empty() && steps < 96 {
        steps += 1;
        match input.u8() % 8 {
            // A raw frame (as a peer would send it).
            0 | 1 => {
                let peer = input.u8() % 4;
                let bytes = input.chunk16(4200);
                if let Ok(f) = frame::decode(bytes) {
                    push(&mut r, &mut model, now, peer, f);
                }
            }
            // A structured chunk: small ids and totals so that chunks of one message meet.
            2..=4 => {
                let peer = input.u8() % 4;
                let tag = input.u8() % 2;
                let id = u32::from(input.u8() % 4);
                let total = u32::from(input.u16() % 4200);
                let offset = u32::from(input.u16() % 4200);
                let len = usize::from(input.u16() % 600);
                let body: Vec<u8> = (0..len).map(|i| (i as u8) ^ input.u8()).collect();
                let f = Frame::Chunk {
                    tag,
                    id,
                    total,
                    offset,
                    data: &body,
                };
                push(&mut r, &mut model, now, peer, f);
            }
            5 => {
                now += Duration::from_millis(u64::from(input.u16()));
                let expired = r.handle_timeout(now);
                let before = model.len();
                model.retain(|_, m| now < m.last + LIMITS.timeout);
                assert_eq!(expired, before - model.len());
            }
            6 => {
                let peer = input.u8() % 4;
                let n = r.drop_peer(peer);
                let before = model.len();
                model.retain(|&(p, _), _| p != peer);
                assert_eq!(n, before - model.len());
            }
            _ => {
                // A whole message completes at once, whatever is stored.
                let tag = input.u8();
                let body = input.chunk8();
                let got = r.push(now, input.u8() % 4, Frame::Whole { tag, data: body });
                assert_eq!(
                    got,
                    Pushed::Complete {
                        tag,
                        message: body.to_vec()
                    }
                );
            }
        }
        let held: u64 = model.values().map(|m| u64::from(m.total)).sum();
        assert_eq!(r.bytes(), held, "bytes held match the partial messages");
        assert!(r.bytes() <= LIMITS.max_total);
        for peer in 0..4u8 {
            let per: u64 = model
                .iter()
                .filter(|((p, _), _)| *p == peer)
                .map(|(_, m)| u64::from(m.total))
                .sum();
            assert!(per <= LIMITS.max_per_peer);
        }
        assert_eq!(
            r.poll_timeout(),
            model.values().map(|m| m.last + LIMITS.timeout).min()
        );
    }
}

fn push(
    r: &mut Reassembly<u8>,
    model: &mut HashMap<(u8, u32), Model>,
    now: Instant,
    peer: u8,
    f: Frame<'_>,
) {
    let got = r.push(now, peer, f);
    let Frame::Chunk {
        tag,
        id,
        total,
        offset,
        data,
    } = f
    else {
        let Frame::Whole { tag, data } = f else {
            unreachable!()
        };
        assert_eq!(
            got,
            Pushed::Complete {
                tag,
                message: data.to_vec()
            }
        );
        return;
    };
    let key = (peer, id);
    match got {
        Pushed::Dropped(_) => {
            // Nothing stored: the model is unchanged, except that a refused first chunk of a
            // message leaves no partial behind.
        }
        Pushed::Stored | Pushed::Complete { .. } => {
            let m = model.entry(key).or_insert_with(|| Model {
                tag,
                total,
                chunks: Vec::new(),
                last: now,
            });
            assert_eq!(
                (m.tag, m.total),
                (tag, total),
                "a chunk joins only its own message"
            );
            let end = offset + data.len() as u32;
            for (o, d) in &m.chunks {
                assert!(
                    end <= *o || o + d.len() as u32 <= offset,
                    "stored chunks never overlap"
                );
            }
            m.chunks.push((offset, data.to_vec()));
            m.last = now;
            let received: u64 = m.chunks.iter().map(|(_, d)| d.len() as u64).sum();
            match got {
                Pushed::Complete { tag: t, message } => {
                    assert_eq!(received, u64::from(total));
                    assert_eq!(t, tag);
                    let mut expect = vec![0u8; total as usize];
                    for (o, d) in &m.chunks {
                        expect[*o as usize..*o as usize + d.len()].copy_from_slice(d);
                    }
                    assert_eq!(message, expect, "a completed message is exactly its chunks");
                    model.remove(&key);
                }
                _ => assert!(received < u64::from(total)),
            }
        }
    }
}
