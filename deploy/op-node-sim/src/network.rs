//! The in-process gossip network: node registry, shared block store and gossip fan-out.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::ledger::LedgerStore;
use crate::node::NodeInner;
use crate::rpc::RpcClient;
use crate::types::{Block, B256};

/// L2 chain id reported by `eth_chainId` / `optimism_rollupConfig`.
pub(crate) const L2_CHAIN_ID: u64 = 901;
pub(crate) const L1_CHAIN_ID: u64 = 900;

/// State shared by every node of one cluster.
pub(crate) struct Network {
    pub(crate) block_time: Duration,
    /// Fake transaction bytes per block: one size, or several picked at random per block.
    payload_sizes: Mutex<Vec<usize>>,
    /// op-node's `--conductor.rpc-timeout`.
    pub(crate) conductor_timeout: Duration,
    pub(crate) genesis: Block,
    pub(crate) client: RpcClient,
    pub(crate) ledger: LedgerStore,
    nodes: RwLock<Vec<Weak<NodeInner>>>,
    /// Every block any node ever held, by hash: the source for syncing missing ancestors
    /// (stands in for op-node's p2p req/resp and EL sync).
    store: Mutex<HashMap<B256, Block>>,
}

impl Network {
    pub(crate) fn new(
        block_time: Duration,
        payload_sizes: Vec<usize>,
        conductor_timeout: Duration,
        genesis: Block,
    ) -> Self {
        let ledger = LedgerStore::default();
        ledger.record(&genesis);
        let mut store = HashMap::new();
        store.insert(genesis.hash, genesis.clone());
        Network {
            block_time,
            payload_sizes: Mutex::new(payload_sizes),
            conductor_timeout,
            genesis,
            client: RpcClient::new(),
            ledger,
            nodes: RwLock::new(Vec::new()),
            store: Mutex::new(store),
        }
    }

    /// Payload size of the next sealed block.
    pub(crate) fn next_payload_bytes(&self) -> usize {
        let sizes = self.payload_sizes.lock();
        match sizes.len() {
            0 => 0,
            1 => sizes[0],
            n => sizes[rand::random_range(0..n)],
        }
    }

    pub(crate) fn set_payload_sizes(&self, sizes: Vec<usize>) {
        *self.payload_sizes.lock() = sizes;
    }

    /// Production cadence in ms (at least 1).
    pub(crate) fn bt_ms(&self) -> u64 {
        (self.block_time.as_millis() as u64).max(1)
    }

    /// Timestamp increment in whole seconds (at least 1).
    pub(crate) fn bt_secs(&self) -> u64 {
        self.block_time.as_secs().max(1)
    }

    pub(crate) fn register(&self, node: &Arc<NodeInner>) {
        self.nodes.write().push(Arc::downgrade(node));
    }

    pub(crate) fn clear(&self) {
        self.nodes.write().clear();
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.read().len()
    }

    /// Every registered node except `index`.
    pub(crate) fn peers(&self, index: usize) -> Vec<Arc<NodeInner>> {
        self.nodes
            .read()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|n| n.index != index)
            .collect()
    }

    pub(crate) fn store_block(&self, block: &Block) {
        self.store
            .lock()
            .entry(block.hash)
            .or_insert_with(|| block.clone());
    }

    /// Chain of blocks from just above the fork point with `has` (a predicate "I hold this
    /// block at this height") up to and including `tip`; None if an ancestor is unknown.
    pub(crate) fn ancestry(
        &self,
        tip: &Block,
        has: impl Fn(u64, &B256) -> bool,
    ) -> Option<Vec<Block>> {
        let store = self.store.lock();
        let mut path = vec![tip.clone()];
        let mut cur = tip.clone();
        loop {
            if cur.number == 0 {
                return None; // a different genesis
            }
            let pn = cur.number - 1;
            if has(pn, &cur.parent_hash) {
                break;
            }
            let parent = store.get(&cur.parent_hash)?.clone();
            if parent.number != pn {
                return None;
            }
            path.push(parent.clone());
            cur = parent;
        }
        path.reverse();
        Some(path)
    }

    /// Sends a freshly inserted block from `from` to every other node (subject to faults).
    pub(crate) fn gossip(&self, from: &NodeInner, block: &Block) {
        if from.st.lock().gossip_cut {
            return;
        }
        for peer in self.peers(from.index) {
            peer.enqueue_gossip(block);
        }
    }
}
