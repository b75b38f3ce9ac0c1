//! Fenced block commits for op-node's conductor interface: one etcd Txn per sealed block, valid only for the current epoch and only if the block extends the recorded head; knows nothing of the control loop.
//!
//! This is what makes a stale leader harmless in conductor mode: op-node neither gossips nor
//! inserts a block whose commit failed, and the commit fails the moment our leader key no longer
//! has the create revision we won it with, whatever our clocks believe.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use crate::election::{get_responses, Election, ElectionError, Leadership};
use crate::sequencer::parse_quantity;
use crate::state::HeadRecord;

/// etcd refuses requests over `--max-request-bytes` (1.5 MiB by default); the head record and
/// Txn framing need a little room. Larger payloads are still fenced, just not stored.
pub const MAX_STORED_PAYLOAD: usize = 1_400_000;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CommitError {
    #[error("not the leader: refusing to commit block")]
    NotLeader,
    #[error("block {number} ({hash}) does not extend the committed head {head_number} ({head_hash}); parent {parent}")]
    NotExtending {
        number: u64,
        hash: String,
        parent: String,
        head_number: u64,
        head_hash: String,
    },
    #[error("invalid payload envelope: {0}")]
    Invalid(String),
    #[error("etcd: {0}")]
    Etcd(#[from] ElectionError),
}

/// The fields of an `ExecutionPayloadEnvelope` the fence needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    pub number: u64,
    pub hash: String,
    pub parent: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "executionPayload")]
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "blockNumber")]
    number: String,
    #[serde(rename = "blockHash")]
    hash: String,
    #[serde(rename = "parentHash")]
    parent: String,
}

fn is_hash(s: &str) -> bool {
    s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn block_meta(envelope: &RawValue) -> Result<BlockMeta, CommitError> {
    let env: Envelope =
        serde_json::from_str(envelope.get()).map_err(|e| CommitError::Invalid(e.to_string()))?;
    let number = parse_quantity(&env.payload.number).ok_or_else(|| {
        CommitError::Invalid(format!(
            "blockNumber {:?} is not a hex quantity",
            env.payload.number
        ))
    })?;
    if !is_hash(&env.payload.hash) || !is_hash(&env.payload.parent) {
        return Err(CommitError::Invalid(
            "blockHash and parentHash must be 32-byte 0x-hex".into(),
        ));
    }
    Ok(BlockMeta {
        number,
        hash: env.payload.hash.to_lowercase(),
        parent: env.payload.parent.to_lowercase(),
    })
}

/// Whether `block` may follow `head`. `Ok(true)` = new block, `Ok(false)` = already committed
/// (op-node retries a commit whose answer it missed). Pure.
///
/// Strict on purpose: a committed head is never replaced, not even by a re-seal at the same
/// height in the same epoch, because the sidecar cannot know whether op-node (or a second
/// op-node sharing this conductor URL) already received the acknowledgement and published it.
/// A leader whose commit succeeded but whose answer was lost is repaired instead: the control
/// loop posts the committed payload to its own node (see `app`).
pub fn extends(head: Option<&HeadRecord>, block: &BlockMeta) -> Result<bool, CommitError> {
    let Some(h) = head else { return Ok(true) };
    if h.hash.eq_ignore_ascii_case(&block.hash) && h.number == block.number {
        return Ok(false);
    }
    if block.number == h.number + 1 && block.parent.eq_ignore_ascii_case(&h.hash) {
        return Ok(true);
    }
    Err(CommitError::NotExtending {
        number: block.number,
        hash: block.hash.clone(),
        parent: block.parent.clone(),
        head_number: h.number,
        head_hash: h.hash.clone(),
    })
}

#[derive(Debug, Clone)]
struct Cached {
    epoch: i64,
    head: Option<HeadRecord>,
    /// mod_revision of the head key (0 = absent), for the compare-and-swap.
    mod_rev: i64,
}

/// Serializes commits (blocks are sequential) and caches the head so a commit is one Txn.
#[derive(Default)]
pub struct Committer {
    cache: Mutex<Option<Cached>>,
}

impl Committer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits `envelope` under leadership `l`. Writes the head record and (if small enough) the
    /// payload in one Txn guarded by the epoch and the head's mod revision.
    pub async fn commit(
        &self,
        e: &Election,
        l: &Leadership,
        me: &str,
        envelope: &RawValue,
    ) -> Result<BlockMeta, CommitError> {
        let block = block_meta(envelope)?;
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_none_or(|c| c.epoch != l.epoch) {
            *cache = Some(read_head(e, l.epoch).await?);
        }
        for _ in 0..2 {
            let Some(c) = cache.clone() else { break };
            if !extends(c.head.as_ref(), &block)? {
                return Ok(block);
            }
            let rec = HeadRecord {
                number: block.number,
                hash: block.hash.clone(),
                parent_hash: block.parent.clone(),
                epoch: l.epoch,
                id: me.to_string(),
                node: None,
            };
            let value =
                serde_json::to_vec(&rec).map_err(|err| CommitError::Invalid(err.to_string()))?;
            let mut ops = vec![TxnOp::put(e.keys().head(), value, None)];
            if envelope.get().len() <= MAX_STORED_PAYLOAD {
                ops.push(TxnOp::put(
                    e.keys().payload(),
                    envelope.get().as_bytes().to_vec(),
                    None,
                ));
            } else {
                tracing::warn!(number = block.number, bytes = envelope.get().len(), limit = MAX_STORED_PAYLOAD, "payload too large for etcd: head fenced and recorded, payload not stored (no one-block repair for this block)");
            }
            let txn = Txn::new()
                .when(vec![
                    e.fence(l),
                    Compare::mod_revision(e.keys().head(), CompareOp::Equal, c.mod_rev),
                ])
                .and_then(ops)
                .or_else(vec![
                    TxnOp::get(l.key.clone(), None),
                    TxnOp::get(e.keys().head(), None),
                ]);
            let resp = e.txn(txn).await?;
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
                *cache = Some(Cached {
                    epoch: l.epoch,
                    head: Some(rec),
                    mod_rev: rev,
                });
                return Ok(block);
            }
            let gets = get_responses(&resp);
            let still_ours = gets
                .first()
                .and_then(|g| g.kvs().first())
                .is_some_and(|kv| kv.create_revision() == l.epoch);
            if !still_ours {
                *cache = None;
                return Err(CommitError::NotLeader);
            }
            // The head moved under us (a previous leader's late write cannot pass the fence, so
            // this is only a stale cache): refresh and re-check once.
            let kv = gets.get(1).and_then(|g| g.kvs().first());
            *cache = Some(Cached {
                epoch: l.epoch,
                head: kv.and_then(|kv| serde_json::from_slice(kv.value()).ok()),
                mod_rev: kv.map(|kv| kv.mod_revision()).unwrap_or(0),
            });
        }
        Err(CommitError::Etcd(ElectionError::Etcd(
            "head changed concurrently; commit refused".into(),
        )))
    }

    /// Forgets the cached head (on stepping down), so the next epoch starts from etcd.
    pub async fn reset(&self) {
        *self.cache.lock().await = None;
    }
}

async fn read_head(e: &Election, epoch: i64) -> Result<Cached, CommitError> {
    let key = e.keys().head();
    let resp = e
        .run(|c| async move { c.kv_client().get(key, None::<GetOptions>).await })
        .await?;
    let kv = resp.kvs().first();
    Ok(Cached {
        epoch,
        head: kv.and_then(|kv| serde_json::from_slice(kv.value()).ok()),
        mod_rev: kv.map(|kv| kv.mod_revision()).unwrap_or(0),
    })
}

/// Reads the stored payload envelope (for one-block repair).
pub async fn read_payload(e: &Election) -> Result<Option<Box<RawValue>>, ElectionError> {
    let key = e.keys().payload();
    let resp = e
        .run(|c| async move { c.kv_client().get(key, None).await })
        .await?;
    Ok(resp.kvs().first().and_then(|kv| {
        std::str::from_utf8(kv.value())
            .ok()
            .and_then(|s| RawValue::from_string(s.to_string()).ok())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(n: u64) -> String {
        format!("0x{n:064x}")
    }

    fn head(n: u64) -> HeadRecord {
        HeadRecord {
            number: n,
            hash: h(n),
            parent_hash: h(n.wrapping_sub(1)),
            epoch: 1,
            id: "a".into(),
            node: None,
        }
    }

    #[test]
    fn envelope_fields() {
        let raw = RawValue::from_string(format!(r#"{{"executionPayload":{{"blockNumber":"0x10","blockHash":"{}","parentHash":"{}","transactions":[]}}}}"#, h(16), h(15))).expect("json");
        assert_eq!(
            block_meta(&raw).expect("meta"),
            BlockMeta {
                number: 16,
                hash: h(16),
                parent: h(15)
            }
        );
        let bad = RawValue::from_string(
            r#"{"executionPayload":{"blockNumber":"16","blockHash":"0x1","parentHash":"0x2"}}"#
                .into(),
        )
        .expect("json");
        assert!(matches!(block_meta(&bad), Err(CommitError::Invalid(_))));
    }

    #[test]
    fn extension_rules() {
        assert_eq!(
            extends(
                None,
                &BlockMeta {
                    number: 5,
                    hash: h(5),
                    parent: h(4)
                }
            ),
            Ok(true)
        );
        assert_eq!(
            extends(
                Some(&head(4)),
                &BlockMeta {
                    number: 5,
                    hash: h(5),
                    parent: h(4)
                }
            ),
            Ok(true)
        );
        assert_eq!(
            extends(
                Some(&head(5)),
                &BlockMeta {
                    number: 5,
                    hash: h(5),
                    parent: h(4)
                }
            ),
            Ok(false)
        );
        assert!(
            extends(
                Some(&head(5)),
                &BlockMeta {
                    number: 5,
                    hash: h(99),
                    parent: h(4)
                }
            )
            .is_err(),
            "second block at a height"
        );
        assert!(
            extends(
                Some(&head(5)),
                &BlockMeta {
                    number: 7,
                    hash: h(7),
                    parent: h(6)
                }
            )
            .is_err(),
            "gap"
        );
        assert!(
            extends(
                Some(&head(5)),
                &BlockMeta {
                    number: 6,
                    hash: h(6),
                    parent: h(77)
                }
            )
            .is_err(),
            "wrong parent"
        );
    }

    proptest! {
        /// Whatever sequence of blocks is offered, the accepted ones form one chain: never two
        /// different blocks at a height, never a step back.
        #[test]
        fn accepted_blocks_form_one_chain(offers in proptest::collection::vec((0u64..12, 0u64..3), 1..80)) {
            let mut head: Option<HeadRecord> = None;
            let mut by_height = std::collections::HashMap::new();
            for (n, variant) in offers {
                let hash = format!("0x{:062x}{:02x}", n, variant);
                let parent = head.as_ref().filter(|hd| hd.number + 1 == n).map(|hd| hd.hash.clone()).unwrap_or_else(|| format!("0x{:064x}", 999));
                let block = BlockMeta { number: n, hash: hash.clone(), parent };
                if let Ok(true) = extends(head.as_ref(), &block) {
                    if let Some(hd) = &head { prop_assert_eq!(n, hd.number + 1); }
                    let prev = by_height.insert(n, hash.clone());
                    prop_assert!(prev.is_none() || prev == Some(hash.clone()));
                    head = Some(HeadRecord { number: n, hash, parent_hash: String::new(), epoch: 1, id: "a".into(), node: None });
                }
            }
        }
    }
}
