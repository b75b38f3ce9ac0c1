//! The op-node JSON-RPC surface: optimism_*, opp2p_* and admin_* methods.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::network::{L1_CHAIN_ID, L2_CHAIN_ID};
use crate::node::{NodeInner, NodeState};
use crate::payload::{self, DecodeError};
use crate::rpc::{param, Handler, RpcError};
use crate::types::{parse_quantity, Block, B256};

/// The safe head trails the unsafe head by this many blocks, the finalized head by twice that.
pub(crate) const SAFE_LAG: u64 = 10;
pub(crate) const FINALIZED_LAG: u64 = 20;
/// First fake L1 block number (L1 origin of genesis).
const L1_BASE: u64 = 100;
const L1_BLOCK_SECS: u64 = 12;

pub(crate) fn handler(node: Arc<NodeInner>) -> Handler {
    Arc::new(move |method, params| {
        let node = node.clone();
        Box::pin(async move {
            node.rpc_gate(&method).await;
            dispatch(&node, &method, &params).await
        })
    })
}

async fn dispatch(node: &NodeInner, method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "optimism_syncStatus" => {
            let st = node.st.lock();
            Ok(sync_status(node, &st))
        }
        "optimism_outputAtBlock" => output_at_block(node, params),
        "optimism_rollupConfig" => Ok(rollup_config(node)),
        "optimism_version" => Ok(json!("v0.0.0-sim")),
        "opp2p_peerStats" => {
            let n = node.connected_peers();
            let known = node.net.node_count().saturating_sub(1) as u64;
            Ok(json!({
                "connected": n,
                "table": n,
                "blocksTopic": n,
                "blocksTopicV2": n,
                "blocksTopicV3": n,
                "banned": 0,
                "known": known.max(n),
            }))
        }
        "admin_startSequencer" => {
            let hash = hash_param(params, 0)?;
            node.start_sequencer(hash).await
        }
        "admin_stopSequencer" => node.stop_sequencer().await,
        "admin_sequencerActive" => Ok(json!(node.st.lock().active)),
        "admin_postUnsafePayload" => {
            let env = param(params, 0)
                .ok_or_else(|| RpcError::invalid_params("missing value for required argument 0"))?;
            match payload::decode(env) {
                Ok(block) => {
                    node.post_payload(block);
                    Ok(Value::Null)
                }
                Err(DecodeError::BadHash(raw)) => Err(RpcError::server(format!(
                    "payload has bad block hash: {raw}, actual block hash is: {}",
                    B256::ZERO
                ))),
                Err(DecodeError::Invalid(msg)) => Err(RpcError::invalid_params(format!(
                    "invalid argument 0: {msg}"
                ))),
            }
        }
        "admin_conductorEnabled" => Ok(json!(node.st.lock().conductor.is_some())),
        "admin_overrideLeader" => {
            node.override_leader();
            Ok(Value::Null)
        }
        "admin_resetDerivationPipeline" => Ok(Value::Null),
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// Parses a `common.Hash` argument the way go-ethereum reports errors.
pub(crate) fn hash_param(params: &Value, i: usize) -> Result<B256, RpcError> {
    let v = param(params, i).ok_or_else(|| {
        RpcError::invalid_params(format!("missing value for required argument {i}"))
    })?;
    let s = v.as_str().ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid argument {i}: json: cannot unmarshal non-string into Go value of type common.Hash"
        ))
    })?;
    if !s.starts_with("0x") && !s.starts_with("0X") {
        return Err(RpcError::invalid_params(format!(
            "invalid argument {i}: json: cannot unmarshal hex string without 0x prefix into Go value of type common.Hash"
        )));
    }
    B256::parse(s).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid argument {i}: hex string has length {}, want 64 for common.Hash",
            s.len().saturating_sub(2)
        ))
    })
}

fn epoch_len(node: &NodeInner) -> u64 {
    (L1_BLOCK_SECS / node.net.bt_secs()).max(1)
}

fn l1_ref(node: &NodeInner, number: u64) -> Value {
    let genesis_ts = node.net.genesis.timestamp;
    json!({
        "hash": B256::from_seed(number).to_string(),
        "number": number,
        "parentHash": B256::from_seed(number.saturating_sub(1)).to_string(),
        "timestamp": genesis_ts.saturating_sub(L1_BLOCK_SECS) + (number - L1_BASE.min(number)) * L1_BLOCK_SECS,
    })
}

fn l1_origin(node: &NodeInner, b: &Block) -> u64 {
    L1_BASE + b.number / epoch_len(node)
}

pub(crate) fn l2_ref(node: &NodeInner, b: &Block) -> Value {
    let origin = l1_origin(node, b);
    json!({
        "hash": b.hash.to_string(),
        "number": b.number,
        "parentHash": b.parent_hash.to_string(),
        "timestamp": b.timestamp,
        "l1origin": {"hash": B256::from_seed(origin).to_string(), "number": origin},
        "sequenceNumber": b.number % epoch_len(node),
    })
}

pub(crate) fn sync_status(node: &NodeInner, st: &NodeState) -> Value {
    let head = st.head();
    let safe = st.below_head(SAFE_LAG);
    let fin = st.below_head(FINALIZED_LAG);
    let head_l1 = l1_origin(node, head) + 1;
    let safe_l1 = l1_origin(node, safe) + 1;
    let fin_l1 = l1_origin(node, fin) + 1;
    json!({
        "current_l1": l1_ref(node, head_l1),
        "current_l1_finalized": l1_ref(node, fin_l1),
        "head_l1": l1_ref(node, head_l1),
        "safe_l1": l1_ref(node, safe_l1),
        "finalized_l1": l1_ref(node, fin_l1),
        "unsafe_l2": l2_ref(node, head),
        "safe_l2": l2_ref(node, safe),
        "finalized_l2": l2_ref(node, fin),
        "pending_safe_l2": l2_ref(node, safe),
        "cross_unsafe_l2": l2_ref(node, head),
        "local_safe_l2": l2_ref(node, safe),
    })
}

fn output_at_block(node: &NodeInner, params: &Value) -> Result<Value, RpcError> {
    let v = param(params, 0)
        .ok_or_else(|| RpcError::invalid_params("missing value for required argument 0"))?;
    let n = v.as_str().and_then(parse_quantity).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid argument 0: json: cannot unmarshal {v} into Go value of type hexutil.Uint64"
        ))
    })?;
    let st = node.st.lock();
    let Some(b) = st.chain.get(n as usize) else {
        return Err(RpcError::server(format!(
            "failed to get L2 block ref with sync status: failed to determine L2BlockRef of height {n}, could not get payload: not found"
        )));
    };
    Ok(json!({
        "version": B256::ZERO.to_string(),
        "outputRoot": b.hash.derive(10).to_string(),
        "blockRef": l2_ref(node, b),
        "withdrawalStorageRoot": b.hash.derive(11).to_string(),
        "stateRoot": b.hash.derive(1).to_string(),
        "syncStatus": sync_status(node, &st),
    }))
}

fn rollup_config(node: &NodeInner) -> Value {
    let g = &node.net.genesis;
    json!({
        "genesis": {
            "l1": {"hash": B256::from_seed(L1_BASE).to_string(), "number": L1_BASE},
            "l2": {"hash": g.hash.to_string(), "number": 0},
            "l2_time": g.timestamp,
            "system_config": {
                "batcherAddr": "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
                "overhead": B256::ZERO.to_string(),
                "scalar": B256::ZERO.to_string(),
                "gasLimit": 30_000_000u64,
            },
        },
        "block_time": node.net.bt_secs(),
        "max_sequencer_drift": 600,
        "seq_window_size": 3600,
        "channel_timeout": 300,
        "l1_chain_id": L1_CHAIN_ID,
        "l2_chain_id": L2_CHAIN_ID,
        "regolith_time": 0,
        "canyon_time": 0,
        "delta_time": 0,
        "ecotone_time": 0,
        "fjord_time": 0,
        "granite_time": 0,
        "holocene_time": 0,
        "batch_inbox_address": "0xff00000000000000000000000000000000000901",
        "deposit_contract_address": "0x6900000000000000000000000000000000000001",
        "l1_system_config_address": "0x6900000000000000000000000000000000000002",
        "protocol_versions_address": "0x0000000000000000000000000000000000000000",
    })
}
