//! One simulated op-node + op-geth pair: chain state, sequencer loop, gossip receipt, faults.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ledger::Rewind;
use crate::network::Network;
use crate::rpc::{self, RpcError};
use crate::types::{now_ms, Block, BlockRef, B256};
use crate::{api_geth, api_node, payload};

/// Longest a background loop sleeps before re-checking its state.
const MAX_IDLE: Duration = Duration::from_millis(250);
/// op-node's conductor retry discipline (the timeout is `--conductor.rpc-timeout`, per cluster).
const CONDUCTOR_ATTEMPTS: usize = 2;
const CONDUCTOR_GAP: Duration = Duration::from_millis(50);
/// Back-off after a failed conductor commit before re-sealing.
const COMMIT_BACKOFF: Duration = Duration::from_secs(1);
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(1);
/// How long admin_stopSequencer waits for an in-flight block.
const STOP_WAIT: Duration = Duration::from_millis(2500);

struct Gossip {
    block: Block,
    deliver_at: Instant,
}

/// The running "process": listeners, background tasks and the gossip inbox.
struct Incarnation {
    token: CancellationToken,
    inbox: mpsc::UnboundedSender<Gossip>,
    listeners: [Arc<TcpListener>; 2],
}

pub(crate) struct NodeState {
    /// Canonical unsafe chain; `chain[i].number == i`, never empty.
    pub(crate) chain: Vec<Block>,
    pub(crate) active: bool,
    pub(crate) crashed: bool,
    pub(crate) frozen: bool,
    pub(crate) hung: bool,
    pub(crate) stalled: bool,
    pub(crate) lag: Duration,
    /// Every op-node RPC request waits this long before it is handled (a slow, not dead, node);
    /// with a method list, only those methods do.
    pub(crate) rpc_delay: Duration,
    pub(crate) rpc_delay_methods: Option<Vec<String>>,
    pub(crate) gossip_cut: bool,
    pub(crate) peer_override: Option<u64>,
    pub(crate) conductor: Option<String>,
    pub(crate) coordinator: Option<(String, String)>,
    pub(crate) leader_overridden: bool,
    pub(crate) max_da: Option<(u64, u64)>,
    pub(crate) produced: u64,
    /// A block is being built/committed right now (admin_stopSequencer waits for it).
    pub(crate) building: bool,
    /// One-shot: the next successful admin_stopSequencer returns the zero hash.
    pub(crate) zero_hash_on_next_stop: bool,
    /// One-shot: the next admin_startSequencer that reaches the hash check answers
    /// `block hash does not match` without starting.
    pub(crate) hash_mismatch_on_next_start: bool,
    /// One-shot: the next block whose build starts after this was set and whose commit
    /// succeeds is treated as not committed, as if the answer never arrived (the sidecar
    /// committed it; op-node backs off and re-seals the height).
    pub(crate) lose_next_commit_ack: bool,
    /// One-shot: payload size of the next block whose build starts.
    pub(crate) next_payload_bytes: Option<usize>,
    incarnation: Option<Incarnation>,
}

impl NodeState {
    pub(crate) fn head(&self) -> &Block {
        // The chain always holds genesis.
        &self.chain[self.chain.len() - 1]
    }

    /// The block `lag` below the head, clamped at genesis.
    pub(crate) fn below_head(&self, lag: u64) -> &Block {
        let n = self.head().number.saturating_sub(lag) as usize;
        &self.chain[n]
    }
}

pub(crate) struct NodeInner {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) net: Arc<Network>,
    pub(crate) node_port: u16,
    pub(crate) geth_port: u16,
    pub(crate) st: Mutex<NodeState>,
    /// Wakes the sequencer loop and stop-waiters on any state change.
    wake: Notify,
    /// true while op-node RPC requests must hang (frozen, hung or crashed).
    gate: watch::Sender<bool>,
}

enum Step {
    Idle,
    Sleep(Duration),
    Build {
        parent: Block,
        conductor: Option<String>,
        coordinator: Option<(String, String)>,
        /// A one-shot size for this block (else the network's).
        payload_bytes: Option<usize>,
        /// Whether `lose_next_commit_ack` was armed when this block's build started.
        lose_ack: bool,
    },
}

async fn sleep_or_cancel(d: Duration, token: &CancellationToken) {
    tokio::select! {
        _ = token.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

impl NodeInner {
    /// Creates the node (not yet serving): stopped sequencer, chain = genesis.
    pub(crate) fn new(
        index: usize,
        net: Arc<Network>,
        node_port: u16,
        geth_port: u16,
        conductor: Option<String>,
        coordinator: Option<(String, String)>,
    ) -> Arc<Self> {
        let (gate, _) = watch::channel(true);
        Arc::new(NodeInner {
            index,
            name: format!("seq-{index}"),
            node_port,
            geth_port,
            st: Mutex::new(NodeState {
                chain: vec![net.genesis.clone()],
                active: false,
                crashed: true,
                frozen: false,
                hung: false,
                stalled: false,
                lag: Duration::ZERO,
                rpc_delay: Duration::ZERO,
                rpc_delay_methods: None,
                gossip_cut: false,
                peer_override: None,
                conductor,
                coordinator,
                leader_overridden: false,
                max_da: None,
                produced: 0,
                building: false,
                zero_hash_on_next_stop: false,
                hash_mismatch_on_next_start: false,
                lose_next_commit_ack: false,
                next_payload_bytes: None,
                incarnation: None,
            }),
            net,
            wake: Notify::new(),
            gate,
        })
    }

    fn notify(&self) {
        self.wake.notify_waiters();
    }

    fn update_gate(&self, st: &NodeState) {
        self.gate.send_replace(st.crashed || st.frozen || st.hung);
    }

    /// Hangs while op-node RPC must not answer.
    pub(crate) async fn rpc_gate(&self, method: &str) {
        let delay = {
            let st = self.st.lock();
            match &st.rpc_delay_methods {
                Some(only) if !only.iter().any(|m| m == method) => Duration::ZERO,
                _ => st.rpc_delay,
            }
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut rx = self.gate.subscribe();
        if rx.wait_for(|blocked| !*blocked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub(crate) fn head(&self) -> Block {
        self.st.lock().head().clone()
    }

    // ---- lifecycle -------------------------------------------------------------------

    /// Starts serving on the given listeners and spawns the background tasks.
    pub(crate) fn launch(self: &Arc<Self>, node_l: TcpListener, geth_l: TcpListener) {
        let token = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let node_l = Arc::new(node_l);
        let geth_l = Arc::new(geth_l);
        rpc::serve(
            node_l.clone(),
            token.clone(),
            api_node::handler(self.clone()),
        );
        rpc::serve(
            geth_l.clone(),
            token.clone(),
            api_geth::handler(self.clone()),
        );
        tokio::spawn(self.clone().producer_loop(token.clone()));
        tokio::spawn(self.clone().receiver_loop(rx, token.clone()));
        let mut st = self.st.lock();
        st.crashed = false;
        st.frozen = false;
        st.hung = false;
        st.active = false;
        st.building = false;
        st.leader_overridden = false;
        st.incarnation = Some(Incarnation {
            token,
            inbox: tx,
            listeners: [node_l, geth_l],
        });
        self.update_gate(&st);
        drop(st);
        self.notify();
    }

    /// Kills the "process": listeners refuse connections from now on, open connections and
    /// background tasks are dropped, the sequencer is stopped. The chain is kept.
    pub(crate) fn crash(&self) {
        let mut st = self.st.lock();
        if let Some(inc) = st.incarnation.take() {
            for l in &inc.listeners {
                rpc::close_listener(l);
            }
            inc.token.cancel();
        }
        st.crashed = true;
        st.active = false;
        st.building = false;
        self.update_gate(&st);
        drop(st);
        self.notify();
    }

    /// Crash (if running), then come back on the same ports with the sequencer stopped and
    /// catch up from the highest reachable peer.
    pub(crate) async fn restart(self: &Arc<Self>) -> anyhow::Result<()> {
        self.crash();
        let node_l = rpc::bind_retry(self.node_port).await?;
        let geth_l = rpc::bind_retry(self.geth_port).await?;
        self.launch(node_l, geth_l);
        self.sync_from_peers();
        Ok(())
    }

    // ---- faults ----------------------------------------------------------------------

    pub(crate) fn set_frozen(&self, on: bool) {
        let mut st = self.st.lock();
        st.frozen = on;
        self.update_gate(&st);
        drop(st);
        self.notify();
    }

    pub(crate) fn set_hung(&self, on: bool) {
        let mut st = self.st.lock();
        st.hung = on;
        self.update_gate(&st);
    }

    pub(crate) fn set_stalled(&self, on: bool) {
        self.st.lock().stalled = on;
        if !on {
            self.sync_from_peers();
        }
        self.notify();
    }

    pub(crate) fn set_lag(&self, d: Duration) {
        self.st.lock().lag = d;
    }

    pub(crate) fn set_rpc_delay(&self, d: Duration, methods: Option<Vec<String>>) {
        let mut st = self.st.lock();
        st.rpc_delay = d;
        st.rpc_delay_methods = methods;
    }

    pub(crate) fn set_gossip_cut(&self, on: bool) {
        self.st.lock().gossip_cut = on;
    }

    pub(crate) fn set_peer_override(&self, n: Option<u64>) {
        self.st.lock().peer_override = n;
    }

    /// Operator mistake: make the sequencer active directly, bypassing every check.
    pub(crate) fn sequence_by_hand(&self) {
        let mut st = self.st.lock();
        if !st.crashed {
            st.active = true;
        }
        drop(st);
        self.notify();
    }

    pub(crate) fn set_conductor(&self, url: Option<String>) {
        self.st.lock().conductor = url;
    }

    pub(crate) fn set_coordinator(&self, c: Option<(String, String)>) {
        self.st.lock().coordinator = c;
    }

    /// Peers counted by `opp2p_peerStats.connected`.
    pub(crate) fn connected_peers(&self) -> u64 {
        let (cut, over) = {
            let st = self.st.lock();
            (st.gossip_cut, st.peer_override)
        };
        if let Some(n) = over {
            return n;
        }
        if cut {
            return 0;
        }
        self.net
            .peers(self.index)
            .iter()
            .filter(|p| {
                let s = p.st.lock();
                !s.crashed && !s.gossip_cut
            })
            .count() as u64
    }

    // ---- chain updates ---------------------------------------------------------------

    /// Applies a block from gossip / sync / postUnsafePayload: append, fill a gap from the
    /// block store, or reorg onto it (recorded as a rewind). Returns whether the head moved.
    fn apply_locked(&self, st: &mut NodeState, block: &Block) -> bool {
        if st
            .chain
            .get(block.number as usize)
            .is_some_and(|b| b.hash == block.hash)
        {
            return false; // already known
        }
        let path = {
            let chain = &st.chain;
            self.net.ancestry(block, |n, h: &B256| {
                chain.get(n as usize).is_some_and(|b| b.hash == *h)
            })
        };
        let Some(path) = path else {
            tracing::debug!(node = %self.name, number = block.number, hash = %block.hash, "dropping block with unknown ancestry");
            return false;
        };
        let fork = path[0].number.saturating_sub(1);
        let old = st.head().clone();
        st.chain.truncate(fork as usize + 1);
        for b in path {
            self.net.ledger.record(&b);
            st.chain.push(b);
        }
        if fork < old.number {
            let new = st.head();
            tracing::info!(node = %self.name, from = old.number, to = new.number, "unsafe reorg");
            self.net.ledger.rewind(Rewind {
                node: self.name.clone(),
                from_number: old.number,
                from_hash: old.hash.to_string(),
                to_number: new.number,
                to_hash: new.hash.to_string(),
            });
        }
        true
    }

    fn receive_gossip(&self, block: &Block) {
        let moved = {
            let mut st = self.st.lock();
            if st.crashed || st.frozen || st.stalled || st.gossip_cut {
                return;
            }
            self.apply_locked(&mut st, block)
        };
        if moved {
            self.notify();
        }
    }

    /// admin_postUnsafePayload: same rules as gossip, but no fault filtering besides a stall.
    pub(crate) fn post_payload(&self, block: Block) {
        self.net.store_block(&block);
        let moved = {
            let mut st = self.st.lock();
            if st.crashed || st.stalled {
                return;
            }
            self.apply_locked(&mut st, &block)
        };
        if moved {
            self.notify();
        }
    }

    /// Catches up to the highest reachable peer if it is ahead.
    pub(crate) fn sync_from_peers(&self) {
        if self.st.lock().gossip_cut {
            return;
        }
        let best = self
            .net
            .peers(self.index)
            .iter()
            .filter_map(|p| {
                let s = p.st.lock();
                (!s.crashed && !s.frozen && !s.gossip_cut).then(|| s.head().clone())
            })
            .max_by_key(|b| b.number);
        let Some(target) = best else { return };
        let moved = {
            let mut st = self.st.lock();
            if st.crashed || st.stalled || target.number <= st.head().number {
                return;
            }
            self.apply_locked(&mut st, &target)
        };
        if moved {
            self.notify();
        }
    }

    pub(crate) fn enqueue_gossip(&self, block: &Block) {
        let st = self.st.lock();
        if st.crashed || st.gossip_cut {
            return;
        }
        if let Some(inc) = &st.incarnation {
            let _ = inc.inbox.send(Gossip {
                block: block.clone(),
                deliver_at: Instant::now() + st.lag,
            });
        }
    }

    async fn receiver_loop(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Gossip>,
        token: CancellationToken,
    ) {
        loop {
            let g = tokio::select! {
                biased;
                _ = token.cancelled() => return,
                g = rx.recv() => match g { Some(g) => g, None => return },
            };
            tokio::select! {
                biased;
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(g.deliver_at) => {}
            }
            self.receive_gossip(&g.block);
        }
    }

    // ---- sequencing ------------------------------------------------------------------

    fn next_step(&self) -> Step {
        let mut st = self.st.lock();
        if st.crashed || !st.active || st.frozen || st.stalled {
            return Step::Idle;
        }
        let head = st.head();
        let due = head.sched_ms.saturating_add(self.net.bt_ms());
        let now = now_ms();
        if now < due {
            return Step::Sleep(Duration::from_millis(due - now));
        }
        let parent = head.clone();
        st.building = true;
        Step::Build {
            parent,
            // As op-node: after admin_overrideLeader its conductor client commits nothing.
            conductor: st.conductor.clone().filter(|_| !st.leader_overridden),
            coordinator: st.coordinator.clone(),
            payload_bytes: st.next_payload_bytes.take(),
            lose_ack: st.lose_next_commit_ack,
        }
    }

    fn finish_building(&self) {
        self.st.lock().building = false;
        self.notify();
    }

    async fn producer_loop(self: Arc<Self>, token: CancellationToken) {
        while !token.is_cancelled() {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = match self.next_step() {
                Step::Idle => MAX_IDLE,
                Step::Sleep(d) => d.min(MAX_IDLE),
                Step::Build {
                    parent,
                    conductor,
                    coordinator,
                    payload_bytes,
                    lose_ack,
                } => {
                    let faults = (payload_bytes, lose_ack);
                    self.build(parent, conductor, coordinator, faults, &token)
                        .await;
                    continue;
                }
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = &mut notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn build(
        &self,
        parent: Block,
        conductor: Option<String>,
        coordinator: Option<(String, String)>,
        (payload_bytes, lose_ack): (Option<usize>, bool),
        token: &CancellationToken,
    ) {
        if let Some((url, name)) = coordinator {
            let r = self
                .net
                .client
                .call(
                    &url,
                    "coordinator_requestBuildingBlock",
                    json!([name]),
                    COORDINATOR_TIMEOUT,
                )
                .await;
            let allowed = matches!(&r, Ok(v) if *v != Value::Bool(false));
            if !allowed || !self.st.lock().active {
                tracing::debug!(node = %self.name, result = ?r, "coordinator refused the slot");
                self.finish_building();
                sleep_or_cancel(self.net.block_time.min(Duration::from_secs(1)), token).await;
                return;
            }
        }
        let block = Block {
            number: parent.number + 1,
            hash: B256::random(),
            parent_hash: parent.hash,
            timestamp: parent.timestamp + self.net.bt_secs(),
            producer: self.name.clone(),
            sched_ms: parent.sched_ms + self.net.bt_ms(),
        };
        if let Some(url) = conductor {
            // Encoded on a blocking thread: a multi-MB envelope must not stall the runtime the
            // other nodes (and, in tests, the test itself) run on; op-node is its own process.
            let bytes = payload_bytes.unwrap_or_else(|| self.net.next_payload_bytes());
            let sealed = block.clone();
            let body = tokio::task::spawn_blocking(move || {
                let env = payload::encode(&sealed, bytes);
                rpc::request_body("conductor_commitUnsafePayload", json!([env]))
            })
            .await
            .unwrap_or_else(|e| Err(rpc::CallError::Transport(e.to_string())));
            let mut r = match body {
                Ok(body) => {
                    self.net
                        .client
                        .call_body_retry(
                            &url,
                            body,
                            self.net.conductor_timeout,
                            CONDUCTOR_ATTEMPTS,
                            CONDUCTOR_GAP,
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            if r.is_ok() && lose_ack && std::mem::take(&mut self.st.lock().lose_next_commit_ack) {
                tracing::info!(node = %self.name, number = block.number, "commit acknowledgement lost (fault)");
                r = Err(rpc::CallError::Timeout);
            }
            if let Err(e) = r {
                tracing::info!(node = %self.name, number = block.number, error = %e, "conductor commit failed; backing off");
                self.finish_building();
                sleep_or_cancel(COMMIT_BACKOFF, token).await;
                return;
            }
        }
        // A freeze that arrived mid-build holds the block until the process resumes.
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.st.lock();
                if token.is_cancelled() || st.crashed {
                    return;
                }
                if !st.frozen {
                    break;
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = &mut notified => {}
                _ = tokio::time::sleep(MAX_IDLE) => {}
            }
        }
        let inserted = {
            let mut st = self.st.lock();
            if st.crashed || token.is_cancelled() {
                return;
            }
            st.building = false;
            if st.stalled || st.head().hash != parent.hash {
                false
            } else {
                self.net.store_block(&block);
                self.net.ledger.record(&block);
                st.chain.push(block.clone());
                st.produced += 1;
                true
            }
        };
        self.notify();
        if inserted {
            self.net.gossip(self, &block);
        }
    }

    // ---- admin API -------------------------------------------------------------------

    pub(crate) async fn start_sequencer(&self, hash: B256) -> Result<Value, RpcError> {
        let gate = {
            let st = self.st.lock();
            st.conductor.clone().filter(|_| !st.leader_overridden)
        };
        if let Some(url) = gate {
            let r = self
                .net
                .client
                .call_retry(
                    &url,
                    "conductor_leader",
                    json!([]),
                    self.net.conductor_timeout,
                    CONDUCTOR_ATTEMPTS,
                    CONDUCTOR_GAP,
                )
                .await;
            match r {
                Err(e) => {
                    return Err(RpcError::server(format!(
                        "sequencer leader check failed: {e}"
                    )))
                }
                Ok(Value::Bool(true)) => {}
                Ok(_) => return Err(RpcError::server("sequencer is not the leader, aborting")),
            }
        }
        let mut st = self.st.lock();
        if st.active {
            return Err(RpcError::server("sequencer already running"));
        }
        let head = st.head();
        if head.hash != hash || st.hash_mismatch_on_next_start {
            let msg = format!(
                "block hash does not match: head {}:{}, received {}",
                head.hash, head.number, hash
            );
            st.hash_mismatch_on_next_start = false;
            return Err(RpcError::server(msg));
        }
        st.active = true;
        drop(st);
        tracing::info!(node = %self.name, "sequencer started");
        self.notify();
        Ok(Value::Null)
    }

    pub(crate) async fn stop_sequencer(&self) -> Result<Value, RpcError> {
        let zero_hash = {
            let mut st = self.st.lock();
            if !st.active {
                return Err(RpcError::server("sequencer not running"));
            }
            st.active = false;
            std::mem::take(&mut st.zero_hash_on_next_stop)
        };
        tracing::info!(node = %self.name, "sequencer stopped");
        self.notify();
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.st.lock();
                if !st.building || st.crashed || Instant::now() >= deadline {
                    let hash = if zero_hash {
                        B256::ZERO
                    } else {
                        st.head().hash
                    };
                    return Ok(Value::String(hash.to_string()));
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    pub(crate) fn override_leader(&self) {
        self.st.lock().leader_overridden = true;
    }
}

/// Handle to one simulated node (cheap to clone).
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) inner: Arc<NodeInner>,
}

/// A snapshot of one node for status reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub node_url: String,
    pub geth_url: String,
    pub head: BlockRef,
    pub active: bool,
    pub crashed: bool,
    pub frozen: bool,
    pub hung: bool,
    pub stalled: bool,
    pub gossip_cut: bool,
    pub lag_ms: u64,
    pub rpc_delay_ms: u64,
    pub conductor: Option<String>,
    pub blocks_produced: u64,
    /// One-shot faults still armed (not yet fired).
    pub zero_hash_on_next_stop: bool,
    pub hash_mismatch_on_next_start: bool,
    pub lose_next_commit_ack: bool,
}

impl NodeHandle {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `http://127.0.0.1:<op-node port>`
    pub fn node_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.node_port)
    }

    /// `http://127.0.0.1:<op-geth port>`
    pub fn geth_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.geth_port)
    }

    pub fn head(&self) -> BlockRef {
        self.inner.head().to_ref()
    }

    /// Sequencer active and node not crashed.
    pub fn is_active(&self) -> bool {
        let st = self.inner.st.lock();
        st.active && !st.crashed
    }

    pub fn is_crashed(&self) -> bool {
        self.inner.st.lock().crashed
    }

    /// Enables (Some) or disables conductor mode; takes effect for the next block / start.
    pub fn set_conductor(&self, url: Option<String>) {
        self.inner.set_conductor(url);
    }

    /// Enables (Some((url, name))) or disables coordinator mode.
    pub fn set_coordinator(&self, c: Option<(String, String)>) {
        self.inner.set_coordinator(c);
    }

    /// Both listeners closed (new connections refused at once), open connections dropped,
    /// production and gossip receipt stop. The chain is kept.
    pub fn crash(&self) {
        tracing::info!(node = %self.inner.name, "crash");
        self.inner.crash();
    }

    /// Same ports, chain kept, sequencer stopped, catches up from the highest alive peer.
    /// Clears freeze/hang and admin_overrideLeader; keeps stall/lag/cut/peer-count faults.
    pub async fn restart(&self) -> anyhow::Result<()> {
        tracing::info!(node = %self.inner.name, "restart");
        self.inner.restart().await
    }

    /// Like SIGSTOP/SIGCONT of op-node: op-node RPC hangs, no production, no gossip receipt.
    pub fn freeze(&self, on: bool) {
        self.inner.set_frozen(on);
    }

    /// op-node RPC requests hang; production and gossip continue.
    pub fn hang(&self, on: bool) {
        self.inner.set_hung(on);
    }

    /// Unsafe head frozen (no production, gossip ignored); on release it syncs from peers.
    pub fn stall_head(&self, on: bool) {
        self.inner.set_stalled(on);
    }

    /// Incoming gossip is delivered after `d`.
    pub fn set_lag(&self, d: Duration) {
        self.inner.set_lag(d);
    }

    /// Every op-node RPC request is handled only after `d` (zero: at once): a slow node,
    /// answering near the caller's timeouts.
    pub fn set_rpc_delay(&self, d: Duration) {
        self.inner.set_rpc_delay(d, None);
    }

    /// Like [`NodeHandle::set_rpc_delay`], for the named op-node methods only.
    pub fn set_rpc_delay_for(&self, d: Duration, methods: &[&str]) {
        self.inner
            .set_rpc_delay(d, Some(methods.iter().map(|m| m.to_string()).collect()));
    }

    /// Neither sends nor receives gossip while on.
    pub fn cut_gossip(&self, on: bool) {
        self.inner.set_gossip_cut(on);
    }

    /// Overrides `opp2p_peerStats.connected` (None = computed).
    pub fn set_peer_count(&self, n: Option<u64>) {
        self.inner.set_peer_override(n);
    }

    /// Makes the sequencer active directly (no conductor gate, no hash check).
    pub fn sequence_by_hand(&self) {
        tracing::info!(node = %self.inner.name, "sequence by hand");
        self.inner.sequence_by_hand();
    }

    /// One-shot: the next successful `admin_stopSequencer` still stops the sequencer but
    /// returns the zero hash (some op-node versions do), not the head it stopped at.
    pub fn zero_hash_on_next_stop(&self) {
        tracing::info!(node = %self.inner.name, "zero hash on next stop");
        self.inner.st.lock().zero_hash_on_next_stop = true;
    }

    /// One-shot: the next `admin_startSequencer` that gets past the conductor and
    /// "already running" checks answers op-node's `block hash does not match: head <hash>:<n>,
    /// received <hash>` (with the real head) and does not start, as if the head had moved.
    pub fn hash_mismatch_on_next_start(&self) {
        tracing::info!(node = %self.inner.name, "hash mismatch on next start");
        self.inner.st.lock().hash_mismatch_on_next_start = true;
    }

    /// One-shot: of the blocks whose build starts from now on, the first whose conductor commit
    /// succeeds is treated by this node as failed (its answer lost): the block stays committed
    /// in etcd, but the node neither inserts nor gossips it, backs off and re-seals the same
    /// height, as op-node does after a timeout.
    pub fn lose_next_commit_ack(&self) {
        tracing::info!(node = %self.inner.name, "lose next commit acknowledgement");
        self.inner.st.lock().lose_next_commit_ack = true;
    }

    /// One-shot: the next block whose build starts from now on carries `n` bytes of
    /// transactions, whatever the cluster's payload size.
    pub fn next_block_payload_bytes(&self, n: usize) {
        self.inner.st.lock().next_payload_bytes = Some(n);
    }

    /// Last `miner_setMaxDASize` arguments received on op-geth.
    pub fn last_max_da_size(&self) -> Option<(u64, u64)> {
        self.inner.st.lock().max_da
    }

    /// Blocks this node sealed and inserted.
    pub fn blocks_produced(&self) -> u64 {
        self.inner.st.lock().produced
    }

    pub fn status(&self) -> NodeStatus {
        let st = self.inner.st.lock();
        NodeStatus {
            name: self.inner.name.clone(),
            node_url: self.node_url(),
            geth_url: self.geth_url(),
            head: st.head().to_ref(),
            active: st.active && !st.crashed,
            crashed: st.crashed,
            frozen: st.frozen,
            hung: st.hung,
            stalled: st.stalled,
            gossip_cut: st.gossip_cut,
            lag_ms: st.lag.as_millis() as u64,
            rpc_delay_ms: st.rpc_delay.as_millis() as u64,
            conductor: st.conductor.clone(),
            blocks_produced: st.produced,
            zero_hash_on_next_stop: st.zero_hash_on_next_stop,
            hash_mismatch_on_next_start: st.hash_mismatch_on_next_start,
            lose_next_commit_ack: st.lose_next_commit_ack,
        }
    }
}
