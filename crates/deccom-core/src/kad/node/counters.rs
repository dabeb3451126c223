//! What a node counts: one slot per name, read together by the caller's statistics.

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// A counter of [`super::KadNode`].
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($name),* }

        /// The counters' names, by [`Counter`] index.
        pub const COUNTER_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

counters!(
    // Those counted for most datagrams first: one cache line of a node holds them.
    received,
    find_node_received,
    nodes_sent,
    nodes_sent_unverified,
    pings_answered,
    queries_sent,
    pings_sent,
    verify_skipped_full,
    dropped_malformed,
    dropped_malformed_truncated,
    dropped_malformed_version,
    dropped_malformed_unknown_type,
    dropped_malformed_unknown_flags,
    dropped_malformed_too_many_nodes,
    dropped_malformed_trailing_bytes,
    dropped_malformed_record,
    dropped_reply_rate,
    dropped_unsolicited,
    dropped_identity_mismatch,
    dropped_wrong_sender,
    dropped_self,
    find_node_authenticated,
    find_node_ephemeral,
    dropped_amplification,
    nodes_truncated,
    dropped_verify_busy,
    dropped_approval_busy,
    dropped_too_many_requests,
    dropped_unvalidated_budget,
    request_timeouts,
    bucket_full,
    eviction_pings,
    peers_added,
    peers_removed,
    lookups,
    lookups_ended_early,
    claims_verified,
    claims_unverified,
    lookups_found,
    lookups_found_unverified,
    lookups_not_found,
    bootstrap_attempts,
    dropped_peer_events,
    joined,
    bootstrap_retries,
    bootstrap_failed,
    self_lookups,
    refresh_lookups,
    refresh_skipped_covered,
    settle_lookups,
);

/// The number of counters.
pub const COUNTERS: usize = COUNTER_NAMES.len();

/// The malformed-message counter of a wire error's reason.
#[must_use]
pub fn malformed(reason: &str) -> Counter {
    match reason {
        "truncated" => Counter::dropped_malformed_truncated,
        "version" => Counter::dropped_malformed_version,
        "unknown_type" => Counter::dropped_malformed_unknown_type,
        "unknown_flags" => Counter::dropped_malformed_unknown_flags,
        "too_many_nodes" => Counter::dropped_malformed_too_many_nodes,
        "trailing_bytes" => Counter::dropped_malformed_trailing_bytes,
        _ => Counter::dropped_malformed_record,
    }
}
