//! Wiring and lifecycle: the only place that turns leadership and health into sequencer calls, and the owner of the shutdown order.
//!
//! One control loop per sidecar. Each tick it reads the cluster view from etcd in one round
//! trip and the local node's state, then either keeps leading (or steps down) or follows
//! (inspection, and contending when eligible). Handover and step-down run inline in the loop, so
//! no two sequencer calls of this sidecar ever race.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{TxnOp, WatchOptions};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cluster::best_candidate;
use crate::cluster::{self, View};
use crate::commit::{self, Committer};
use crate::config::Config;
use crate::election::{self, Acquire, Election, EtcdPool, Leadership, LeaseState};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::rpc::client::HttpClient;
use crate::sequencer::{is_zero_hash, BlockId, NodeClient, StartError, StartOutcome, StopOutcome};
use crate::state::{unix_ms, HeadRecord, Keys, MemberRecord, StoppedRecord, TransferRecord};
use crate::status::{Command, LeaderRef, Mode, Shared, Status, VERSION};

/// Binds the configured listeners and runs until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rpc = TcpListener::bind((config.rpc_addr, config.rpc_port))
        .await
        .with_context(|| {
            format!(
                "binding rpc.addr/rpc.port {}:{}",
                config.rpc_addr, config.rpc_port
            )
        })?;
    let admin = TcpListener::bind((config.admin_addr, config.admin_port))
        .await
        .with_context(|| {
            format!(
                "binding admin.addr/admin.port {}:{}",
                config.admin_addr, config.admin_port
            )
        })?;
    run_with_listeners(config, rpc, admin, shutdown).await
}

/// Runs the sidecar on given listeners (tests bind port 0) until `shutdown` completes, then
/// stops the sequencer if leading, records where it stopped, resigns, revokes the lease and
/// drains HTTP, in that order.
pub async fn run_with_listeners(
    config: Config,
    rpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tracing::info!(rpc = %rpc.local_addr()?, admin = %admin.local_addr()?, id = %config.server_id, prefix = %config.etcd_prefix, "op-sidecar starting");
    let pool = Arc::new(
        EtcdPool::connect(&config.etcd_endpoints)
            .await
            .context("creating the etcd clients")?,
    );
    let keys = Keys::new(&config.etcd_prefix);
    let election = Election::new(
        pool.clone(),
        keys.clone(),
        config.server_id.clone(),
        config.etcd_timeout,
    );
    let http = HttpClient::new();
    let node = NodeClient::new(
        http.clone(),
        config.node_rpc.clone(),
        config.execution_rpc.clone(),
        Duration::from_secs(2),
    );
    let health_node = NodeClient::new(
        http.clone(),
        config.node_rpc.clone(),
        config.execution_rpc.clone(),
        health::poll_timeout(config.health.interval),
    );

    let (lease_tx, lease_rx) = watch::channel(None);
    let (health_tx, health_rx) = watch::channel(Health::initial());
    let (status_tx, status_rx) = watch::channel(Status::initial(config.paused));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let metrics = Arc::new(Metrics::new());
    let wake = Arc::new(Notify::new());

    let background = CancellationToken::new();
    let control = CancellationToken::new();
    let drain = CancellationToken::new();

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(health::run(
        health_node,
        config.health.clone(),
        health_tx,
        background.clone(),
    ));
    tasks.spawn(election::run_lease(
        pool.clone(),
        config.lease_ttl,
        config.etcd_timeout,
        lease_tx,
        background.clone(),
    ));
    tasks.spawn(watch_changes(
        election.clone(),
        wake.clone(),
        background.clone(),
    ));

    let shared = Arc::new(Shared {
        config: config.clone(),
        election: election.clone(),
        node: node.clone(),
        http,
        status: status_rx,
        lease: lease_rx.clone(),
        health: health_rx,
        commands: cmd_tx,
        metrics: metrics.clone(),
        committer: Committer::new(),
        leader_override: AtomicBool::new(false),
    });
    let rpc_task = tokio::spawn(crate::rpc::server::serve(
        rpc,
        shared.clone(),
        drain.clone().cancelled_owned(),
    ));
    let admin_task = tokio::spawn(crate::admin::serve(
        admin,
        shared.clone(),
        drain.clone().cancelled_owned(),
    ));

    let controller = Controller::new(shared.clone(), status_tx, cmd_rx, wake, control.clone());
    let control_task = tokio::spawn(controller.run());

    shutdown.await;
    tracing::info!("shutdown requested: stopping the sequencer if leading, then resigning");
    control.cancel();
    if let Err(e) = control_task.await {
        tracing::error!(error = %e, "control loop panicked");
    }
    background.cancel();
    while tasks.join_next().await.is_some() {}
    let lease = *lease_rx.borrow();
    if let Some(lease) = lease {
        match election.revoke(lease.id).await {
            Ok(()) => tracing::info!(lease = format_args!("{:x}", lease.id), "lease revoked"),
            Err(e) => {
                tracing::warn!(error = %e, "could not revoke the lease; it expires by itself")
            }
        }
    }
    drain.cancel();
    let _ = rpc_task.await;
    let _ = admin_task.await;
    tracing::info!("op-sidecar stopped");
    Ok(())
}

/// Wakes the control loop as soon as the leader key or a control key changes. Only a latency
/// optimisation: the loop also ticks, and every decision re-reads etcd.
async fn watch_changes(election: Election, wake: Arc<Notify>, cancel: CancellationToken) {
    let keys = election.keys().clone();
    let (leader_dir, control_dir) = (keys.leader_dir(), keys.control_dir());
    loop {
        let (member, client) = election.pool().pick();
        let mut watch_client = client.watch_client();
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = watch_client.watch(format!("{}/", keys.prefix()), Some(WatchOptions::new().with_prefix())) => r,
        };
        if opened.is_err() {
            election.pool().failed(member);
        }
        if let Ok(mut stream) = opened {
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(resp)) => {
                        let relevant = resp.events().iter().any(|ev| {
                            ev.kv().is_some_and(|kv| {
                                kv.key().starts_with(leader_dir.as_bytes())
                                    || kv.key().starts_with(control_dir.as_bytes())
                            })
                        });
                        if relevant {
                            wake.notify_one();
                        }
                        if resp.canceled() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Completes when lease `id` is no longer valid locally: its deadline passed (following every
/// extension the keepalive loop publishes) or it was replaced or lost.
async fn lease_expiry(mut lease: watch::Receiver<Option<LeaseState>>, id: i64) {
    loop {
        let until = match *lease.borrow_and_update() {
            Some(l) if l.id == id => l.valid_until,
            _ => return,
        };
        if Instant::now() >= until {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            changed = lease.changed() => {
                if changed.is_err() {
                    // The keepalive loop is gone: nothing will extend the deadline.
                    tokio::time::sleep_until(until).await;
                    return;
                }
            }
        }
    }
}

/// Why leadership ends; decides what is recorded and whether we stand back afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Stop, record the stopped head and resign (fenced: if the key is no longer ours, as after
    /// the lease deadline passed, nothing is written and the key expires by itself).
    Resign,
    /// Handover failed (could not catch up or start): resign and stand back for a while so a
    /// better candidate wins; if none does we contend again (L3: never halt the chain).
    GiveWay,
}

struct Controller {
    s: Arc<Shared>,
    status_tx: watch::Sender<Status>,
    commands: mpsc::Receiver<Command>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    paused: bool,
    mode: Mode,
    give_way_until: Option<Instant>,
    no_leader_since: Option<Instant>,
    /// The last leader seen while following, with its node admin URL if known.
    last_leader: Option<(String, Option<String>)>,
    last_member: Option<(i64, MemberRecord)>,
    recorded: Option<BlockId>,
    warned_unhealthy_keep: bool,
    /// When the current leadership began sequencing; health-driven handover waits out a grace
    /// period from here, because right after a halt our own head is stale too.
    leading_since: Option<Instant>,
}

impl Controller {
    fn new(
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
            paused,
            mode: Mode::Unknown,
            give_way_until: None,
            no_leader_since: None,
            last_leader: None,
            last_member: None,
            recorded: None,
            warned_unhealthy_keep: false,
            leading_since: None,
        }
    }

    fn me(&self) -> &str {
        &self.s.config.server_id
    }

    fn leading(&self) -> Option<Leadership> {
        self.status_tx.borrow().leading.clone()
    }

    fn publish(&self, f: impl FnOnce(&mut Status)) {
        self.status_tx.send_modify(f);
        let st = self.status_tx.borrow();
        self.s.metrics.is_leader.set(i64::from(st.gate));
        self.s.metrics.paused.set(i64::from(st.paused));
    }

    fn lease_valid_for(&self, l: &Leadership) -> bool {
        self.s
            .lease
            .borrow()
            .is_some_and(|lease| lease.id == l.lease && lease.valid_at(Instant::now()))
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.s.config.health.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut lease_rx = self.s.lease.clone();
        let mut health_rx = self.s.health.clone();
        let wake = self.wake.clone();
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(cmd) = self.commands.recv() => self.command(cmd),
                _ = tick.tick() => {}
                _ = wake.notified() => {}
                Ok(()) = lease_rx.changed() => {}
                Ok(()) = health_rx.changed() => {}
            }
            // S1: while leading, no wait on etcd or the node may outlast the local lease
            // deadline. A step blocked past it is abandoned and we step down at once.
            match self.leading() {
                Some(l) => {
                    let expired = tokio::select! {
                        biased;
                        _ = lease_expiry(self.s.lease.clone(), l.lease) => true,
                        _ = self.step() => false,
                    };
                    if expired && self.leading().is_some() {
                        self.step_down(
                            "lease deadline passed while waiting on etcd or the node",
                            Exit::Resign,
                        )
                        .await;
                    }
                }
                None => self.step().await,
            }
        }
        self.publish(|s| s.shutting_down = true);
        if self.leading().is_some() {
            self.step_down("shutting down", Exit::Resign).await;
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::SetPaused(paused, done) => {
                if !paused && self.status_tx.borrow().stopped {
                    let _ = done.send(Err(
                        "sidecar is stopped (conductor_stop); restart the process to resume".into(),
                    ));
                    return;
                }
                if paused != self.paused {
                    tracing::info!(paused, "pause state changed by operator");
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

    async fn step(&mut self) {
        let health = self.s.health.borrow().clone();
        self.s.metrics.healthy.set(i64::from(health.healthy));
        let was_reachable = self.status_tx.borrow().etcd_reachable;
        let view = match cluster::read_view(&self.s.election).await {
            Ok(v) => {
                if !was_reachable && self.status_tx.borrow().started {
                    tracing::info!("etcd reachable again");
                }
                Some(v)
            }
            Err(e) => {
                self.s.metrics.etcd_errors.inc();
                // One warning per outage; the details of every failed tick at debug.
                if was_reachable || !self.status_tx.borrow().started {
                    tracing::warn!(error = %e, "cannot reach etcd: not contending; a leader steps down when its lease deadline passes");
                } else {
                    tracing::debug!(error = %e, "etcd still unreachable");
                }
                None
            }
        };
        let active = self.s.node.active().await.ok();
        let leader = view.as_ref().map(|v| {
            v.leader.as_ref().map(|l| LeaderRef {
                id: l.id.clone(),
                rpc: v.members.get(&l.id).map(|m| m.rpc.clone()),
            })
        });
        self.publish(|s| {
            if let Some(l) = leader {
                s.leader = l;
            }
            s.etcd_reachable = view.is_some();
            s.node_active = active;
            s.started = true;
        });

        if let Some(l) = self.leading() {
            self.lead_step(l, &health, view.as_ref(), active).await;
        } else {
            self.follow_step(&health, view.as_ref(), active).await;
        }
        self.publish_member(&health).await;
    }

    // === leading ===

    async fn lead_step(
        &mut self,
        l: Leadership,
        health: &Health,
        view: Option<&View>,
        active: Option<bool>,
    ) {
        // Safety first: the local deadline, whatever etcd says or fails to say.
        if !self.lease_valid_for(&l) {
            return self
                .step_down("lease is no longer valid locally", Exit::Resign)
                .await;
        }
        if self.paused {
            return self.step_down("paused", Exit::Resign).await;
        }
        if let Some(v) = view {
            match &v.leader {
                Some(cur) if cur.key == l.key && cur.epoch == l.epoch => {}
                _ => {
                    return self
                        .step_down("leader key is gone from etcd", Exit::Resign)
                        .await
                }
            }
            if let Some(t) = v.pending_transfer() {
                if t.epoch == l.epoch && t.target != self.me() {
                    let why = format!("leadership transfer to {} requested", t.target);
                    return self.step_down(&why, Exit::Resign).await;
                }
            }
            let settled = self
                .leading_since
                .is_some_and(|t| t.elapsed() >= self.health_grace());
            if !health.healthy && !v.election_stopped && settled {
                if let Some(target) = best_candidate(v, self.me(), health.head.as_ref()) {
                    let t = TransferRecord {
                        target: target.clone(),
                        from: self.me().to_string(),
                        epoch: l.epoch,
                        expires_ms: unix_ms() + self.transfer_window().as_millis() as u64,
                    };
                    let leader = v.leader.clone();
                    match cluster::put_transfer(&self.s.election, leader.as_ref(), &t).await {
                        Ok(true) => {
                            let why = format!(
                                "node unhealthy ({}); handing over to {target}",
                                health.summary()
                            );
                            return self.step_down(&why, Exit::Resign).await;
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "could not record the handover"),
                    }
                } else if !self.warned_unhealthy_keep {
                    self.warned_unhealthy_keep = true;
                    tracing::warn!(problems = %health.summary(), "node unhealthy but no healthy caught-up candidate; keeping leadership");
                }
            } else {
                self.warned_unhealthy_keep = false;
            }
        }
        if active == Some(false) && health.reachable {
            // The node restarted (it always comes back stopped) or someone stopped it by hand.
            tracing::warn!("leading but the node is not sequencing; starting it again");
            let target = view.and_then(View::recorded_head);
            if let Err(why) = self.start_node(&l, target.as_ref()).await {
                tracing::warn!(reason = %why, "could not restart sequencing");
            }
        }
        if self.mode == Mode::Driven && active == Some(true) {
            if let Some(head) = &health.head {
                if self.recorded.as_ref() != Some(head) {
                    self.record_head(&l, head).await;
                }
            }
        }
        // Conductor mode: a commit whose Txn succeeded but whose answer missed op-node's budget
        // leaves our own node one block behind the committed head, re-sealing a block the fence
        // refuses. Hand it the committed block instead (never replace a committed head).
        if self.mode == Mode::Conductor {
            if let (Some(committed), Some(local)) =
                (view.and_then(|v| v.head.as_ref()), &health.head)
            {
                if local.number + 1 == committed.number {
                    self.repair_one_block(&committed.block()).await;
                }
            }
        }
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

    /// Long enough for a new leader's first blocks to make its head fresh and for the health
    /// filter to see it.
    fn health_grace(&self) -> Duration {
        let h = &self.s.config.health;
        h.unsafe_interval + h.interval * (h.failures + h.successes)
    }

    fn transfer_window(&self) -> Duration {
        self.s.config.catchup_timeout + self.s.config.lease_ttl * 2
    }

    // === following ===

    async fn follow_step(&mut self, health: &Health, view: Option<&View>, active: Option<bool>) {
        if self.paused {
            return;
        }
        // Inspection (S4): a node sequencing while we do not lead is stopped. Exception: on a
        // chain with no leader and an empty store we contend and adopt the running sequencer
        // instead of halting it (op-conductor #17899).
        if active == Some(true) {
            let adopt = view.is_some_and(|v| v.leader.is_none() && v.store_empty());
            if !adopt {
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
        }
        let Some(v) = view else { return };
        if let Some(leader) = &v.leader {
            self.no_leader_since = None;
            let my_lease = self.s.lease.borrow().map(|l| l.id);
            if my_lease == Some(leader.lease) {
                // Our own key, but we are not leading: we stepped down while etcd was out of
                // reach and it kept (or, after a restart, extended) our lease. Nobody else can
                // take the key while our keepalives run, so release it.
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
                return;
            }
            if leader.id != self.me() {
                self.last_leader = Some((
                    leader.id.clone(),
                    v.members.get(&leader.id).map(|m| m.node.clone()),
                ));
            }
            return;
        }
        let now = Instant::now();
        let since = *self.no_leader_since.get_or_insert(now);
        let Some(lease) = *self.s.lease.borrow() else {
            return;
        };
        if !lease.valid_at(now) {
            return;
        }
        match v.pending_transfer() {
            Some(t) if t.target != self.me() => return,
            // An operator named us: that overrides a stopped election and a recent give-way.
            Some(_) => {}
            None => {
                if v.election_stopped || self.give_way_until.is_some_and(|until| now < until) {
                    return;
                }
            }
        }
        // First start on a live chain (empty store, no leader): the sequencer already running
        // must be adopted, not stopped (op-conductor #17899), so the others stand back for a
        // while and its own sidecar does not wait out the stale-head delay (in conductor mode its
        // commits fail until someone leads, so its head is stale).
        let adopting = active == Some(true) && v.store_empty();
        if !adopting && v.store_empty() {
            // Give a running node's sidecar time to announce itself before anyone else contends.
            if now.duration_since(since) < self.s.config.health.interval * 2 {
                return;
            }
            let running_elsewhere = v
                .members
                .values()
                .any(|m| m.id != self.me() && m.active && !m.paused);
            if running_elsewhere && now.duration_since(since) < self.s.config.lease_ttl * 2 {
                return;
            }
        }
        // A stale head alone must not keep a reachable node out when nobody leads: then every
        // head is stale. Fresh candidates get one TTL's head start.
        let named = v.pending_transfer().is_some_and(|t| t.target == self.me());
        let eligible = health.healthy
            || (health.only_stale()
                && (named || adopting || now.duration_since(since) >= self.s.config.lease_ttl));
        if !eligible {
            return;
        }
        match self.s.election.try_acquire(lease.id).await {
            Ok(Acquire::Won(l)) => self.take_over(l, v).await,
            Ok(Acquire::Held(holder)) => {
                tracing::debug!(holder = ?holder.map(|h| h.id), "leader key taken by another candidate")
            }
            Err(e) => tracing::warn!(error = %e, "could not contend for the leader key"),
        }
    }

    async fn take_over(&mut self, l: Leadership, view: &View) {
        let began = Instant::now();
        tracing::info!(epoch = l.epoch, key = %l.key, "won the leader key; handing over");
        self.s.metrics.leader_transitions.inc();
        self.recorded = None;
        self.give_way_until = None;
        self.publish(|s| {
            s.leading = Some(l.clone());
            s.gate = false;
        });
        match self.handover(&l, view).await {
            Ok(head) => {
                self.leading_since = Some(Instant::now());
                self.s
                    .metrics
                    .handover_seconds
                    .observe(began.elapsed().as_secs_f64());
                tracing::info!(number = head.number, hash = %head.hash, elapsed = ?began.elapsed(), mode = ?self.mode, "sequencing as leader");
                if self.mode == Mode::Driven {
                    self.record_head(&l, &head).await;
                }
                if let Some(t) = view.pending_transfer() {
                    if t.target == self.me() {
                        let _ = cluster::clear_transfer(&self.s.election, t).await;
                    }
                }
            }
            Err(why) => {
                tracing::warn!(reason = %why, "handover failed; giving way");
                self.step_down(&why, Exit::GiveWay).await;
            }
        }
    }

    /// Brings the local node to the recorded head and starts it. Err = give way.
    async fn handover(&mut self, l: &Leadership, view: &View) -> Result<BlockId, String> {
        self.mode = match self.s.node.conductor_enabled().await {
            Ok(true) => Mode::Conductor,
            Ok(false) => Mode::Driven,
            Err(e) => return Err(format!("cannot reach the local node: {e}")),
        };
        let mode = self.mode;
        self.publish(|s| s.mode = mode);
        let mut target = view.recorded_head();
        if self.mode == Mode::Driven {
            if let Some(stopped) = self.stop_previous(l, view).await {
                if target.as_ref().is_none_or(|t| stopped.number >= t.number) {
                    target = Some(stopped);
                }
            }
        }
        if let Some(t) = &target {
            if is_zero_hash(&t.hash) {
                // Seed behaviour: a zero stopped hash is an error; start from our own head.
                tracing::warn!(
                    "recorded head is the zero hash; using the local unsafe head instead"
                );
                target = None;
            }
        }
        if let Some(t) = &target {
            self.wait_for_block(l, t).await?;
        } else {
            tracing::info!("no recorded head: bootstrapping from the local unsafe head");
        }
        self.start_node(l, target.as_ref()).await
    }

    /// Waits until the local node has `t` on its canonical chain, within the catch-up bound.
    async fn wait_for_block(&self, l: &Leadership, t: &BlockId) -> Result<(), String> {
        let deadline = Instant::now() + self.s.config.catchup_timeout;
        let mut logged = false;
        loop {
            if !self.lease_valid_for(l) {
                return Err("lease lost while waiting for the node to catch up".into());
            }
            match self.s.node.has_block(t).await {
                Ok(true) => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "node did not reach recorded head {}:{} within {:?}",
                        t.hash, t.number, self.s.config.catchup_timeout
                    ));
                }
                Ok(false) if self.mode == Mode::Conductor => self.repair_one_block(t).await,
                Ok(false) | Err(_) => {}
            }
            if !logged {
                logged = true;
                tracing::info!(number = t.number, hash = %t.hash, "waiting for the node to reach the recorded head");
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err("shutting down".into()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Conductor mode: a node exactly one block behind the committed head gets the stored
    /// payload posted (op-conductor wedged here, #22094). Larger gaps are left to sync.
    async fn repair_one_block(&self, t: &BlockId) {
        let Ok(status) = self.s.node.sync_status().await else {
            return;
        };
        let local = status.unsafe_l2;
        if local.number + 1 != t.number {
            return;
        }
        let payload = match commit::read_payload(&self.s.election).await {
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
                match self.s.node.post_unsafe_payload(&payload).await {
                    Ok(()) => self.s.metrics.action("post_payload", "ok"),
                    Err(e) => {
                        self.s.metrics.action("post_payload", "error");
                        tracing::warn!(error = %e, "admin_postUnsafePayload failed");
                    }
                }
            }
            Ok(_) => tracing::debug!("stored payload does not bridge the gap"),
            Err(e) => tracing::warn!(error = %e, "stored payload is invalid"),
        }
    }

    /// Raises the gate, then starts the node at its current head, provided that head is the
    /// recorded head or a descendant of it (S3). Retries on `block hash does not match`.
    async fn start_node(
        &mut self,
        l: &Leadership,
        target: Option<&BlockId>,
    ) -> Result<BlockId, String> {
        // op-node asks conductor_leader inside admin_startSequencer: the gate must already be up.
        self.publish(|s| s.gate = true);
        for attempt in 0..8 {
            if !self.lease_valid_for(l) {
                return Err("lease lost before the node started".into());
            }
            let head = self
                .s
                .node
                .sync_status()
                .await
                .map_err(|e| format!("cannot read the unsafe head: {e}"))?
                .unsafe_l2
                .id();
            if let Some(t) = target {
                if head.number < t.number || !self.s.node.has_block(t).await.unwrap_or(false) {
                    return Err(format!(
                        "unsafe head {}:{} is not at or past the recorded head {}:{}",
                        head.hash, head.number, t.hash, t.number
                    ));
                }
            }
            match self.s.node.start(&head.hash).await {
                Ok(StartOutcome::Started) => {
                    self.s.metrics.action("start", "ok");
                    return Ok(head);
                }
                Ok(StartOutcome::AlreadyRunning) => {
                    self.s.metrics.action("start", "already_running");
                    return Ok(head);
                }
                Err(StartError::HashMismatch(m)) => {
                    self.s.metrics.action("start", "hash_mismatch");
                    tracing::info!(attempt, error = %m, "head moved while starting; re-reading it");
                }
                Err(StartError::LeaderCheck(m)) => {
                    self.s.metrics.action("start", "leader_check");
                    tracing::warn!(attempt, error = %m, "op-node's leader check refused the start");
                }
                Err(StartError::Call(e)) => {
                    self.s.metrics.action("start", "error");
                    return Err(format!("admin_startSequencer failed: {e}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
        Err("admin_startSequencer kept failing".into())
    }

    /// Driven mode: the previous leader's node may still be sequencing (its sidecar died or is
    /// frozen). Stop it through its advertised admin URL before starting ours. Best effort.
    async fn stop_previous(&self, l: &Leadership, view: &View) -> Option<BlockId> {
        let mut urls: Vec<String> = Vec::new();
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
        urls.extend(
            view.members
                .values()
                .filter(|m| m.id != self.me() && m.active)
                .map(|m| m.node.clone()),
        );
        urls.sort();
        urls.dedup();
        urls.retain(|u| u != &self.s.config.node_advertise);
        let mut best: Option<BlockId> = None;
        for url in urls {
            let other = NodeClient::new(
                self.s.http.clone(),
                url.clone(),
                url.clone(),
                Duration::from_secs(2),
            );
            match other.stop().await {
                Ok(StopOutcome::Stopped(hash)) => {
                    let block = match other.sync_status().await {
                        Ok(st)
                            if st.unsafe_l2.hash.eq_ignore_ascii_case(&hash)
                                || is_zero_hash(&hash) =>
                        {
                            st.unsafe_l2.id()
                        }
                        _ => continue,
                    };
                    tracing::warn!(node = %url, number = block.number, hash = %block.hash, "stopped the previous leader's node");
                    self.s.metrics.action("stop_previous", "ok");
                    let rec = StoppedRecord {
                        hash: block.hash.clone(),
                        number: block.number,
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
                    if best.as_ref().is_none_or(|b| block.number > b.number) {
                        best = Some(block);
                    }
                }
                Ok(StopOutcome::NotRunning) => {
                    tracing::debug!(node = %url, "previous node was not sequencing")
                }
                Err(e) => {
                    self.s.metrics.action("stop_previous", "error");
                    tracing::warn!(node = %url, error = %e, "could not stop the previous leader's node (best effort)");
                }
            }
        }
        best
    }

    // === stepping down ===

    async fn step_down(&mut self, reason: &str, exit: Exit) {
        let Some(l) = self.leading() else { return };
        // Lower the gate before anything else: from here conductor_leader says no.
        self.publish(|s| s.gate = false);
        tracing::warn!(reason, epoch = l.epoch, "stepping down");
        let stopped = self.stop_local().await;
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
        match self.s.election.resign(&l, ops).await {
            Ok(true) => tracing::info!(stopped = ?stopped, "resigned; stopped head recorded"),
            Ok(false) => {
                tracing::warn!("leader key was already gone; stopped head not recorded (fenced)")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not resign; the key expires with the lease")
            }
        }
        self.publish(|s| s.leading = None);
        self.leading_since = None;
        self.s.committer.reset().await;
        self.recorded = None;
        if exit == Exit::GiveWay {
            self.give_way_until = Some(Instant::now() + self.s.config.lease_ttl * 2);
        }
    }

    /// Stops the local sequencer and returns where it stopped. A zero hash is replaced by the
    /// unsafe head from `optimism_syncStatus` (seed behaviour).
    async fn stop_local(&self) -> Option<BlockId> {
        let returned = match self.s.node.stop().await {
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
        match self.s.node.sync_status().await {
            // Nobody else can have produced on top yet (we still hold the key), so the unsafe
            // head right after the stop is where we stopped.
            Ok(st) => {
                if let Some(h) = &returned {
                    if !is_zero_hash(h) && !h.eq_ignore_ascii_case(&st.unsafe_l2.hash) {
                        tracing::info!(returned = %h, head = %st.unsafe_l2.hash, "stop hash differs from the unsafe head; recording the head");
                    }
                }
                Some(st.unsafe_l2.id())
            }
            Err(_) => {
                let head = self.s.health.borrow().head.clone();
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
        let st = self.status_tx.borrow().clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_fires_at_the_deadline_and_follows_extensions() {
        let t0 = Instant::now();
        let (tx, rx) = watch::channel(Some(LeaseState {
            id: 7,
            valid_until: t0 + Duration::from_secs(1),
        }));
        let waiter = tokio::spawn(lease_expiry(rx.clone(), 7));
        tokio::time::sleep(Duration::from_millis(600)).await;
        // A keepalive ack moves the deadline: the waiter must not fire at the old one.
        tx.send_replace(Some(LeaseState {
            id: 7,
            valid_until: t0 + Duration::from_secs(2),
        }));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            !waiter.is_finished(),
            "fired at a deadline that had been extended"
        );
        waiter.await.expect("waiter");
        assert!(Instant::now() >= t0 + Duration::from_secs(2));
        // A different (re-granted) lease means ours is gone: immediate.
        let before = Instant::now();
        lease_expiry(rx.clone(), 8).await;
        assert_eq!(Instant::now(), before);
        tx.send_replace(None);
        lease_expiry(rx, 7).await;
    }
}
