//! Stateful target for the Noise [`Endpoint`]: endpoints A and B handshake and exchange messages
//! over a network the input controls (drop, duplicate, reorder, corrupt), while the input injects
//! arbitrary datagrams and replays of earlier ones (edited, or from another address), moves the
//! virtual clock (retries, rekeys, expiry), closes sessions and changes configurations.
//!
//! Checked: no panic; bounded state; in Encrypt mode every message B delivers from A is a message
//! A sent and is delivered at most once (AEAD and the replay window hold whatever the input
//! forges or replays); only A can become authenticated at B and only B at A.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use deccom_core::identity::{Identity, NodeId};
use deccom_core::noise::{static_public_key, Config, Endpoint, Event, Mode};

use crate::input::Input;

const PEER_A: u8 = 1;
const PEER_B: u8 = 2;
const STRANGER: u8 = 3;

struct Keys {
    a: Identity,
    b: Identity,
    b_static: [u8; 32],
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let a = Identity::from_seed(&[0xa1; 32]);
        let b = Identity::from_seed(&[0xb2; 32]);
        let b_static = static_public_key(&b).expect("an Ed25519 identity has a static key");
        Keys { a, b, b_static }
    })
}

fn config(input: &mut Input<'_>) -> Config {
    let c = input.u8();
    let rekey = input.u8();
    let epoch = input.u8();
    Config {
        mode: match c % 8 {
            0 => Mode::Plaintext,
            1 => Mode::Sign,
            _ => Mode::Encrypt,
        },
        strict: c & 0x08 != 0,
        handshake_timeout: Duration::from_millis(200),
        handshake_retries: 2,
        rekey_after_messages: 1 + u64::from(rekey % 16),
        rekey_after_time: Duration::from_secs(2),
        reject_after_time: Duration::from_secs(5),
        rekey_grace: Duration::from_millis(500),
        replay_window_bits: 128,
        max_sessions: 2,
        max_half_open: 2,
        cookie_threshold: usize::from(c >> 6),
        max_tracked_sources: 2,
        rate_limit_per_peer: 4,
        rate_limit_burst: 4,
        rate_limit_global: 8,
        max_pending_per_peer: 4,
        max_transmit_queue: 16,
        max_events: 16,
        max_message_len: 1200,
        sign_epoch: u64::from(epoch),
        connect_on_unknown_session: c & 0x10 != 0,
        verified_bindings: usize::from(c & 0x20 != 0),
        // Both transport suites (a bit of the rekey byte, whose value uses only 4).
        aes_gcm: Some(rekey & 0x10 != 0),
    }
}

struct Net {
    now: Instant,
    a: Endpoint<u8>,
    b: Endpoint<u8>,
    b_encrypts: bool,
    a_id: NodeId,
    b_id: NodeId,
    held: VecDeque<(bool, u8, Vec<u8>)>,
    history: VecDeque<(bool, Vec<u8>)>,
    /// Per message content that A sent in Encrypt mode: (sent, delivered by B as Encrypt).
    ledger: HashMap<Vec<u8>, (u32, u32)>,
    counter: u64,
}

impl Net {
    fn deliver(&mut self, to_b: bool, from: u8, bytes: &[u8]) {
        if self.history.len() == 16 {
            self.history.pop_front();
        }
        self.history.push_back((to_b, bytes.to_vec()));
        if to_b {
            self.b.handle_datagram(self.now, from, bytes);
        } else {
            self.a.handle_datagram(self.now, from, bytes);
        }
        self.drain();
    }

    fn pump(&mut self, input: &mut Input<'_>, budget: usize) {
        let mut buf = Vec::new();
        for _ in 0..budget {
            let (to_b, dest) = match self.a.poll_transmit(&mut buf) {
                Some(d) => (true, d),
                None => match self.b.poll_transmit(&mut buf) {
                    Some(d) => (false, d),
                    None => return,
                },
            };
            if (to_b && dest != PEER_B) || (!to_b && dest != PEER_A) {
                continue;
            }
            let from = if to_b { PEER_A } else { PEER_B };
            let fate = if input.is_empty() { 0 } else { input.u8() };
            let bytes = buf.clone();
            match fate % 8 {
                0..=3 => self.deliver(to_b, from, &bytes),
                4 => {}
                5 => {
                    self.deliver(to_b, from, &bytes);
                    self.deliver(to_b, from, &bytes);
                }
                6 => self.held.push_back((to_b, from, bytes)),
                _ => {
                    let mut bad = bytes;
                    let at = usize::from(input.u16()) % bad.len().max(1);
                    if let Some(b) = bad.get_mut(at) {
                        *b ^= input.u8() | 1;
                    }
                    self.deliver(to_b, from, &bad);
                }
            }
        }
    }

    fn drain(&mut self) {
        while let Some(ev) = self.b.poll_event() {
            match ev {
                Event::Message {
                    peer,
                    data,
                    mode: Mode::Encrypt,
                } => {
                    assert_eq!(peer, PEER_A, "only A holds a session key with B");
                    let entry = self.ledger.entry(data).or_insert((0, 0));
                    entry.1 += 1;
                    assert!(entry.0 > 0, "B delivered an encrypted message A never sent");
                    assert!(entry.1 <= entry.0, "B delivered an encrypted message twice");
                }
                Event::Connected {
                    peer, remote_id, ..
                } => {
                    assert_eq!(
                        (peer, remote_id),
                        (PEER_A, self.a_id),
                        "only A can authenticate to B"
                    );
                }
                _ => {}
            }
        }
        while let Some(ev) = self.a.poll_event() {
            if let Event::Connected {
                peer, remote_id, ..
            } = ev
            {
                assert_eq!(
                    (peer, remote_id),
                    (PEER_B, self.b_id),
                    "only B can authenticate to A"
                );
            }
        }
        for ep in [&self.a, &self.b] {
            let s = ep.stats();
            assert!(s.sessions <= 2 && s.half_open <= 2 && s.tracked_sources <= 2);
        }
    }

    fn message(&mut self, input: &mut Input<'_>) -> Vec<u8> {
        let len = usize::from(input.u16() % 1300);
        self.counter += 1;
        let tag = self.counter.to_be_bytes();
        (0..len).map(|i| tag[i % 8] ^ (i / 8) as u8).collect()
    }

    /// A sends `m`; remembers it when it goes out encrypted (A in Encrypt mode). Messages of
    /// fewer than 8 bytes are not unique; the ledger counts them per content.
    fn a_sent(&mut self, m: Vec<u8>, encrypted: bool) {
        if encrypted {
            self.ledger.entry(m).or_insert((0, 0)).0 += 1;
        }
    }
}

/// Runs one scenario.
pub fn noise_endpoint(data: &[u8]) {
    let mut input = Input::new(data);
    let now = Instant::now();
    let k = keys();
    let ca = config(&mut input);
    let cb = config(&mut input);
    let a_encrypts = ca.mode == Mode::Encrypt;
    let b_encrypts = cb.mode == Mode::Encrypt;
    let mut net = Net {
        now,
        a: Endpoint::new(&k.a, ca, now, [0xa1; 32]).expect("valid config"),
        b: Endpoint::new(&k.b, cb, now, [0xb2; 32]).expect("valid config"),
        b_encrypts,
        a_id: k.a.id(),
        b_id: k.b.id(),
        held: VecDeque::new(),
        history: VecDeque::new(),
        ledger: HashMap::new(),
        counter: 0,
    };
    let _ = net.b_encrypts;
    let mut steps = 0;
    while !input.is_empty() && steps < 48 {
        steps += 1;
        match input.u8() % 14 {
            0 => {
                let known = match input.u8() % 3 {
                    0 => None,
                    1 => Some(k.b_static),
                    _ => Some(input.array()),
                };
                net.a.connect(net.now, PEER_B, known);
            }
            1 | 2 => {
                let m = net.message(&mut input);
                if net.a.send(net.now, PEER_B, &m).is_ok() {
                    net.a_sent(m, a_encrypts);
                }
            }
            3 => {
                // The in-place path seals straight into the caller's buffer when it can.
                let m = net.message(&mut input);
                let mut buf = vec![0xee; 3];
                buf.extend_from_slice(&[0; deccom_core::noise::wire::TRANSPORT_HEADER_LEN]);
                buf.extend_from_slice(&m);
                match net.a.send_in_place(net.now, PEER_B, &mut buf, 3) {
                    Ok(true) => {
                        assert_eq!(buf[..3], [0xee; 3]);
                        net.a_sent(m, a_encrypts);
                        let d = buf[3..].to_vec();
                        net.deliver(true, PEER_A, &d);
                    }
                    Ok(false) => net.a_sent(m, a_encrypts),
                    Err(_) => {}
                }
            }
            4 => {
                let m = net.message(&mut input);
                let to = if input.bool() { PEER_A } else { STRANGER };
                let _ = net.b.send(net.now, to, &m);
            }
            5 | 6 => {
                let budget = usize::from(input.u8() % 32) + 1;
                net.pump(&mut input, budget);
            }
            7 => {
                while let Some((to_b, from, bytes)) = net.held.pop_back() {
                    net.deliver(to_b, from, &bytes);
                }
            }
            8 => {
                let to_b = input.bool();
                let from = match input.u8() % 3 {
                    0 => STRANGER,
                    _ if to_b => PEER_A,
                    _ => PEER_B,
                };
                let bytes = input.chunk16(1400).to_vec();
                net.deliver(to_b, from, &bytes);
            }
            9 => {
                // Replay: the same bytes again, from the same or another address, maybe edited.
                if net.history.is_empty() {
                    continue;
                }
                let i = usize::from(input.u8()) % net.history.len();
                let (to_b, mut bytes) = net.history[i].clone();
                let edits = input.u8() % 4;
                for _ in 0..edits {
                    let at = usize::from(input.u16()) % bytes.len().max(1);
                    if let Some(b) = bytes.get_mut(at) {
                        *b = input.u8();
                    }
                }
                let from = match input.u8() % 3 {
                    0 => STRANGER,
                    1 => {
                        if to_b {
                            PEER_B
                        } else {
                            PEER_A
                        }
                    }
                    _ => {
                        if to_b {
                            PEER_A
                        } else {
                            PEER_B
                        }
                    }
                };
                net.deliver(to_b, from, &bytes);
            }
            10 | 11 => {
                let ms = match input.u8() % 4 {
                    0 => u64::from(input.u8() % 16),
                    1 => u64::from(input.u8()) * 4,
                    2 => u64::from(input.u16() % 8000),
                    _ => net
                        .a
                        .poll_timeout()
                        .or(net.b.poll_timeout())
                        .map_or(1, |t| {
                            t.saturating_duration_since(net.now).as_millis() as u64
                        }),
                };
                net.now += Duration::from_millis(ms);
                net.a.handle_timeout(net.now);
                net.b.handle_timeout(net.now);
                net.drain();
            }
            12 => {
                if input.bool() {
                    net.a.close(PEER_B);
                } else {
                    net.b.close(PEER_A);
                }
            }
            _ => {
                let who = input.u8();
                let identity = if who & 1 == 0 {
                    k.a.public_identity()
                } else {
                    k.b.public_identity()
                };
                if who & 2 == 0 {
                    net.b
                        .set_peer_identity(net.now, PEER_A + (who >> 7), identity);
                } else {
                    net.a.set_peer_identity(net.now, PEER_B, identity);
                }
                let _ = (
                    net.a.is_authenticated(PEER_B),
                    net.b.remote_identity(PEER_A),
                    net.a.handshake_hash(PEER_B),
                );
            }
        }
        net.drain();
    }
    for _ in 0..2 {
        net.pump(&mut Input::new(&[]), 32);
        net.now += Duration::from_millis(50);
        net.a.handle_timeout(net.now);
        net.b.handle_timeout(net.now);
        net.drain();
    }
}
