//! The op-geth JSON-RPC surface: eth_* block queries and miner_setMaxDASize.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api_node::{hash_param, FINALIZED_LAG, SAFE_LAG};
use crate::network::L2_CHAIN_ID;
use crate::node::{NodeInner, NodeState};
use crate::rpc::{param, Handler, RpcError};
use crate::types::{hex_encode, parse_quantity, quantity, Block, B256};

pub(crate) fn handler(node: Arc<NodeInner>) -> Handler {
    Arc::new(move |method, params| {
        let node = node.clone();
        Box::pin(async move {
            if node.st.lock().crashed {
                std::future::pending::<()>().await;
            }
            dispatch(&node, &method, &params)
        })
    })
}

fn dispatch(node: &NodeInner, method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "eth_getBlockByNumber" => {
            let tag = param(params, 0)
                .ok_or_else(|| RpcError::invalid_params("missing value for required argument 0"))?;
            let st = node.st.lock();
            Ok(block_by_tag(&st, tag)?
                .map(block_json)
                .unwrap_or(Value::Null))
        }
        "eth_getBlockByHash" => {
            let hash = hash_param(params, 0)?;
            let st = node.st.lock();
            Ok(st
                .chain
                .iter()
                .rev()
                .find(|b| b.hash == hash)
                .map(block_json)
                .unwrap_or(Value::Null))
        }
        "eth_blockNumber" => Ok(json!(quantity(node.st.lock().head().number))),
        "eth_chainId" => Ok(json!(quantity(L2_CHAIN_ID))),
        "net_version" => Ok(json!(L2_CHAIN_ID.to_string())),
        "web3_clientVersion" => Ok(json!("op-geth/v0.0.0-sim")),
        "eth_syncing" => Ok(json!(false)),
        "miner_setMaxDASize" => {
            let a = big_param(params, 0)?;
            let b = big_param(params, 1)?;
            node.st.lock().max_da = Some((a, b));
            Ok(json!(true))
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// hexutil.Big argument; also accepts a plain JSON number.
fn big_param(params: &Value, i: usize) -> Result<u64, RpcError> {
    let v = param(params, i).ok_or_else(|| {
        RpcError::invalid_params(format!("missing value for required argument {i}"))
    })?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(parse_quantity))
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "invalid argument {i}: json: cannot unmarshal {v} into Go value of type hexutil.Big"
            ))
        })
}

fn block_by_tag<'a>(st: &'a NodeState, tag: &Value) -> Result<Option<&'a Block>, RpcError> {
    let s = tag.as_str().ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid argument 0: json: cannot unmarshal {tag} into Go value of type string"
        ))
    })?;
    Ok(match s {
        "latest" | "pending" => Some(st.head()),
        "safe" => Some(st.below_head(SAFE_LAG)),
        "finalized" => Some(st.below_head(FINALIZED_LAG)),
        "earliest" => st.chain.first(),
        other => {
            let n = parse_quantity(other).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "invalid argument 0: hex string without 0x prefix: {other}"
                ))
            })?;
            st.chain.get(n as usize)
        }
    })
}

fn block_json(b: &Block) -> Value {
    json!({
        "number": quantity(b.number),
        "hash": b.hash.to_string(),
        "parentHash": b.parent_hash.to_string(),
        "timestamp": quantity(b.timestamp),
        "nonce": "0x0000000000000000",
        "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "logsBloom": hex_encode(&[0u8; 256]),
        "transactionsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "stateRoot": b.hash.derive(1).to_string(),
        "receiptsRoot": b.hash.derive(2).to_string(),
        "miner": "0x4200000000000000000000000000000000000011",
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "size": "0x220",
        "gasLimit": quantity(30_000_000),
        "gasUsed": "0x0",
        "baseFeePerGas": quantity(1_000_000_000),
        "mixHash": b.hash.derive(3).to_string(),
        "parentBeaconBlockRoot": b.parent_hash.derive(4).to_string(),
        "withdrawalsRoot": B256::ZERO.to_string(),
        "withdrawals": [],
        "transactions": [],
        "uncles": [],
    })
}
