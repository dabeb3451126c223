//! Stateful target for the reliable-UDP [`Endpoint`]: two endpoints A and B exchange messages over
//! a network the input controls (drop, duplicate, reorder, corrupt), while the input also injects
//! arbitrary and replayed-then-edited datagrams from the peer's address and from strangers, moves
//! the virtual clock and makes endpoints forget peers.
//!
//! Checked: no panic; bounded reassembly memory; every message B delivers from A is a message A
//! sent, at most as often as it was sent (until something forged or a restart makes a repeat
//! legitimate); a message A sees acknowledged (`Sent`) was delivered by B, unless datagrams were
//! forged (reliable UDP has no authentication: run it under Noise for that).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use deccom_core::rudp::wire as rwire;
use deccom_core::rudp::{Config, Endpoint, Event, MessageId};

use crate::input::Input;

/// B's handle for A, and A's for B; 3 and 4 are strangers.
const PEER_A: u8 = 1;
const PEER_B: u8 = 2;

struct Net {
    now: Instant,
    a: Endpoint<u8>,
    b: Endpoint<u8>,
    /// Datagrams held back for reordering: (to B?, from, bytes).
    held: VecDeque<(bool, u8, Vec<u8>)>,
    /// The last datagrams put on the wire, for replays.
    history: VecDeque<(bool, Vec<u8>)>,
    /// Per message content: (sent by A, delivered by B).
    ledger: HashMap<Vec<u8>, (u32, u32)>,
    ids: HashMap<MessageId, Vec<u8>>,
    /// Something that B cannot tell from A's datagrams reached B or A (forged, corrupted, or a
    /// restart): from then on only memory and panics are checked for the A→B stream.
    forged: bool,
    counter: u64,
    max_reassembly_total: usize,
}

fn config(input: &mut Input<'_>) -> Config {
    let c = input.u8();
    Config {
        max_segment_payload: 16 + usize::from(input.u8()) * 4,
        max_message_size: 4096 + u64::from(c & 0x0f) * 1024,
        max_reassembly_per_peer: 6000 + usize::from(c >> 4) * 1024,
        max_reassembly_total: 12_000,
        max_outgoing_per_peer: 16,
        initial_rtt: Duration::from_millis(50),
        min_rto: Duration::from_millis(2),
        max_rto: Duration::from_secs(2),
        peer_timeout: Duration::from_secs(3),
        partial_timeout: Duration::from_secs(6),
        initial_window: 8,
        max_window: 256,
        receive_window: 64,
        max_ack_delay: Duration::from_millis(2),
        ack_every: u32::from(input.u8() % 16) + 1,
        max_peers: 3,
    }
}

impl Net {
    fn new(input: &mut Input<'_>) -> Net {
        let now = Instant::now();
        let ca = config(input);
        let cb = config(input);
        let max_reassembly_total = cb.max_reassembly_total.max(ca.max_reassembly_total);
        Net {
            now,
            a: Endpoint::new(ca, now, 0xa11ce),
            b: Endpoint::new(cb, now, 0xb0b),
            held: VecDeque::new(),
            history: VecDeque::new(),
            ledger: HashMap::new(),
            ids: HashMap::new(),
            forged: false,
            counter: 0,
            max_reassembly_total,
        }
    }

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
    }

    /// Moves up to `budget` datagrams, each one's fate chosen by the input.
    fn pump(&mut self, input: &mut Input<'_>, budget: usize) {
        let mut buf = Vec::new();
        for _ in 0..budget {
            let from_a = self.a.poll_transmit(self.now, &mut buf);
            let (to_b, dest) = match from_a {
                Some(d) => (true, d),
                None => match self.b.poll_transmit(self.now, &mut buf) {
                    Some(d) => (false, d),
                    None => return,
                },
            };
            // Datagrams to strangers are lost.
            if (to_b && dest != PEER_B) || (!to_b && dest != PEER_A) {
                continue;
            }
            let from = if to_b { PEER_A } else { PEER_B };
            let fate = if input.is_empty() { 0 } else { input.u8() };
            match fate % 8 {
                0..=3 => self.deliver(to_b, from, &buf.clone()),
                4 => {}
                5 => {
                    let copy = buf.clone();
                    self.deliver(to_b, from, &copy);
                    self.deliver(to_b, from, &copy);
                }
                6 => self.held.push_back((to_b, from, buf.clone())),
                _ => {
                    let mut bad = buf.clone();
                    let at = usize::from(input.u16()) % bad.len().max(1);
                    if let Some(b) = bad.get_mut(at) {
                        *b ^= input.u8() | 1;
                        self.forged = true;
                    }
                    self.deliver(to_b, from, &bad);
                }
            }
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let Some(ev) = self.b.poll_event() {
            if let Event::Delivered {
                peer: PEER_A,
                message,
            } = ev
            {
                let entry = self.ledger.entry(message).or_insert((0, 0));
                entry.1 += 1;
                if !self.forged {
                    assert!(entry.0 > 0, "B delivered a message A never sent");
                    assert!(
                        entry.1 <= entry.0,
                        "B delivered a message more often than A sent it"
                    );
                }
            }
        }
        while let Some(ev) = self.a.poll_event() {
            if let Event::Sent { peer: PEER_B, id } = ev {
                let message = self.ids.get(&id).expect("Sent names a message of ours");
                if !self.forged {
                    let (_, delivered) = self.ledger.get(message).copied().unwrap_or((0, 0));
                    assert!(
                        delivered > 0,
                        "A saw {id:?} acknowledged but B never delivered it"
                    );
                }
            }
        }
        assert!(self.a.reassembly_bytes() <= self.max_reassembly_total);
        assert!(self.b.reassembly_bytes() <= self.max_reassembly_total);
    }

    fn message(&mut self, input: &mut Input<'_>) -> Vec<u8> {
        let len = usize::from(input.u16() % 3000);
        self.counter += 1;
        let tag = self.counter.to_be_bytes();
        (0..len).map(|i| tag[i % 8] ^ (i / 8) as u8).collect()
    }
}

/// Runs one scenario.
pub fn rudp_endpoint(data: &[u8]) {
    let mut input = Input::new(data);
    let mut net = Net::new(&mut input);
    let mut steps = 0;
    while !input.is_empty() && steps < 48 {
        steps += 1;
        match input.u8() % 12 {
            0 | 1 => {
                let m = net.message(&mut input);
                if let Ok(id) = net.a.send(net.now, PEER_B, m.clone()) {
                    net.ledger.entry(m.clone()).or_insert((0, 0)).0 += 1;
                    net.ids.insert(id, m);
                }
            }
            2 => {
                let m = net.message(&mut input);
                let to = if input.bool() { PEER_A } else { 3 };
                let _ = net.b.send(net.now, to, m);
            }
            3 | 4 => {
                let budget = usize::from(input.u8() % 64) + 1;
                net.pump(&mut input, budget);
            }
            5 => {
                // Release held datagrams newest first.
                while let Some((to_b, from, bytes)) = net.held.pop_back() {
                    net.deliver(to_b, from, &bytes);
                }
            }
            6 => {
                // A datagram made up by the input, from the peer's address or a stranger.
                let to_b = input.bool();
                let from = match input.u8() % 3 {
                    0 => 3,
                    1 => 4,
                    _ if to_b => PEER_A,
                    _ => PEER_B,
                };
                let mut bytes = input.chunk16(1400).to_vec();
                if input.bool() {
                    // A forger computes the checksum (it detects corruption, not forgery).
                    rwire::append_checksum(&mut bytes, 0);
                }
                net.forged = true;
                net.deliver(to_b, from, &bytes);
            }
            7 => {
                // A datagram seen before, edited at one 8-byte field (epochs, numbers, lengths).
                if net.history.is_empty() {
                    continue;
                }
                let i = usize::from(input.u8()) % net.history.len();
                let (to_b, mut bytes) = net.history[i].clone();
                let at = usize::from(input.u8() % 48);
                let word = input.u64().to_be_bytes();
                for (k, w) in word.iter().enumerate().take(usize::from(input.u8() % 9)) {
                    if let Some(b) = bytes.get_mut(at + k) {
                        *b = *w;
                    }
                }
                if bytes.len() > rwire::CHECKSUM_LEN && input.bool() {
                    // The edit with a valid checksum again: it reaches the fields behind it.
                    bytes.truncate(bytes.len() - rwire::CHECKSUM_LEN);
                    rwire::append_checksum(&mut bytes, 0);
                }
                let from = if input.bool() {
                    3
                } else if to_b {
                    PEER_A
                } else {
                    PEER_B
                };
                net.forged = true;
                net.deliver(to_b, from, &bytes);
            }
            8 | 9 => {
                let ms = match input.u8() % 4 {
                    0 => u64::from(input.u8() % 8),
                    1 => u64::from(input.u8()),
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
            }
            10 => {
                // A restart seen from one side: a repeat delivery becomes legitimate.
                net.forged = true;
                if input.bool() {
                    net.a.forget_peer(net.now, PEER_B);
                } else {
                    net.b.forget_peer(net.now, PEER_A);
                }
            }
            _ => {
                let _ = (
                    net.a.stats(),
                    net.b.stats(),
                    net.a.in_flight(PEER_B),
                    net.a.rtt(PEER_B),
                );
                let _ = net.a.congestion_window(PEER_B);
            }
        }
        net.drain();
    }
    // Let the exchange finish over a clean network: no panic on the way.
    for _ in 0..3 {
        net.pump(&mut Input::new(&[]), 128);
        net.now += Duration::from_millis(20);
        net.a.handle_timeout(net.now);
        net.b.handle_timeout(net.now);
    }
    net.drain();
}
