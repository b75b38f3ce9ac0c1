//! The state the control loop publishes and what request handlers share: the status snapshot, operator commands and the handles RPC and admin may use. Owns no task and makes no call.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::commit::Committer;
use crate::config::Config;
use crate::election::{Election, Leadership, LeaseState};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::rpc::client::HttpClient;
use crate::sequencer::NodeClient;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub committer: Committer,
    /// `conductor_overrideLeader`: an operator's escape hatch when etcd is lost for good; makes
    /// `conductor_leader` say yes and lets commits through unfenced. Off unless set.
    pub leader_override: AtomicBool,
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
}
