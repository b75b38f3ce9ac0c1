//! Simulated OP Stack sequencer nodes (op-node + op-geth pairs) for tests and local devnets.
//!
//! Each node serves op-node's `optimism_*`/`opp2p_*`/`admin_*` JSON-RPC (with op-node's exact
//! admin error strings) and op-geth's `eth_*` block queries on two 127.0.0.1 ports. Nodes share
//! an in-process gossip network and a [`Ledger`] of every published block, whose
//! [`Ledger::check`] reports forks, unsafe reorgs and broken links.

mod api_geth;
mod api_node;
mod cluster;
mod control;
mod ledger;
mod network;
mod node;
mod payload;
pub mod rpc;
mod types;

pub use cluster::{Cluster, ClusterConfig, NodeConfig};
pub use ledger::{BrokenLink, InvariantReport, Ledger, PublishedBlock, Rewind};
pub use node::{NodeHandle, NodeStatus};
pub use types::{hex_encode, BlockRef};
