//! `op-node-sim` binary: runs a simulated sequencer cluster until SIGINT/SIGTERM.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use op_node_sim::{Cluster, ClusterConfig, NodeConfig};

/// Simulated op-node + op-geth pairs on one in-process gossip network.
#[derive(Parser, Debug)]
#[command(name = "op-node-sim", version)]
struct Args {
    /// Number of nodes (seq-0 .. seq-N-1).
    #[arg(long, env = "OP_NODE_SIM_NODES", default_value_t = 3)]
    nodes: usize,
    /// Block time, e.g. 1s, 500ms, 2s.
    #[arg(long, env = "OP_NODE_SIM_BLOCK_TIME", default_value = "1s", value_parser = humantime::parse_duration)]
    block_time: Duration,
    /// Node i gets op-node port base+2i and op-geth port base+2i+1 (unset = ephemeral).
    #[arg(long, env = "OP_NODE_SIM_BASE_PORT")]
    base_port: Option<u16>,
    /// Port for the sim_* control JSON-RPC (unset = none).
    #[arg(long, env = "OP_NODE_SIM_CONTROL_PORT")]
    control_port: Option<u16>,
    /// Comma-separated conductor RPC URL per node (empty entry = no conductor for that node).
    #[arg(long, env = "OP_NODE_SIM_CONDUCTOR_RPC", value_delimiter = ',')]
    conductor_rpc: Vec<String>,
    /// Fake transaction bytes per block in conductor payloads; a comma list picks one of the
    /// sizes at random for each block (a realistic mix, e.g. 50000,300000,1300000).
    #[arg(
        long,
        env = "OP_NODE_SIM_PAYLOAD_BYTES",
        value_delimiter = ',',
        default_value = "1024"
    )]
    payload_bytes: Vec<usize>,
    /// op-node's --conductor.rpc-timeout: how long each commit attempt waits.
    #[arg(long, env = "OP_NODE_SIM_CONDUCTOR_RPC_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    conductor_rpc_timeout: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let node_configs = args
        .conductor_rpc
        .iter()
        .map(|u| NodeConfig {
            conductor_rpc: Some(u.trim().to_string()).filter(|u| !u.is_empty()),
            coordinator: None,
        })
        .collect();
    let cluster = Cluster::start(ClusterConfig {
        nodes: args.nodes,
        block_time: args.block_time,
        payload_bytes: args.payload_bytes.first().copied().unwrap_or(0),
        payload_mix: args.payload_bytes.clone(),
        conductor_timeout: args.conductor_rpc_timeout,
        node_configs,
        base_port: args.base_port,
    })
    .await?;
    for n in cluster.nodes() {
        println!(
            "{} op-node={} op-geth={}",
            n.name(),
            n.node_url(),
            n.geth_url()
        );
    }
    if let Some(p) = args.control_port {
        let bound = cluster.serve_control(p).await?;
        println!("control=http://127.0.0.1:{bound}");
    }
    wait_for_signal().await?;
    tracing::info!(report = %cluster.check(), "shutting down");
    cluster.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
