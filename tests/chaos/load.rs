//! Load that runs for the whole campaign, and the sampler the checker reads.
//!
//! Per sidecar four probe loops, 4 calls a second each: `GET /readyz` and `GET /healthz` (the
//! sidecar's own watchdog on its control loop and lease task) on the admin port, RPC methods
//! answered from memory (`conductor_leader`, ...) and RPC methods that read etcd or are
//! proxied to the leader's node (`coordinator_getMaster`, `optimism_syncStatus`, ...). In
//! conductor mode the simulated op-nodes add their own load: every block is committed through
//! `conductor_commitUnsafePayload` and every start asks `conductor_leader`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::cluster::{now_ms, InForce};
use crate::common::rpc::{get, rpc_timeout};
use crate::plan::N;
use crate::Lock;

const PROBE_EVERY: Duration = Duration::from_millis(250);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Which listener / kind of call a probe exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chan {
    /// `GET /readyz` on the admin listener (answered from memory).
    Admin,
    /// `GET /healthz` on the admin listener: 200 unless the sidecar's watchdog finds its control
    /// loop or lease task stuck.
    Healthz,
    /// RPC methods answered from memory.
    RpcMem,
    /// RPC methods that read etcd or are forwarded to the leader's node.
    RpcEtcd,
}

impl Chan {
    pub const ALL: [Chan; 4] = [Chan::Admin, Chan::Healthz, Chan::RpcMem, Chan::RpcEtcd];

    pub fn name(self) -> &'static str {
        match self {
            Chan::Admin => "admin /readyz",
            Chan::Healthz => "admin /healthz",
            Chan::RpcMem => "rpc (memory)",
            Chan::RpcEtcd => "rpc (etcd/proxied)",
        }
    }

    /// Client time limit of one probe.
    fn timeout(self) -> Duration {
        match self {
            Chan::Admin | Chan::Healthz | Chan::RpcMem => Duration::from_secs(3),
            // The sidecar's own --rpc.timeout is 10 s; an etcd read during an outage takes
            // up to its etcd timeout per member tried.
            Chan::RpcEtcd => Duration::from_secs(12),
        }
    }

    /// Longest time without any answer that is not a violation.
    pub fn bound_ms(self) -> u64 {
        match self {
            Chan::Admin | Chan::Healthz | Chan::RpcMem => 5_000,
            Chan::RpcEtcd => 15_000,
        }
    }
}

/// One probe: `ok` = an HTTP answer (any status, any JSON-RPC result or error) in time.
#[derive(Clone, Debug)]
pub struct Probe {
    pub sidecar: usize,
    pub chan: Chan,
    pub start_ms: u64,
    pub end_ms: u64,
    pub ok: bool,
    /// `/healthz`: the body of an answer other than 200 (the watchdog's reason).
    pub unhealthy: Option<String>,
}

const MEM_METHODS: [&str; 4] = [
    "conductor_leader",
    "conductor_sequencerHealthy",
    "conductor_paused",
    "conductor_leaderOverridden",
];
const ETCD_METHODS: [&str; 5] = [
    "coordinator_getMaster",
    "conductor_leaderWithID",
    "coordinator_electionStopped",
    "conductor_clusterMembership",
    "optimism_syncStatus",
];

/// Starts the probe loops for every `(rpc url, admin url)`.
pub fn spawn_load(
    urls: &[(String, String)],
    probes: Arc<Lock<Vec<Probe>>>,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, (rpc, admin)) in urls.iter().enumerate() {
        for chan in Chan::ALL {
            let url = match chan {
                Chan::Admin => format!("{admin}/readyz"),
                Chan::Healthz => format!("{admin}/healthz"),
                _ => rpc.clone(),
            };
            tasks.push(tokio::spawn(probe_loop(
                i,
                chan,
                url,
                probes.clone(),
                cancel.clone(),
            )));
        }
    }
    tasks
}

async fn probe_loop(
    sidecar: usize,
    chan: Chan,
    url: String,
    probes: Arc<Lock<Vec<Probe>>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let start_ms = now_ms();
        let (ok, unhealthy) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = call(chan, &url, n) => r,
        };
        probes.lock().push(Probe {
            sidecar,
            chan,
            start_ms,
            end_ms: now_ms(),
            ok,
            unhealthy,
        });
    }
}

/// (answered, `/healthz` failure reason).
async fn call(chan: Chan, url: &str, n: usize) -> (bool, Option<String>) {
    let answered = match chan {
        Chan::Admin => get(url, chan.timeout()).await.is_ok(),
        Chan::Healthz => {
            return match get(url, chan.timeout()).await {
                Ok((200, _)) => (true, None),
                Ok((status, body)) => (true, Some(format!("HTTP {status}: {}", body.trim()))),
                Err(_) => (false, None),
            };
        }
        Chan::RpcMem => {
            let m = MEM_METHODS[n % MEM_METHODS.len()];
            rpc_timeout(url, m, json!([]), chan.timeout())
                .await
                .is_ok_or_rpc_error()
        }
        Chan::RpcEtcd => {
            let m = ETCD_METHODS[n % ETCD_METHODS.len()];
            rpc_timeout(url, m, json!([]), chan.timeout())
                .await
                .is_ok_or_rpc_error()
        }
    };
    (answered, None)
}

trait Answered {
    fn is_ok_or_rpc_error(&self) -> bool;
}

impl<T> Answered for Result<T, crate::common::RpcError> {
    /// A JSON-RPC error is an answer; only a transport failure (no answer) is not.
    fn is_ok_or_rpc_error(&self) -> bool {
        match self {
            Ok(_) => true,
            Err(e) => !e.is_transport(),
        }
    }
}

/// One observation of the cluster, every 200 ms.
#[derive(Clone, Debug)]
pub struct Sample {
    pub t_ms: u64,
    pub heads: [u64; N],
    pub active: [bool; N],
    pub crashed: [bool; N],
    /// Highest unsafe head over every node.
    pub max: u64,
    /// Members with a fault in force on their sidecar, node or etcd link.
    pub faulted: [bool; N],
    pub quorum: bool,
    pub election_stopped: bool,
    pub override_on: bool,
    /// Members with no fault in force, a live sidecar and a node that is up and caught up
    /// (head at the highest height; one below in conductor mode, which the one-block repair
    /// closes).
    pub candidates: Vec<usize>,
    /// Ids of the faults in force.
    pub in_force: Vec<usize>,
}

/// Samples the nodes and the faults in force until cancelled.
pub fn spawn_sampler(
    nodes: Vec<op_node_sim::NodeHandle>,
    state: Arc<Lock<InForce>>,
    slack: u64,
    samples: Arc<Lock<Vec<Sample>>>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let s = sample(&nodes, &state.lock(), slack);
            samples.lock().push(s);
        }
    })
}

pub fn sample(nodes: &[op_node_sim::NodeHandle], st: &InForce, slack: u64) -> Sample {
    let mut heads = [0u64; N];
    let mut active = [false; N];
    let mut crashed = [false; N];
    for (i, n) in nodes.iter().enumerate().take(N) {
        let s = n.status();
        heads[i] = s.head.number;
        active[i] = s.active;
        crashed[i] = s.crashed;
    }
    let max = heads.iter().copied().max().unwrap_or(0);
    let faulted: [bool; N] = std::array::from_fn(|i| !st.member[i].is_empty());
    let candidates = (0..N)
        .filter(|&i| !faulted[i] && !crashed[i] && heads[i] + slack >= max)
        .collect();
    Sample {
        t_ms: now_ms(),
        heads,
        active,
        crashed,
        max,
        faulted,
        quorum: st.quorum(),
        election_stopped: st.election_stopped,
        override_on: st.override_on.is_some(),
        candidates,
        in_force: st.ids.clone(),
    }
}
