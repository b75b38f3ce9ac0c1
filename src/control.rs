//! The control loop: carries out the role machine's decisions (`role`) as etcd and op-node calls; the only caller of the local sequencer's start and stop. Knows nothing of HTTP serving.
//!
//! One loop per sidecar. As follower, each tick checks the node (inspection first, whatever
//! etcd does), reads the cluster view in one round trip and contends when eligible. On winning
//! it becomes candidate and then leader; all of that work runs through [`Term::run`], so no
//! await outlives the local lease deadline. Handover and step-down run inline, so no two
//! sequencer calls of this sidecar ever race.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::TxnOp;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, View};
use crate::commit;
use crate::election::{Acquire, Leadership};
use crate::health::Health;
use crate::role::{self, FollowerAction, LeaderInputs, Role, Timing, Verdict};
use crate::sequencer::{is_zero_hash, BlockId, NodeClient, StartError, StartOutcome, StopOutcome};
use crate::state::{unix_ms, HeadRecord, MemberRecord, StoppedRecord, TransferRecord};
use crate::status::{Command, LeaderRef, Mode, Shared, Status, VERSION};
use crate::term::{Lapsed, Term};

/// Why leadership ends; decides whether we stand back afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Resign,
    /// Handover failed (could not catch up or start): resign and stand back for a while so a
    /// better candidate wins; if none does we contend again (L3: never halt the chain).
    GiveWay,
}

pub struct Controller {
    s: Arc<Shared>,
    status_tx: watch::Sender<Status>,
    commands: mpsc::Receiver<Command>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    term: Option<Term>,
    paused: bool,
    mode: Mode,
    give_way_until: Option<Instant>,
    no_leader_since: Option<Instant>,
    /// The last leader seen while following, with its node admin URL if known.
    last_leader: Option<(String, Option<String>)>,
    last_member: Option<(i64, MemberRecord)>,
    /// The head this leader last recorded (sidecar-driven mode).
    recorded: Option<BlockId>,
    /// The recorded head of the last view read, for decisions made while etcd is unreadable.
    known_target: Option<BlockId>,
    /// The last view showed no leader and an empty store: a running sequencer is adopted.
    /// None until a view was read.
    adoptable: Option<bool>,
    warned_unhealthy_keep: bool,
    /// When the current leadership began sequencing; the health grace runs from here.
    leading_since: Option<Instant>,
    /// Since when restarting our own node as leader has failed (cleared on success).
    restart_failing_since: Option<Instant>,
    /// The override was cleared here and the committed head is not yet known to be on this
    /// node's chain.
    override_cleared: bool,
}

impl Controller {
    pub fn new(
        s: Arc<Shared>,
        status_tx: watch::Sender<Status>,
        commands: mpsc::Receiver<Command>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) -> Self {
        let paused = s.config.paused;
        Controller {
            s,
            status_tx,
            commands,
            wake,
            cancel,
            term: None,
            paused,
            mode: Mode::Unknown,
            give_way_until: None,
            no_leader_since: None,
            last_leader: None,
            last_member: None,
            recorded: None,
            known_target: None,
            adoptable: None,
            warned_unhealthy_keep: false,
            leading_since: None,
            restart_failing_since: None,
            override_cleared: false,
        }
    }

    fn me(&self) -> &str {
        &self.s.config.server_id
    }

    fn publish(&self, f: impl FnOnce(&mut Status)) {
        self.status_tx.send_modify(f);
        let (gate, paused) = {
            let st = self.status_tx.borrow();
            (st.gate, st.paused)
        };
        self.s.metrics.is_leader.set(i64::from(gate));
        self.s.metrics.paused.set(i64::from(paused));
    }

    fn set_role(&self, role: Role) {
        self.publish(|s| s.role = role);
    }

    fn timing(&self) -> Timing {
        let h = &self.s.config.health;
        Timing {
            lease_ttl: self.s.config.lease_ttl,
            health_interval: h.interval,
            // Long enough for a new leader's first blocks to make its head fresh and for the
            // health filter to see it.
            grace: h.unsafe_interval + h.interval * (h.failures + h.successes),
            catchup: self.s.config.catchup_timeout,
        }
    }

    fn transfer_window(&self) -> Duration {
        self.s.config.catchup_timeout + self.s.config.lease_ttl * 2
    }

    /// What `admin_startSequencer` must have left of the lease when it is sent: op-node must
    /// act on it well before etcd can expire the lease and a successor can start.
    fn start_budget(&self) -> Duration {
        self.s.config.lease_ttl / 2
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.s.config.health.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut lease_rx = self.s.lease.clone();
        let mut health_rx = self.s.health.clone();
        let wake = self.wake.clone();
        loop {
            self.s.control_beat.beat();
            #[cfg(debug_assertions)]
            freeze_point(&self.s.config.server_id).await;
            // While holding the lease the loop also wakes at its deadline, idle or not.
            let deadline = self.term.as_ref().map(|t| t.deadline());
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(cmd) = self.commands.recv() => self.command(cmd),
                _ = until(deadline) => {}
                _ = tick.tick() => {}
                _ = wake.notified() => {}
                Ok(()) = lease_rx.changed() => {}
                Ok(()) = health_rx.changed() => {}
            }
            self.after_override().await;
            match self.term.clone() {
                Some(term) => {
                    // The step decides; stepping down runs outside the race, so the lease
                    // deadline can never cut a step-down short. A shutdown cuts the step short
                    // too (as a lapse would): a step waiting on an unreachable etcd must not
                    // hold the node's stop back until the lease runs out.
                    let cancel = self.cancel.clone();
                    let step = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        step = term.run(self.lead_step(&term)) => step,
                    };
                    let end = match step {
                        Ok(end) => end,
                        // How late the lapse was noticed tells an operator whether the
                        // loop itself was slow (it should be a few ms).
                        Err(Lapsed) => Some((
                            match term.deadline() {
                                Some(d) => format!(
                                    "lease lapsed {} ms ago (not renewed in time: etcd unreachable, or renewal withheld)",
                                    Instant::now().saturating_duration_since(d).as_millis()
                                ),
                                None => "lease lost or replaced".to_string(),
                            },
                            Exit::Resign,
                        )),
                    };
                    if let Some((why, exit)) = end {
                        self.step_down(&why, exit).await;
                    }
                }
                None => {
                    if let Some(term) = self.follow_step().await {
                        self.term = Some(term.clone());
                        self.set_role(Role::Candidate);
                        if self.candidate(&term).await.is_err() && self.term.is_some() {
                            self.step_down(
                                "lease deadline passed during the handover",
                                Exit::GiveWay,
                            )
                            .await;
                        }
                    }
                }
            }
        }
        self.publish(|s| s.shutting_down = true);
        if self.term.is_some() {
            self.step_down("shutting down", Exit::Resign).await;
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::SetPaused(paused, done) => {
                let stopped = self.status_tx.borrow().stopped;
                if !paused && stopped {
                    let _ = done.send(Err(
                        "sidecar is stopped (conductor_stop); restart the process to resume".into(),
                    ));
                    return;
                }
                if paused != self.paused {
                    tracing::info!(paused, "pause state changed by operator");
                    if !paused && self.term.is_some() {
                        // Health may move a leader again only a grace period after it resumes:
                        // while paused its node may have been stopped or force-started, and its
                        // health filter is still catching up.
                        self.leading_since = Some(Instant::now());
                    }
                }
                self.paused = paused;
                self.publish(|s| s.paused = paused);
                let _ = done.send(Ok(()));
            }
            Command::Stop(done) => {
                tracing::warn!("stopped by operator (conductor_stop)");
                self.paused = true;
                self.publish(|s| {
                    s.paused = true;
                    s.stopped = true;
                });
                let _ = done.send(());
            }
        }
    }

    /// Conductor mode: once an operator clears the leader override here, make sure the
    /// committed head is on this node's chain; retried every step until it is.
    async fn after_override(&mut self) {
        if self.s.override_cleared.swap(false, Ordering::SeqCst) {
            self.override_cleared = true;
        }
        if !self.override_cleared || self.s.leader_override.load(Ordering::SeqCst) {
            return;
        }
        let limit = crate::health::poll_timeout(self.s.config.health.interval);
        let conductor = match self.mode {
            Mode::Conductor => true,
            Mode::Driven => false,
            // Not known until this sidecar first leads: ask the node (next step if it is slow).
            Mode::Unknown => {
                match tokio::time::timeout(limit, self.s.node.conductor_enabled()).await {
                    Ok(Ok(c)) => c,
                    _ => return,
                }
            }
        };
        if !conductor {
            self.override_cleared = false;
            return;
        }
        let done = match self.term.clone() {
            Some(term) => term.run(self.reconcile_override()).await.unwrap_or(false),
            None => self.reconcile_override().await,
        };
        if done {
            self.override_cleared = false;
        }
    }

    /// Blocks accepted under the override were not fenced and did not move the committed head.
    /// If the committed head is not on this node's chain, the override built other blocks at
    /// its height: a commit that reached etcd while its acknowledgement was lost (no node has
    /// it) and then the operator's forced sequencer. Nothing can ever extend that head and every
    /// candidate would wait for it forever. The operator chose this node's chain: record its
    /// head instead. Only while no other sidecar leads (a live leader verifies and records the
    /// head its own node starts from) and never over a head committed in the live term; the
    /// swap is a compare-and-swap on the record read and on the leader key(s) seen, so a
    /// leader's newer commit, or a leader that appeared meanwhile, wins. True when nothing
    /// (more) is to be done.
    async fn reconcile_override(&self) -> bool {
        let limit = crate::health::poll_timeout(self.s.config.health.interval);
        // Leader and head from one read (one revision), so the swap below compares exactly
        // what was looked at.
        let (leader, head, rev) = match cluster::read_view(&self.s.election).await {
            Ok(v) => match v.head {
                Some(h) => (v.leader, h, v.head_rev),
                None => return true,
            },
            Err(e) => {
                tracing::debug!(error = %e, "override cleared: cannot read the committed head yet");
                return false;
            }
        };
        match &leader {
            // Committed by the live leader in its own term: a real, extended head.
            Some(l) if l.epoch == head.epoch => return true,
            Some(l) if l.id != self.me() => return false,
            _ => {}
        }
        let Ok(Ok(status)) = tokio::time::timeout(limit, self.s.node.sync_status()).await else {
            return false;
        };
        let local = status.unsafe_l2;
        if local.number < head.number {
            // Nothing here conflicts yet; but a node still sequencing unfenced (its op-node keeps
            // its own override until restarted) may build past that height later.
            let active = tokio::time::timeout(limit, self.s.node.active()).await;
            return matches!(active, Ok(Ok(false)));
        }
        match tokio::time::timeout(limit, self.s.node.block_hash_at(head.number)).await {
            Ok(Ok(Some(h))) if h.eq_ignore_ascii_case(&head.hash) => return true,
            Ok(Ok(Some(_))) => {}
            // No block there (op-geth behind op-node) or no answer: look again next step.
            _ => return false,
        }
        // Same epoch, id and node as the record replaced: only the block changes, so the
        // last leader (stopped-election priority) and its node URL stay what they were.
        let rec = HeadRecord {
            number: local.number,
            hash: local.hash.clone(),
            parent_hash: local.parent_hash.clone(),
            ..head.clone()
        };
        match cluster::swap_head(&self.s.election, rev, leader.as_ref(), &rec).await {
            Ok(true) => {
                tracing::warn!(
                    committed = %format_args!("{}:{}", head.number, head.hash),
                    recorded = %format_args!("{}:{}", local.number, local.hash),
                    "leader override cleared: the committed head is not on this node's chain (other blocks were built at its height under the override); recorded this node's head as the committed head"
                );
                true
            }
            // The head or the leader moved meanwhile: look again at the next step.
            Ok(false) => false,
            Err(e) => {
                tracing::debug!(error = %e, "override cleared: cannot record the head yet");
                false
            }
        }
    }

    /// Reads the view and publishes what the servers need from it. None = etcd unreadable.
    async fn observe(&mut self, active: Option<bool>) -> Option<View> {
        let (was_reachable, started) = {
            let st = self.status_tx.borrow();
            (st.etcd_reachable, st.started)
        };
        let view = match cluster::read_view(&self.s.election).await {
            Ok(v) => {
                if !was_reachable && started {
                    tracing::info!("etcd reachable again");
                }
                Some(v)
            }
            Err(e) => {
                self.s.metrics.etcd_errors.inc();
                // One warning per outage; the details of every failed tick at debug.
                if was_reachable || !started {
                    tracing::warn!(error = %e, "cannot reach etcd: not contending; a leader steps down when its lease deadline passes");
                } else {
                    tracing::debug!(error = %e, "etcd still unreachable");
                }
                None
            }
        };
        if let Some(v) = &view {
            if let Some(t) = v.recorded_head() {
                self.known_target = Some(t);
            }
            self.adoptable = Some(v.leader.is_none() && v.store_empty());
        }
        let leader = view.as_ref().map(|v| {
            v.leader.as_ref().map(|l| LeaderRef {
                id: l.id.clone(),
                rpc: v.members.get(&l.id).map(|m| m.rpc.clone()),
            })
        });
        let election_stopped = view.as_ref().map(|v| v.election_stopped);
        self.publish(|s| {
            if let Some(l) = leader {
                s.leader = l;
            }
            if let Some(stopped) = election_stopped {
                s.election_stopped = stopped;
            }
            s.etcd_reachable = view.is_some();
            s.node_active = active;
            s.started = true;
        });
        view
    }

    // === follower ===

    /// One follower tick. Returns the term when this sidecar won the key.
    async fn follow_step(&mut self) -> Option<Term> {
        let health = self.s.health_now();
        self.s.metrics.healthy.set(i64::from(health.healthy));
        // Inspection (S4) first: it must not wait for etcd, which may be slow or gone. Only the
        // very first check waits for a view, which tells whether a running sequencer on an
        // empty store is to be adopted.
        let active = self.s.node.active().await.ok();
        let known = self.adoptable;
        if let Some(adoptable) = known {
            self.inspect(active, adoptable).await;
        }
        let view = self.observe(active).await;
        if known.is_none() {
            self.inspect(active, self.adoptable.unwrap_or(false)).await;
        }
        let won = match &view {
            Some(v) => self.follow_view(&health, v, active).await,
            None => None,
        };
        if won.is_none() {
            self.publish_member(&health).await;
        }
        won
    }

    async fn inspect(&self, active: Option<bool>, adoptable: bool) {
        if !role::inspect(self.paused, active, adoptable) {
            return;
        }
        tracing::warn!(
            "inspection: node is sequencing but this sidecar is not leader; stopping it"
        );
        match self.s.node.stop().await {
            Ok(_) => self.s.metrics.action("inspection_stop", "ok"),
            Err(e) => {
                self.s.metrics.action("inspection_stop", "error");
                tracing::error!(error = %e, "inspection could not stop the node");
            }
        }
    }

    async fn follow_view(
        &mut self,
        health: &Health,
        v: &View,
        active: Option<bool>,
    ) -> Option<Term> {
        let now = Instant::now();
        match &v.leader {
            Some(leader) => {
                self.no_leader_since = None;
                if leader.id != self.me() {
                    self.last_leader = Some((
                        leader.id.clone(),
                        v.members.get(&leader.id).map(|m| m.node.clone()),
                    ));
                }
            }
            None => {
                self.no_leader_since.get_or_insert(now);
            }
        }
        let lease = *self.s.lease.borrow();
        let inputs = role::FollowerInputs {
            me: self.me(),
            now,
            paused: self.paused,
            health,
            view: v,
            lease,
            active,
            no_leader_since: self.no_leader_since.unwrap_or(now),
            give_way_until: self.give_way_until,
            timing: self.timing(),
        };
        match role::decide_follower(&inputs) {
            FollowerAction::Wait(why) => {
                tracing::trace!(why, "not contending");
                None
            }
            FollowerAction::ReleaseStaleKey => {
                let leader = v.leader.as_ref()?;
                // We stepped down while etcd was out of reach and it kept (or, after a
                // restart, extended) our lease. Nobody else can take the key while our
                // keepalives run, so release it.
                let stale = Leadership {
                    key: leader.key.clone(),
                    epoch: leader.epoch,
                    lease: leader.lease,
                };
                match self.s.election.resign(&stale, vec![]).await {
                    Ok(_) => tracing::warn!(
                        epoch = leader.epoch,
                        "released a leader key left over from an earlier leadership"
                    ),
                    Err(e) => tracing::warn!(error = %e, "could not release a leftover leader key"),
                }
                None
            }
            FollowerAction::Contend => {
                let lease = lease?;
                match self.s.election.try_acquire(lease.id).await {
                    Ok(Acquire::Won(l)) => Some(Term::new(l, self.s.lease.clone())),
                    Ok(Acquire::Held(holder)) => {
                        tracing::debug!(holder = ?holder.map(|h| h.id), "leader key taken by another candidate");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not contend for the leader key");
                        None
                    }
                }
            }
        }
    }

    // === candidate ===

    /// Won the key: hand over (bring the node to the recorded head, start it) within the lease.
    async fn candidate(&mut self, term: &Term) -> Result<(), Lapsed> {
        let l = term.leadership.clone();
        let began = Instant::now();
        tracing::info!(epoch = l.epoch, key = %l.key, "won the leader key; handing over");
        self.s.metrics.leader_transitions.inc();
        self.recorded = None;
        self.give_way_until = None;
        self.publish(|s| {
            s.leading = Some(l.clone());
            s.gate = false;
        });
        if self.paused {
            // Paused: lead without touching the sequencer (op-conductor's paused leader); the
            // operator or a later resume starts it. The gate is up so that an operator's
            // admin_startSequencer on our node passes op-node's leader check and its commits
            // are accepted (fenced).
            // Unreachable node: the mode stays as it was; the restart on resume asks again.
            let _ = term.run(self.detect_mode()).await;
            tracing::info!(
                epoch = l.epoch,
                "leading while paused: the sequencer is left as it is"
            );
            self.publish(|s| s.gate = true);
            self.set_role(Role::Leader);
            self.leading_since = Some(Instant::now());
            return Ok(());
        }
        // The view the decision was made on may be old by now: re-read it within the lease.
        let view = term
            .run(cluster::read_view(&self.s.election))
            .await?
            .map_err(|e| e.to_string());
        let result = match view {
            Ok(v) => term.run(self.handover(term, &v)).await?.map(|h| (h, v)),
            Err(e) => Err(format!("cannot read the cluster view: {e}")),
        };
        match result {
            Ok((head, view)) => {
                self.set_role(Role::Leader);
                self.leading_since = Some(Instant::now());
                self.s
                    .metrics
                    .handover_seconds
                    .observe(began.elapsed().as_secs_f64());
                tracing::info!(number = head.number, hash = %head.hash, elapsed = ?began.elapsed(), mode = ?self.mode, "sequencing as leader");
                term.run(async {
                    if self.mode == Mode::Driven {
                        self.record_head(&l, &head).await;
                    }
                    if let Some(t) = view.pending_transfer() {
                        if t.target == self.me() {
                            let _ = cluster::clear_transfer(&self.s.election, t).await;
                        }
                    }
                })
                .await
            }
            Err(why) => {
                tracing::warn!(reason = %why, "handover failed; giving way");
                self.step_down(&why, Exit::GiveWay).await;
                Ok(())
            }
        }
    }

    /// Asks the node whether it runs with a conductor, which decides the step-down order and
    /// whether commits are fenced. Asked at every start, not only at a handover: op-node may
    /// have been restarted with a different `--conductor.enabled` (or, as the leader of a fresh
    /// cluster, been asked while it was still starting), and a leader that believed its node
    /// fenced when it is not would resign before stopping it.
    async fn detect_mode(&mut self) -> Result<Mode, String> {
        let mode = match self.s.node.conductor_enabled().await {
            Ok(true) => Mode::Conductor,
            Ok(false) => Mode::Driven,
            Err(e) => return Err(format!("cannot reach the local node: {e}")),
        };
        if mode != self.mode && self.mode != Mode::Unknown {
            tracing::warn!(was = ?self.mode, now = ?mode, "the node's conductor setting changed");
        }
        self.mode = mode;
        self.publish(|s| s.mode = mode);
        Ok(mode)
    }

    /// Brings the local node to the recorded head (and no lower than any peer) and starts it.
    /// Err = give way. Runs inside the term.
    async fn handover(&mut self, term: &Term, view: &View) -> Result<BlockId, String> {
        let l = &term.leadership;
        self.detect_mode().await?;
        let (mut target, floor) = role::catch_up_target(view, self.me());
        if let Some(stopped) = self.stop_previous(l, view).await {
            if target.as_ref().is_none_or(|t| stopped.number >= t.number) {
                target = Some(stopped);
            }
        }
        if target.as_ref().is_some_and(|t| is_zero_hash(&t.hash)) {
            // Seed behaviour: a zero stopped hash is an error; start from our own head.
            tracing::warn!("recorded head is the zero hash; using the local unsafe head instead");
            target = None;
        }
        match &target {
            Some(t) => self.wait_for_block(t, floor).await?,
            None if floor > 0 => self.wait_for_height(floor).await?,
            None => tracing::info!("no recorded head: bootstrapping from the local unsafe head"),
        }
        let committed = Some(view.head.as_ref().map(HeadRecord::block));
        self.start_node(term, target.as_ref(), committed).await
    }

    /// Waits until the local node has `t` on its canonical chain and its head is at least
    /// `floor`, within the catch-up bound.
    async fn wait_for_block(&self, t: &BlockId, floor: u64) -> Result<(), String> {
        let deadline = Instant::now() + self.s.config.catchup_timeout;
        let mut logged = false;
        loop {
            let has = self.s.node.has_block(t).await;
            let height = self.s.node.sync_status().await.map(|s| s.unsafe_l2.number);
            match (has, height) {
                (Ok(true), Ok(n)) if n >= floor => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "node did not reach recorded head {}:{} (and height {floor}) within {:?}",
                        t.hash, t.number, self.s.config.catchup_timeout
                    ));
                }
                (Ok(false), _) if self.mode == Mode::Conductor => self.repair_one_block(t).await,
                _ => {}
            }
            if !logged {
                logged = true;
                tracing::info!(number = t.number, hash = %t.hash, floor, "waiting for the node to reach the recorded head");
            }
            self.s.control_beat.beat();
            tokio::select! {
                _ = self.cancel.cancelled() => return Err("shutting down".into()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// No recorded head, but peers report blocks up to `floor`: wait for our node to get there.
    async fn wait_for_height(&self, floor: u64) -> Result<(), String> {
        let deadline = Instant::now() + self.s.config.catchup_timeout;
        loop {
            if let Ok(st) = self.s.node.sync_status().await {
                if st.unsafe_l2.number >= floor {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node did not reach height {floor} (a peer's head) within {:?}",
                    self.s.config.catchup_timeout
                ));
            }
            self.s.control_beat.beat();
            tokio::select! {
                _ = self.cancel.cancelled() => return Err("shutting down".into()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Conductor mode: a node exactly one block behind the committed head gets the stored
    /// payload posted (op-conductor wedged here, #22094). Larger gaps are left to sync.
    async fn repair_one_block(&self, t: &BlockId) {
        // Bounded like the health poll: a node that just hung must not hold the leader's step
        // (and with it the handover the failing health check is about to ask for).
        let limit = crate::health::poll_timeout(self.s.config.health.interval);
        let Some(status) = ask_node(&self.s.health, Some(limit), self.s.node.sync_status()).await
        else {
            return;
        };
        let local = status.unsafe_l2;
        if local.number + 1 != t.number {
            return;
        }
        let payload = match commit::read_payload(&self.s.election, &t.hash).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored payload");
                return;
            }
        };
        match commit::block_meta(&payload) {
            Ok(meta)
                if meta.hash.eq_ignore_ascii_case(&t.hash)
                    && meta.parent.eq_ignore_ascii_case(&local.hash) =>
            {
                tracing::info!(number = t.number, hash = %t.hash, "node is one block behind the committed head; posting the stored payload");
                // A big payload may take the node longer than a poll timeout to take in; only
                // a failing health check cuts it short.
                let post = async {
                    self.s
                        .node
                        .post_unsafe_payload(&payload)
                        .await
                        .map_err(|e| {
                            tracing::warn!(error = %e, "admin_postUnsafePayload failed");
                        })
                };
                match ask_node(&self.s.health, None, post).await {
                    Some(()) => self.s.metrics.action("post_payload", "ok"),
                    None => self.s.metrics.action("post_payload", "error"),
                }
            }
            Ok(_) => tracing::debug!("stored payload does not bridge the gap"),
            Err(e) => tracing::warn!(error = %e, "stored payload is invalid"),
        }
    }

    /// Raises the gate, then starts the node at its current head, provided that head is the
    /// recorded head or a descendant of it (S3). Retries on `block hash does not match`.
    /// Conductor mode: the start head is first recorded as the committed head (fenced), so the
    /// next commit extends what the node really has (a stale record, left by an override, a
    /// switch from sidecar-driven mode or an old etcd snapshot, would refuse every commit).
    /// `committed`: the committed head record (`Some(None)`: the store has none; `None`: not
    /// known, etcd could not be read).
    async fn start_node(
        &mut self,
        term: &Term,
        target: Option<&BlockId>,
        committed: Option<Option<BlockId>>,
    ) -> Result<BlockId, String> {
        let l = &term.leadership;
        // op-node asks conductor_leader inside admin_startSequencer: the gate must already be up.
        self.publish(|s| s.gate = true);
        for attempt in 0..8u32 {
            let head = self
                .s
                .node
                .sync_status()
                .await
                .map_err(|e| format!("cannot read the unsafe head: {e}"))?
                .unsafe_l2;
            if let Some(t) = target {
                if head.number < t.number || !self.s.node.has_block(t).await.unwrap_or(false) {
                    return Err(format!(
                        "unsafe head {}:{} is not at or past the recorded head {}:{}",
                        head.hash, head.number, t.hash, t.number
                    ));
                }
            }
            if self.mode == Mode::Conductor {
                self.record_start_head(l, &head, committed.as_ref()).await?;
            }
            // The start must reach op-node with enough of the lease left that it acts on it
            // before etcd can expire the lease (S1), whatever the node's latency.
            let left = term
                .budget(self.start_budget())
                .await
                .map_err(|e| e.to_string())?;
            let node = self.s.node.clone();
            match tokio::time::timeout(left, node.start(&head.hash)).await {
                Err(_) => {
                    self.s.metrics.action("start", "timeout");
                    return Err("admin_startSequencer did not answer within the lease".into());
                }
                Ok(Ok(StartOutcome::Started)) => {
                    self.s.metrics.action("start", "ok");
                    return Ok(head.id());
                }
                Ok(Ok(StartOutcome::AlreadyRunning)) => {
                    self.s.metrics.action("start", "already_running");
                    return Ok(head.id());
                }
                Ok(Err(StartError::HashMismatch(m))) => {
                    self.s.metrics.action("start", "hash_mismatch");
                    tracing::info!(attempt, error = %m, "head moved while starting; re-reading it");
                }
                Ok(Err(StartError::LeaderCheck(m))) => {
                    self.s.metrics.action("start", "leader_check");
                    tracing::warn!(attempt, error = %m, "op-node's leader check refused the start");
                }
                Ok(Err(StartError::Call(e))) => {
                    self.s.metrics.action("start", "error");
                    return Err(format!("admin_startSequencer failed: {e}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
        }
        Err("admin_startSequencer kept failing".into())
    }

    /// Conductor mode: record `head` (verified to contain the recorded head) as the committed
    /// head of this epoch, in one fenced Txn; the committer re-reads it. Nothing to do when the
    /// committed head record is exactly `head`, or on an empty store (the first commit then
    /// needs no parent). Compared with the committed head record itself, not with the target:
    /// the target may be a newer stopped head (a node forced active by an operator), and the
    /// stale committed record is exactly what must be replaced.
    async fn record_start_head(
        &self,
        l: &Leadership,
        head: &crate::sequencer::L2Ref,
        committed: Option<&Option<BlockId>>,
    ) -> Result<(), String> {
        match committed {
            Some(None) => return Ok(()),
            Some(Some(c)) if c.number == head.number && c.hash.eq_ignore_ascii_case(&head.hash) => {
                return Ok(())
            }
            _ => {}
        }
        let rec = HeadRecord {
            number: head.number,
            hash: head.hash.clone(),
            parent_hash: head.parent_hash.clone(),
            epoch: l.epoch,
            id: self.me().to_string(),
            node: Some(self.s.config.node_advertise.clone()),
        };
        let value = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
        match self
            .s
            .election
            .fenced(
                l,
                vec![TxnOp::put(self.s.election.keys().head(), value, None)],
            )
            .await
        {
            Ok(true) => {
                self.s.committer.reset().await;
                Ok(())
            }
            Ok(false) => Err("leader key no longer ours while recording the start head".into()),
            Err(e) => Err(format!("cannot record the start head: {e}")),
        }
    }

    /// The previous leader's node may still be sequencing (its sidecar died or is frozen).
    /// Stop it through its advertised admin URL before starting ours. Best effort; every node
    /// is asked at once, so one dead node costs one timeout, not one each.
    /// Sidecar-driven mode: every node that may be sequencing (S1 rests on it). Conductor mode:
    /// the fence already keeps other nodes from publishing, except one whose op-node was told
    /// `admin_overrideLeader` (it skips its conductor); only members reporting an active
    /// sequencer are asked, with a short limit, so a hung old node does not slow the failover.
    async fn stop_previous(&self, l: &Leadership, view: &View) -> Option<BlockId> {
        let conductor = self.mode == Mode::Conductor;
        let limit = if conductor {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(2)
        };
        let mut urls: Vec<String> = Vec::new();
        if !conductor {
            if let Some(h) = &view.head {
                if h.id != self.me() {
                    urls.extend(h.node.clone());
                }
            }
            if let Some((id, Some(node))) = &self.last_leader {
                if id != self.me() {
                    urls.push(node.clone());
                }
            }
        }
        urls.extend(
            view.members
                .values()
                .filter(|m| m.id != self.me() && m.active)
                .map(|m| m.node.clone()),
        );
        urls.sort();
        urls.dedup();
        urls.retain(|u| u != &self.s.config.node_advertise);
        let stops = urls.into_iter().map(|url| async move {
            let other = NodeClient::new(self.s.http.clone(), url.clone(), url.clone(), limit);
            match other.stop().await {
                Ok(StopOutcome::Stopped(hash)) => match other.sync_status().await {
                    Ok(st)
                        if st.unsafe_l2.hash.eq_ignore_ascii_case(&hash) || is_zero_hash(&hash) =>
                    {
                        let block = st.unsafe_l2.id();
                        tracing::warn!(node = %url, number = block.number, hash = %block.hash, "stopped the previous leader's node");
                        self.s.metrics.action("stop_previous", "ok");
                        Some(block)
                    }
                    _ => None,
                },
                Ok(StopOutcome::NotRunning) => {
                    tracing::debug!(node = %url, "previous node was not sequencing");
                    None
                }
                Err(e) => {
                    self.s.metrics.action("stop_previous", "error");
                    tracing::warn!(node = %url, error = %e, "could not stop the previous leader's node (best effort)");
                    None
                }
            }
        });
        let best = futures_util::future::join_all(stops)
            .await
            .into_iter()
            .flatten()
            .max_by_key(|b| b.number)?;
        let rec = StoppedRecord {
            hash: best.hash.clone(),
            number: best.number,
            id: self.me().to_string(),
            epoch: l.epoch,
        };
        if let Ok(value) = serde_json::to_vec(&rec) {
            let _ = self
                .s
                .election
                .fenced(
                    l,
                    vec![TxnOp::put(self.s.election.keys().stopped(), value, None)],
                )
                .await;
        }
        Some(best)
    }

    // === leader ===

    /// One leader tick; runs inside the term. Returns why (and how) to step down, if it must.
    async fn lead_step(&mut self, term: &Term) -> Option<(String, Exit)> {
        let l = &term.leadership;
        let health = self.s.health_now();
        self.s.metrics.healthy.set(i64::from(health.healthy));
        // A node the health check cannot reach is not asked again here: a hung node would hold
        // every leader tick for a whole call timeout and delay the handover by as much.
        let active = if health.reachable {
            let limit = crate::health::poll_timeout(self.s.config.health.interval);
            ask_node(&self.s.health, Some(limit), self.s.node.active()).await
        } else {
            None
        };
        // Decide on what the health check knows now, not on what it knew before the call: a
        // verdict that came in meanwhile must not wait for the next step.
        let health = self.s.health_now();
        let view = self.observe(active).await;
        let plan = role::decide_leader(&LeaderInputs {
            me: self.me(),
            leadership: l,
            now: Instant::now(),
            paused: self.paused,
            mode: self.mode,
            health: &health,
            view: view.as_ref(),
            active,
            leading_since: self.leading_since,
            recorded: self.recorded.as_ref(),
            known_target: self.known_target.as_ref(),
            timing: self.timing(),
        });
        match plan.verdict {
            Verdict::StepDown(why) => return Some((why, Exit::Resign)),
            Verdict::HandOver { target, reason } => {
                let t = TransferRecord {
                    target: target.clone(),
                    from: self.me().to_string(),
                    epoch: l.epoch,
                    expires_ms: unix_ms() + self.transfer_window().as_millis() as u64,
                };
                let leader = view.as_ref().and_then(|v| v.leader.clone());
                match cluster::put_transfer(
                    &self.s.election,
                    leader.as_ref(),
                    &t,
                    self.transfer_window(),
                )
                .await
                {
                    Ok(true) => return Some((reason, Exit::Resign)),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not record the handover"),
                }
            }
            Verdict::KeepUnhealthy => {
                if !self.warned_unhealthy_keep {
                    self.warned_unhealthy_keep = true;
                    tracing::warn!(problems = %health.summary(), "node unhealthy but no healthy caught-up candidate; keeping leadership");
                }
            }
            Verdict::Keep => self.warned_unhealthy_keep = false,
        }
        if let Some(mut target) = plan.restart {
            // The node restarted (it always comes back stopped), someone stopped it by hand, or
            // we were resumed after leading while paused. Another node may have been started
            // by hand meanwhile (force-active-sequencer): stop it first, as in a handover.
            tracing::warn!("leading but the node is not sequencing; starting it again");
            if let Err(why) = self.detect_mode().await {
                tracing::warn!(reason = %why, "could not ask the node for its conductor setting");
            }
            if let Some(v) = &view {
                if let Some(stopped) = self.stop_previous(l, v).await {
                    if target.as_ref().is_none_or(|t| stopped.number >= t.number) {
                        target = Some(stopped);
                    }
                }
            }
            let committed = view
                .as_ref()
                .map(|v| v.head.as_ref().map(HeadRecord::block));
            match self.start_node(term, target.as_ref(), committed).await {
                Ok(_) => {
                    self.restart_failing_since = None;
                    // Its head is as old as the outage: the health grace starts again.
                    self.leading_since = Some(Instant::now());
                }
                Err(why) => {
                    tracing::warn!(reason = %why, "could not restart sequencing");
                    // L2: a leader whose node cannot get back to the recorded head within the
                    // catch-up bound gives way, as a candidate would.
                    let since = *self.restart_failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.s.config.catchup_timeout {
                        self.restart_failing_since = None;
                        return Some((
                            format!("could not restart sequencing: {why}"),
                            Exit::GiveWay,
                        ));
                    }
                }
            }
        } else {
            self.restart_failing_since = None;
        }
        if let Some(head) = plan.record {
            self.record_head(l, &head).await;
        }
        // A commit whose Txn succeeded but whose answer missed op-node's budget leaves our own
        // node one block behind the committed head, re-sealing a block the fence refuses. Hand
        // it the committed block instead (never replace a committed head).
        if let Some(committed) = plan.repair {
            self.repair_one_block(&committed).await;
        }
        self.publish_member(&health).await;
        None
    }

    /// Driven mode: the leader records the head it sees each tick (fenced), so a successor knows
    /// the latest block and where to find this node even if this sidecar dies.
    async fn record_head(&mut self, l: &Leadership, head: &BlockId) {
        let rec = HeadRecord {
            number: head.number,
            hash: head.hash.clone(),
            parent_hash: String::new(),
            epoch: l.epoch,
            id: self.me().to_string(),
            node: Some(self.s.config.node_advertise.clone()),
        };
        let Ok(value) = serde_json::to_vec(&rec) else {
            return;
        };
        match self
            .s
            .election
            .fenced(
                l,
                vec![TxnOp::put(self.s.election.keys().head(), value, None)],
            )
            .await
        {
            Ok(true) => self.recorded = Some(head.clone()),
            Ok(false) => tracing::warn!("could not record head: leader key no longer ours"),
            Err(e) => tracing::debug!(error = %e, "could not record head"),
        }
    }

    // === stepping down ===

    /// Ends the term. The gate goes down first. Conductor mode: the fence already keeps our node
    /// from publishing, so we resign at once (a successor can start while our node's stop is
    /// still on its way) and then stop the node, bounded. Sidecar-driven mode: the node is
    /// stopped first, bounded by what is left of the lease, then the stopped head is recorded
    /// in the fenced resign.
    async fn step_down(&mut self, reason: &str, exit: Exit) {
        let Some(term) = self.term.take() else { return };
        let l = term.leadership.clone();
        self.set_role(Role::SteppingDown);
        self.publish(|s| s.gate = false);
        tracing::warn!(reason, epoch = l.epoch, mode = ?self.mode, "stepping down");
        let node_limit = Duration::from_secs(2);
        if self.mode == Mode::Conductor {
            self.resign(&l, None).await;
            if exit == Exit::GiveWay {
                // Before the node's stop (up to 2 s on a slow node): the others wait for it.
                self.drop_transfer_to_me(&l).await;
            }
            self.stop_local(node_limit).await;
        } else {
            // Never less than a short attempt: past the deadline the stop is still owed (S4).
            let limit = term
                .remaining()
                .max(Duration::from_millis(500))
                .min(node_limit * 3);
            let stopped = self.stop_local(limit).await;
            self.resign(&l, stopped).await;
            if exit == Exit::GiveWay {
                self.drop_transfer_to_me(&l).await;
            }
        }
        self.publish(|s| s.leading = None);
        self.set_role(Role::Follower);
        self.leading_since = None;
        self.restart_failing_since = None;
        self.s.committer.reset().await;
        self.recorded = None;
        if exit == Exit::GiveWay {
            self.give_way_until = Some(Instant::now() + self.s.config.lease_ttl * 2);
        }
    }

    /// A transfer naming us defers every other candidate while our member record looks able to
    /// take over, and when we give way it still does: the node answered health checks, it only
    /// could not be started in time. Left in place, the record would hold a caught-up candidate
    /// back for the rest of the transfer window (a 16 s wedge in the fault campaign); gone, the
    /// next best candidate contends now. Only a record older than the term we give up goes: a
    /// new request naming us, made once we resigned, is the operator's to keep.
    async fn drop_transfer_to_me(&self, l: &Leadership) {
        match cluster::drop_transfer_to(&self.s.election, self.me(), l.epoch).await {
            Ok(true) => tracing::info!("dropped the transfer naming this sidecar, which gave way"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not drop the transfer naming this sidecar; it lapses with its window")
            }
        }
    }

    async fn resign(&self, l: &Leadership, stopped: Option<BlockId>) {
        let mut ops = Vec::new();
        if let Some(b) = &stopped {
            let rec = StoppedRecord {
                hash: b.hash.clone(),
                number: b.number,
                id: self.me().to_string(),
                epoch: l.epoch,
            };
            if let Ok(v) = serde_json::to_vec(&rec) {
                ops.push(TxnOp::put(self.s.election.keys().stopped(), v, None));
            }
        }
        match self.s.election.resign(l, ops).await {
            Ok(true) => tracing::info!(stopped = ?stopped, "resigned"),
            Ok(false) => {
                tracing::warn!("leader key was already gone; nothing recorded (fenced)")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not resign; the key expires with the lease")
            }
        }
    }

    /// Stops the local sequencer within `limit` and returns where it stopped. A zero hash is
    /// replaced by the unsafe head from `optimism_syncStatus` (seed behaviour).
    async fn stop_local(&self, limit: Duration) -> Option<BlockId> {
        let started = Instant::now();
        let returned = match self.s.node.stop_within(limit).await {
            Ok(StopOutcome::Stopped(h)) => {
                self.s.metrics.action("stop", "ok");
                Some(h)
            }
            Ok(StopOutcome::NotRunning) => {
                self.s.metrics.action("stop", "not_running");
                None
            }
            Err(e) => {
                self.s.metrics.action("stop", "error");
                tracing::error!(error = %e, "admin_stopSequencer failed");
                return None;
            }
        };
        let left = limit
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(200));
        match tokio::time::timeout(left, self.s.node.sync_status()).await {
            // Nobody else can have produced on top yet (we still hold the key), so the unsafe
            // head right after the stop is where we stopped.
            Ok(Ok(st)) => {
                if let Some(h) = &returned {
                    if !is_zero_hash(h) && !h.eq_ignore_ascii_case(&st.unsafe_l2.hash) {
                        tracing::info!(returned = %h, head = %st.unsafe_l2.hash, "stop hash differs from the unsafe head; recording the head");
                    }
                }
                Some(st.unsafe_l2.id())
            }
            _ => {
                let head = self.s.health_now().head;
                returned
                    .filter(|h| !is_zero_hash(h))
                    .and_then(|h| head.filter(|b| b.hash.eq_ignore_ascii_case(&h)))
            }
        }
    }

    // === membership ===

    async fn publish_member(&mut self, health: &Health) {
        let Some(lease) = *self.s.lease.borrow() else {
            return;
        };
        let st = self.s.status_now();
        let m = MemberRecord {
            id: self.me().to_string(),
            rpc: self.s.config.rpc_advertise.clone(),
            node: self.s.config.node_advertise.clone(),
            healthy: health.healthy,
            only_stale: health.only_stale(),
            paused: st.paused,
            active: st.node_active.unwrap_or(false),
            head: health.head.clone(),
            version: VERSION.to_string(),
        };
        if self
            .last_member
            .as_ref()
            .is_some_and(|(id, last)| *id == lease.id && *last == m)
        {
            return;
        }
        match cluster::put_member(&self.s.election, lease.id, &m).await {
            Ok(()) => self.last_member = Some((lease.id, m)),
            Err(e) => tracing::debug!(error = %e, "could not publish member record"),
        }
    }
}

/// Debug builds only (never in a release binary): while the file named by
/// `OP_SIDECAR_DEBUG_FREEZE_CONTROL` exists and holds this sidecar's id, the control loop makes
/// no progress, as a deadlocked or blocked loop would, so a test can prove the watchdog works.
#[cfg(debug_assertions)]
async fn freeze_point(me: &str) {
    let Some(path) = std::env::var_os("OP_SIDECAR_DEBUG_FREEZE_CONTROL") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let mut warned = false;
    while std::fs::read_to_string(&path).is_ok_and(|id| id.trim() == me) {
        if !std::mem::replace(&mut warned, true) {
            tracing::warn!(path = %path.display(), "debug freeze point: control loop frozen while this file exists");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits on a call to our own node for at most `limit`, and only until a health sample finds
/// the node unreachable: a node that just hung must not hold the leader's step, and with it the
/// handover the failing health check is about to ask for, for a whole call timeout (measured:
/// up to 0.37 s between the unhealthy verdict and the step-down). `None` when the call failed,
/// timed out or was cut short.
async fn ask_node<T, E>(
    health: &watch::Receiver<Health>,
    limit: Option<Duration>,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    let mut rx = health.clone();
    let unreachable = async move {
        loop {
            if rx.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
            // The guard is a temporary: released before the next await.
            if !rx.borrow_and_update().reachable {
                return;
            }
        }
    };
    let call = async {
        match limit {
            Some(l) => tokio::time::timeout(l, call).await.ok(),
            None => Some(call.await),
        }
    };
    tokio::select! {
        r = call => r.and_then(Result::ok),
        () = unreachable => None,
    }
}

/// Sleeps until `deadline` (a term's lease deadline); never completes without one.
async fn until(deadline: Option<Option<Instant>>) {
    match deadline {
        Some(Some(d)) => tokio::time::sleep_until(d).await,
        // A term whose lease is already gone: wake at once so the loop steps down.
        Some(None) => {}
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(reachable: bool) -> Health {
        Health {
            reachable,
            healthy: reachable,
            ..Health::initial()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_call_ends_when_a_sample_finds_the_node_unreachable() {
        let (tx, rx) = watch::channel(health(true));
        let hung = std::future::pending::<Result<(), ()>>();
        let started = Instant::now();
        let verdict = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // A good sample first: it must not end the call.
            tx.send_replace(health(true));
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send_replace(health(false));
            std::future::pending::<()>().await
        };
        let out = tokio::select! {
            out = ask_node(&rx, Some(Duration::from_secs(5)), hung) => out,
            () = verdict => unreachable!(),
        };
        assert_eq!(out, None);
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_call_is_bounded_by_its_limit_and_answers_pass_through() {
        let (_tx, rx) = watch::channel(health(true));
        let started = Instant::now();
        let hung = std::future::pending::<Result<(), ()>>();
        assert_eq!(
            ask_node(&rx, Some(Duration::from_millis(500)), hung).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!(ask_node(&rx, None, async { Ok::<_, ()>(7) }).await, Some(7));
        assert_eq!(ask_node(&rx, None, async { Err::<u8, _>(()) }).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_health_channel_leaves_the_call_to_its_limit() {
        let (tx, rx) = watch::channel(health(true));
        drop(tx);
        let started = Instant::now();
        let hung = std::future::pending::<Result<(), ()>>();
        assert_eq!(
            ask_node(&rx, Some(Duration::from_millis(300)), hung).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }
}
