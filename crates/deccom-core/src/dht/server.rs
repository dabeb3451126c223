//! The answering side of the DHT as one call per datagram ([`Server::handle`]).
//!
//! - **Tokens**: a GET's REPLY carries a token for the requester's address: the first 16 bytes of
//!   BLAKE2b keyed with a secret over the raw address. Tokens of the current and the previous secret
//!   are valid; the caller rotates the secret ([`Server::rotate`], e.g. every 5 minutes), so a token
//!   lives one to two periods. Every put must echo a valid token: a spoofed source never got one,
//!   so it cannot store.
//! - **No amplification**: a REPLY to a GET without a valid token is no larger than the GET (the
//!   requester pads its first GET), and to one with a valid token at most [`MAX_REPLY`] bytes; ACK
//!   (11 bytes) is smaller than any put.
//! - **Lookers**: a requester with a valid token that asked for a topic, or announced on it, is
//!   remembered for `subscribe_ms` (at most `max_subscribers` per topic, `max_topics` topics); when
//!   a new announcer is stored, each of them gets a NOTIFY with its record. Only addresses that
//!   proved themselves get one, and each stored announce yields at most `max_subscribers` of them.

use std::collections::HashMap;

use super::store::{Change, Store, StoreConfig};
use super::wire::{self, DecodeError, Message, ReplyHead};
use super::{Kind, Status, MAX_REPLY, TOKEN_LEN};
use crate::wire::RAW_ADDR_LEN;

/// A raw address (`docs/wire.md#address-encodings`).
pub type RawAddr = [u8; RAW_ADDR_LEN];

/// Limits of a [`Server`].
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// The store's limits.
    pub store: StoreConfig,
    /// Lookers remembered per topic.
    pub max_subscribers: usize,
    /// Topics with lookers, at most.
    pub max_topics: usize,
    /// How long a looker is told of new announcers (ms).
    pub subscribe_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { store: StoreConfig::default(), max_subscribers: 32, max_topics: 4096, subscribe_ms: 60_000 }
    }
}

/// What [`Server::handle`] did with a datagram (the caller counts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A GET answered.
    Answered,
    /// A GET not answered: even the reply's fixed part is larger than the request.
    Amplification,
    /// A record was stored (or renewed).
    Stored(Kind),
    /// An announcer withdrew.
    Withdrawn,
    /// A put was refused (the ACK says why).
    Refused(Status),
    /// The datagram does not parse.
    Malformed(DecodeError),
    /// A REPLY, ACK or NOTIFY: for the requesting side, not the server.
    NotARequest,
}

/// The result of [`Server::handle`].
#[derive(Debug)]
pub struct Handled {
    /// What happened.
    pub event: Event,
    /// The datagram to send back to the source, if any.
    pub reply: Option<Vec<u8>>,
    /// A NOTIFY to send to each of `notify_to`.
    pub notify: Option<Vec<u8>>,
    /// Lookers to notify.
    pub notify_to: Vec<RawAddr>,
}

/// The DHT's answering side (see the module docs).
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    store: Store,
    secrets: [[u8; 32]; 2],
    subs: HashMap<[u8; 32], Vec<(RawAddr, u64)>>,
}

impl Server {
    /// A server whose first token secret is `secret` (random, from the caller).
    #[must_use]
    pub fn new(cfg: ServerConfig, secret: [u8; 32]) -> Server {
        Server { cfg, store: Store::new(cfg.store), secrets: [secret, secret], subs: HashMap::new() }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, mutably (expiry).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Lookers remembered, over all topics.
    #[must_use]
    pub fn subscriber_count(&self) -> usize {
        self.subs.values().map(Vec::len).sum()
    }

    /// A new token secret: tokens of the one before the current stop being valid.
    pub fn rotate(&mut self, secret: [u8; 32]) {
        self.secrets = [secret, self.secrets[0]];
    }

    /// The token of `addr` under the current secret.
    #[must_use]
    pub fn token(&self, addr: &RawAddr) -> [u8; TOKEN_LEN] {
        token_of(&self.secrets[0], addr)
    }

    /// True when `token` is the token of `addr` under the current or the previous secret.
    #[must_use]
    pub fn token_valid(&self, addr: &RawAddr, token: &[u8; TOKEN_LEN]) -> bool {
        if token.iter().all(|&b| b == 0) {
            return false;
        }
        let a = ct_eq(&token_of(&self.secrets[0], addr), token);
        let b = ct_eq(&token_of(&self.secrets[1], addr), token);
        a | b
    }

    /// Removes expired records and lookers; returns the records removed.
    pub fn expire(&mut self, now: u64) -> usize {
        self.subs.retain(|_, l| {
            l.retain(|(_, until)| *until > now);
            !l.is_empty()
        });
        self.store.expire(now)
    }

    fn subscribe(&mut self, topic: &[u8; 32], addr: &RawAddr, now: u64) {
        if !self.subs.contains_key(topic) && self.subs.len() >= self.cfg.max_topics {
            self.subs.retain(|_, l| {
                l.retain(|(_, until)| *until > now);
                !l.is_empty()
            });
            if self.subs.len() >= self.cfg.max_topics {
                return;
            }
        }
        let until = now.saturating_add(self.cfg.subscribe_ms);
        let l = self.subs.entry(*topic).or_default();
        l.retain(|(a, u)| a != addr && *u > now);
        if l.len() >= self.cfg.max_subscribers {
            l.remove(0);
        }
        l.push((*addr, until));
    }

    /// Handles one datagram (without the layer tag) from `source`; `nodes` are the nodes closest
    /// to the key of a GET (the caller takes them from its routing table; ignored otherwise).
    pub fn handle(&mut self, data: &[u8], source: &RawAddr, nodes: &[([u8; 32], RawAddr)], now: u64) -> Handled {
        let mut h = Handled { event: Event::NotARequest, reply: None, notify: None, notify_to: Vec::new() };
        let m = match wire::decode(data) {
            Ok(m) => m,
            Err(e) => {
                h.event = Event::Malformed(e);
                return h;
            }
        };
        let ip: [u8; 16] = source[..16].try_into().expect("18 bytes");
        match m {
            Message::Get { rid, kind, key, token, offset, len } => {
                let valid = self.token_valid(source, &token);
                let max = if valid { MAX_REPLY } else { len.min(MAX_REPLY) };
                let fresh = self.token(source);
                let mut records: Vec<&[u8]> = Vec::new();
                let total = match kind {
                    Kind::Topic => {
                        let all: Vec<&[u8]> = self.store.announces(&key, now).collect();
                        let total = all.len();
                        records.extend(all.into_iter().skip(offset as usize));
                        total
                    }
                    _ => match self.store.value(&key, now) {
                        Some((k, v)) if k == kind => {
                            if offset == 0 {
                                records.push(v);
                            }
                            1
                        }
                        _ => 0,
                    },
                };
                let head = ReplyHead { rid, kind, key: &key, token: &fresh, observed: source, total: total.min(u16::MAX as usize) as u16 };
                h.reply = wire::encode_reply(&head, nodes, &records, max);
                h.event = if h.reply.is_some() { Event::Answered } else { Event::Amplification };
                if valid && kind == Kind::Topic {
                    self.subscribe(&key, source, now);
                }
            }
            Message::Announce { rid, token, topic, record } => {
                let r = if !self.token_valid(source, &token) {
                    Err(Status::BadToken)
                } else if !self.store.allow_put(&ip, now) {
                    Err(Status::RateLimited)
                } else if record.addr != *source {
                    Err(Status::AddressMismatch)
                } else if !record.verify(&topic) {
                    Err(Status::BadSignature)
                } else {
                    self.store.announce(&topic, &record, ip, now)
                };
                match r {
                    Ok(change) => {
                        h.event = if change == Change::Removed { Event::Withdrawn } else { Event::Stored(Kind::Topic) };
                        if change == Change::New {
                            if let Some(l) = self.subs.get(&topic) {
                                h.notify_to = l.iter().filter(|(a, u)| a != source && *u > now).map(|(a, _)| *a).collect();
                            }
                            if !h.notify_to.is_empty() {
                                h.notify = Some(wire::encode_notify(&topic, &record));
                            }
                        }
                        if change != Change::Removed {
                            self.subscribe(&topic, source, now);
                        }
                        h.reply = Some(wire::encode_ack(rid, Status::Ok));
                    }
                    Err(s) => self.refuse(&mut h, rid, s),
                }
            }
            Message::Put { rid, token, value } => {
                let r = if !self.token_valid(source, &token) {
                    Err(Status::BadToken)
                } else if !self.store.allow_put(&ip, now) {
                    Err(Status::RateLimited)
                } else {
                    self.store.put_immutable(value, ip, now)
                };
                self.ack(&mut h, rid, r, Kind::Immutable);
            }
            Message::PutMutable { rid, token, record, cas } => {
                let r = if !self.token_valid(source, &token) {
                    Err(Status::BadToken)
                } else if !self.store.allow_put(&ip, now) {
                    Err(Status::RateLimited)
                } else if !record.verify() {
                    Err(Status::BadSignature)
                } else {
                    self.store.put_mutable(&record, cas, ip, now)
                };
                self.ack(&mut h, rid, r, Kind::Mutable);
            }
            Message::Reply { .. } | Message::Ack { .. } | Message::Notify { .. } => {}
        }
        h
    }

    fn ack(&self, h: &mut Handled, rid: u64, r: Result<[u8; 32], Status>, kind: Kind) {
        match r {
            Ok(_) => {
                h.event = Event::Stored(kind);
                h.reply = Some(wire::encode_ack(rid, Status::Ok));
            }
            Err(s) => self.refuse(h, rid, s),
        }
    }

    fn refuse(&self, h: &mut Handled, rid: u64, s: Status) {
        h.event = Event::Refused(s);
        h.reply = Some(wire::encode_ack(rid, s));
    }
}

fn token_of(secret: &[u8; 32], addr: &RawAddr) -> [u8; TOKEN_LEN] {
    let h = blake2b_simd::Params::new().hash_length(TOKEN_LEN).key(secret).personal(b"deccom-dht-token").hash(addr);
    h.as_bytes().try_into().expect("16 bytes")
}

fn ct_eq(a: &[u8; TOKEN_LEN], b: &[u8; TOKEN_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
