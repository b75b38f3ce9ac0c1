//! The campaign's cluster (a three-member etcd, the simulator, three sidecar processes, each
//! sidecar reaching every etcd member through its own [`TcpProxy`]) and the injection and
//! removal of every fault kind of [`crate::plan`].
//!
//! Field order is drop order: sidecars die before the proxies, the simulator and etcd.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{
    free_port, rpc_timeout, unique, EtcdCluster, Sidecar, SidecarBuilder, TcpProxy,
};
use crate::plan::{Fault, Kind, Mode, Target, N};
use crate::Lock;

/// Time limit of the quick operator calls (pause, resume, election, override).
const OP_CALL: Duration = Duration::from_secs(5);
/// Time limit of a transfer call: it returns once the target produces or the attempt failed.
const TRANSFER_CALL: Duration = Duration::from_secs(30);
/// How long a SIGTERMed sidecar may take to shut down gracefully before it is killed.
const GRACEFUL_EXIT: Duration = Duration::from_secs(10);
/// The op-node methods a slow-admin node delays (health checks use none of them).
const ADMIN_METHODS: [&str; 5] = [
    "admin_conductorEnabled",
    "admin_startSequencer",
    "admin_stopSequencer",
    "admin_sequencerActive",
    "admin_postUnsafePayload",
];
/// After a sidecar comes back (restart, SIGCONT) its probes may still fail this long.
pub const COME_BACK_GRACE_MS: u64 = 2_000;

/// Wall-clock milliseconds (the simulator's ledger uses the same clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What is in force right now, shared with the sampler.
#[derive(Clone, Debug, Default)]
pub struct InForce {
    /// Per member: (fault id, kind) of the member faults in force.
    pub member: [Vec<(usize, Kind)>; N],
    pub etcd_down: [bool; N],
    /// From `coordinator_stopElection` until `coordinator_startElection` was confirmed.
    pub election_stopped: bool,
    /// The member whose sidecar has `conductor_overrideLeader true`.
    pub override_on: Option<usize>,
    /// Ids of every fault in force.
    pub ids: Vec<usize>,
}

impl InForce {
    pub fn quorum(&self) -> bool {
        self.etcd_down.iter().filter(|d| **d).count() <= 1
    }

    fn sidecar_stopped_or_down(&self, m: usize) -> bool {
        self.member[m]
            .iter()
            .any(|(_, k)| matches!(k, Kind::SidecarKill | Kind::SidecarStop | Kind::SidecarTerm))
    }
}

/// One fault as it was carried out.
#[derive(Clone, Debug)]
pub struct Run {
    pub fault: Fault,
    /// The member it hit (member faults).
    pub member: Option<usize>,
    /// How the target was resolved ("leader seq-1", "seq-2; seq-0 was busy", ...).
    pub note: String,
    pub injected_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub skipped: Option<String>,
    /// Result of an operator call (a transfer's answer arrives later).
    pub outcome: Arc<Lock<Option<String>>>,
}

impl Run {
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            member: None,
            note: String::new(),
            injected_ms: None,
            ended_ms: None,
            skipped: None,
            outcome: Arc::new(Lock::new(None)),
        }
    }

    pub fn target_name(&self) -> String {
        match (self.fault.kind, self.member) {
            (_, Some(m)) => format!("seq-{m}"),
            (Kind::EtcdMemberKill, _) => format!("etcd{}", self.fault.param),
            (Kind::QuorumLoss, _) => format!("2 etcd members (etcd{} stays)", self.fault.param),
            (Kind::Transfer, _) => match self.fault.param {
                0 => "best candidate".to_string(),
                _ => format!("seq-{}", self.fault.to),
            },
            _ => "cluster".to_string(),
        }
    }
}

pub struct Chaos {
    pub sidecars: Vec<Sidecar>,
    /// `proxies[i][m]`: sidecar `i`'s link to etcd member `m`.
    pub proxies: Vec<Vec<TcpProxy>>,
    pub sim: op_node_sim::Cluster,
    pub etcd: EtcdCluster,
    pub prefix: String,
    pub mode: Mode,
    pub state: Arc<Lock<InForce>>,
    /// (sidecar, from ms, to ms): SIGKILLed or SIGSTOPped, so it could not answer.
    pub excused: Arc<Lock<Vec<(usize, u64, u64)>>>,
}

impl Chaos {
    /// Starts a three-member etcd, the simulator (every sequencer stopped; in conductor mode
    /// node `i`'s conductor is sidecar `i`) and the three sidecars.
    pub async fn start(mode: Mode) -> Self {
        let etcd = EtcdCluster::start(N).await;
        let rpc_ports: Vec<Option<u16>> = (0..N)
            .map(|_| (mode == Mode::Conductor).then(free_port))
            .collect();
        let node_configs = rpc_ports
            .iter()
            .map(|p| op_node_sim::NodeConfig {
                conductor_rpc: p.map(|p| format!("http://127.0.0.1:{p}")),
                coordinator: None,
            })
            .collect();
        let sim = op_node_sim::Cluster::start(op_node_sim::ClusterConfig {
            nodes: N,
            block_time: Duration::from_secs(1),
            node_configs,
            ..Default::default()
        })
        .await
        .expect("start the op-node simulator");
        let prefix = format!("/op-sidecar/{}", unique("chaos"));
        let mut proxies = Vec::with_capacity(N);
        for _ in 0..N {
            let mut links = Vec::with_capacity(N);
            for m in 0..N {
                links.push(TcpProxy::start(&etcd.client_url(m)).await);
            }
            proxies.push(links);
        }
        let mut sidecars = Vec::with_capacity(N);
        for (i, port) in rpc_ports.iter().enumerate() {
            let endpoints = proxies[i]
                .iter()
                .map(TcpProxy::url)
                .collect::<Vec<_>>()
                .join(",");
            let node = sim.node(i);
            let mut b = SidecarBuilder::new(
                &format!("seq-{i}"),
                &node.node_url(),
                &node.geth_url(),
                &endpoints,
                &prefix,
            );
            if let Some(p) = port {
                b = b.rpc_port(*p);
            }
            // Another health interval than the fixtures' 250ms, e.g. the 100ms of the benchmark.
            if let Ok(iv) = std::env::var("CHAOS_HC_INTERVAL") {
                b = b.flag("--healthcheck.interval", &iv);
            }
            let sc = b.start().await;
            if let Some(p) = port {
                // The reserved port was taken meanwhile: point the node at where it runs.
                if sc.url() != format!("http://127.0.0.1:{p}") {
                    node.set_conductor(Some(sc.url()));
                }
            }
            sidecars.push(sc);
        }
        Self {
            sidecars,
            proxies,
            sim,
            etcd,
            prefix,
            mode,
            state: Arc::new(Lock::new(InForce::default())),
            excused: Arc::new(Lock::new(Vec::new())),
        }
    }

    /// The RPC and admin URLs of every sidecar (stable across restarts).
    pub fn urls(&self) -> Vec<(String, String)> {
        self.sidecars
            .iter()
            .map(|s| (s.url(), s.admin_url()))
            .collect()
    }

    /// Sidecars that can answer now (not killed, not SIGSTOPped).
    fn live(&self) -> Vec<usize> {
        let st = self.state.lock();
        (0..N).filter(|&i| !st.sidecar_stopped_or_down(i)).collect()
    }

    /// Which etcd members are down, for notes on refused operator calls.
    fn etcd_note(&self) -> String {
        let st = self.state.lock();
        let down: Vec<String> = (0..N)
            .filter(|&m| st.etcd_down[m])
            .map(|m| format!("etcd{m}"))
            .collect();
        if down.is_empty() {
            "every etcd member up".into()
        } else {
            format!("down: {}", down.join(","))
        }
    }

    /// The first live sidecar at or after `want`, cyclically.
    fn live_near(&self, want: usize) -> Option<usize> {
        let live = self.live();
        (0..N).map(|k| (want + k) % N).find(|i| live.contains(i))
    }

    /// The leader now and how it was found. Sidecar-driven mode: the only sequencing node,
    /// else what a live sidecar's getMaster says. Conductor mode asks getMaster first: a node
    /// whose sidecar died keeps sequencing there (fenced off, it publishes nothing), so the
    /// only sequencing node need not be the leader.
    pub async fn current_leader(&self) -> Option<(usize, &'static str)> {
        let active: Vec<usize> = (0..N).filter(|&i| self.sim.node(i).is_active()).collect();
        let only_active = (active.len() == 1).then(|| (active[0], "only sequencing node"));
        if self.mode == Mode::Driven && only_active.is_some() {
            return only_active;
        }
        for i in self.live() {
            let r = rpc_timeout(
                &self.sidecars[i].url(),
                "coordinator_getMaster",
                json!([]),
                Duration::from_millis(1000),
            )
            .await;
            match r {
                Ok(Value::String(id)) => {
                    let m = id.strip_prefix("seq-").and_then(|s| s.parse().ok());
                    return m.map(|m| (m, "getMaster"));
                }
                // Answered: nobody leads.
                Ok(_) => return only_active,
                Err(_) => {}
            }
        }
        only_active
    }

    /// Whether fault `kind` may hit member `m` now.
    fn can_hit(&self, m: usize, kind: Kind) -> bool {
        let st = self.state.lock();
        if let Some(g) = kind.group() {
            if st.member[m].iter().any(|(_, k)| k.group() == Some(g)) {
                return false;
            }
        }
        if kind == Kind::Override && st.sidecar_stopped_or_down(m) {
            return false;
        }
        drop(st);
        // Sidecar-driven mode cannot fence a node that hangs while it sequences (README,
        // "Limits"): hang only nodes that are not sequencing.
        !(self.mode == Mode::Driven && kind == Kind::NodeHang && self.sim.node(m).is_active())
    }

    /// Picks the member for a member fault: the role's member, else the next one it may hit.
    async fn resolve(&self, f: &Fault) -> Result<(usize, String), String> {
        let (want, mut note) = match f.target {
            Target::Leader => match self.current_leader().await {
                Some((l, how)) => (l, format!("leader seq-{l} by {how}")),
                None => (
                    f.fallback,
                    format!("no leader, fallback seq-{}", f.fallback),
                ),
            },
            Target::Member(i) => (i, format!("seq-{i}")),
        };
        for k in 0..N {
            let m = (want + k) % N;
            if self.can_hit(m, f.kind) {
                if k > 0 {
                    note = format!("seq-{m} ({note} not eligible for {})", f.kind.name());
                }
                return Ok((m, note));
            }
        }
        Err(format!("{note}: no member can take {} now", f.kind.name()))
    }

    /// Injects `run.fault`; fills in the member, note and injection time, or `skipped`.
    pub async fn inject(&mut self, run: &mut Run) {
        let f = run.fault.clone();
        let member = if f.kind.on_member() {
            match self.resolve(&f).await {
                Ok((m, note)) => {
                    run.note = note;
                    Some(m)
                }
                Err(why) => {
                    run.skipped = Some(why);
                    return;
                }
            }
        } else {
            None
        };
        run.member = member;
        let m = member.unwrap_or(0);
        let t = now_ms();
        match f.kind {
            Kind::SidecarKill => self.sidecars[m].kill(),
            Kind::SidecarStop => self.sidecars[m].pause(),
            Kind::SidecarTerm => self.sidecars[m].terminate(),
            Kind::EtcdPartition => self.proxies[m].iter().for_each(TcpProxy::partition),
            Kind::EtcdMemberKill => {
                self.etcd.kill_member(f.param as usize);
                self.state.lock().etcd_down[f.param as usize] = true;
            }
            Kind::QuorumLoss => {
                for e in (0..N).filter(|&e| e != f.param as usize) {
                    self.etcd.kill_member(e);
                    self.state.lock().etcd_down[e] = true;
                }
            }
            Kind::NodeCrash => self.sim.node(m).crash(),
            Kind::NodeStall => self.sim.node(m).stall_head(true),
            Kind::NodeHang => self.sim.node(m).hang(true),
            Kind::NodeSlow => self
                .sim
                .node(m)
                .set_rpc_delay(Duration::from_millis(f.param)),
            Kind::NodeSlowAdmin => self
                .sim
                .node(m)
                .set_rpc_delay_for(Duration::from_millis(f.param), &ADMIN_METHODS),
            Kind::GossipCut => self.sim.node(m).cut_gossip(true),
            Kind::Transfer => {
                // conductor_transferLeader acts only on the leader (on a follower it is a no-op,
                // as op-conductor's), so it goes to the leader; the named transfers go anywhere.
                let leader = match f.param {
                    0 => self.current_leader().await.map(|(l, _)| l),
                    _ => None,
                };
                let Some(via) = self.live_near(leader.unwrap_or(f.via)) else {
                    run.skipped = Some("no live sidecar to ask".into());
                    return;
                };
                let url = self.sidecars[via].url();
                let to = format!("seq-{}", f.to);
                let (method, params) = match f.param {
                    0 => ("conductor_transferLeader", json!([])),
                    1 => ("coordinator_setMaster", json!([to])),
                    _ => (
                        "conductor_transferLeaderToServer",
                        json!([to, self.sidecars[f.to].url()]),
                    ),
                };
                run.note = format!("{method} via seq-{via}");
                let outcome = run.outcome.clone();
                tokio::spawn(async move {
                    let began = now_ms();
                    let r = rpc_timeout(&url, method, params, TRANSFER_CALL).await;
                    let took = now_ms().saturating_sub(began);
                    *outcome.lock() = Some(match r {
                        Ok(_) => format!("ok after {took} ms"),
                        Err(e) => format!("{e} (after {took} ms)"),
                    });
                });
            }
            Kind::Pause => {
                let url = self.sidecars[m].url();
                match rpc_timeout(&url, "conductor_pause", json!([]), OP_CALL).await {
                    Ok(_) => {}
                    Err(e) if e.is_transport() => {
                        *run.outcome.lock() = Some(format!("unconfirmed: {e}"));
                    }
                    Err(e) => {
                        run.skipped = Some(format!("conductor_pause refused: {e}"));
                        return;
                    }
                }
            }
            Kind::StopElection => {
                // Any sidecar will do: one whose etcd client is stuck on a dead member refuses
                // (noted), the next one is asked.
                let live = self.live();
                let order: Vec<usize> = (0..N)
                    .map(|k| (f.via + k) % N)
                    .filter(|i| live.contains(i))
                    .collect();
                let mut refusals = Vec::new();
                let mut done = false;
                for via in order {
                    let url = self.sidecars[via].url();
                    match rpc_timeout(&url, "coordinator_stopElection", json!([]), OP_CALL).await {
                        Ok(_) => {}
                        Err(e) if e.is_transport() => {
                            refusals.push(format!("seq-{via} unconfirmed: {e}"));
                        }
                        Err(e) => {
                            refusals.push(format!("seq-{via} refused: {e}"));
                            continue;
                        }
                    }
                    run.note = format!("via seq-{via}");
                    done = true;
                    break;
                }
                let etcd = self.etcd_note();
                if !refusals.is_empty() {
                    *run.outcome.lock() = Some(format!("{} ({etcd})", refusals.join("; ")));
                }
                if !done {
                    run.skipped = Some(format!("every live sidecar refused ({etcd})"));
                    return;
                }
                self.state.lock().election_stopped = true;
            }
            Kind::Override => {
                let url = self.sidecars[m].url();
                if let Err(e) =
                    rpc_timeout(&url, "conductor_overrideLeader", json!([true]), OP_CALL).await
                {
                    run.skipped = Some(format!("conductor_overrideLeader(true) failed: {e}"));
                    return;
                }
                self.state.lock().override_on = Some(m);
            }
        }
        run.injected_ms = Some(t);
        let mut st = self.state.lock();
        if f.kind.group().is_some() {
            st.member[m].push((f.id, f.kind));
        }
        if f.kind != Kind::Transfer {
            st.ids.push(f.id);
        }
    }

    /// Removes `run.fault`. `Err` = try again later (the fault stays in force until then).
    pub async fn remove(&mut self, run: &mut Run) -> Result<(), String> {
        let f = run.fault.clone();
        let m = run.member.unwrap_or(0);
        match f.kind {
            Kind::SidecarKill => {
                self.sidecars[m].restart().await;
                self.excuse(m, run);
            }
            Kind::SidecarStop => {
                self.sidecars[m].resume();
                self.excuse(m, run);
            }
            Kind::SidecarTerm => {
                let exit = self.sidecars[m].wait_exit(GRACEFUL_EXIT).await;
                let took = now_ms().saturating_sub(run.injected_ms.unwrap_or(0));
                *run.outcome.lock() = Some(match exit {
                    Some(status) => format!("exited with {status} {took} ms after SIGTERM"),
                    None => format!(
                        "still running {took} ms after SIGTERM: killed (graceful shutdown hung)"
                    ),
                });
                self.sidecars[m].restart().await;
                self.excuse(m, run);
            }
            Kind::EtcdPartition => self.proxies[m].iter().for_each(TcpProxy::heal),
            Kind::EtcdMemberKill => {
                self.etcd.restart_member(f.param as usize).await;
                self.state.lock().etcd_down[f.param as usize] = false;
            }
            Kind::QuorumLoss => {
                for e in (0..N).filter(|&e| e != f.param as usize) {
                    self.etcd.restart_member(e).await;
                    self.state.lock().etcd_down[e] = false;
                }
            }
            Kind::NodeCrash => self
                .sim
                .node(m)
                .restart()
                .await
                .map_err(|e| format!("node restart: {e:#}"))?,
            Kind::NodeStall => self.sim.node(m).stall_head(false),
            Kind::NodeHang => self.sim.node(m).hang(false),
            Kind::NodeSlow | Kind::NodeSlowAdmin => self.sim.node(m).set_rpc_delay(Duration::ZERO),
            Kind::GossipCut => self.sim.node(m).cut_gossip(false),
            Kind::Transfer => {}
            Kind::Pause => {
                let url = self.sidecars[m].url();
                rpc_timeout(&url, "conductor_resume", json!([]), OP_CALL)
                    .await
                    .map_err(|e| format!("conductor_resume: {e}"))?;
            }
            Kind::StopElection => {
                let live = self.live();
                let mut errors = Vec::new();
                for via in (0..N).map(|k| (f.via + k) % N).filter(|i| live.contains(i)) {
                    let url = self.sidecars[via].url();
                    match rpc_timeout(&url, "coordinator_startElection", json!([]), OP_CALL).await {
                        Ok(_) => {
                            errors.clear();
                            break;
                        }
                        Err(e) => errors.push(format!("seq-{via}: {e}")),
                    }
                }
                if !errors.is_empty() || live.is_empty() {
                    return Err(format!(
                        "coordinator_startElection: {} ({})",
                        errors.join("; "),
                        self.etcd_note()
                    ));
                }
                self.state.lock().election_stopped = false;
            }
            Kind::Override => {
                let url = self.sidecars[m].url();
                rpc_timeout(&url, "conductor_overrideLeader", json!([false]), OP_CALL)
                    .await
                    .map_err(|e| format!("conductor_overrideLeader(false): {e}"))?;
                self.state.lock().override_on = None;
            }
        }
        run.ended_ms = Some(now_ms());
        let mut st = self.state.lock();
        st.member[m].retain(|(id, _)| *id != f.id);
        st.ids.retain(|id| *id != f.id);
        Ok(())
    }

    /// The sidecar could not answer from the injection until it came back (plus a grace).
    fn excuse(&self, m: usize, run: &Run) {
        let from = run.injected_ms.unwrap_or_else(now_ms);
        self.excused
            .lock()
            .push((m, from, now_ms() + COME_BACK_GRACE_MS));
    }
}
