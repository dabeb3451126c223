//! Sans-IO tests of stage composition: two pipelines wired back to back in virtual time.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deccom_core::impair::ImpairConfig;
use deccom_core::identity::Identity;
use deccom_core::noise::{Config as NoiseConfig, Endpoint as NoiseEndpoint};
use deccom_core::rudp::Config as RudpConfig;

use super::{Pipeline, DONE_SENT};
use crate::stages::delay::DelayStage;
use crate::stages::faults::FaultStage;
use crate::stages::noise::NoiseStage;
use crate::stages::rudp::RudpStage;
use crate::stages::{Direction, Sink, Stats};

const RUDP: u8 = 2;
const NOISE: u8 = 4;

#[derive(Default)]
struct TestSink {
  datagrams: Vec<(SocketAddr, Vec<u8>)>,
  messages: Vec<(SocketAddr, Vec<u8>)>,
  completions: Vec<(f64, f64)>,
  progress: Vec<(f64, f64)>,
  delay_peers: Vec<(u32, SocketAddr)>,
  connected: Vec<SocketAddr>,
  failed: Vec<(SocketAddr, u32)>,
}

impl Sink for TestSink {
  fn datagram(&mut self, from: SocketAddr, tag: u8, body: &[u8]) {
    let mut d = vec![tag];
    d.extend_from_slice(body);
    self.datagrams.push((from, d));
  }
  fn empty(&mut self, from: SocketAddr) {
    self.datagrams.push((from, Vec::new()));
  }
  fn message(&mut self, from: SocketAddr, message: Vec<u8>) {
    self.messages.push((from, message));
  }
  fn completion(&mut self, id: f64, status: f64) {
    self.completions.push((id, status));
  }
  fn progress(&mut self, id: f64, acked: f64) {
    self.progress.push((id, acked));
  }
  fn congested(&self) -> bool {
    false
  }
  fn delay_peer(&mut self, direction: u32, peer: SocketAddr) {
    self.delay_peers.push((direction, peer));
  }
  fn noise_connected(&mut self, peer: SocketAddr, _id: &[u8; 32], _identity: &[u8]) {
    self.connected.push(peer);
  }
  fn noise_failed(&mut self, peer: SocketAddr, kind: u32) {
    self.failed.push((peer, kind));
  }
}

/// One end: its address, pipeline and what reached "JavaScript".
struct End {
  addr: SocketAddr,
  p: Pipeline,
  sink: TestSink,
}

fn noise_stage(seed: u8, now: Instant) -> NoiseStage {
  let id = Identity::from_seed(&[seed; 32]);
  let cfg = NoiseConfig { max_pending_per_peer: 4096, ..NoiseConfig::default() };
  NoiseStage::new(NOISE, NoiseEndpoint::new(&id, cfg, now, [seed; 32]).unwrap())
}

fn rudp_stage(seed: u64, now: Instant) -> RudpStage {
  let mut cfg = RudpConfig::default();
  cfg.max_message_size += 1;
  RudpStage::new(RUDP, cfg, deccom_core::rudp::LOOPBACK_SEGMENT_PAYLOAD, now, seed)
}

fn stat(p: &Pipeline, name: &str) -> f64 {
  let mut s = Stats::default();
  p.stats(&mut s);
  let v = s.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
  v.unwrap_or_else(|| panic!("no counter {name}"))
}

/// Runs both ends in virtual time (1 ms steps) until `done` or `limit` steps; every datagram on
/// the wire is recorded.
fn run(a: &mut End, b: &mut End, t: &mut Instant, limit: usize, wire: &mut Vec<Vec<u8>>, done: impl Fn(&End, &End) -> bool) -> bool {
  for _ in 0..limit {
    if done(a, b) {
      return true;
    }
    *t += Duration::from_millis(1);
    step(a, b, *t, wire);
    step(b, a, *t, wire);
  }
  done(a, b)
}

/// `from` drives; what it sends reaches `to`.
fn step(from: &mut End, to: &mut End, t: Instant, wire: &mut Vec<Vec<u8>>) {
  let out = RefCell::new(Vec::new());
  let send = |data: &[u8], lens: &[u32], dests: &[SocketAddr]| {
    let mut off = 0;
    for (l, d) in lens.iter().zip(dests) {
      out.borrow_mut().push((*d, data[off..off + *l as usize].to_vec()));
      off += *l as usize;
    }
  };
  from.p.drive(t, &send, &mut from.sink);
  for (dest, d) in out.into_inner() {
    assert_eq!(dest, to.addr);
    wire.push(d.clone());
    to.p.receive(t, from.addr, &d, &mut to.sink);
  }
  to.p.end_of_burst(t, &mut to.sink);
}

fn ends(t: Instant, below: impl Fn(&mut Pipeline, u64)) -> (End, End) {
  let mut a = End { addr: "10.0.0.1:1".parse().unwrap(), p: Pipeline::default(), sink: TestSink::default() };
  let mut b = End { addr: "10.0.0.2:2".parse().unwrap(), p: Pipeline::default(), sink: TestSink::default() };
  for (i, e) in [&mut a, &mut b].into_iter().enumerate() {
    below(&mut e.p, i as u64);
    e.p.push(Box::new(noise_stage(i as u8 + 1, t)));
    e.p.push(Box::new(rudp_stage(i as u64 + 7, t)));
  }
  (a, b)
}

fn send_message(a: &mut End, to: SocketAddr, t: Instant, id: f64, message: Vec<u8>) {
  assert!(a.p.with_stage::<NoiseStage>(t, &mut a.sink, |n, up| n.connect(t, to, None, up)));
  assert!(a.p.with_stage::<RudpStage>(t, &mut a.sink, |r, up| r.send(t, id, to, message.into(), false, up)));
}

fn message(n: usize) -> Vec<u8> {
  let mut m: Vec<u8> = (0..n).map(|i| (i * 7 + i / 251) as u8).collect();
  m[0] = 0;
  m
}

#[test]
fn rudp_over_noise_stages_deliver_a_sealed_message_end_to_end() {
  let mut t = Instant::now();
  let (mut a, mut b) = ends(t, |_, _| {});
  let m = message(100_000);
  send_message(&mut a, b.addr, t, 41.0, m.clone());
  let mut wire = Vec::new();
  let ok = run(&mut a, &mut b, &mut t, 2_000, &mut wire, |a, b| !b.sink.messages.is_empty() && !a.sink.completions.is_empty());
  assert!(ok, "no delivery: b got {:?} messages, a {:?}", b.sink.messages.len(), a.sink.completions);
  assert_eq!(b.sink.messages, vec![(a.addr, m)]);
  assert_eq!(a.sink.completions, vec![(41.0, DONE_SENT)], "the completion carries the caller's id");
  assert_eq!((a.sink.connected.clone(), b.sink.connected.clone()), (vec![b.addr], vec![a.addr]));
  // Every datagram on the wire is Noise; no reliable-UDP datagram left unsealed, and the
  // plaintext is nowhere on the wire.
  assert!(wire.len() > 80, "100 kB take many segments, got {}", wire.len());
  assert!(wire.iter().all(|d| d[0] == NOISE), "an unsealed datagram left");
  assert!(!wire.iter().any(|d| d.windows(64).any(|w| w == &b.sink.messages[0].1[1000..1064])));
  assert!(b.sink.datagrams.is_empty(), "nothing passes up as a plain datagram");
  assert_eq!(stat(&a.p, "rudp_messages_sent"), 1.0);
  assert_eq!(stat(&b.p, "rudp_messages_delivered"), 1.0);
  assert_eq!(stat(&b.p, "noise_dropped_unprotected"), 0.0);
  assert_eq!(stat(&b.p, "noise_dropped_malformed_frame"), 0.0);
}

#[test]
fn noise_stage_drops_unsealed_reliable_datagrams_and_passes_others_up() {
  let t = Instant::now();
  let (_, mut b) = ends(t, |_, _| {});
  let from: SocketAddr = "10.0.0.9:9".parse().unwrap();
  b.p.receive(t, from, &[RUDP, 1, 2, 3], &mut b.sink);
  b.p.receive(t, from, &[0, 5, 6], &mut b.sink);
  b.p.receive(t, from, &[], &mut b.sink);
  b.p.receive(t, from, &[NOISE, 0xff], &mut b.sink);
  assert_eq!(b.sink.datagrams, vec![(from, vec![0, 5, 6]), (from, vec![])]);
  assert_eq!(stat(&b.p, "noise_dropped_unprotected"), 1.0);
  assert_eq!(stat(&b.p, "rudp_datagrams_received"), 0.0);
  assert!(b.sink.messages.is_empty());
}

#[test]
fn composed_faults_and_delay_below_noise_still_deliver() {
  let mut t = Instant::now();
  // Receive faults (10 % loss, duplicates, reordering), a send-side delay line and send-side
  // reordering
  // under Noise and reliable UDP, on both ends.
  let (mut a, mut b) = ends(t, |p, i| {
    let cfg = ImpairConfig { drop: 0.1, duplicate: 0.05, reorder: 0.05, reorder_delay: 20.0, ..ImpairConfig::default() };
    p.push(Box::new(FaultStage::new(Direction::Receive, cfg, 100 + i, t)));
    p.push(Box::new(DelayStage::new(Direction::Send, 1 << 24)));
    let reorder = ImpairConfig { reorder: 0.05, reorder_delay: 20.0, ..ImpairConfig::default() };
    p.push(Box::new(FaultStage::new(Direction::Send, reorder, 200 + i, t)));
  });
  let m = message(30_000);
  send_message(&mut a, b.addr, t, 7.0, m.clone());
  let mut wire = Vec::new();
  // Links are asked for lazily: answer every request with 5 ms.
  for _ in 0..200 {
    run(&mut a, &mut b, &mut t, 50, &mut wire, |a, b| !b.sink.messages.is_empty() && !a.sink.completions.is_empty());
    for e in [&mut a, &mut b] {
      for (dir, peer) in std::mem::take(&mut e.sink.delay_peers) {
        assert_eq!(dir, 1);
        assert!(e.p.find::<DelayStage>(|d| d.direction == Direction::Send).is_some());
        e.p.find::<DelayStage>(|_| true).unwrap().set_link(peer, deccom_core::delay::Link { latency: Duration::from_millis(5), bytes_per_sec: None }, t);
      }
    }
    if !b.sink.messages.is_empty() && !a.sink.completions.is_empty() {
      break;
    }
  }
  let dump = |p: &Pipeline| {
    let mut s = Stats::default();
    p.stats(&mut s);
    s.iter().filter(|(_, v)| *v != 0.0).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
  };
  assert!(b.sink.messages.len() == 1 && b.sink.messages[0] == (a.addr, m), "a: {} {:?}\nb: {} {:?}", dump(&a.p), a.sink.failed, dump(&b.p), b.sink.failed);
  assert_eq!(a.sink.completions, vec![(7.0, DONE_SENT)]);
  assert!(stat(&b.p, "faults_rx_dropped") > 0.0, "faults ran");
  assert!(stat(&a.p, "delay_tx_released") > 0.0, "the delay line ran");
  assert!(stat(&a.p, "rudp_retransmits") > 0.0, "losses were repaired by the reliable stage");
  assert!(wire.iter().all(|d| d[0] == NOISE));
}

#[test]
fn a_datagram_held_by_send_side_reordering_leaves_when_due() {
  let t = Instant::now();
  let mut p = Pipeline::default();
  let cfg = ImpairConfig { reorder: 1.0, reorder_delay: 20.0, ..ImpairConfig::default() };
  p.push(Box::new(FaultStage::new(Direction::Send, cfg, 3, t)));
  let to: SocketAddr = "10.0.0.2:2".parse().unwrap();
  let out = RefCell::new(Vec::new());
  let send = |data: &[u8], _: &[u32], _: &[SocketAddr]| out.borrow_mut().push(data.to_vec());
  p.send(t, to, &[0, 1, 2], &send);
  let mut sink = TestSink::default();
  p.drive(t, &send, &mut sink);
  assert!(out.borrow().is_empty(), "held back by reordering");
  let due = p.next_timeout().expect("the held datagram asks for a wake-up");
  assert!(due > t && due <= t + Duration::from_millis(20), "within the reorder delay");
  p.drive(due, &send, &mut sink);
  assert_eq!(out.into_inner(), vec![vec![0, 1, 2]]);
  assert_eq!(p.next_timeout(), None, "nothing left to wake for");
  assert_eq!(stat(&p, "faults_tx_reordered"), 1.0);
}

#[test]
fn rudp_stage_reports_progress_and_cancels_by_the_callers_id() {
  let mut t = Instant::now();
  let (mut a, mut b) = ends(t, |_, _| {});
  let big = message(4 << 20);
  let small = message(50_000);
  assert!(a.p.with_stage::<NoiseStage>(t, &mut a.sink, |n, up| n.connect(t, b.addr, None, up)));
  assert!(a.p.with_stage::<RudpStage>(t, &mut a.sink, |r, up| r.send(t, 5.0, b.addr, big.into(), true, up)));
  let mut wire = Vec::new();
  assert!(run(&mut a, &mut b, &mut t, 5_000, &mut wire, |a, _| a.sink.progress.len() >= 2), "no progress reported");
  assert!(a.sink.progress.iter().all(|(id, _)| *id == 5.0), "reported under the caller's id");
  assert!(a.sink.progress.windows(2).all(|w| w[0].1 < w[1].1));
  assert!(a.p.with_stage::<RudpStage>(t, &mut a.sink, |r, _| r.cancel(t, 5.0)));
  let reports = a.sink.progress.len();
  assert!(a.p.with_stage::<RudpStage>(t, &mut a.sink, |r, up| r.send(t, 6.0, b.addr, small.clone().into(), false, up)));
  assert!(run(&mut a, &mut b, &mut t, 5_000, &mut wire, |a, b| !a.sink.completions.is_empty() && stat(&b.p, "rudp_reassembly_bytes") == 0.0));
  assert_eq!(a.sink.completions, vec![(6.0, DONE_SENT)], "no completion for the cancelled message");
  assert_eq!(a.sink.progress.len(), reports, "no progress after cancel, none for a send that did not ask");
  assert_eq!(b.sink.messages, vec![(a.addr, small)]);
  assert_eq!(stat(&a.p, "rudp_messages_cancelled"), 1.0);
  assert_eq!(stat(&b.p, "rudp_partials_abandoned"), 1.0);
  // Cancelling again, or an id never sent, does nothing.
  assert!(a.p.with_stage::<RudpStage>(t, &mut a.sink, |r, _| r.cancel(t, 5.0)));
  assert!(a.p.with_stage::<RudpStage>(t, &mut a.sink, |r, _| r.cancel(t, 77.0)));
  assert_eq!(stat(&a.p, "rudp_messages_cancelled"), 1.0);
}
