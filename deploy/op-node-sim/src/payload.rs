//! ExecutionPayloadEnvelope JSON: encoding sealed blocks and decoding posted payloads.

use serde_json::{json, Value};

use crate::types::{hex_decode, hex_encode, parse_quantity, quantity, Block, B256};

/// Fake transactions are split into chunks of at most this many bytes.
const TX_CHUNK: usize = 4096;

/// Why a posted envelope could not be turned into a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// `blockHash` is missing or not 32 bytes of hex; carries the raw value.
    BadHash(String),
    /// Some other field is missing or malformed.
    Invalid(String),
}

/// extraData layout: 8-byte big-endian scheduled slot (unix ms) followed by the producer name.
fn extra_data(block: &Block) -> String {
    let mut b = block.sched_ms.to_be_bytes().to_vec();
    b.extend_from_slice(block.producer.as_bytes());
    hex_encode(&b)
}

fn fake_transactions(block: &Block, payload_bytes: usize) -> Vec<Value> {
    if payload_bytes == 0 {
        return Vec::new();
    }
    // One hex-encoded template per block, varied per transaction: multi-MiB payloads are built
    // in milliseconds even in a debug build (the sealing node must not miss its slot).
    let seed = block.hash.0;
    let template: Vec<u8> = std::iter::once(0x02u8)
        .chain((1..TX_CHUNK).map(|k| seed[k % 32] ^ (k as u8)))
        .collect();
    let hex = hex_encode(&template);
    let mut txs = Vec::with_capacity(payload_bytes.div_ceil(TX_CHUNK));
    let mut left = payload_bytes;
    let mut i = 0u32;
    while left > 0 {
        let n = left.min(TX_CHUNK);
        let mut tx = String::with_capacity(2 + 2 * n);
        tx.push_str(&hex[..4]);
        if n >= 5 {
            tx.push_str(&format!("{i:08x}"));
            tx.push_str(&hex[12..2 + 2 * n]);
        } else {
            tx.push_str(&hex[4..2 + 2 * n]);
        }
        txs.push(Value::String(tx));
        left -= n;
        i += 1;
    }
    txs
}

/// Encodes a block as an ExecutionPayloadEnvelope with `payload_bytes` of fake transactions.
pub(crate) fn encode(block: &Block, payload_bytes: usize) -> Value {
    json!({
        "executionPayload": {
            "parentHash": block.parent_hash.to_string(),
            "feeRecipient": "0x4200000000000000000000000000000000000011",
            "stateRoot": block.hash.derive(1).to_string(),
            "receiptsRoot": block.hash.derive(2).to_string(),
            "logsBloom": hex_encode(&[0u8; 256]),
            "prevRandao": block.hash.derive(3).to_string(),
            "blockNumber": quantity(block.number),
            "gasLimit": quantity(30_000_000),
            "gasUsed": quantity((payload_bytes as u64).saturating_mul(16)),
            "timestamp": quantity(block.timestamp),
            "extraData": extra_data(block),
            "baseFeePerGas": quantity(1_000_000_000),
            "blockHash": block.hash.to_string(),
            "transactions": fake_transactions(block, payload_bytes),
            "withdrawals": [],
        },
        "parentBeaconBlockRoot": block.parent_hash.derive(4).to_string(),
    })
}

fn field<'a>(p: &'a Value, name: &str) -> Result<&'a str, DecodeError> {
    p.get(name).and_then(Value::as_str).ok_or_else(|| {
        DecodeError::Invalid(format!(
            "missing required field '{name}' for ExecutionPayload"
        ))
    })
}

fn qty(p: &Value, name: &str) -> Result<u64, DecodeError> {
    let s = field(p, name)?;
    parse_quantity(s)
        .ok_or_else(|| DecodeError::Invalid(format!("invalid quantity {s:?} in field '{name}'")))
}

/// Decodes an envelope (or a bare ExecutionPayload) back into a block.
pub(crate) fn decode(v: &Value) -> Result<Block, DecodeError> {
    let p = v.get("executionPayload").unwrap_or(v);
    if !p.is_object() {
        return Err(DecodeError::Invalid("payload is not an object".into()));
    }
    let raw_hash = match p.get("blockHash") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let hash = B256::parse(&raw_hash).ok_or(DecodeError::BadHash(raw_hash))?;
    let parent_s = field(p, "parentHash")?;
    let parent_hash = B256::parse(parent_s)
        .ok_or_else(|| DecodeError::Invalid(format!("invalid parentHash {parent_s:?}")))?;
    let number = qty(p, "blockNumber")?;
    let timestamp = qty(p, "timestamp")?;
    let (sched_ms, producer) = p
        .get("extraData")
        .and_then(Value::as_str)
        .and_then(hex_decode)
        .filter(|b| b.len() >= 8)
        .and_then(|b| {
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&b[..8]);
            let name = String::from_utf8(b[8..].to_vec()).ok()?;
            Some((u64::from_be_bytes(ms), name))
        })
        .filter(|(_, name)| !name.is_empty())
        .unwrap_or_else(|| (timestamp.saturating_mul(1000), "external".to_string()));
    Ok(Block {
        number,
        hash,
        parent_hash,
        timestamp,
        producer,
        sched_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_size() {
        let b = Block {
            number: 7,
            hash: B256::random(),
            parent_hash: B256::random(),
            timestamp: 1_700_000_007,
            producer: "seq-1".into(),
            sched_ms: 1_700_000_007_000,
        };
        let env = encode(&b, 10_000);
        let txs = env["executionPayload"]["transactions"].as_array().map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| (s.len() - 2) / 2)
                .sum::<usize>()
        });
        assert_eq!(txs, Some(10_000));
        assert_eq!(env["executionPayload"]["blockNumber"], "0x7");
        assert_eq!(decode(&env), Ok(b.clone()));
        let empty = encode(&b, 0);
        assert_eq!(empty["executionPayload"]["transactions"], json!([]));
    }

    #[test]
    fn bad_hash() {
        let b = Block::genesis(1);
        let mut env = encode(&b, 0);
        env["executionPayload"]["blockHash"] = json!("0x1234");
        assert_eq!(decode(&env), Err(DecodeError::BadHash("0x1234".into())));
    }
}
