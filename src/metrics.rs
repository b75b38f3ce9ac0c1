//! Prometheus metrics in a registry owned by the app (no globals, so tests build their own); does not serve them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A gauge holding seconds (or any fraction).
pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
    pub code: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub result: String,
}

/// One stage of a `conductor_commitUnsafePayload` call: `receive` (request body on the wire),
/// `decode` (finding the block fields and packing the payload; its chunk writes start
/// meanwhile), `etcd` (waiting for etcd once packed: the remaining chunk writes and the head
/// Txn), `total` (from the first byte of the request to the answer, JSON-RPC parsing included).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    pub alarm: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// 50 us .. ~26 s: a 1 KiB commit on a fast disk to a 10 MiB one on a slow one.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

pub struct Metrics {
    pub registry: Registry,
    pub is_leader: Gauge,
    pub healthy: Gauge,
    pub paused: Gauge,
    pub leader_transitions: Counter,
    pub sequencer_actions: Family<ActionLabels, Counter>,
    pub rpc_requests: Family<MethodLabels, Counter>,
    pub handover_seconds: Histogram,
    pub etcd_errors: Counter,
    pub commit_stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub commit_stored_bytes: Counter,
    pub etcd_db_size_bytes: Gauge,
    pub etcd_db_size_in_use_bytes: Gauge,
    pub etcd_quota_bytes: Gauge,
    pub etcd_alarm: Family<AlarmLabels, Gauge>,
    pub etcd_compactions: Family<ResultLabels, Counter>,
    pub etcd_compacted_revision: Gauge,
    pub rpc_connections: Gauge,
    pub rpc_buffered_bytes: Gauge,
    pub rpc_refused: Family<ReasonLabels, Counter>,
    // Set at scrape time from the shared state (see `admin`), not by the control loop.
    pub build_info: Family<BuildLabels, Gauge>,
    pub unsafe_head_number: Gauge,
    pub unsafe_head_age: FloatGauge,
    pub lease_time_left: FloatGauge,
    pub etcd_last_contact: FloatGauge,
    pub leader_overridden: Gauge,
    pub election_stopped: Gauge,
    pub etcd_reachable: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("op_sidecar");
        let is_leader = Gauge::default();
        let healthy = Gauge::default();
        let paused = Gauge::default();
        let leader_transitions = Counter::default();
        let sequencer_actions = Family::<ActionLabels, Counter>::default();
        let rpc_requests = Family::<MethodLabels, Counter>::default();
        let handover_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let etcd_errors = Counter::default();
        let rpc_connections = Gauge::default();
        let rpc_buffered_bytes = Gauge::default();
        let rpc_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "is_leader",
            "1 while this sidecar leads and its lease is locally valid",
            is_leader.clone(),
        );
        registry.register(
            "node_healthy",
            "1 while the local node passes the filtered health check",
            healthy.clone(),
        );
        registry.register("paused", "1 while the sidecar is paused", paused.clone());
        registry.register(
            "leader_transitions",
            "Times this sidecar became leader",
            leader_transitions.clone(),
        );
        registry.register(
            "sequencer_actions",
            "admin_startSequencer / admin_stopSequencer calls by result",
            sequencer_actions.clone(),
        );
        registry.register(
            "rpc_requests",
            "JSON-RPC calls answered, by method and code (0 = ok)",
            rpc_requests.clone(),
        );
        registry.register(
            "handover_seconds",
            "From winning the lease to the node sequencing",
            handover_seconds.clone(),
        );
        registry.register(
            "etcd_errors",
            "etcd requests that failed or timed out in the control loop",
            etcd_errors.clone(),
        );
        let commit_stage_seconds =
            Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                stage_histogram,
            );
        let commit_stored_bytes = Counter::default();
        let etcd_db_size_bytes = Gauge::default();
        let etcd_db_size_in_use_bytes = Gauge::default();
        let etcd_quota_bytes = Gauge::default();
        let etcd_alarm = Family::<AlarmLabels, Gauge>::default();
        let etcd_compactions = Family::<ResultLabels, Counter>::default();
        let etcd_compacted_revision = Gauge::default();
        registry.register(
            "commit_stage_seconds",
            "conductor_commitUnsafePayload time by stage: receive (the body), decode (from its last byte: JSON checks, scan, packing), etcd (the rest of the chunk writes and the head Txn), total",
            commit_stage_seconds.clone(),
        );
        registry.register(
            "commit_stored_bytes",
            "Packed payload bytes written to etcd by commits",
            commit_stored_bytes.clone(),
        );
        registry.register(
            "etcd_db_size_bytes",
            "etcd backend size (what its quota counts) on the member this sidecar talks to",
            etcd_db_size_bytes.clone(),
        );
        registry.register(
            "etcd_db_size_in_use_bytes",
            "Part of the etcd backend holding live data; the rest is reclaimable by defragmentation",
            etcd_db_size_in_use_bytes.clone(),
        );
        registry.register(
            "etcd_quota_bytes",
            "etcd's --quota-backend-bytes (as reported by etcd 3.6+, else --etcd.quota-bytes)",
            etcd_quota_bytes.clone(),
        );
        registry.register(
            "etcd_alarm",
            "1 while etcd has this alarm raised (NOSPACE: writes refused until cleared)",
            etcd_alarm.clone(),
        );
        registry.register(
            "etcd_compactions",
            "History compactions requested by this sidecar as leader, by result",
            etcd_compactions.clone(),
        );
        registry.register(
            "etcd_compacted_revision",
            "The revision this sidecar last compacted etcd's history to",
            etcd_compacted_revision.clone(),
        );
        registry.register(
            "rpc_connections",
            "Open JSON-RPC connections",
            rpc_connections.clone(),
        );
        registry.register(
            "rpc_buffered_bytes",
            "Bytes held for JSON-RPC request bodies and proxied answers",
            rpc_buffered_bytes.clone(),
        );
        registry.register(
            "rpc_refused",
            "JSON-RPC connections closed and requests refused by a limit, by reason",
            rpc_refused.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: crate::status::VERSION.into(),
                commit: crate::status::COMMIT.into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels name the version and git commit",
            build_info.clone(),
        );
        let unsafe_head_number = Gauge::default();
        registry.register(
            "unsafe_head_number",
            "Number of the local op-node's unsafe head at the latest health check",
            unsafe_head_number.clone(),
        );
        let unsafe_head_age = FloatGauge::default();
        registry.register(
            "unsafe_head_age_seconds",
            "Wall clock minus the local unsafe head's timestamp (-1 when op-node is unreachable)",
            unsafe_head_age.clone(),
        );
        let lease_time_left = FloatGauge::default();
        registry.register(
            "lease_time_left_seconds",
            "Time until this sidecar's lease stops being locally valid (0 without a lease)",
            lease_time_left.clone(),
        );
        let etcd_last_contact = FloatGauge::default();
        registry.register(
            "etcd_last_contact_seconds",
            "Time since the last keepalive etcd acknowledged was sent (-1 without a lease)",
            etcd_last_contact.clone(),
        );
        let leader_overridden = Gauge::default();
        registry.register(
            "leader_overridden",
            "1 while conductor_overrideLeader is on here (commits are not fenced)",
            leader_overridden.clone(),
        );
        let election_stopped = Gauge::default();
        registry.register(
            "election_stopped",
            "1 while the election is stopped (leadership frozen), as last read from etcd",
            election_stopped.clone(),
        );
        let etcd_reachable = Gauge::default();
        registry.register(
            "etcd_reachable",
            "1 while the control loop's latest read of etcd succeeded",
            etcd_reachable.clone(),
        );
        Metrics {
            registry,
            is_leader,
            healthy,
            paused,
            leader_transitions,
            sequencer_actions,
            rpc_requests,
            handover_seconds,
            etcd_errors,
            commit_stage_seconds,
            commit_stored_bytes,
            etcd_db_size_bytes,
            etcd_db_size_in_use_bytes,
            etcd_quota_bytes,
            etcd_alarm,
            etcd_compactions,
            etcd_compacted_revision,
            rpc_connections,
            rpc_buffered_bytes,
            rpc_refused,
            build_info,
            unsafe_head_number,
            unsafe_head_age,
            lease_time_left,
            etcd_last_contact,
            leader_overridden,
            election_stopped,
            etcd_reachable,
        }
    }

    /// Records one stage of a commit.
    pub fn commit_stage(&self, stage: &'static str, d: std::time::Duration) {
        self.commit_stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(d.as_secs_f64());
    }

    pub fn refused(&self, reason: &str) {
        self.rpc_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn action(&self, action: &str, result: &str) {
        self.sequencer_actions
            .get_or_create(&ActionLabels {
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let m = Metrics::new();
        m.is_leader.set(1);
        m.action("start", "ok");
        let text = m.encode();
        assert!(text.contains("op_sidecar_is_leader 1"), "{text}");
        assert!(
            text.contains(&format!(
                "op_sidecar_build_info{{version=\"{}\",commit=\"{}\"}} 1",
                crate::status::VERSION,
                crate::status::COMMIT
            )),
            "{text}"
        );
        m.lease_time_left.set(1.5);
        assert!(
            m.encode()
                .contains("op_sidecar_lease_time_left_seconds 1.5"),
            "{text}"
        );
        assert!(
            text.contains("op_sidecar_sequencer_actions_total{action=\"start\",result=\"ok\"} 1"),
            "{text}"
        );
        m.commit_stage("etcd", std::time::Duration::from_millis(3));
        m.etcd_alarm
            .get_or_create(&AlarmLabels { alarm: "NOSPACE" })
            .set(1);
        let text = m.encode();
        assert!(
            text.contains("op_sidecar_commit_stage_seconds_count{stage=\"etcd\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("op_sidecar_etcd_alarm{alarm=\"NOSPACE\"} 1"),
            "{text}"
        );
    }
}
