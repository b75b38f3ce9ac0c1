//! Fenced block commits for op-node's conductor interface: the block's stored payload first, then one etcd Txn for the head, valid only for the current epoch and only if the block extends the recorded head; knows nothing of the control loop.
//!
//! This is what makes a stale leader harmless in conductor mode: op-node neither gossips nor
//! inserts a block whose commit failed, and the commit fails the moment our leader key no longer
//! has the create revision we won it with, whatever our clocks believe.
//!
//! A block is acknowledged only once what a successor needs to repair it (one block behind) or
//! to hand it back to a leader whose acknowledgement was lost is durable: its packed payload, in
//! chunks keyed by its hash (see [`crate::payload`]), is written before the head moves, its last
//! chunk in the head's own Txn. The head Txn deletes every other block's chunks, so etcd holds
//! one block's payload at a time.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use crate::election::{get_responses, Election, ElectionError, Leadership};
use crate::payload::{self, PayloadError};
use crate::state::HeadRecord;

pub use crate::payload::BlockMeta;

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
    #[error("stored payload of block {hash}: {reason}")]
    Stored { hash: String, reason: String },
    #[error("etcd: {0}")]
    Etcd(#[from] ElectionError),
}

impl From<PayloadError> for CommitError {
    fn from(e: PayloadError) -> Self {
        match e {
            PayloadError::Invalid(m) => CommitError::Invalid(m),
            // Only reading a stored payload can find it corrupt; those paths name the block.
            PayloadError::Corrupt(m) => CommitError::Invalid(format!("corrupt stored form: {m}")),
        }
    }
}

/// An envelope borrowed from the request, with its block fields. Only [`scan_param`] makes
/// one, so the fields always belong to the text.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    text: &'a str,
    meta: BlockMeta,
}

impl Envelope<'_> {
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }
}

/// The envelope in `conductor_commitUnsafePayload`'s params (`[envelope]`), borrowed, and its
/// block fields (see [`payload::single_envelope_param`]).
pub fn scan_param(params: &str) -> Result<Envelope<'_>, PayloadError> {
    let (text, meta) = off_the_runtime(params.len(), || payload::single_envelope_param(params))?;
    Ok(Envelope { text, meta })
}

/// The fence's fields of a stored or posted envelope.
pub fn block_meta(envelope: &RawValue) -> Result<BlockMeta, CommitError> {
    let text = envelope.get();
    Ok(off_the_runtime(text.len(), || payload::block_meta(text))?)
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

/// What one commit did and where its time went (for the per-stage metrics).
#[derive(Debug, Clone)]
pub struct Committed {
    pub meta: BlockMeta,
    /// false: the block already was the committed head (a retried commit); nothing written.
    pub new: bool,
    /// Bytes of packed payload written to etcd (0 for a retry).
    pub stored_bytes: usize,
    /// Packing the payload into its stored form (its chunk writes start meanwhile).
    pub pack: Duration,
    /// Waiting for etcd once the payload is packed: the rest of the chunk writes, then the
    /// head Txn.
    pub etcd: Duration,
}

#[derive(Debug, Clone)]
struct Cached {
    epoch: i64,
    head: Option<HeadRecord>,
    /// mod_revision of the head key (0 = absent), for the compare-and-swap.
    mod_rev: i64,
}

/// Serializes commits (blocks are sequential) and caches the head so a commit of a small block
/// is one chunk Txn and one head Txn.
#[derive(Default)]
pub struct Committer {
    cache: Mutex<Option<Cached>>,
}

impl Committer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits `envelope` under leadership `l`: its packed payload in fenced chunk writes but
    /// the last, then the head record and the last chunk in one Txn guarded by the epoch and
    /// the head's mod revision, which also deletes every other block's chunks.
    pub async fn commit(
        &self,
        e: &Election,
        l: &Leadership,
        me: &str,
        envelope: &Envelope<'_>,
    ) -> Result<Committed, CommitError> {
        let block = envelope.meta().clone();
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_none_or(|c| c.epoch != l.epoch) {
            *cache = Some(read_head(e, l.epoch).await?);
        }
        let done = |new, stored_bytes, pack, etcd| Committed {
            meta: block.clone(),
            new,
            stored_bytes,
            pack,
            etcd,
        };
        if let Some(c) = cache.as_ref() {
            if !extends(c.head.as_ref(), &block)? {
                return Ok(done(false, 0, Duration::ZERO, Duration::ZERO));
            }
        }
        // Packing and the chunk writes overlap: each chunk's fenced Txn is sent as soon as it
        // is packed, while the rest of the envelope is still being packed. The last chunk (the
        // only one of a block under 1 MiB packed) rides in the head Txn itself, so a commit
        // costs one etcd round trip after the others, not two.
        let t = Instant::now();
        let mut writes = Vec::new();
        let mut last: Option<(String, Vec<u8>)> = None;
        let packed = off_the_runtime(envelope.text.len(), || {
            let mut index = 0;
            payload::pack_chunked(envelope.text.as_bytes(), |value| {
                let key = e.keys().payload_chunk(&block.hash, index);
                index += 1;
                if payload::chunk_header(&value).is_ok_and(|h| h.last) {
                    last = Some((key, value));
                } else {
                    writes.push(tokio::spawn(put_chunk(e.clone(), l.clone(), key, value)));
                }
            })
        });
        let pack = t.elapsed();
        let t = Instant::now();
        let written = wait_all(writes).await;
        let stored_bytes = packed?;
        if let Err(err) = written {
            if err == CommitError::NotLeader {
                *cache = None;
            }
            return Err(err);
        }
        let keys = e.keys();
        for _ in 0..2 {
            let Some(c) = cache.clone() else { break };
            if !extends(c.head.as_ref(), &block)? {
                return Ok(done(false, 0, pack, t.elapsed()));
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
            // A refused head Txn wrote nothing, so a retry needs the last chunk again; it is
            // packed anew then (rare: a stale cached head) rather than copied on every commit.
            let (last_key, last_value) = match last.take() {
                Some(kv) => kv,
                None => off_the_runtime(envelope.text.len(), || {
                    last_chunk(keys, &block.hash, envelope.text.as_bytes())
                })?,
            };
            let ops = vec![
                TxnOp::put(keys.head(), value, None),
                TxnOp::put(last_key, last_value, None),
                // Every payload key but this block's: the previous head's chunks (no successor
                // needs them once this head is recorded) and leftovers of commits that never
                // reached their head Txn.
                TxnOp::delete(
                    keys.payload_dir(),
                    Some(DeleteOptions::new().with_range(keys.payload_block(&block.hash))),
                ),
                TxnOp::delete(
                    keys.payload_block_end(&block.hash),
                    Some(DeleteOptions::new().with_range(keys.payload_dir_end())),
                ),
                TxnOp::delete(keys.legacy_payload(), None),
            ];
            let txn = Txn::new()
                .when(vec![
                    e.fence(l),
                    Compare::mod_revision(keys.head(), CompareOp::Equal, c.mod_rev),
                ])
                .and_then(ops)
                .or_else(vec![
                    TxnOp::get(l.key.clone(), None),
                    TxnOp::get(keys.head(), None),
                ]);
            let resp = e.txn(txn).await?;
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
                *cache = Some(Cached {
                    epoch: l.epoch,
                    head: Some(rec),
                    mod_rev: rev,
                });
                return Ok(done(true, stored_bytes, pack, t.elapsed()));
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
            // this is only a stale cache, e.g. our own start head): refresh and re-check once.
            // Our other chunks are still there: only a head Txn deletes chunks, and commits are
            // serial.
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

/// The key and value of the last chunk of `envelope`'s stored form.
fn last_chunk(
    keys: &crate::state::Keys,
    hash: &str,
    envelope: &[u8],
) -> Result<(String, Vec<u8>), CommitError> {
    let (mut index, mut last) = (0, Vec::new());
    payload::pack_chunked(envelope, |value| {
        last = value;
        index += 1;
    })?;
    Ok((keys.payload_chunk(hash, index - 1), last))
}

/// Writes one chunk in a Txn fenced by the epoch, so a deposed leader cannot leave chunks
/// behind. A block's chunks are written all at once: etcd batches concurrent proposals into
/// fewer disk syncs.
async fn put_chunk(
    e: Election,
    l: Leadership,
    key: String,
    value: Vec<u8>,
) -> Result<(), CommitError> {
    let txn = Txn::new()
        .when(vec![e.fence(&l)])
        .and_then(vec![TxnOp::put(key, value, None)]);
    if e.txn(txn).await?.succeeded() {
        Ok(())
    } else {
        Err(CommitError::NotLeader)
    }
}

/// Waits for every chunk write (even after one failed, so none is still in flight when the
/// commit answers); the first error, if any.
async fn wait_all(
    writes: Vec<tokio::task::JoinHandle<Result<(), CommitError>>>,
) -> Result<(), CommitError> {
    let mut first = Ok(());
    for w in writes {
        let r = w.await.unwrap_or_else(|err| {
            Err(CommitError::Etcd(ElectionError::Etcd(format!(
                "chunk write task: {err}"
            ))))
        });
        if first.is_ok() {
            first = r;
        }
    }
    first
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

/// Reads the stored envelope of block `hash` (for one-block repair), checked to be that block.
/// `None` when nothing is stored for it. The chunks are listed, then read at that revision one
/// request each, so no answer exceeds the client's 4 MiB message limit whatever the block size.
pub async fn read_payload(e: &Election, hash: &str) -> Result<Option<Box<RawValue>>, CommitError> {
    let keys = e.keys();
    let dir = keys.payload_block(hash);
    let listed = e
        .run(|c| async move {
            c.kv_client()
                .get(dir, Some(GetOptions::new().with_prefix().with_keys_only()))
                .await
        })
        .await?;
    if listed.kvs().is_empty() {
        return read_legacy(e, hash).await;
    }
    let rev = listed.header().map(|h| h.revision()).unwrap_or(0);
    let count = listed.kvs().len();
    let reads = (0..count).map(|i| {
        let key = keys.payload_chunk(hash, i);
        e.run(move |c| async move {
            c.kv_client()
                .get(key, Some(GetOptions::new().with_revision(rev)))
                .await
        })
    });
    let chunks = futures_util::future::try_join_all(reads).await?;
    let stored = |reason: String| CommitError::Stored {
        hash: hash.to_string(),
        reason,
    };
    let mut values: Vec<&[u8]> = Vec::with_capacity(count);
    for (i, resp) in chunks.iter().enumerate() {
        match resp.kvs().first() {
            Some(kv) => values.push(kv.value()),
            None => return Err(stored(format!("chunk {i} of {count} is missing"))),
        }
    }
    // Up to the chunk flagged last: anything after it is not part of this envelope.
    if let Some(last) = values
        .iter()
        .position(|v| payload::chunk_header(v).is_ok_and(|h| h.last))
    {
        values.truncate(last + 1);
    }
    let total: usize = values.iter().map(|v| v.len()).sum();
    off_the_runtime(total, || {
        let text = payload::assemble(&values).map_err(|err| stored(err.to_string()))?;
        checked(text, hash).map(Some)
    })
}

/// Inputs at least this large are scanned, packed and unpacked off the runtime worker. A
/// release build handles 4 MB in ~3 ms, well inside a keepalive interval, but a debug build
/// takes long enough to starve the lease keepalive (the tests run debug builds).
const OFFLOAD_BYTES: usize = 4 << 20;

/// Runs CPU work on a multi-MB payload (scanning, packing, unpacking) so that it does not hold
/// up this runtime worker's other tasks, the lease keepalive among them: on the multi-threaded
/// runtime they move to another thread meanwhile. Smaller inputs run inline, which is cheaper.
fn off_the_runtime<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi && bytes >= OFFLOAD_BYTES {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// The single-value layout of earlier versions, used until the first chunked commit.
async fn read_legacy(e: &Election, hash: &str) -> Result<Option<Box<RawValue>>, CommitError> {
    let key = e.keys().legacy_payload();
    let resp = e
        .run(|c| async move { c.kv_client().get(key, None).await })
        .await?;
    let Some(text) = resp
        .kvs()
        .first()
        .and_then(|kv| std::str::from_utf8(kv.value()).ok())
    else {
        return Ok(None);
    };
    match checked(text.to_string(), hash) {
        Ok(raw) => Ok(Some(raw)),
        // An older block's envelope: nothing stored for this one.
        Err(_) => Ok(None),
    }
}

fn checked(text: String, hash: &str) -> Result<Box<RawValue>, CommitError> {
    let stored = |reason: String| CommitError::Stored {
        hash: hash.to_string(),
        reason,
    };
    let raw = RawValue::from_string(text).map_err(|err| stored(err.to_string()))?;
    let meta = payload::block_meta(raw.get())?;
    if !meta.hash.eq_ignore_ascii_case(hash) {
        return Err(stored(format!("holds block {} instead", meta.hash)));
    }
    Ok(raw)
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

    /// The retry path re-packs only to get the last chunk: it must be the very chunk (and key)
    /// the first attempt would have put, for one-chunk and many-chunk blocks alike.
    #[test]
    fn last_chunk_is_the_stored_forms_last_chunk() {
        let keys = crate::state::Keys::new("/t");
        for txs in [
            0usize,
            1,
            3 * payload::CHUNK_BYTES / 2,
            5 * payload::CHUNK_BYTES / 2,
        ] {
            let env = format!(
                r#"{{"executionPayload":{{"blockNumber":"0x1","blockHash":"{}","parentHash":"{}","transactions":["0x{}"]}}}}"#,
                h(1),
                h(0),
                "ab".repeat(txs)
            );
            let all = payload::chunks(&payload::pack(env.as_bytes()).expect("pack"));
            let (key, value) = last_chunk(&keys, &h(1), env.as_bytes()).expect("last");
            assert_eq!(key, keys.payload_chunk(&h(1), all.len() - 1), "{txs}");
            assert_eq!(Some(&value), all.last(), "{txs}");
        }
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
