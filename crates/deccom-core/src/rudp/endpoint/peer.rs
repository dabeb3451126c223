//! Per-peer connection state: the [`Peer`] record, epochs (ours, the peer's, the retired ones),
//! what a restart of the peer resets, and failing every outgoing message at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use super::hasher::FxBuild;
use super::send::{OutMsg, SentPacket};
use super::{Config, Event, FailReason, Stats};
use crate::rudp::recovery::{Cubic, Pacer, RttEstimator};
use crate::rudp::recv::{DeliveredSet, Partial, PnRanges};

/// Previous epochs of a peer remembered to drop their late datagrams.
const RETIRED_EPOCHS: usize = 4;

/// Per-peer connection state.
#[derive(Debug)]
pub(super) struct Peer {
    /// Our epoch for this connection (random, never 0).
    pub(super) epoch: u64,
    pub(super) peer_epoch: Option<u64>,
    pub(super) retired: [u64; RETIRED_EPOCHS],
    pub(super) retired_pos: usize,
    /// The peer echoed our epoch under its current epoch (it receives what we send): it gets a
    /// full share of reassembly memory and can announce a restart.
    pub(super) proven: bool,
    /// Tell this other epoch ours (a DATA under an unproven epoch arrived).
    pub(super) announce_to: Option<u64>,
    pub(super) last_seen: Instant,
    pub(super) in_active: bool,

    // --- sending ---
    pub(super) next_pn: u64,
    pub(super) sent: VecDeque<SentPacket>,
    /// Packet number of `sent[0]`; `sent_base + sent.len() == next_pn`.
    pub(super) sent_base: u64,
    pub(super) in_flight: u32,
    pub(super) max_in_flight: u32,
    pub(super) largest_acked: Option<u64>,
    /// Packet number of the last packet declared lost, and the length of the run of consecutive
    /// lost packet numbers it ends (loss differentiation, see
    /// [`LOSS_RUN_CONGESTION`](super::LOSS_RUN_CONGESTION)).
    pub(super) last_lost_pn: u64,
    pub(super) lost_run: u64,
    pub(super) loss_time: Option<Instant>,
    pub(super) last_ack_eliciting: Option<Instant>,
    pub(super) pto_count: u32,
    pub(super) probes: u8,
    pub(super) rtt: RttEstimator,
    pub(super) cc: Cubic,
    pub(super) pacer: Pacer,
    pub(super) pacing_until: Option<Instant>,
    pub(super) peer_window: u32,
    /// Largest DATA payload received from the peer this session: the window advertised to it
    /// shrinks when its datagrams are larger than ours (see `Peer::advertised_window`).
    pub(super) largest_payload: usize,
    pub(super) out: BTreeMap<u64, OutMsg>,
    pub(super) next_wire_id: u64,
    pub(super) floor: u64,
    pub(super) pending: VecDeque<u64>,
    pub(super) rotation: VecDeque<u64>,
    pub(super) quantum: u32,
    pub(super) retx: VecDeque<(u64, u32)>,
    /// Admission retries of messages the receiver had no room for: `(retry at, msg)`.
    pub(super) deferred: BTreeSet<(Instant, u64)>,
    pub(super) last_progress: Instant,
    /// A busy refusal arrived since the last progress (the peer timeout then fails the
    /// messages with [`FailReason::Busy`]).
    pub(super) busy_since_progress: bool,

    // --- receiving ---
    pub(super) recv_pns: PnRanges,
    pub(super) largest_recv_time: Instant,
    pub(super) unacked: u32,
    pub(super) ack_deadline: Option<Instant>,
    pub(super) ack_now: bool,
    pub(super) announce: bool,
    pub(super) refusals: VecDeque<(u64, u8)>,
    pub(super) abandoned: VecDeque<u64>,
    pub(super) delivered: DeliveredSet,
    pub(super) partials: HashMap<u64, Partial, FxBuild>,
    /// Bytes charged for this peer's partial messages.
    pub(super) reassembly: usize,
    /// Payload bytes stored in them.
    pub(super) stored: usize,
    /// Sum of their lengths (address space, not memory).
    pub(super) announced: u64,
    /// Sum of their full costs ([`Partial::full_cost`]): what they will be charged once complete.
    pub(super) committed: usize,
    pub(super) partial_check: Option<Instant>,
}

/// Result of checking a datagram's source epoch.
pub(super) enum EpochCheck {
    Same,
    Retired,
    /// A new epoch that echoes ours: the peer restarted.
    Restarted,
    /// A new epoch that does not echo ours: nothing changes.
    Unproven,
}

/// Endpoint-wide state that per-peer code needs next to the peer itself.
pub(super) struct Cx<'a, P> {
    pub(super) config: &'a Config,
    pub(super) stats: &'a mut Stats,
    pub(super) events: &'a mut VecDeque<Event<P>>,
    pub(super) reassembly_total: &'a mut usize,
    /// Of `reassembly_total`: bytes charged to peers that are not proven.
    pub(super) unproven_total: &'a mut usize,
    /// Pre-fault hints: `(address, length)` of reassembly memory charged ahead of the writer.
    pub(super) prefault: &'a mut VecDeque<(usize, usize)>,
    pub(super) max_ack_ranges: usize,
}

impl Peer {
    pub(super) fn new(config: &Config, now: Instant, epoch: u64) -> Self {
        Peer {
            epoch,
            peer_epoch: None,
            retired: [0; RETIRED_EPOCHS],
            retired_pos: 0,
            proven: false,
            announce_to: None,
            last_seen: now,
            in_active: false,
            next_pn: 0,
            sent: VecDeque::new(),
            sent_base: 0,
            in_flight: 0,
            max_in_flight: 0,
            largest_acked: None,
            last_lost_pn: u64::MAX,
            lost_run: 0,
            loss_time: None,
            last_ack_eliciting: None,
            pto_count: 0,
            probes: 0,
            rtt: RttEstimator::new(config.initial_rtt),
            cc: Cubic::new(config.initial_window, config.max_window),
            pacer: Pacer::new(now),
            pacing_until: None,
            peer_window: config.initial_window.max(1),
            largest_payload: 0,
            out: BTreeMap::new(),
            next_wire_id: 0,
            floor: 0,
            pending: VecDeque::new(),
            rotation: VecDeque::new(),
            quantum: 0,
            retx: VecDeque::new(),
            deferred: BTreeSet::new(),
            last_progress: now,
            busy_since_progress: false,
            recv_pns: PnRanges::default(),
            largest_recv_time: now,
            unacked: 0,
            ack_deadline: None,
            ack_now: false,
            announce: false,
            refusals: VecDeque::new(),
            abandoned: VecDeque::new(),
            delivered: DeliveredSet::default(),
            partials: HashMap::default(),
            reassembly: 0,
            stored: 0,
            announced: 0,
            committed: 0,
            partial_check: None,
        }
    }

    /// Checks a datagram's source epoch `src` (it was addressed to `dst`). The first epoch of
    /// a peer is taken from a DATA, or from an ACK that echoes ours; after that the epoch only
    /// changes for a datagram that echoes ours (`dst == self.epoch`), which a sender that never
    /// received anything from us cannot produce.
    pub(super) fn check_epoch(&mut self, src: u64, dst: u64, is_data: bool) -> EpochCheck {
        match self.peer_epoch {
            Some(e) if e == src => EpochCheck::Same,
            _ if self.retired.contains(&src) => EpochCheck::Retired,
            None if is_data || dst == self.epoch => {
                self.peer_epoch = Some(src);
                EpochCheck::Same
            }
            Some(_) if dst == self.epoch => EpochCheck::Restarted,
            _ => EpochCheck::Unproven,
        }
    }

    /// The peer echoed our epoch: its charges leave the pool of unproven peers.
    pub(super) fn mark_proven<P>(&mut self, cx: &mut Cx<'_, P>) {
        if !self.proven {
            self.proven = true;
            *cx.unproven_total -= self.reassembly;
        }
    }

    /// Adds `bytes` to this peer's charge (and the endpoint's totals).
    pub(super) fn charge<P>(&mut self, bytes: usize, cx: &mut Cx<'_, P>) {
        self.reassembly += bytes;
        *cx.reassembly_total += bytes;
        if !self.proven {
            *cx.unproven_total += bytes;
        }
    }

    /// Frees a partial message's charge.
    pub(super) fn release<P>(&mut self, part: &Partial, cx: &mut Cx<'_, P>) {
        self.reassembly -= part.charged;
        self.stored -= part.stored;
        self.announced -= part.data.len() as u64;
        self.committed -= part.full();
        *cx.reassembly_total -= part.charged;
        if !self.proven {
            *cx.unproven_total -= part.charged;
        }
    }

    pub(super) fn refresh_floor(&mut self) {
        self.floor = self.out.keys().next().copied().unwrap_or(self.next_wire_id);
    }

    fn clear_send_state(&mut self) {
        self.sent.clear();
        self.sent_base = self.next_pn;
        self.in_flight = 0;
        self.max_in_flight = 0;
        self.loss_time = None;
        self.pto_count = 0;
        self.probes = 0;
        self.retx.clear();
        self.deferred.clear();
        self.pacing_until = None;
        self.quantum = 0;
        self.rotation.clear();
        self.pending.clear();
    }

    pub(super) fn drop_partials<P>(&mut self, cx: &mut Cx<'_, P>) {
        *cx.reassembly_total -= self.reassembly;
        if !self.proven {
            *cx.unproven_total -= self.reassembly;
        }
        self.reassembly = 0;
        self.stored = 0;
        self.announced = 0;
        self.committed = 0;
        self.partials.clear();
        self.partial_check = None;
    }

    /// The peer restarted (new epoch): its receive state is gone, and every unfinished message
    /// to it starts over from its first segment (same `MessageId`, new packet numbers).
    pub(super) fn on_peer_restart<P>(&mut self, now: Instant, new_epoch: u64, cx: &mut Cx<'_, P>) {
        let config = cx.config;
        if let Some(old) = self.peer_epoch {
            self.retired[self.retired_pos] = old;
            self.retired_pos = (self.retired_pos + 1) % RETIRED_EPOCHS;
        }
        self.peer_epoch = Some(new_epoch);
        self.drop_partials(cx);
        // The new epoch proves itself with the datagram that announced it; charges start at 0.
        self.proven = false;
        self.announce_to = None;
        self.delivered = DeliveredSet::default();
        self.recv_pns = PnRanges::default();
        self.refusals.clear();
        self.abandoned.clear();
        self.unacked = 0;
        self.ack_deadline = None;
        self.ack_now = false;
        self.clear_send_state();
        self.largest_acked = None;
        self.cc.reset();
        self.peer_window = config.initial_window.max(1);
        self.largest_payload = 0;
        for m in self.out.values_mut() {
            m.restart();
        }
        self.pending.extend(self.out.keys().copied());
        self.last_progress = now;
        self.busy_since_progress = false;
    }

    /// With no message outstanding, whatever is still in flight carries acknowledged (or given
    /// up) data only: stop tracking it so that no timer stays armed for it.
    pub(super) fn stop_tracking_if_idle(&mut self) {
        if self.out.is_empty() {
            self.retx.clear();
            self.sent.clear();
            self.sent_base = self.next_pn;
            self.in_flight = 0;
            self.probes = 0;
        }
    }

    /// Gives up the outgoing message `id` (see [`Endpoint::cancel`](super::Endpoint::cancel)):
    /// its bytes are released and none of its segments is sent again. Its packets in flight
    /// stay counted until acknowledged or lost (they occupy the path). The floor advances past
    /// it once every older message is finished, which tells the receiver (with our next DATA)
    /// to free its partial copy. Returns false when no such message is outstanding.
    pub(super) fn cancel(&mut self, id: super::MessageId) -> bool {
        let Some(wire_id) = self
            .out
            .iter()
            .find_map(|(&w, m)| (m.id == id).then_some(w))
        else {
            return false;
        };
        self.out.remove(&wire_id);
        // Still waiting for admission: ids below the floor must not stay there.
        self.pending.retain(|&w| w != wire_id);
        // Queued retransmissions, rotation and admission retries of the
        // message are skipped lazily when they come up (the message is gone).
        self.refresh_floor();
        self.stop_tracking_if_idle();
        true
    }

    pub(super) fn fail_all<P: Copy>(&mut self, peer: P, reason: FailReason, cx: &mut Cx<'_, P>) {
        for m in std::mem::take(&mut self.out).into_values() {
            cx.stats.messages_failed += 1;
            cx.events.push_back(Event::Failed {
                peer,
                id: m.id,
                reason,
            });
        }
        self.clear_send_state();
        self.refresh_floor();
    }
}
