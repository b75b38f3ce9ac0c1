//! The `sim_*` control JSON-RPC: fault injection and inspection for out-of-process callers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::network::Network;
use crate::node::NodeHandle;
use crate::rpc::{param, Handler, RpcError};

pub(crate) fn handler(nodes: Vec<NodeHandle>, net: Arc<Network>) -> Handler {
    let nodes = Arc::new(nodes);
    Arc::new(move |method, params| {
        let nodes = nodes.clone();
        let net = net.clone();
        Box::pin(async move { dispatch(&nodes, &net, &method, &params).await })
    })
}

fn node<'a>(nodes: &'a [NodeHandle], params: &Value) -> Result<&'a NodeHandle, RpcError> {
    let i = param(params, 0)
        .and_then(Value::as_u64)
        .ok_or_else(|| RpcError::invalid_params("argument 0 must be a node index"))?;
    nodes
        .get(i as usize)
        .ok_or_else(|| RpcError::invalid_params(format!("no node {i} (have {})", nodes.len())))
}

fn flag(params: &Value) -> Result<bool, RpcError> {
    param(params, 1)
        .and_then(Value::as_bool)
        .ok_or_else(|| RpcError::invalid_params("argument 1 must be a bool"))
}

async fn dispatch(
    nodes: &[NodeHandle],
    net: &Network,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    match method {
        "sim_crash" => node(nodes, params)?.crash(),
        "sim_restart" => node(nodes, params)?
            .restart()
            .await
            .map_err(|e| RpcError::server(format!("restart failed: {e:#}")))?,
        "sim_freeze" => node(nodes, params)?.freeze(flag(params)?),
        "sim_hang" => node(nodes, params)?.hang(flag(params)?),
        "sim_stallHead" => node(nodes, params)?.stall_head(flag(params)?),
        "sim_cutGossip" => node(nodes, params)?.cut_gossip(flag(params)?),
        "sim_lag" => {
            let ms = param(params, 1)
                .and_then(Value::as_u64)
                .ok_or_else(|| RpcError::invalid_params("argument 1 must be milliseconds"))?;
            node(nodes, params)?.set_lag(Duration::from_millis(ms));
        }
        "sim_rpcDelay" => {
            let ms = param(params, 1)
                .and_then(Value::as_u64)
                .ok_or_else(|| RpcError::invalid_params("argument 1 must be milliseconds"))?;
            let d = Duration::from_millis(ms);
            match param(params, 2).and_then(Value::as_array) {
                Some(list) => {
                    let methods: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                    node(nodes, params)?.set_rpc_delay_for(d, &methods);
                }
                None => node(nodes, params)?.set_rpc_delay(d),
            }
        }
        "sim_peerCount" => {
            let n = match param(params, 1) {
                None => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    RpcError::invalid_params("argument 1 must be a count or null")
                })?),
            };
            node(nodes, params)?.set_peer_count(n);
        }
        "sim_sequenceByHand" => node(nodes, params)?.sequence_by_hand(),
        "sim_zeroHashOnNextStop" => node(nodes, params)?.zero_hash_on_next_stop(),
        "sim_hashMismatchOnNextStart" => node(nodes, params)?.hash_mismatch_on_next_start(),
        "sim_loseNextCommitAck" => node(nodes, params)?.lose_next_commit_ack(),
        "sim_payloadBytes" => {
            // [sizes...]: every block sealed from now on gets one of these payload sizes.
            let sizes: Vec<usize> = params
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|n| n as usize)
                        .collect()
                })
                .unwrap_or_default();
            if sizes.is_empty() {
                return Err(RpcError::invalid_params(
                    "params must be one or more byte counts",
                ));
            }
            net.set_payload_sizes(sizes);
        }
        "sim_setConductor" => {
            let url = param(params, 1).and_then(Value::as_str).map(str::to_string);
            node(nodes, params)?.set_conductor(url);
        }
        "sim_status" => {
            return Ok(json!(nodes
                .iter()
                .map(NodeHandle::status)
                .collect::<Vec<_>>()));
        }
        "sim_check" => {
            let report = net.ledger.snapshot().check();
            let mut v =
                serde_json::to_value(&report).map_err(|e| RpcError::server(e.to_string()))?;
            if let Some(o) = v.as_object_mut() {
                o.insert("clean".into(), json!(report.is_clean()));
                o.insert("text".into(), json!(report.to_string()));
            }
            return Ok(v);
        }
        "sim_ledger" => {
            return serde_json::to_value(net.ledger.snapshot())
                .map_err(|e| RpcError::server(e.to_string()));
        }
        _ => return Err(RpcError::method_not_found(method)),
    }
    Ok(Value::Null)
}
