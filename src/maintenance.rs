//! etcd housekeeping: the leader's periodic compaction of etcd's history, and every sidecar's view of etcd's size, quota and alarms (metrics, /readyz, one clear log line for NOSPACE); knows nothing of blocks or of op-node.
//!
//! etcd keeps every revision of every key until its history is compacted, and refuses all writes
//! once its backend reaches `--quota-backend-bytes` (the NOSPACE alarm): in conductor mode that
//! halts the chain. So the leader compacts, as kube-apiserver does for its etcd: at each tick it
//! compacts to the revision it saw at the previous tick, which keeps at least one interval of
//! history. Nothing here needs more: the fences compare the create/mod revisions of live keys
//! (compaction never changes those), and the sidecars' watch starts at the current revision and
//! re-opens if it is ever cancelled. Compaction frees pages inside etcd's file for reuse; it does
//! not shrink the file (that is `etcdctl defrag`, which blocks the member, so it stays with the
//! operator).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{AlarmAction, AlarmType, CompactionOptions, GetOptions};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::election::ElectionError;
use crate::metrics::AlarmLabels;
use crate::status::Shared;

/// How often every sidecar reads etcd's status and alarms.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// What this sidecar last learned about etcd's storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdStorage {
    /// Backend size of the member we talk to: what the quota counts.
    pub db_size: Option<i64>,
    /// The part of it holding live data (the rest is free pages, reused or defragmented away).
    pub db_size_in_use: Option<i64>,
    /// The quota: as etcd reports it (3.6+), else `--etcd.quota-bytes`.
    pub quota: u64,
    pub quota_reported: bool,
    /// Active alarms (`NOSPACE`, `CORRUPT`), any member.
    pub alarms: Vec<String>,
    /// The revision this sidecar last compacted to.
    pub compacted: Option<i64>,
    /// The last status read failed with this.
    pub error: Option<String>,
}

impl EtcdStorage {
    pub fn initial(quota: u64) -> Self {
        EtcdStorage {
            quota,
            ..Self::default()
        }
    }

    pub fn nospace(&self) -> bool {
        self.alarms.iter().any(|a| a == "NOSPACE")
    }

    /// For /readyz.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "db_size_bytes": self.db_size,
            "db_size_in_use_bytes": self.db_size_in_use,
            "quota_bytes": self.quota,
            "quota_reported_by_etcd": self.quota_reported,
            "alarms": self.alarms,
            "compacted_revision": self.compacted,
            "error": self.error,
        })
    }
}

fn alarm_name(a: AlarmType) -> &'static str {
    match a {
        AlarmType::Nospace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
        AlarmType::None => "NONE",
    }
}

/// Runs until cancelled: status every [`STATUS_EVERY`], compaction every
/// `--etcd.compaction-interval` while this sidecar leads.
pub async fn run(s: Arc<Shared>, tx: watch::Sender<EtcdStorage>, cancel: CancellationToken) {
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let every = s.config.etcd_compaction_interval;
    // A zero interval would panic in `interval`; with compaction off it never fires.
    let mut compact_tick = tokio::time::interval(if every.is_zero() {
        Duration::from_secs(3600)
    } else {
        every
    });
    compact_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut compactor = Compactor::default();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = status_tick.tick() => refresh(&s, &tx).await,
            _ = compact_tick.tick(), if !every.is_zero() => {
                if let Some(rev) = compactor.tick(&s).await {
                    tx.send_modify(|st| st.compacted = Some(rev));
                }
            }
        }
    }
}

/// kube-apiserver's scheme: compact to the revision seen one tick ago.
#[derive(Default)]
struct Compactor {
    /// The current revision at the previous tick, while leading.
    seen: Option<i64>,
    compacted: i64,
}

impl Compactor {
    /// One tick; returns the revision compacted to, if it compacted.
    async fn tick(&mut self, s: &Shared) -> Option<i64> {
        if s.leader_now().is_none() {
            // A new leader starts over, so history is never cut shorter than one interval
            // after a handover.
            self.seen = None;
            return None;
        }
        let key = s.election.keys().head();
        let now = match s
            .election
            .run(|c| async move {
                c.kv_client()
                    .get(key, Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await
        {
            Ok(r) => r.header().map(|h| h.revision()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read etcd's revision for compaction");
                None
            }
        };
        let target = self.seen.filter(|&r| r > self.compacted);
        self.seen = now.or(self.seen);
        let rev = target?;
        let result = s
            .election
            .run(|c| async move {
                c.kv_client()
                    .compact(rev, Some(CompactionOptions::new()))
                    .await
            })
            .await;
        let m = &s.metrics;
        match result {
            Ok(_) => {
                self.compacted = rev;
                m.etcd_compactions
                    .get_or_create(&crate::metrics::ResultLabels { result: "ok" })
                    .inc();
                m.etcd_compacted_revision.set(rev);
                tracing::debug!(revision = rev, "compacted etcd history");
                Some(rev)
            }
            // Someone (an earlier leader, an operator, etcd's auto-compaction) got further.
            Err(ElectionError::Etcd(e)) if e.contains("compacted") => {
                self.compacted = rev;
                None
            }
            Err(e) => {
                m.etcd_compactions
                    .get_or_create(&crate::metrics::ResultLabels { result: "error" })
                    .inc();
                tracing::warn!(error = %e, revision = rev, "etcd compaction failed; retrying next interval");
                None
            }
        }
    }
}

/// Reads status and alarms, updates the metrics and the published view, and logs NOSPACE
/// once when it appears and once when it clears.
async fn refresh(s: &Shared, tx: &watch::Sender<EtcdStorage>) {
    let status = s
        .election
        .run(|c| async move { c.maintenance_client().status().await })
        .await;
    let alarms = s
        .election
        .run(|c| async move {
            c.maintenance_client()
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await
        })
        .await;
    let before = tx.borrow().clone();
    let mut next = before.clone();
    let mut errors = Vec::new();
    match &status {
        Ok(st) => {
            next.db_size = Some(st.db_size());
            next.db_size_in_use = Some(st.raft_used_db_size());
            let reported = u64::try_from(st.db_size_quota()).unwrap_or(0);
            next.quota_reported = reported > 0;
            next.quota = if reported > 0 {
                reported
            } else {
                s.config.etcd_quota_bytes
            };
        }
        Err(e) => errors.push(format!("status: {e}")),
    }
    match &alarms {
        Ok(a) => {
            let mut names: Vec<String> = a
                .alarms()
                .iter()
                .map(|m| alarm_name(m.alarm()))
                .filter(|n| *n != "NONE")
                .map(str::to_string)
                .collect();
            names.sort();
            names.dedup();
            next.alarms = names;
        }
        Err(e) => errors.push(format!("alarms: {e}")),
    }
    next.error = (!errors.is_empty()).then(|| errors.join("; "));

    let m = &s.metrics;
    if let Some(v) = next.db_size {
        m.etcd_db_size_bytes.set(v);
    }
    if let Some(v) = next.db_size_in_use {
        m.etcd_db_size_in_use_bytes.set(v);
    }
    m.etcd_quota_bytes
        .set(i64::try_from(next.quota).unwrap_or(i64::MAX));
    if alarms.is_ok() {
        for alarm in ["NOSPACE", "CORRUPT"] {
            m.etcd_alarm
                .get_or_create(&AlarmLabels { alarm })
                .set(i64::from(next.alarms.iter().any(|a| a == alarm)));
        }
    }
    if next.nospace() && !before.nospace() {
        tracing::error!(
            db_size = ?next.db_size,
            quota = next.quota,
            "etcd raised its NOSPACE alarm: it refuses every write, so no block can be committed \
             and the chain is halted. Operator fix, on the etcd cluster: compact to the current \
             revision (etcdctl compact <revision from `etcdctl endpoint status -w json`>), \
             defragment every member (etcdctl defrag --cluster), then `etcdctl alarm disarm`; \
             raise --quota-backend-bytes if the data is legitimately that large. The sidecars \
             resume by themselves, no restart needed"
        );
    } else if !next.nospace() && before.nospace() && alarms.is_ok() {
        tracing::info!(db_size = ?next.db_size, "etcd's NOSPACE alarm is cleared; writes are accepted again");
    }
    if next.alarms.iter().any(|a| a == "CORRUPT") && !before.alarms.iter().any(|a| a == "CORRUPT") {
        tracing::error!("etcd raised its CORRUPT alarm: a member's data diverged; see etcd's logs");
    }
    if next != before {
        tx.send_replace(next);
    }
}
