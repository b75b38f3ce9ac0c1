//! Polls the local op-node and op-geth and keeps a hysteresis-filtered verdict in a watch channel; knows nothing of etcd or leadership.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::rpc::client::CallError;
use crate::sequencer::{BlockId, ExecHead, NodeClient, SyncStatus};

/// What one poll saw.
#[derive(Debug, Clone)]
pub struct Sample {
    pub sync: Result<SyncStatus, CallError>,
    pub exec: Result<ExecHead, CallError>,
    /// `None` when the peer check is disabled.
    pub peers: Option<Result<u64, CallError>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NodeUnreachable(String),
    ExecUnreachable(String),
    /// wall clock - unsafe_l2.timestamp exceeded the unsafe interval.
    Stale {
        age_secs: u64,
        limit_secs: u64,
    },
    Peers {
        connected: u64,
        min: u64,
    },
    PeersUnknown(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NodeUnreachable(e) => write!(f, "op-node: {e}"),
            Problem::ExecUnreachable(e) => write!(f, "op-geth: {e}"),
            Problem::Stale {
                age_secs,
                limit_secs,
            } => write!(f, "unsafe head is {age_secs}s old (limit {limit_secs}s)"),
            Problem::Peers { connected, min } => {
                write!(f, "{connected} peers connected (minimum {min})")
            }
            Problem::PeersUnknown(e) => write!(f, "peer count unknown: {e}"),
        }
    }
}

/// Judges one sample. Pure: the poller supplies the wall clock.
pub fn evaluate(sample: &Sample, now_unix: u64, cfg: &HealthConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    match &sample.sync {
        Err(e) => problems.push(Problem::NodeUnreachable(e.to_string())),
        Ok(status) => {
            let age = now_unix.saturating_sub(status.unsafe_l2.timestamp);
            let limit = cfg.unsafe_interval.as_secs();
            if age > limit {
                problems.push(Problem::Stale {
                    age_secs: age,
                    limit_secs: limit,
                });
            }
        }
    }
    if let Err(e) = &sample.exec {
        problems.push(Problem::ExecUnreachable(e.to_string()));
    }
    match &sample.peers {
        None => {}
        Some(Ok(n)) if *n >= cfg.min_peer_count => {}
        Some(Ok(n)) => problems.push(Problem::Peers {
            connected: *n,
            min: cfg.min_peer_count,
        }),
        Some(Err(e)) => problems.push(Problem::PeersUnknown(e.to_string())),
    }
    problems
}

/// N consecutive bad samples turn a healthy node unhealthy; M consecutive good ones bring it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    healthy: bool,
    streak: u32,
    failures: u32,
    successes: u32,
}

impl Hysteresis {
    /// Starts unhealthy: a node must prove itself before it may contend.
    pub fn new(failures: u32, successes: u32) -> Self {
        Hysteresis {
            healthy: false,
            streak: 0,
            failures: failures.max(1),
            successes: successes.max(1),
        }
    }

    pub fn observe(&mut self, ok: bool) -> bool {
        if ok == self.healthy {
            self.streak = 0;
        } else {
            self.streak += 1;
            let needed = if self.healthy {
                self.failures
            } else {
                self.successes
            };
            if self.streak >= needed {
                self.healthy = ok;
                self.streak = 0;
            }
        }
        self.healthy
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }
}

/// The published health state.
#[derive(Debug, Clone)]
pub struct Health {
    /// The filtered verdict.
    pub healthy: bool,
    /// Problems of the latest sample (empty when it was good).
    pub problems: Vec<Problem>,
    /// The unsafe head of the latest sample that reached op-node.
    pub head: Option<BlockId>,
    /// That head's block timestamp (unix seconds), for the head-age metric.
    pub head_time: Option<u64>,
    /// Whether the latest sample reached op-node at all.
    pub reachable: bool,
}

impl Health {
    pub fn initial() -> Self {
        Health {
            healthy: false,
            problems: vec![],
            head: None,
            head_time: None,
            reachable: false,
        }
    }

    /// The latest sample failed only because the head is old. When the whole chain has no
    /// leader every head is old, so this must not keep a candidate out (op-conductor's halt).
    pub fn only_stale(&self) -> bool {
        !self.problems.is_empty()
            && self
                .problems
                .iter()
                .all(|p| matches!(p, Problem::Stale { .. }))
    }

    /// The latest sample could not reach op-node or op-geth at all: the node is down, hung or
    /// refusing connections (not merely stale or short of peers).
    pub fn node_down(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p, Problem::NodeUnreachable(_) | Problem::ExecUnreachable(_)))
    }

    pub fn summary(&self) -> String {
        if self.problems.is_empty() {
            "ok".into()
        } else {
            self.problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Takes one sample; the three calls run concurrently.
pub async fn sample(node: &NodeClient, check_peers: bool) -> Sample {
    let peers = async {
        if check_peers {
            Some(node.peer_count().await)
        } else {
            None
        }
    };
    let (sync, exec, peers) = tokio::join!(node.sync_status(), node.latest_block(), peers);
    Sample { sync, exec, peers }
}

/// Runs the poller until cancelled. `node` should carry a timeout below the interval.
///
/// A sample is started at every tick even while earlier ones are still waiting on a slow or
/// hung node (up to [`max_in_flight`]); results are taken in the order the samples started. So
/// a hung node is judged after one timeout plus `failures - 1` intervals, not `failures`
/// timeouts back to back.
pub async fn run(
    node: NodeClient,
    cfg: HealthConfig,
    tx: watch::Sender<Health>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut filter = Hysteresis::new(cfg.failures, cfg.successes);
    let mut samples = 0u64;
    let reminder_every =
        (Duration::from_secs(30).as_millis() / cfg.interval.as_millis().max(1)).max(1) as u64;
    let limit = max_in_flight(cfg.interval);
    let mut in_flight = FuturesOrdered::new();
    let mut last_failure: Option<tokio::time::Instant> = None;
    loop {
        let (started, s) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some((started, s)) = in_flight.next(), if !in_flight.is_empty() => (started, s),
            _ = tick.tick(), if in_flight.len() < limit => {
                let check_peers = cfg.min_peer_count > 0;
                let node = &node;
                let started = tokio::time::Instant::now();
                in_flight.push_back(async move { (started, sample(node, check_peers).await) });
                continue;
            }
        };
        samples += 1;
        let problems = evaluate(&s, unix_now(), &cfg);
        let was = filter.healthy();
        // Samples that were already waiting when a failure came in all answer at once when a
        // hung node recovers: only one started after the last failure counts as a success,
        // so recovery still needs `successes` samples spread over time.
        let ok = problems.is_empty();
        let healthy = if ok && last_failure.is_some_and(|f| started < f) {
            filter.healthy()
        } else {
            if !ok {
                last_failure = Some(tokio::time::Instant::now());
            }
            filter.observe(ok)
        };
        let head = s.sync.as_ref().ok().map(|st| st.unsafe_l2.id());
        let head_time = s.sync.as_ref().ok().map(|st| st.unsafe_l2.timestamp);
        let summary = || {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        if was != healthy {
            if healthy {
                tracing::info!("node healthy");
            } else {
                tracing::warn!(problems = %summary(), "node unhealthy");
            }
        } else if !problems.is_empty() {
            // A node that was never healthy (wrong URL, still syncing) has no transition to
            // log: say so at the first check and then every ~30 s while it lasts.
            if !healthy && (samples == 1 || samples % reminder_every == 0) {
                tracing::warn!(problems = %summary(), "node not healthy; not contending");
            } else {
                tracing::debug!(problems = ?problems, "health check failed");
            }
        }
        let reachable = s.sync.is_ok();
        tx.send_replace(Health {
            healthy,
            problems,
            head,
            head_time,
            reachable,
        });
    }
}

/// How many samples may wait on the node at once: enough that a new one starts every interval
/// while older ones run into [`poll_timeout`], and no more (a slow node is not piled on).
pub fn max_in_flight(interval: Duration) -> usize {
    let t = poll_timeout(interval).as_millis();
    let i = interval.as_millis().max(1);
    (t.div_ceil(i) as usize + 1).min(4)
}

/// A per-call limit for health polls: below the interval so one stuck call cannot hide the
/// next, but never so short that a busy node looks dead.
pub fn poll_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_millis(500), Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequencer::L2Ref;
    use proptest::prelude::*;

    #[test]
    fn samples_overlap_only_as_much_as_the_timeout_needs() {
        // 250 ms interval, 500 ms timeout: a new sample every tick while two wait.
        assert_eq!(max_in_flight(Duration::from_millis(250)), 3);
        // Timeout equal to the interval: the next sample starts as the previous times out.
        assert_eq!(max_in_flight(Duration::from_secs(1)), 2);
        assert_eq!(max_in_flight(Duration::from_secs(5)), 2);
        // Very short intervals are capped: a slow node is not piled on.
        assert_eq!(max_in_flight(Duration::from_millis(10)), 4);
    }

    fn cfg() -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(1),
            unsafe_interval: Duration::from_secs(5),
            min_peer_count: 2,
            failures: 3,
            successes: 2,
        }
    }

    fn status(ts: u64) -> SyncStatus {
        SyncStatus {
            unsafe_l2: L2Ref {
                hash: "0xab".into(),
                number: 7,
                parent_hash: "0xaa".into(),
                timestamp: ts,
            },
        }
    }

    fn down() -> CallError {
        CallError::Transport {
            url: "http://x".into(),
            reason: "refused".into(),
        }
    }

    fn good(ts: u64) -> Sample {
        Sample {
            sync: Ok(status(ts)),
            exec: Ok(ExecHead {
                number: 7,
                hash: "0xab".into(),
                timestamp: ts,
            }),
            peers: Some(Ok(2)),
        }
    }

    #[test]
    fn healthy_sample() {
        assert!(evaluate(&good(100), 105, &cfg()).is_empty());
    }

    #[test]
    fn stale_head() {
        let p = evaluate(&good(100), 106, &cfg());
        assert_eq!(
            p,
            vec![Problem::Stale {
                age_secs: 6,
                limit_secs: 5
            }]
        );
    }

    #[test]
    fn unreachable_and_peers() {
        let s = Sample {
            sync: Err(down()),
            exec: Err(down()),
            peers: Some(Ok(1)),
        };
        let p = evaluate(&s, 0, &cfg());
        assert_eq!(p.len(), 3);
        let s = Sample {
            peers: None,
            ..good(100)
        };
        assert!(evaluate(&s, 100, &cfg()).is_empty(), "peer check disabled");
    }

    #[test]
    fn only_stale_detection() {
        let mut h = Health::initial();
        h.problems = vec![Problem::Stale {
            age_secs: 9,
            limit_secs: 5,
        }];
        assert!(h.only_stale());
        h.problems.push(Problem::Peers {
            connected: 0,
            min: 1,
        });
        assert!(!h.only_stale());
        h.problems.clear();
        assert!(!h.only_stale());
    }

    #[test]
    fn one_bad_sample_does_not_flip() {
        let mut h = Hysteresis::new(3, 2);
        assert!(!h.observe(true));
        assert!(h.observe(true));
        assert!(h.observe(false));
        assert!(h.observe(true));
        assert!(h.observe(false));
        assert!(h.observe(false));
        assert!(!h.observe(false));
    }

    proptest! {
        /// The verdict changes only after `failures` bad or `successes` good samples in a row.
        #[test]
        fn hysteresis_needs_streaks(f in 1u32..5, s in 1u32..5, seq in proptest::collection::vec(any::<bool>(), 0..60)) {
            let mut h = Hysteresis::new(f, s);
            let mut prev = h.healthy();
            for (i, ok) in seq.iter().enumerate() {
                let now = h.observe(*ok);
                if now != prev {
                    let need = if now { s } else { f } as usize;
                    prop_assert!(i + 1 >= need);
                    prop_assert!(seq[i + 1 - need..=i].iter().all(|x| *x == now));
                }
                prev = now;
            }
        }
    }
}
