//! The virtual network the Noise pair tests share: two endpoints with latency, seeded loss, and
//! hooks to drop, tamper with or capture datagrams.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use deccom_core::noise::{Config, Endpoint, Event};
use deccom_core::Identity;

pub const A: u32 = 1;
pub const B: u32 = 2;

/// What the filter does with one datagram in flight.
pub enum Verdict {
    Deliver,
    Drop,
}

pub type Filter = Box<dyn FnMut(u32, u32, &mut Vec<u8>) -> Verdict>;

pub struct Pair {
    pub now: Instant,
    pub a: Endpoint<u32>,
    pub b: Endpoint<u32>,
    pub id_a: Identity,
    pub id_b: Identity,
    pub latency: Duration,
    pub loss: f64,
    pub rng: u64,
    /// (deliver at, from, to, bytes)
    pub in_flight: Vec<(Instant, u32, u32, Vec<u8>)>,
    pub filter: Option<Filter>,
    pub events_a: Vec<Event<u32>>,
    pub events_b: Vec<Event<u32>>,
    pub sent: usize,
}

impl Pair {
    pub fn new(ca: Config, cb: Config) -> Pair {
        let now = Instant::now();
        let id_a = Identity::from_seed(&[0xa1; 32]);
        let id_b = Identity::from_seed(&[0xb2; 32]);
        Pair {
            a: Endpoint::new(&id_a, ca, now, [1; 32]).unwrap(),
            b: Endpoint::new(&id_b, cb, now, [2; 32]).unwrap(),
            id_a,
            id_b,
            now,
            latency: Duration::from_millis(10),
            loss: 0.0,
            rng: 0x9e37_79b9_7f4a_7c15,
            in_flight: Vec::new(),
            filter: None,
            events_a: Vec::new(),
            events_b: Vec::new(),
            sent: 0,
        }
    }

    pub fn default() -> Pair {
        Pair::new(Config::default(), Config::default())
    }

    pub fn rand(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn ep(&mut self, who: u32) -> &mut Endpoint<u32> {
        if who == A {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Moves queued datagrams into the network and queued events into the logs.
    pub fn collect(&mut self) {
        let mut buf = Vec::new();
        for from in [A, B] {
            while let Some(to) = self.ep(from).poll_transmit(&mut buf) {
                let to = if to == A || to == B { to } else { continue };
                self.sent += 1;
                if self.loss > 0.0 && self.rand() < self.loss {
                    continue;
                }
                let mut bytes = buf.clone();
                if let Some(f) = self.filter.as_mut() {
                    if let Verdict::Drop = f(from, to, &mut bytes) {
                        continue;
                    }
                }
                self.in_flight
                    .push((self.now + self.latency, from, to, bytes));
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
    }

    /// Runs for `dt` of virtual time.
    pub fn run(&mut self, dt: Duration) {
        let end = self.now + dt;
        loop {
            self.collect();
            let next_delivery = self.in_flight.iter().map(|d| d.0).min();
            let next_timer = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next = [next_delivery, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    let mut due = Vec::new();
                    self.in_flight.retain(|d| {
                        if d.0 <= now {
                            due.push(d.clone());
                            false
                        } else {
                            true
                        }
                    });
                    for (_, from, to, bytes) in due {
                        self.ep(to).handle_datagram(now, from, &bytes);
                    }
                    self.a.handle_timeout(now);
                    self.b.handle_timeout(now);
                }
                _ => {
                    self.now = end;
                    self.a.handle_timeout(end);
                    self.b.handle_timeout(end);
                    self.collect();
                    return;
                }
            }
        }
    }

    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.run(Duration::from_millis(5));
        }
        done(self)
    }

    pub fn authenticated(&self) -> bool {
        self.a.is_authenticated(B) == Some(self.id_b.id())
            && self.b.is_authenticated(A) == Some(self.id_a.id())
    }

    pub fn messages(events: &[Event<u32>]) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn send(&mut self, from: u32, msg: &[u8]) {
        let now = self.now;
        let to = if from == A { B } else { A };
        self.ep(from).send(now, to, msg).unwrap();
    }

    pub fn handshake(&mut self) {
        let now = self.now;
        self.a.connect(now, B, None);
        assert!(
            self.run_until(Duration::from_secs(2), Pair::authenticated),
            "handshake did not complete: {:?} / {:?}",
            self.a.stats(),
            self.b.stats()
        );
        self.run(Duration::from_millis(100));
    }
}

pub fn connected(events: &[Event<u32>]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count()
}
