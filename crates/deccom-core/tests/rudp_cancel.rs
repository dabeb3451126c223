//! Reliable UDP in virtual time: progress reports of a message in flight
//! (`Endpoint::send_with_progress`, `Event::Progress`) and giving a message up
//! (`Endpoint::cancel`), on the shared network of `rudp_net`.

use std::sync::Arc;
use std::time::Duration;

use deccom_core::rudp::{
    Config, MessageId, Payload, PROGRESS_FRACTION, PROGRESS_INTERVAL, PROGRESS_MAX_STEP,
};

mod rudp_net;
use rudp_net::*;

/// A message body shared with the test, to observe when the endpoint lets go of it.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The progress reports of `id` at node 0, with their times.
fn progress(net: &Net, id: MessageId) -> Vec<(Duration, u64)> {
    net.events[0]
        .iter()
        .filter_map(|(t, e)| match e {
            Ev::Progress {
                id: i, acked_bytes, ..
            } if *i == id => Some((*t - net.base, *acked_bytes)),
            _ => None,
        })
        .collect()
}

fn sent(net: &Net, id: MessageId) -> bool {
    net.count(0, |e| matches!(e, Ev::Sent { id: i, .. } if *i == id)) == 1
}

fn finished(net: &Net, id: MessageId) -> bool {
    net.count(
        0,
        |e| matches!(e, Ev::Sent { id: i, .. } | Ev::Failed { id: i, .. } if *i == id),
    ) > 0
}

/// A link slow enough that a message of a few MiB is in flight for a while.
fn slow_link(loss: f64) -> Link {
    Link {
        latency: 10 * MS,
        bandwidth: Some(20_000_000),
        loss,
        reorder: loss,
        ..Link::default()
    }
}

#[test]
fn progress_is_monotone_rate_limited_and_ends_at_total() {
    for (seed, loss) in [(1, 0.0), (2, 0.02), (3, 0.05)] {
        let mut net = Net::pair(Config::default(), seed, slow_link(loss));
        let len = 4 << 20;
        let msg = message(seed, len);
        let now = net.now;
        let id = net.nodes[0]
            .send_with_progress(now, 1, msg.clone())
            .unwrap();
        let quiet = net.send(0, 1, message(100 + seed, 300_000));
        assert!(
            net.run_until(Duration::from_secs(60), |n| sent(n, id) && sent(n, quiet)),
            "seed {seed}: not sent"
        );
        assert_eq!(net.delivered(1).len(), 2);
        assert!(net.delivered(1).contains(&msg));

        let reports = progress(&net, id);
        let total = len as u64;
        assert_eq!(
            reports.last().map(|r| r.1),
            Some(total),
            "seed {seed}: ends at total"
        );
        let acked: Vec<u64> = reports.iter().map(|r| r.1).collect();
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: not strictly increasing: {acked:?}"
        );
        let step = total.div_ceil(PROGRESS_FRACTION).min(PROGRESS_MAX_STEP);
        assert!(acked
            .windows(2)
            .all(|w| w[1] - w[0] >= step || w[1] == total));
        assert!(acked[0] >= step);
        // Bounded: at most one report per step, and intermediate reports PROGRESS_INTERVAL apart.
        assert!(
            reports.len() as u64 <= total / step + 1,
            "{} reports",
            reports.len()
        );
        let intermediate = &reports[..reports.len() - 1];
        assert!(
            intermediate
                .windows(2)
                .all(|w| w[1].0 - w[0].0 >= PROGRESS_INTERVAL),
            "seed {seed}: reports closer than the interval"
        );
        assert!(
            reports.len() >= 8,
            "seed {seed}: only {} reports",
            reports.len()
        );
        // The final report comes before (in the same drain as) the Sent event.
        let pos_last = net.events[0]
            .iter()
            .position(|(_, e)| matches!(e, Ev::Progress { id: i, acked_bytes, .. } if *i == id && *acked_bytes == total))
            .unwrap();
        let pos_sent = net.events[0]
            .iter()
            .position(|(_, e)| matches!(e, Ev::Sent { id: i, .. } if *i == id))
            .unwrap();
        assert!(pos_last < pos_sent);
        // A message sent without progress reporting gets none.
        assert!(progress(&net, quiet).is_empty());
    }
}

#[test]
fn progress_of_small_and_empty_messages() {
    let mut net = Net::pair(Config::default(), 4, Link::default());
    let now = net.now;
    let empty = net.nodes[0].send_with_progress(now, 1, Vec::new()).unwrap();
    let one = net.nodes[0].send_with_progress(now, 1, vec![9]).unwrap();
    let three = net.nodes[0]
        .send_with_progress(now, 1, message(5, 3000))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(5), |n| sent(n, empty)
        && sent(n, one)
        && sent(n, three)));
    assert_eq!(
        progress(&net, empty)
            .iter()
            .map(|r| r.1)
            .collect::<Vec<_>>(),
        vec![0]
    );
    assert_eq!(
        progress(&net, one).iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(progress(&net, three).last().map(|r| r.1), Some(3000));
}

#[test]
fn cancel_mid_message_frees_sender_memory_and_others_complete() {
    for (seed, loss) in [(11, 0.0), (12, 0.03)] {
        let mut net = Net::pair(Config::default(), seed, slow_link(loss));
        let body = Arc::new(message(seed, 8 << 20));
        let now = net.now;
        let big = net.nodes[0]
            .send_with_progress(now, 1, Payload::with_prefix(7, Shared(body.clone())))
            .unwrap();
        let other = net.send(0, 1, message(200 + seed, 500_000));
        assert!(net.run_until(Duration::from_secs(30), |n| progress(n, big)
            .last()
            .is_some_and(|r| r.1 >= 2 << 20)));
        assert!(!finished(&net, big));
        assert!(
            net.nodes[1].reassembly_bytes() > 0,
            "the receiver holds a partial copy"
        );
        assert_eq!(Arc::strong_count(&body), 2);

        let now = net.now;
        assert!(net.nodes[0].cancel(now, 1, big));
        assert_eq!(
            Arc::strong_count(&body),
            1,
            "seed {seed}: the sender let go of the bytes"
        );
        assert_eq!(net.nodes[0].stats().messages_cancelled, 1);
        let reports = progress(&net, big).len();

        // The other message completes; then one more message tells the receiver to free its copy.
        assert!(net.run_until(Duration::from_secs(30), |n| sent(n, other)));
        let later = net.send(0, 1, message(300 + seed, 10_000));
        assert!(net.run_until(Duration::from_secs(30), |n| sent(n, later)
            && n.nodes[1].reassembly_bytes() == 0));
        assert!(
            !net.run_until(Duration::from_secs(60), |n| finished(n, big)),
            "no Sent/Failed for a cancelled message"
        );
        assert_eq!(
            progress(&net, big).len(),
            reports,
            "no progress after cancel"
        );

        let delivered = net.delivered(1);
        assert_eq!(
            delivered.len(),
            2,
            "seed {seed}: the cancelled message is not delivered"
        );
        assert!(delivered.contains(&message(200 + seed, 500_000)));
        assert!(delivered.contains(&message(300 + seed, 10_000)));
        let s = net.nodes[1].stats();
        assert_eq!(
            s.partials_abandoned, 1,
            "seed {seed}: freed because the sender gave it up"
        );
        assert_eq!(s.partial_timeouts, 0);
        assert_eq!(s.reassembly_bytes, 0);
        assert_eq!(net.nodes[0].stats().in_flight, 0);
        assert_eq!(
            net.nodes[0].poll_timeout(),
            None,
            "seed {seed}: the sender is idle"
        );
    }
}

#[test]
fn cancel_stops_transmissions_and_the_receiver_frees_the_partial_on_its_timer() {
    let config = Config {
        partial_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut net = Net::pair(config, 21, slow_link(0.02));
    let now = net.now;
    let big = net.nodes[0]
        .send_with_progress(now, 1, message(21, 6 << 20))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(30), |n| progress(n, big)
        .last()
        .is_some_and(|r| r.1 >= 1 << 20)));
    let now = net.now;
    assert!(net.nodes[0].cancel(now, 1, big));
    let data_at_cancel = net.nodes[0].stats().data_sent;
    // Nothing else to send: the packets already in flight drain, nothing new leaves.
    assert!(net.run_until(Duration::from_secs(2), |n| n.nodes[0]
        .poll_timeout()
        .is_none()
        && n.queue.is_empty()));
    assert_eq!(
        net.nodes[0].stats().data_sent,
        data_at_cancel,
        "no DATA after cancel"
    );
    assert!(
        net.nodes[1].reassembly_bytes() > 0,
        "no DATA told the receiver yet"
    );
    // The receiver's own bounded timer frees it.
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.nodes[1].reassembly_bytes()
            == 0)
    );
    assert_eq!(net.nodes[1].stats().partial_timeouts, 1);
    assert_eq!(net.nodes[0].stats().data_sent, data_at_cancel);
    assert_eq!(net.nodes[1].stats().messages_delivered, 0);
}

#[test]
fn cancel_of_a_younger_message_waits_for_the_floor() {
    // Two large messages; the younger one is cancelled. The floor passes it only once the older
    // one is acknowledged, and the receiver frees its copy with the next DATA after that.
    let mut net = Net::pair(Config::default(), 31, slow_link(0.01));
    let older = net.send(0, 1, message(31, 3 << 20));
    let now = net.now;
    let younger = net.nodes[0]
        .send_with_progress(now, 1, message(32, 3 << 20))
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(30), |n| progress(n, younger)
            .last()
            .is_some_and(|r| r.1 >= 512 << 10))
    );
    let now = net.now;
    assert!(net.nodes[0].cancel(now, 1, younger));
    assert!(net.run_until(Duration::from_secs(30), |n| sent(n, older)));
    let next = net.send(0, 1, message(33, 2000));
    assert!(net.run_until(Duration::from_secs(30), |n| sent(n, next)
        && n.nodes[1].reassembly_bytes() == 0));
    assert_eq!(net.nodes[1].stats().partials_abandoned, 1);
    assert_eq!(
        net.delivered(1),
        vec![message(31, 3 << 20), message(33, 2000)]
    );
    assert!(!finished(&net, younger));
}

#[test]
fn cancel_of_a_message_waiting_for_admission() {
    // More messages than the id window admits: the last ones wait (pending). Cancelling one of
    // them and then the oldest moves the floor past the waiting ones; everything else completes.
    let config = Config {
        max_outgoing_per_peer: 40_000,
        ..Config::default()
    };
    let mut net = Net::pair(config, 41, Link::default());
    let first = net.send(0, 1, message(1, 1 << 20));
    let ids: Vec<MessageId> = (0..32_770).map(|i| net.send(0, 1, vec![i as u8])).collect();
    let now = net.now;
    let waiting = ids[ids.len() - 1];
    assert!(net.nodes[0].cancel(now, 1, waiting));
    assert!(net.nodes[0].cancel(now, 1, first));
    assert!(net.run_until(Duration::from_secs(60), |n| n.nodes[0]
        .stats()
        .messages_sent
        == ids.len() as u64 - 1));
    assert_eq!(net.nodes[0].stats().messages_cancelled, 2);
    assert_eq!(
        net.nodes[1].stats().messages_delivered,
        ids.len() as u64 - 1
    );
    assert!(!finished(&net, waiting) && !finished(&net, first));
}

#[test]
fn cancel_of_unknown_finished_or_cancelled_ids_is_a_no_op() {
    let mut net = Net::pair(Config::default(), 51, Link::default());
    let now = net.now;
    assert!(!net.nodes[0].cancel(now, 1, MessageId(0)), "unknown peer");
    let a = net.send(0, 1, message(51, 50_000));
    let b = net.send(0, 1, message(52, 50_000));
    assert!(!net.nodes[0].cancel(now, 1, MessageId(999)), "unknown id");
    assert!(!net.nodes[0].cancel(now, 2, a), "another peer");
    assert!(net.nodes[0].cancel(now, 1, b));
    assert!(!net.nodes[0].cancel(now, 1, b), "cancelled already");
    assert!(net.run_until(Duration::from_secs(5), |n| sent(n, a)));
    let now = net.now;
    assert!(!net.nodes[0].cancel(now, 1, a), "finished");
    assert_eq!(net.nodes[0].stats().messages_cancelled, 1);
    assert_eq!(net.delivered(1), vec![message(51, 50_000)]);
}
