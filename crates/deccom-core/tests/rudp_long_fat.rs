//! A long fat path in virtual time: 100 Mbit/s, 100 ms round trip (a bandwidth-delay product of
//! 1.25 MB, about 1,040 datagrams) and a bottleneck buffer of a quarter of that, no random loss.
//! Once the window outgrows path + buffer the tail drops a run of datagrams; what matters is how
//! fast the window comes back. CUBIC returns near the old window within seconds whatever the
//! RTT; a Reno-style controller (one datagram per round trip after halving) needs hundreds of
//! round trips, and leaves the link idle meanwhile.

mod rudp_net;


use deccom_core::rudp::Config;
use rudp_net::{transfer, Link, MS};

#[test]
fn a_long_fat_path_stays_full_after_congestion() {
    let link = Link {
        latency: 50 * MS,
        bandwidth: Some(12_500_000),
        buffer: Some(312_500),
        ..Link::default()
    };
    let bytes = 256 << 20;
    let net = transfer(Config::default(), link, bytes, 7);
    let s = net.nodes[0].stats();
    let line = bytes as f64 / 12_500_000.0;
    let took = net.elapsed().as_secs_f64();
    let utilization = line / took;
    println!(
        "256 MiB over 100 Mbit/s, 100 ms RTT, 0.25 BDP buffer: {took:.1} s (line rate {line:.1} s): {:.0} % utilization; {} drops at the bottleneck, {} congestion events, {} retransmits",
        utilization * 100.0,
        net.buffer_drops.len(),
        s.congestion_events,
        s.retransmits
    );
    assert!(s.congestion_events >= 1, "the buffer must overflow at least once for this to test anything: {s:?}");
    assert!(utilization > 0.85, "{:.0} % of the link used: {s:?}", utilization * 100.0);
}
