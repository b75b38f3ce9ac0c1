//! The state the control loop publishes and what request handlers share: the status snapshot, operator commands and the handles RPC and admin may use. Owns no task and makes no call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::commit::Committer;
use crate::config::Config;
use crate::election::{Election, Leadership, LeaseState};
use crate::health::Health;
use crate::maintenance::EtcdStorage;
use crate::metrics::Metrics;
use crate::rpc::client::HttpClient;
use crate::sequencer::NodeClient;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The short git commit the binary was built from ("unknown" when built without git).
pub const COMMIT: &str = env!("OP_SIDECAR_GIT_COMMIT");
/// `--version`'s text: the version and the commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OP_SIDECAR_GIT_COMMIT"),
    ")"
);

/// How op-node is driven, detected with `admin_conductorEnabled` at each handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Unknown,
    /// op-node runs `--sequencer.stopped`; only the sidecar starts and stops it.
    Driven,
    /// op-node runs `--conductor.enabled` and commits every block through us.
    Conductor,
}

/// What the control loop publishes for the RPC and admin servers.
#[derive(Debug, Clone)]
pub struct Status {
    /// Where the control loop stands in the election.
    pub role: crate::role::Role,
    /// Set from winning the key until stepping down (handover included).
    pub leading: Option<Leadership>,
    /// The leader gate: `conductor_leader` / `requestBuildingBlock` may answer yes. Raised
    /// before `admin_startSequencer`, lowered before `admin_stopSequencer`.
    pub gate: bool,
    pub paused: bool,
    pub mode: Mode,
    pub node_active: Option<bool>,
    pub etcd_reachable: bool,
    /// The leader in the latest view, with its advertised RPC URL; for routing proxied calls.
    pub leader: Option<LeaderRef>,
    /// The election is stopped (as of the latest view read from etcd).
    pub election_stopped: bool,
    /// The control loop has completed at least one tick.
    pub started: bool,
    /// Stopped by `conductor_stop`: acts no more until restarted.
    pub stopped: bool,
    pub shutting_down: bool,
}

impl Status {
    pub fn initial(paused: bool) -> Self {
        Status {
            role: crate::role::Role::Follower,
            leading: None,
            gate: false,
            paused,
            mode: Mode::Unknown,
            node_active: None,
            etcd_reachable: false,
            leader: None,
            election_stopped: false,
            started: false,
            stopped: false,
            shutting_down: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRef {
    pub id: String,
    pub rpc: Option<String>,
}

/// Requests from the RPC server to the control loop.
#[derive(Debug)]
pub enum Command {
    SetPaused(bool, oneshot::Sender<Result<(), String>>),
    /// `conductor_stop`: step down and stop acting until the process restarts.
    Stop(oneshot::Sender<()>),
}

/// What RPC handlers may use. Only the control loop calls the local sequencer's start/stop.
pub struct Shared {
    pub config: Config,
    pub election: Election,
    pub node: NodeClient,
    pub http: HttpClient,
    pub status: watch::Receiver<Status>,
    pub lease: watch::Receiver<Option<LeaseState>>,
    pub health: watch::Receiver<Health>,
    /// etcd's size, quota and alarms as last read (see `maintenance`).
    pub etcd: watch::Receiver<EtcdStorage>,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub committer: Committer,
    /// `conductor_overrideLeader`: an operator's escape hatch when etcd is lost for good; makes
    /// `conductor_leader` say yes and lets commits through unfenced. Off unless set.
    pub leader_override: AtomicBool,
    /// Set when the override goes from on to off; the control loop takes it (see
    /// `Controller::after_override`), so a flip between two of its steps is not missed.
    pub override_cleared: AtomicBool,
    /// Beats of the control loop and of the lease keepalive task, for /healthz's watchdog.
    pub control_beat: Arc<Heartbeat>,
    pub lease_beat: Arc<Heartbeat>,
}

/// When a background task last showed it was making progress.
#[derive(Debug)]
pub struct Heartbeat {
    started: std::time::Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            started: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat (since creation before the first).
    pub fn age(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The longest the control loop may go without beating: past it /healthz fails and the lease
/// task stops renewing the lease.
pub fn control_bound(config: &Config) -> Duration {
    config.catchup_timeout + config.lease_ttl * 3 + config.etcd_timeout * 2 + Duration::from_secs(5)
}

/// /healthz's verdict: Err names the task that has not beaten within its bound. The bounds
/// cover the longest wait each task makes by design (a handover's catch-up, a lease grant's
/// retries), so only a task that is really stuck fails it.
pub fn liveness(control_age: Duration, lease_age: Duration, config: &Config) -> Result<(), String> {
    let control_bound = control_bound(config);
    let lease_bound = config.etcd_timeout * 3 + config.lease_ttl * 2 + Duration::from_secs(5);
    if control_age > control_bound {
        return Err(format!(
            "control loop stuck: no progress for {control_age:?} (bound {control_bound:?})"
        ));
    }
    if lease_age > lease_bound {
        return Err(format!(
            "lease task stuck: no progress for {lease_age:?} (bound {lease_bound:?})"
        ));
    }
    Ok(())
}

impl Shared {
    /// Our leadership if, right now, the gate is up and the lease is locally valid. Answered from
    /// memory with the monotonic clock, so a sidecar resumed after SIGSTOP says no at once.
    pub fn leader_now(&self) -> Option<Leadership> {
        // Each borrow is copied out and dropped before the next: a watch guard is a read lock,
        // and holding one while taking another (or awaiting) can deadlock behind a queued writer.
        let (gate, leading) = {
            let st = self.status.borrow();
            (st.gate, st.leading.clone())
        };
        let lease = *self.lease.borrow();
        let leading = leading?;
        let valid = lease.is_some_and(|l| l.id == leading.lease && l.valid_at(Instant::now()));
        (gate && valid).then_some(leading)
    }

    /// A copy of the current status; the watch guard is released before this returns.
    pub fn status_now(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A copy of the current health verdict; the watch guard is released before this returns.
    pub fn health_now(&self) -> Health {
        self.health.borrow().clone()
    }

    /// A copy of what we know of etcd's storage; the watch guard is released before this returns.
    pub fn etcd_now(&self) -> EtcdStorage {
        self.etcd.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_only_past_the_bounds() {
        let args = crate::config::Args {
            server_id: Some("a".into()),
            node_rpc: Some("http://127.0.0.1:1".into()),
            execution_rpc: Some("http://127.0.0.1:2".into()),
            ..Default::default()
        };
        let config = Config::from_args(&args).expect("config");
        let ok = Duration::from_secs(1);
        assert!(liveness(ok, ok, &config).is_ok());
        // A handover's full catch-up wait is not "stuck"...
        assert!(liveness(config.catchup_timeout + config.lease_ttl, ok, &config).is_ok());
        // ...a loop silent for a minute is.
        let stuck = Duration::from_secs(60);
        let e = liveness(stuck, ok, &config).expect_err("stuck control loop");
        assert!(e.contains("control loop"), "{e}");
        let e = liveness(ok, stuck, &config).expect_err("stuck lease task");
        assert!(e.contains("lease task"), "{e}");
    }

    #[test]
    fn heartbeat_age_restarts_at_each_beat() {
        let h = Heartbeat::default();
        std::thread::sleep(Duration::from_millis(20));
        assert!(h.age() >= Duration::from_millis(20));
        h.beat();
        assert!(h.age() < Duration::from_millis(20));
    }
}
