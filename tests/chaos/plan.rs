//! The fault schedule: a pure function of (seed, mode, count), so a failing seed replays the
//! same schedule. Faults overlap, within caps that leave an etcd quorum and a healthy
//! candidate most of the time.
//!
//! Targets are roles ("the leader at injection time") or fixed members; the role is resolved
//! when the fault is injected (printed in the run log), so the schedule is the same on replay
//! even though which process is the leader at that instant depends on the run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which of the two ways op-node is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Driven,
    Conductor,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Driven => "driven",
            Mode::Conductor => "conductor",
        }
    }

    /// Mixed into the seed so the two modes of one seed get independent schedules.
    fn salt(self) -> u64 {
        match self {
            Mode::Driven => 0x6472_6976_656e,
            Mode::Conductor => 0x636f_6e64_7563,
        }
    }
}

/// Number of sidecars / simulated nodes / etcd members.
pub const N: usize = 3;

/// At most this many faults in force at once.
pub const MAX_ACTIVE: usize = 3;
/// At most this many faults on sidecars, their nodes or their etcd links at once (so at least
/// one member is untouched).
pub const MAX_MEMBER: usize = 2;
/// At most one etcd fault (member kill or quorum loss) at once.
pub const MAX_ETCD: usize = 1;
/// At most one operator action (transfer, stopped election, override) at once.
pub const MAX_OPERATOR: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL the sidecar, restart it when the fault ends.
    SidecarKill,
    /// SIGSTOP the sidecar past the lease TTL, then SIGCONT.
    SidecarStop,
    /// SIGTERM (graceful shutdown: stop, record, resign), restart when the fault ends: a
    /// rolling restart.
    SidecarTerm,
    /// Blackhole the sidecar's connections to every etcd member, then heal.
    EtcdPartition,
    /// Kill one etcd member, restart it.
    EtcdMemberKill,
    /// Kill two etcd members (quorum lost), restart both.
    QuorumLoss,
    /// Crash the simulated op-node, restart it.
    NodeCrash,
    /// The node's unsafe head stops (no production, gossip ignored).
    NodeStall,
    /// The node's RPC accepts but never answers; production continues.
    NodeHang,
    /// Every node RPC waits `param` ms (1.5–1.9 s, the sidecar's node timeout is 2 s).
    NodeSlow,
    /// Only the node's `admin_*` methods wait `param` ms: health checks pass, so the member
    /// stays a candidate, but its take-over and step-down calls run near the timeout.
    NodeSlowAdmin,
    /// The node neither sends nor receives gossip.
    GossipCut,
    /// Operator: `conductor_transferLeader`, `coordinator_setMaster` or
    /// `conductor_transferLeaderToServer` (param 0/1/2).
    Transfer,
    /// Operator: `conductor_pause` on the target, `conductor_resume` when the fault ends.
    Pause,
    /// Operator: `coordinator_stopElection`, then `coordinator_startElection`.
    StopElection,
    /// Operator: `conductor_overrideLeader true` on the target, then `false`.
    Override,
}

/// Cap classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Member,
    Etcd,
    Operator,
}

/// Faults of one group never hit the same member at once (they would undo each other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// The sidecar process: kill, stop, pause.
    Process,
    /// The sidecar's etcd links.
    Link,
    /// The simulated op-node.
    Node,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::SidecarKill,
        Kind::SidecarStop,
        Kind::SidecarTerm,
        Kind::EtcdPartition,
        Kind::EtcdMemberKill,
        Kind::QuorumLoss,
        Kind::NodeCrash,
        Kind::NodeStall,
        Kind::NodeHang,
        Kind::NodeSlow,
        Kind::NodeSlowAdmin,
        Kind::GossipCut,
        Kind::Transfer,
        Kind::Pause,
        Kind::StopElection,
        Kind::Override,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::SidecarKill => "sidecar-kill",
            Kind::SidecarStop => "sidecar-sigstop",
            Kind::SidecarTerm => "sidecar-sigterm",
            Kind::EtcdPartition => "etcd-partition",
            Kind::EtcdMemberKill => "etcd-member-kill",
            Kind::QuorumLoss => "etcd-quorum-loss",
            Kind::NodeCrash => "node-crash",
            Kind::NodeStall => "node-stall",
            Kind::NodeHang => "node-hang",
            Kind::NodeSlow => "node-slow",
            Kind::NodeSlowAdmin => "node-slow-admin",
            Kind::GossipCut => "gossip-cut",
            Kind::Transfer => "op-transfer",
            Kind::Pause => "op-pause",
            Kind::StopElection => "op-stop-election",
            Kind::Override => "op-override",
        }
    }

    pub fn class(self) -> Class {
        match self {
            Kind::EtcdMemberKill | Kind::QuorumLoss => Class::Etcd,
            Kind::Transfer | Kind::StopElection | Kind::Override => Class::Operator,
            _ => Class::Member,
        }
    }

    pub fn group(self) -> Option<Group> {
        match self {
            Kind::SidecarKill | Kind::SidecarStop | Kind::SidecarTerm | Kind::Pause => {
                Some(Group::Process)
            }
            Kind::EtcdPartition => Some(Group::Link),
            Kind::NodeCrash
            | Kind::NodeStall
            | Kind::NodeHang
            | Kind::NodeSlow
            | Kind::NodeSlowAdmin
            | Kind::GossipCut => Some(Group::Node),
            _ => None,
        }
    }

    /// Whether the fault acts on one member (sidecar, node or etcd link), chosen by `target`.
    pub fn on_member(self) -> bool {
        self.group().is_some() || self == Kind::Override
    }

    /// Whether hitting the producing leader with it must move production elsewhere (its
    /// failover time is then measured to a block by a different producer).
    pub fn disables_leader(self) -> bool {
        matches!(
            self,
            Kind::SidecarKill
                | Kind::SidecarStop
                | Kind::SidecarTerm
                | Kind::EtcdPartition
                | Kind::NodeCrash
                | Kind::NodeStall
                | Kind::NodeHang
                | Kind::NodeSlow
                | Kind::Pause
        )
    }

    fn weight(self, mode: Mode) -> u32 {
        match self {
            Kind::SidecarKill => 10,
            Kind::SidecarStop => 8,
            Kind::SidecarTerm => 6,
            Kind::EtcdPartition => 8,
            Kind::EtcdMemberKill => 5,
            Kind::QuorumLoss => 3,
            Kind::NodeCrash => 8,
            Kind::NodeStall => 7,
            Kind::NodeHang => 6,
            Kind::NodeSlow => 8,
            Kind::NodeSlowAdmin => 6,
            Kind::GossipCut => 5,
            Kind::Transfer => 7,
            Kind::Pause => 5,
            Kind::StopElection => 4,
            Kind::Override => match mode {
                Mode::Conductor => 2,
                // Only conductor_leader's answer changes: op-node does not ask in this mode.
                Mode::Driven => 1,
            },
        }
    }

    /// (min, max) time in force, ms. A transfer is one call; its span only reserves a slot.
    fn duration_ms(self) -> (u64, u64) {
        match self {
            Kind::SidecarKill => (1_000, 6_000),
            // Past the 2 s lease TTL.
            Kind::SidecarStop => (3_000, 8_000),
            // Down time after the process exited.
            Kind::SidecarTerm => (1_000, 6_000),
            Kind::EtcdPartition => (3_000, 10_000),
            Kind::EtcdMemberKill => (2_000, 10_000),
            Kind::QuorumLoss => (3_000, 8_000),
            Kind::NodeCrash => (1_000, 6_000),
            Kind::NodeStall => (3_000, 10_000),
            Kind::NodeHang => (3_000, 8_000),
            Kind::NodeSlow => (4_000, 10_000),
            Kind::NodeSlowAdmin => (4_000, 10_000),
            Kind::GossipCut => (3_000, 10_000),
            Kind::Transfer => (3_000, 3_000),
            Kind::Pause => (2_000, 6_000),
            Kind::StopElection => (3_000, 8_000),
            Kind::Override => (2_000, 4_000),
        }
    }
}

/// Who a member fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The leader at injection time (`fallback` when there is none).
    Leader,
    Member(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub id: usize,
    /// Planned start, ms after the campaign's start.
    pub at_ms: u64,
    pub dur_ms: u64,
    pub kind: Kind,
    pub target: Target,
    /// Member used when the target role resolves to nobody.
    pub fallback: usize,
    /// Sidecar to send an operator call to (another live one if it is down).
    pub via: usize,
    /// Kind-specific: NodeSlow delay ms; EtcdMemberKill member; QuorumLoss the member that
    /// stays up; Transfer method (0 transferLeader, 1 setMaster, 2 transferLeaderToServer).
    pub param: u64,
    /// Transfer: the named target member (methods 1 and 2).
    pub to: usize,
}

impl Fault {
    pub fn end_ms(&self) -> u64 {
        self.at_ms + self.dur_ms
    }

    /// One line for the schedule table.
    pub fn describe(&self) -> String {
        let target = match self.target {
            Target::Leader => format!("leader (else seq-{})", self.fallback),
            Target::Member(i) => format!("seq-{i}"),
        };
        let what = match self.kind {
            Kind::NodeSlow => format!("{target}, rpc delay {} ms", self.param),
            Kind::NodeSlowAdmin => format!("{target}, admin_* delay {} ms", self.param),
            Kind::EtcdMemberKill => format!("etcd{}", self.param),
            Kind::QuorumLoss => {
                let up = self.param as usize;
                let down: Vec<String> = (0..N)
                    .filter(|&m| m != up)
                    .map(|m| format!("etcd{m}"))
                    .collect();
                format!("{} (etcd{up} stays)", down.join("+"))
            }
            Kind::Transfer => match self.param {
                0 => format!(
                    "conductor_transferLeader via the leader (else seq-{})",
                    self.via
                ),
                1 => format!(
                    "coordinator_setMaster(seq-{}) via seq-{}",
                    self.to, self.via
                ),
                _ => format!(
                    "conductor_transferLeaderToServer(seq-{}) via seq-{}",
                    self.to, self.via
                ),
            },
            Kind::StopElection => format!("via seq-{}", self.via),
            _ => target,
        };
        format!(
            "#{:<3} at {:>7.1}s for {:>4.1}s  {:<17} {what}",
            self.id,
            self.at_ms as f64 / 1000.0,
            self.dur_ms as f64 / 1000.0,
            self.kind.name()
        )
    }
}

/// Draws `count` faults for `mode` from `seed`. Starts are 1–5 s apart (later if a cap would
/// be exceeded: then at the earliest end of a fault in force that makes room).
pub fn generate(seed: u64, mode: Mode, count: usize) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed ^ mode.salt());
    let total: u32 = Kind::ALL.iter().map(|k| k.weight(mode)).sum();
    let mut placed: Vec<Fault> = Vec::with_capacity(count);
    let mut t = 0u64;
    for id in 0..count {
        t += rng.random_range(1_000..=5_000u64);
        let mut pick = rng.random_range(0..total);
        let mut kind = Kind::ALL[0];
        for k in Kind::ALL {
            if pick < k.weight(mode) {
                kind = k;
                break;
            }
            pick -= k.weight(mode);
        }
        let (lo, hi) = kind.duration_ms();
        let dur_ms = rng.random_range(lo..=hi);
        let target = if rng.random_bool(0.6) {
            Target::Leader
        } else {
            Target::Member(rng.random_range(0..N))
        };
        let fallback = rng.random_range(0..N);
        let via = rng.random_range(0..N);
        let to = rng.random_range(0..N);
        let param = match kind {
            Kind::NodeSlow | Kind::NodeSlowAdmin => rng.random_range(1_500..=1_900u64),
            Kind::EtcdMemberKill | Kind::QuorumLoss => rng.random_range(0..N as u64),
            Kind::Transfer => rng.random_range(0..3u64),
            _ => 0,
        };
        let target = if kind.on_member() {
            target
        } else {
            Target::Leader
        };
        let at_ms = earliest_fit(&placed, t, dur_ms, kind.class());
        t = at_ms;
        placed.push(Fault {
            id,
            at_ms,
            dur_ms,
            kind,
            target,
            fallback,
            via,
            param,
            to,
        });
    }
    placed
}

fn earliest_fit(placed: &[Fault], t: u64, dur: u64, class: Class) -> u64 {
    let mut candidates: Vec<u64> = std::iter::once(t)
        .chain(placed.iter().map(Fault::end_ms).filter(|&e| e > t))
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .find(|&c| fits(placed, c, c + dur, class))
        // After every placed fault has ended nothing is in force, so this is never reached.
        .unwrap_or_else(|| placed.iter().map(Fault::end_ms).max().unwrap_or(t).max(t))
}

/// Whether one more fault of `kind` keeps every cap, given the kinds in force.
pub fn room_for(in_force: &[Kind], kind: Kind) -> bool {
    let classes: Vec<Class> = in_force
        .iter()
        .chain(std::iter::once(&kind))
        .map(|k| k.class())
        .collect();
    within_caps(&classes)
}

fn within_caps(active: &[Class]) -> bool {
    let count = |c: Class| active.iter().filter(|&&a| a == c).count();
    active.len() <= MAX_ACTIVE
        && count(Class::Member) <= MAX_MEMBER
        && count(Class::Etcd) <= MAX_ETCD
        && count(Class::Operator) <= MAX_OPERATOR
}

/// Whether a fault of `class` in force over `[start, end)` keeps every cap at every instant.
fn fits(placed: &[Fault], start: u64, end: u64, class: Class) -> bool {
    let points = std::iter::once(start).chain(
        placed
            .iter()
            .map(|f| f.at_ms)
            .filter(|&p| start < p && p < end),
    );
    for p in points {
        let active: Vec<Class> = placed
            .iter()
            .filter(|f| f.at_ms <= p && p < f.end_ms())
            .map(|f| f.kind.class())
            .chain(std::iter::once(class))
            .collect();
        if !within_caps(&active) {
            return false;
        }
    }
    true
}

/// The caps, checked at every start of `plan` (used by the unit tests).
pub fn caps_hold(plan: &[Fault]) -> bool {
    plan.iter().all(|f| {
        let active: Vec<Class> = plan
            .iter()
            .filter(|g| g.at_ms <= f.at_ms && f.at_ms < g.end_ms())
            .map(|g| g.kind.class())
            .collect();
        within_caps(&active)
    })
}
