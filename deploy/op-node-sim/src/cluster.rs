//! The cluster: configuration, startup of N nodes on one gossip network, and teardown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::control;
use crate::ledger::{InvariantReport, Ledger};
use crate::network::Network;
use crate::node::{NodeHandle, NodeInner};
use crate::rpc;
use crate::types::{now_ms, Block};

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    /// Production cadence; timestamps advance by whole seconds (at least 1) per block.
    pub block_time: Duration,
    /// Fake transaction bytes per block in conductor payload envelopes.
    pub payload_bytes: usize,
    /// If not empty, each block's payload size is picked at random from these instead (a mix
    /// of block sizes); [`Cluster::set_payload_sizes`] changes it while running.
    pub payload_mix: Vec<usize>,
    /// op-node's `--conductor.rpc-timeout` (default 1 s): how long each commit attempt waits.
    pub conductor_timeout: Duration,
    /// Per-node settings; may be shorter than `nodes` (missing = default).
    pub node_configs: Vec<NodeConfig>,
    /// Node i gets op-node port base+2i and op-geth port base+2i+1; None = ephemeral.
    pub base_port: Option<u16>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            block_time: Duration::from_secs(1),
            payload_bytes: 1024,
            payload_mix: Vec::new(),
            conductor_timeout: Duration::from_secs(1),
            node_configs: Vec::new(),
            base_port: None,
        }
    }
}

/// Per-node mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Conductor mode (`--conductor.enabled --conductor.rpc URL`).
    pub conductor_rpc: Option<String>,
    /// Coordinator mode: (coordinator URL, this node's name at the coordinator).
    pub coordinator: Option<(String, String)>,
}

/// A running set of simulated sequencer nodes.
pub struct Cluster {
    net: Arc<Network>,
    nodes: Vec<NodeHandle>,
    token: CancellationToken,
}

impl Cluster {
    /// Binds every node's two listeners and starts them, all with the sequencer stopped.
    pub async fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
        let genesis = Block::genesis(now_ms() / 1000);
        let sizes = if cfg.payload_mix.is_empty() {
            vec![cfg.payload_bytes]
        } else {
            cfg.payload_mix.clone()
        };
        let net = Arc::new(Network::new(
            cfg.block_time,
            sizes,
            cfg.conductor_timeout,
            genesis,
        ));
        let mut nodes = Vec::with_capacity(cfg.nodes);
        let mut listeners = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let (np, gp) = match cfg.base_port {
                Some(base) => {
                    let np = u16::try_from(base as usize + 2 * i)
                        .ok()
                        .context("base port too high for the node count")?;
                    (np, np.checked_add(1).context("base port too high")?)
                }
                None => (0, 0),
            };
            let nl =
                rpc::bind(np).with_context(|| format!("binding op-node port {np} for seq-{i}"))?;
            let gl =
                rpc::bind(gp).with_context(|| format!("binding op-geth port {gp} for seq-{i}"))?;
            let nc = cfg.node_configs.get(i).cloned().unwrap_or_default();
            let inner = NodeInner::new(
                i,
                net.clone(),
                nl.local_addr()?.port(),
                gl.local_addr()?.port(),
                nc.conductor_rpc,
                nc.coordinator,
            );
            net.register(&inner);
            nodes.push(NodeHandle { inner });
            listeners.push((nl, gl));
        }
        for (n, (nl, gl)) in nodes.iter().zip(listeners) {
            n.inner.launch(nl, gl);
        }
        Ok(Cluster {
            net,
            nodes,
            token: CancellationToken::new(),
        })
    }

    /// Node `i`. Panics if out of range, like slice indexing.
    pub fn node(&self, i: usize) -> &NodeHandle {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    /// A snapshot of the ledger.
    pub fn ledger(&self) -> Ledger {
        self.net.ledger.snapshot()
    }

    /// Checks the ledger's invariants now.
    pub fn check(&self) -> InvariantReport {
        self.ledger().check()
    }

    /// Payload size of every block sealed from now on: one size, or several picked at random
    /// per block.
    pub fn set_payload_sizes(&self, sizes: &[usize]) {
        self.net.set_payload_sizes(sizes.to_vec());
    }

    /// Names of nodes whose sequencer is active and that are not crashed.
    pub fn active_nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_active())
            .map(|n| n.name().to_string())
            .collect()
    }

    /// Serves the `sim_*` control JSON-RPC on 127.0.0.1:port (0 = ephemeral) until shutdown;
    /// returns the bound port.
    pub async fn serve_control(&self, port: u16) -> anyhow::Result<u16> {
        let l = rpc::bind(port).with_context(|| format!("binding control port {port}"))?;
        let bound = l.local_addr()?.port();
        rpc::serve(
            Arc::new(l),
            self.token.clone(),
            control::handler(self.nodes.clone(), self.net.clone()),
        );
        Ok(bound)
    }

    fn stop_all(&self) {
        self.token.cancel();
        for n in &self.nodes {
            n.inner.crash();
        }
        self.net.clear();
    }

    /// Stops every node and background task.
    pub async fn shutdown(self) {
        self.stop_all();
        tokio::task::yield_now().await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
