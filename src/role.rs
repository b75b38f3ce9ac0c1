//! The role state machine's decisions as pure functions: what a follower, candidate or leader does next, given the cluster view, the node's health and the clocks. Makes no call and owns no state.
//!
//! Roles: `Follower` (not holding the key) → `Candidate` (won the key; handing over, gate down)
//! → `Leader` (sequencing, gate up) → `SteppingDown` (gate down; stop, resign) → `Follower`.
//! The control loop (`control`) gathers the inputs, asks these functions, and carries the
//! answer out; every await it makes as candidate or leader is bounded by the lease (`term`).

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{best_candidate, View};
use crate::election::{Leadership, LeaseState};
use crate::health::Health;
use crate::sequencer::BlockId;
use crate::status::Mode;

/// Where a sidecar stands in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
    SteppingDown,
}

/// The timing settings the decisions depend on.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub health_interval: Duration,
    /// How long a new leader's stale head is forgiven (its first blocks must make it fresh).
    pub grace: Duration,
    /// The handover's catch-up bound (`--handover.catchup-timeout`).
    pub catchup: Duration,
}

impl Timing {
    /// With the election stopped and no leader, how long the last leader has the lease to
    /// itself before any healthy, caught-up candidate may take it (the chain must not halt).
    pub fn stopped_election_bound(&self) -> Duration {
        self.lease_ttl * 3
    }

    /// With no leader, how long a candidate behind the recorded head stands back for a member
    /// that has it (found by the fault campaign: lagging winners each waited out the catch-up
    /// bound in turn while the caught-up member could not get the lease).
    pub fn catch_up_priority(&self) -> Duration {
        self.catchup + self.lease_ttl * 2
    }
}

// === leader ===

pub struct LeaderInputs<'a> {
    pub me: &'a str,
    pub leadership: &'a Leadership,
    pub now: Instant,
    pub paused: bool,
    pub mode: Mode,
    pub health: &'a Health,
    /// None when etcd could not be read this tick.
    pub view: Option<&'a View>,
    pub active: Option<bool>,
    pub leading_since: Option<Instant>,
    /// The head this leader last recorded (sidecar-driven mode).
    pub recorded: Option<&'a BlockId>,
    /// The recorded head from the last view that could be read: used when etcd is unreadable.
    pub known_target: Option<&'a BlockId>,
    pub timing: Timing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Unhealthy, but nobody better: keep leading rather than halt the chain (L3).
    KeepUnhealthy,
    StepDown(String),
    /// Record a transfer to `target`, then step down.
    HandOver {
        target: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderPlan {
    pub verdict: Verdict,
    /// The node is reachable but not sequencing (it restarted, or was stopped by hand): start
    /// it again, at or past this target.
    pub restart: Option<Option<BlockId>>,
    /// Sidecar-driven mode: record this head (fenced), so a successor knows where we are.
    pub record: Option<BlockId>,
    /// Conductor mode: our node is exactly one block behind this committed head; post it.
    pub repair: Option<BlockId>,
}

pub fn decide_leader(i: &LeaderInputs) -> LeaderPlan {
    let mut plan = LeaderPlan {
        verdict: Verdict::Keep,
        restart: None,
        record: None,
        repair: None,
    };
    // Paused (op-conductor's semantics): no automatic action. The leader keeps its lease and
    // keeps sequencing, fenced as always; only safety (a lost key or lease) and an operator's
    // transfer still end the term.
    if let Some(v) = i.view {
        let ours = v
            .leader
            .as_ref()
            .is_some_and(|cur| cur.key == i.leadership.key && cur.epoch == i.leadership.epoch);
        if !ours {
            plan.verdict = Verdict::StepDown("leader key is gone from etcd".into());
            return plan;
        }
        if !v.may_lead(i.me) {
            // Removed or demoted by an operator: hand over to a voter if one is ready.
            plan.verdict = match best_candidate(v, i.me, i.health.head.as_ref()) {
                Some(target) => Verdict::HandOver {
                    reason: format!("no longer a voter; handing over to {target}"),
                    target,
                },
                None => Verdict::StepDown("no longer a voter".into()),
            };
            return plan;
        }
        if let Some(t) = v.pending_transfer() {
            if t.epoch == i.leadership.epoch && t.target != i.me {
                plan.verdict =
                    Verdict::StepDown(format!("leadership transfer to {} requested", t.target));
                return plan;
            }
        }
        if !i.health.healthy && !v.election_stopped && !i.paused {
            // The grace after taking over forgives a node still recovering, or stale (right
            // after a halt our own head is as old as everyone's); a node that is down, hung or
            // refusing connections is handed over at once.
            let settled = i
                .leading_since
                .is_some_and(|t| i.now.saturating_duration_since(t) >= i.timing.grace);
            if settled || i.health.node_down() {
                plan.verdict = match best_candidate(v, i.me, i.health.head.as_ref()) {
                    Some(target) => Verdict::HandOver {
                        reason: format!(
                            "node unhealthy ({}); handing over to {target}",
                            i.health.summary()
                        ),
                        target,
                    },
                    None => Verdict::KeepUnhealthy,
                };
            }
        }
    }
    if i.paused {
        plan.verdict = match plan.verdict {
            Verdict::StepDown(why) => Verdict::StepDown(why),
            _ => Verdict::Keep,
        };
        if i.mode == Mode::Driven && i.active == Some(true) {
            plan.record = i.health.head.clone().filter(|h| i.recorded != Some(h));
        }
        return plan;
    }
    if i.active == Some(false) && i.health.reachable {
        let target = i
            .view
            .and_then(View::recorded_head)
            .or_else(|| i.known_target.cloned());
        plan.restart = Some(target);
    }
    if i.mode == Mode::Driven && i.active == Some(true) {
        if let Some(head) = &i.health.head {
            if i.recorded != Some(head) {
                plan.record = Some(head.clone());
            }
        }
    }
    if i.mode == Mode::Conductor && i.health.reachable {
        if let (Some(committed), Some(local)) =
            (i.view.and_then(|v| v.head.as_ref()), &i.health.head)
        {
            if local.number + 1 == committed.number {
                plan.repair = Some(committed.block());
            }
        }
    }
    plan
}

// === follower ===

pub struct FollowerInputs<'a> {
    pub me: &'a str,
    pub now: Instant,
    pub paused: bool,
    pub health: &'a Health,
    pub view: &'a View,
    pub lease: Option<LeaseState>,
    pub active: Option<bool>,
    /// When this sidecar first saw no leader (reset when one appears).
    pub no_leader_since: Instant,
    /// After a failed handover we stand back until then so a better candidate wins.
    pub give_way_until: Option<Instant>,
    pub timing: Timing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerAction {
    Wait(&'static str),
    /// The leader key is bound to our own lease but we are not leading (we stepped down while
    /// etcd was out of reach and it kept our lease): release it, or nobody can take over.
    ReleaseStaleKey,
    Contend,
}

/// Who led last: the author of the newest head or stopped record.
pub fn last_leader(v: &View) -> Option<&str> {
    let head = v.head.as_ref().map(|h| (h.epoch, h.id.as_str()));
    let stopped = v.stopped.as_ref().map(|s| (s.epoch, s.id.as_str()));
    head.into_iter().chain(stopped).max().map(|(_, id)| id)
}

/// Can the target of a pending transfer still take over? Its member record (kept by its
/// sidecar, gone with its lease) must show a voter, not paused, whose node answers (healthy, or
/// only stale: after a halt every head is).
pub fn transfer_target_ready(v: &View, target: &str) -> bool {
    v.may_lead(target)
        && v.members
            .get(target)
            .is_some_and(|m| !m.paused && (m.healthy || m.only_stale))
}

pub fn decide_follower(i: &FollowerInputs) -> FollowerAction {
    use FollowerAction::*;
    // A paused follower still contends (as a paused op-conductor still takes part in raft
    // elections): a paused cluster has a leader that operators and their tools can find. It
    // takes no sequencer action until resumed.
    let v = i.view;
    if let Some(leader) = &v.leader {
        if i.lease.map(|l| l.id) == Some(leader.lease) {
            return ReleaseStaleKey;
        }
        return Wait("a leader holds the key");
    }
    if !v.may_lead(i.me) {
        return Wait("not a voter in the configured membership");
    }
    let Some(lease) = i.lease else {
        return Wait("no lease");
    };
    if !lease.valid_at(i.now) {
        return Wait("lease not valid");
    }
    let since = i.now.saturating_duration_since(i.no_leader_since);
    let named = match v.pending_transfer() {
        // The named member gets the transfer window to take over, but only while it can: a
        // target whose sidecar is gone, whose node is down or hung, or that was paused or
        // demoted since would hold the chain for the whole window (a wedge the fault campaign
        // found: a setMaster to a member whose node hung right after).
        Some(t) if t.target != i.me && transfer_target_ready(v, &t.target) => {
            return Wait("a transfer to another member is pending")
        }
        Some(t) if t.target != i.me => false,
        // An operator named us: that overrides a stopped election and a recent give-way.
        Some(_) => true,
        None => false,
    };
    if !named {
        if i.give_way_until.is_some_and(|until| i.now < until) {
            return Wait("giving way after a failed handover");
        }
        // A stopped election freezes handovers, not the chain: with no leader at all the last
        // leader takes the lease back, and after a bound anyone eligible may (L2).
        if v.election_stopped
            && last_leader(v) != Some(i.me)
            && since < i.timing.stopped_election_bound()
        {
            return Wait("election stopped; the last leader goes first");
        }
    }
    // First start on a live chain (empty store, no leader): the sequencer already running
    // must be adopted, not stopped (op-conductor #17899), so the others stand back for a
    // while and its own sidecar does not wait out the stale-head delay.
    let adopting = i.active == Some(true) && v.store_empty();
    if !adopting && v.store_empty() {
        if since < i.timing.health_interval * 2 {
            return Wait("empty store: letting a running sequencer's sidecar announce itself");
        }
        let running_elsewhere = v
            .members
            .values()
            .any(|m| m.id != i.me && m.active && !m.paused);
        if running_elsewhere && since < i.timing.lease_ttl * 2 {
            return Wait("empty store: another member's node is sequencing; it adopts first");
        }
    }
    // A stale head alone must not keep a reachable node out when nobody leads: then every
    // head is stale. Fresh candidates get one TTL's head start.
    let eligible = i.health.healthy
        || (i.health.only_stale() && (named || adopting || since >= i.timing.lease_ttl));
    if !eligible {
        return Wait("node not eligible");
    }
    // A candidate whose node lacks the recorded head would only wait out the catch-up bound
    // and give way; while another eligible member is readier, that member goes first: one that
    // has the head, or one a single block behind it (conductor mode repairs that gap at once
    // from the stored payload; the fault campaign found two members 7 blocks behind winning
    // the lease in turn, 10 s each, while the member one block behind waited). Bounded, so a
    // member whose record looks ready but never contends cannot hold us off.
    if !named && since < i.timing.catch_up_priority() {
        if let Some(recorded) = v.recorded_head() {
            let lag = |n: u64| recorded.number.saturating_sub(n);
            let mine = lag(i.health.head.as_ref().map_or(0, |h| h.number));
            let readier = v.members.values().any(|m| {
                m.id != i.me
                    && !m.paused
                    && (m.healthy || m.only_stale)
                    && v.may_lead(&m.id)
                    && m.head.as_ref().is_some_and(|h| {
                        let theirs = lag(h.number);
                        theirs <= 1 && theirs < mine
                    })
            });
            if readier {
                return Wait("behind the recorded head while a readier member can lead");
            }
        }
    }
    Contend
}

/// Inspection (S4): a node sequencing while this sidecar does not lead is stopped, except on a
/// chain with no leader and an empty store (`adoptable`), where it is adopted instead.
pub fn inspect(paused: bool, active: Option<bool>, adoptable: bool) -> bool {
    !paused && active == Some(true) && !adoptable
}

/// The block a candidate's node must have (or pass) before it may start: the recorded head,
/// and no lower than the highest head any other member reports, so a node restored from an
/// old etcd snapshot or lagging behind gossip never starts below what was already published.
pub fn catch_up_target(v: &View, me: &str) -> (Option<BlockId>, u64) {
    let recorded = v.recorded_head();
    let peers = v
        .members
        .values()
        .filter(|m| m.id != me)
        .filter_map(|m| m.head.as_ref().map(|h| h.number))
        .max()
        .unwrap_or(0);
    let floor = peers.max(recorded.as_ref().map(|b| b.number).unwrap_or(0));
    (recorded, floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{LeaderInfo, Stamp};
    use crate::health::Problem;
    use crate::state::{HeadRecord, MemberRecord, TransferRecord};

    const ME: &str = "me";

    fn timing() -> Timing {
        Timing {
            lease_ttl: Duration::from_secs(3),
            health_interval: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            catchup: Duration::from_secs(10),
        }
    }

    fn block(n: u64) -> BlockId {
        BlockId {
            number: n,
            hash: format!("0x{n:x}"),
        }
    }

    fn healthy(n: u64) -> Health {
        Health {
            healthy: true,
            problems: vec![],
            head: Some(block(n)),
            head_time: None,
            reachable: true,
        }
    }

    fn unreachable() -> Health {
        Health {
            healthy: false,
            problems: vec![Problem::NodeUnreachable("connection refused".into())],
            head: None,
            head_time: None,
            reachable: false,
        }
    }

    fn stale(n: u64) -> Health {
        Health {
            healthy: false,
            problems: vec![Problem::Stale {
                age_secs: 30,
                limit_secs: 5,
            }],
            head: Some(block(n)),
            head_time: None,
            reachable: true,
        }
    }

    fn member(id: &str, h: &Health) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            rpc: String::new(),
            node: String::new(),
            healthy: h.healthy,
            only_stale: h.only_stale(),
            paused: false,
            active: false,
            head: h.head.clone(),
            version: String::new(),
        }
    }

    fn leadership() -> Leadership {
        Leadership {
            key: "p/leader/7".into(),
            epoch: 40,
            lease: 7,
        }
    }

    fn view_led_by_me(head: u64) -> View {
        let l = leadership();
        let mut v = View {
            leader: Some(LeaderInfo {
                key: l.key.clone(),
                id: ME.into(),
                epoch: l.epoch,
                lease: l.lease,
            }),
            head: Some(HeadRecord {
                number: head,
                hash: format!("0x{head:x}"),
                parent_hash: String::new(),
                epoch: l.epoch,
                id: ME.into(),
                node: None,
            }),
            ..View::default()
        };
        v.members.insert("b".into(), member("b", &healthy(head)));
        v
    }

    fn leader_inputs<'a>(
        l: &'a Leadership,
        h: &'a Health,
        v: Option<&'a View>,
        now: Instant,
        since: Instant,
    ) -> LeaderInputs<'a> {
        LeaderInputs {
            me: ME,
            leadership: l,
            now,
            paused: false,
            mode: Mode::Conductor,
            health: h,
            view: v,
            active: Some(true),
            leading_since: Some(since),
            recorded: None,
            known_target: None,
            timing: timing(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn grace_forgives_a_stale_head_but_not_a_dead_node() {
        let l = leadership();
        let v = view_led_by_me(10);
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        // Two seconds into leadership a stale head is forgiven...
        let h = stale(10);
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&v), now, t0));
        assert_eq!(plan.verdict, Verdict::Keep);
        // ...a node that refuses connections is not: hand over at once.
        let h = unreachable();
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&v), now, t0));
        assert!(matches!(plan.verdict, Verdict::HandOver { ref target, .. } if target == "b"));
        // A node still recovering (its latest sample was fine, the filter not yet healthy) is
        // forgiven too.
        let h = Health {
            healthy: false,
            problems: vec![],
            head: Some(block(10)),
            head_time: None,
            reachable: true,
        };
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&v), now, t0));
        assert_eq!(plan.verdict, Verdict::Keep);
        // After the grace even a stale head is handed over.
        tokio::time::advance(Duration::from_secs(9)).await;
        let h = stale(10);
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&v), Instant::now(), t0));
        assert!(matches!(plan.verdict, Verdict::HandOver { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn restart_uses_the_last_known_target_when_etcd_is_unreadable() {
        let l = leadership();
        let h = healthy(10);
        let known = block(12);
        let now = Instant::now();
        let mut i = leader_inputs(&l, &h, None, now, now);
        i.active = Some(false);
        i.known_target = Some(&known);
        let plan = decide_leader(&i);
        assert_eq!(plan.restart, Some(Some(block(12))), "never start unchecked");
        assert_eq!(
            plan.verdict,
            Verdict::Keep,
            "no view: no etcd-based verdict"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leader_steps_down_for_a_lost_key_or_a_transfer_elsewhere() {
        let l = leadership();
        let h = healthy(10);
        let now = Instant::now();
        let mut v = view_led_by_me(10);
        v.transfer = Some(TransferRecord {
            target: "b".into(),
            from: ME.into(),
            epoch: l.epoch,
            expires_ms: 0,
        });
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&v), now, now));
        assert!(matches!(plan.verdict, Verdict::StepDown(ref r) if r.contains("transfer to b")));
        v.transfer = None;
        v.leader = None;
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&v), now, now));
        assert!(matches!(plan.verdict, Verdict::StepDown(ref r) if r.contains("gone")));
    }

    #[tokio::test(start_paused = true)]
    async fn paused_leader_keeps_leading_and_acts_on_nothing() {
        let l = leadership();
        let v = view_led_by_me(10);
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(60)).await;
        let h = unreachable();
        let mut i = leader_inputs(&l, &h, Some(&v), Instant::now(), t0);
        i.paused = true;
        i.active = Some(false);
        let plan = decide_leader(&i);
        assert_eq!(
            plan.verdict,
            Verdict::Keep,
            "no health handover while paused"
        );
        assert_eq!(plan.restart, None, "no restart while paused");
        // Safety still applies: a lost key ends the term.
        let mut lost = v.clone();
        lost.leader = None;
        let mut i = leader_inputs(&l, &h, Some(&lost), Instant::now(), t0);
        i.paused = true;
        assert!(matches!(decide_leader(&i).verdict, Verdict::StepDown(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn conductor_leader_one_block_behind_repairs() {
        let l = leadership();
        let h = healthy(9);
        let v = view_led_by_me(10);
        let now = Instant::now();
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&v), now, now));
        assert_eq!(plan.repair, Some(block(10)));
    }

    fn lease_now() -> LeaseState {
        let ttl = Duration::from_secs(3);
        LeaseState::new(9, Stamp::now(), ttl, ttl)
    }

    fn follower<'a>(
        h: &'a Health,
        v: &'a View,
        since: Instant,
        now: Instant,
    ) -> FollowerInputs<'a> {
        FollowerInputs {
            me: ME,
            now,
            paused: false,
            health: h,
            view: v,
            lease: Some(lease_now()),
            active: Some(false),
            no_leader_since: since,
            give_way_until: None,
            timing: timing(),
        }
    }

    fn leaderless(last: &str) -> View {
        View {
            head: Some(HeadRecord {
                number: 10,
                hash: "0xa".into(),
                parent_hash: String::new(),
                epoch: 40,
                id: last.into(),
                node: None,
            }),
            election_stopped: true,
            ..View::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stopped_election_never_halts_the_chain() {
        let h = healthy(10);
        let t0 = Instant::now();
        // The last leader takes the lease back at once.
        let v = leaderless(ME);
        assert_eq!(
            decide_follower(&follower(&h, &v, t0, t0)),
            FollowerAction::Contend
        );
        // Anyone else waits for the bound, then contends.
        let v = leaderless("other");
        assert!(matches!(
            decide_follower(&follower(&h, &v, t0, t0)),
            FollowerAction::Wait(_)
        ));
        tokio::time::advance(timing().stopped_election_bound()).await;
        let now = Instant::now();
        let mut i = follower(&h, &v, t0, now);
        i.lease = Some(lease_now());
        assert_eq!(decide_follower(&i), FollowerAction::Contend);
        // With a live leader a stopped election still freezes everything.
        let mut v = leaderless("other");
        v.leader = Some(LeaderInfo {
            key: "p/leader/5".into(),
            id: "other".into(),
            epoch: 50,
            lease: 5,
        });
        assert!(matches!(
            decide_follower(&i_with(&h, &v, t0, now)),
            FollowerAction::Wait(_)
        ));
    }

    fn i_with<'a>(h: &'a Health, v: &'a View, since: Instant, now: Instant) -> FollowerInputs<'a> {
        let mut i = follower(h, v, since, now);
        i.lease = Some(lease_now());
        i
    }

    #[tokio::test(start_paused = true)]
    async fn own_key_while_following_is_released() {
        let h = healthy(10);
        let t0 = Instant::now();
        let lease = lease_now();
        let v = View {
            leader: Some(LeaderInfo {
                key: "p/leader/9".into(),
                id: ME.into(),
                epoch: 50,
                lease: lease.id,
            }),
            ..View::default()
        };
        let mut i = follower(&h, &v, t0, t0);
        i.lease = Some(lease);
        assert_eq!(decide_follower(&i), FollowerAction::ReleaseStaleKey);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_follower_waits_one_ttl_then_contends() {
        let h = stale(10);
        let v = leaderless("other");
        let v = View {
            election_stopped: false,
            ..v
        };
        let t0 = Instant::now();
        assert!(matches!(
            decide_follower(&follower(&h, &v, t0, t0)),
            FollowerAction::Wait(_)
        ));
        tokio::time::advance(timing().lease_ttl).await;
        let now = Instant::now();
        assert_eq!(
            decide_follower(&i_with(&h, &v, t0, now)),
            FollowerAction::Contend
        );
        assert!(matches!(
            decide_follower(&i_with(&unreachable(), &v, t0, now)),
            FollowerAction::Wait(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn non_voters_never_lead() {
        use crate::state::{Membership, Server, NONVOTER, VOTER};
        let h = healthy(10);
        let t0 = Instant::now();
        let mut v = leaderless("other");
        v.election_stopped = false;
        let server = |id: &str, suffrage| Server {
            id: id.into(),
            addr: String::new(),
            suffrage,
        };
        v.membership = Some((
            Membership {
                servers: vec![server(ME, NONVOTER), server("b", VOTER)],
                version: 3,
            },
            9,
        ));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Wait(_)
        ));
        // Removed entirely: also never.
        if let Some((m, _)) = v.membership.as_mut() {
            m.servers.retain(|s| s.id != ME);
        }
        assert!(matches!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Wait(_)
        ));
        // A leader that is demoted hands over to a ready voter.
        let l = leadership();
        let mut led = view_led_by_me(10);
        led.membership = v.membership.clone();
        let plan = decide_leader(&leader_inputs(&l, &h, Some(&led), Instant::now(), t0));
        assert!(matches!(plan.verdict, Verdict::HandOver { ref target, .. } if target == "b"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_holds_others_back_only_while_its_target_can_take_over() {
        let t0 = Instant::now();
        let mut v = leaderless("other");
        v.election_stopped = false;
        v.transfer = Some(TransferRecord {
            target: "b".into(),
            from: "other".into(),
            epoch: 40,
            expires_ms: u64::MAX,
        });
        let h = healthy(10);
        v.members.insert("b".into(), member("b", &stale(10)));
        assert!(matches!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Wait(_)
        ));
        // b's node hung or crashed: no reason to wait out the window.
        v.members.insert("b".into(), member("b", &unreachable()));
        assert_eq!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
        // b's sidecar is gone (its member key went with its lease).
        v.members.remove("b");
        assert_eq!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
        // b paused.
        let mut b = member("b", &healthy(10));
        b.paused = true;
        v.members.insert("b".into(), b);
        assert_eq!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_candidate_lets_a_readier_member_go_first() {
        let t0 = Instant::now();
        let mut v = leaderless("other");
        v.election_stopped = false;
        v.members.insert("b".into(), member("b", &stale(10)));
        tokio::time::advance(timing().lease_ttl).await;
        // We are at 7, the recorded head is 10, b has 10: b first.
        let h = stale(7);
        assert!(matches!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Wait(_)
        ));
        // Caught up ourselves: contend.
        let h10 = stale(10);
        assert_eq!(
            decide_follower(&i_with(&h10, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
        // Nobody has it: contend (and wait for the catch-up in the handover).
        v.members.get_mut("b").expect("b").head = Some(block(8));
        assert_eq!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
        // One block behind (repairable from the stored payload) goes before further behind,
        // but not before caught up, and ties contend.
        v.members.get_mut("b").expect("b").head = Some(block(9));
        assert!(matches!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Wait(_)
        ));
        let h8 = stale(8);
        assert!(matches!(
            decide_follower(&i_with(&h8, &v, t0, Instant::now())),
            FollowerAction::Wait(_)
        ));
        let h9 = stale(9);
        assert_eq!(
            decide_follower(&i_with(&h9, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
        assert_eq!(
            decide_follower(&i_with(&h10, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
        // Bounded: after the priority window we contend even behind a ready member.
        v.members.get_mut("b").expect("b").head = Some(block(10));
        tokio::time::advance(timing().catch_up_priority()).await;
        assert_eq!(
            decide_follower(&i_with(&h, &v, t0, Instant::now())),
            FollowerAction::Contend
        );
    }

    #[test]
    fn inspection_spares_only_an_adoptable_sequencer() {
        assert!(inspect(false, Some(true), false));
        assert!(!inspect(false, Some(true), true));
        assert!(!inspect(true, Some(true), false));
        assert!(!inspect(false, Some(false), false));
        assert!(!inspect(false, None, false));
    }

    #[test]
    fn catch_up_target_is_never_below_a_peer() {
        let mut v = leaderless("other");
        v.members.insert("b".into(), member("b", &healthy(15)));
        v.members.insert(ME.into(), member(ME, &healthy(30)));
        let (recorded, floor) = catch_up_target(&v, ME);
        assert_eq!(recorded.map(|b| b.number), Some(10));
        assert_eq!(
            floor, 15,
            "a restored (older) head must not let us start below a peer"
        );
    }
}
