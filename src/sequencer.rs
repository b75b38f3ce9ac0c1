//! Typed client for one op-node (admin_*, optimism_*, opp2p_*) and its op-geth; knows nothing of etcd or leadership.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::rpc::client::{CallError, HttpClient};

pub const ZERO_HASH: &str = "0x0000000000000000000000000000000000000000000000000000000000000000";

/// A block by number and hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct BlockId {
    pub number: u64,
    pub hash: String,
}

/// An L2 block ref as op-node reports it in `optimism_syncStatus` (decimal numbers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct L2Ref {
    pub hash: String,
    pub number: u64,
    #[serde(rename = "parentHash", default)]
    pub parent_hash: String,
    pub timestamp: u64,
}

impl L2Ref {
    pub fn id(&self) -> BlockId {
        BlockId {
            number: self.number,
            hash: self.hash.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SyncStatus {
    pub unsafe_l2: L2Ref,
}

#[derive(Debug, Deserialize)]
struct PeerStats {
    connected: u64,
}

#[derive(Debug, Deserialize)]
struct EthBlock {
    number: String,
    hash: String,
    timestamp: String,
}

/// The latest block as op-geth reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecHead {
    pub number: u64,
    pub hash: String,
    pub timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    Started,
    /// op-node checks this before the hash, so it is success whatever hash we sent.
    AlreadyRunning,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StartError {
    /// The unsafe head moved (gossip) between reading it and starting: re-read and retry.
    #[error("{0}")]
    HashMismatch(String),
    /// op-node's conductor gate refused (`sequencer is not the leader` / `leader check failed`).
    #[error("{0}")]
    LeaderCheck(String),
    #[error("{0}")]
    Call(#[from] CallError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Stopped; the unsafe head hash at the stop.
    Stopped(String),
    NotRunning,
}

/// Client for one op-node + op-geth pair. Cheap to clone.
#[derive(Clone)]
pub struct NodeClient {
    http: HttpClient,
    node_url: String,
    exec_url: String,
    timeout: Duration,
}

impl NodeClient {
    pub fn new(
        http: HttpClient,
        node_url: impl Into<String>,
        exec_url: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        NodeClient {
            http,
            node_url: node_url.into(),
            exec_url: exec_url.into(),
            timeout,
        }
    }

    pub fn node_url(&self) -> &str {
        &self.node_url
    }

    pub fn exec_url(&self) -> &str {
        &self.exec_url
    }

    pub async fn sync_status(&self) -> Result<SyncStatus, CallError> {
        self.http
            .call(&self.node_url, "optimism_syncStatus", [(); 0], self.timeout)
            .await
    }

    pub async fn peer_count(&self) -> Result<u64, CallError> {
        let stats: PeerStats = self
            .http
            .call(&self.node_url, "opp2p_peerStats", [(); 0], self.timeout)
            .await?;
        Ok(stats.connected)
    }

    pub async fn latest_block(&self) -> Result<ExecHead, CallError> {
        let b: Option<EthBlock> = self
            .http
            .call(
                &self.exec_url,
                "eth_getBlockByNumber",
                ("latest", false),
                self.timeout,
            )
            .await?;
        let b = b.ok_or_else(|| CallError::Decode {
            url: self.exec_url.clone(),
            reason: "latest block is null".into(),
        })?;
        let parse = |field: &str, s: &str| {
            parse_quantity(s).ok_or_else(|| CallError::Decode {
                url: self.exec_url.clone(),
                reason: format!("bad {field} {s:?}"),
            })
        };
        Ok(ExecHead {
            number: parse("number", &b.number)?,
            hash: b.hash,
            timestamp: parse("timestamp", &b.timestamp)?,
        })
    }

    /// The hash of the canonical block at `number` on op-geth, if it has one.
    pub async fn block_hash_at(&self, number: u64) -> Result<Option<String>, CallError> {
        let b: Option<EthBlock> = self
            .http
            .call(
                &self.exec_url,
                "eth_getBlockByNumber",
                (format!("{number:#x}"), false),
                self.timeout,
            )
            .await?;
        Ok(b.map(|b| b.hash))
    }

    /// Whether `ancestor` is on the node's canonical chain (the node is at it or past it).
    pub async fn has_block(&self, ancestor: &BlockId) -> Result<bool, CallError> {
        Ok(self
            .block_hash_at(ancestor.number)
            .await?
            .is_some_and(|h| h.eq_ignore_ascii_case(&ancestor.hash)))
    }

    pub async fn active(&self) -> Result<bool, CallError> {
        self.http
            .call(
                &self.node_url,
                "admin_sequencerActive",
                [(); 0],
                self.timeout,
            )
            .await
    }

    /// Whether op-node runs with `--conductor.enabled`. Nodes older than the method are treated as
    /// conductor-enabled, as op-conductor does.
    pub async fn conductor_enabled(&self) -> Result<bool, CallError> {
        match self
            .http
            .call(
                &self.node_url,
                "admin_conductorEnabled",
                [(); 0],
                self.timeout,
            )
            .await
        {
            Err(e) if e.is_method_not_found() => Ok(true),
            other => other,
        }
    }

    pub async fn start(&self, hash: &str) -> Result<StartOutcome, StartError> {
        match self
            .http
            .call::<_, serde_json::Value>(
                &self.node_url,
                "admin_startSequencer",
                [hash],
                self.timeout,
            )
            .await
        {
            Ok(_) => Ok(StartOutcome::Started),
            Err(e) => match e.rpc_message() {
                Some(m) if m.contains("sequencer already running") => {
                    Ok(StartOutcome::AlreadyRunning)
                }
                Some(m) if m.contains("block hash does not match") => {
                    Err(StartError::HashMismatch(m.to_string()))
                }
                Some(m)
                    if m.contains("sequencer is not the leader")
                        || m.contains("leader check failed") =>
                {
                    Err(StartError::LeaderCheck(m.to_string()))
                }
                _ => Err(StartError::Call(e)),
            },
        }
    }

    /// Stops sequencing. op-node waits for the last sealed block before answering, so this uses a
    /// longer limit than other calls.
    /// `admin_stopSequencer`; op-node waits for a block in progress, so this allows three
    /// ordinary timeouts.
    pub async fn stop(&self) -> Result<StopOutcome, CallError> {
        self.stop_within(self.timeout * 3).await
    }

    /// `admin_stopSequencer` with an explicit limit (a leader stepping down bounds it by what
    /// is left of its lease).
    pub async fn stop_within(&self, limit: Duration) -> Result<StopOutcome, CallError> {
        match self
            .http
            .call::<_, String>(&self.node_url, "admin_stopSequencer", [(); 0], limit)
            .await
        {
            Ok(hash) => Ok(StopOutcome::Stopped(hash)),
            Err(e)
                if e.rpc_message()
                    .is_some_and(|m| m.contains("sequencer not running")) =>
            {
                Ok(StopOutcome::NotRunning)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn post_unsafe_payload(&self, envelope: &RawValue) -> Result<(), CallError> {
        let params = crate::rpc::types::to_raw(&[envelope]);
        self.http
            .call_raw(
                &self.node_url,
                "admin_postUnsafePayload",
                &params,
                self.timeout,
            )
            .await
            .map(|_| ())
    }
}

/// Parses a 0x-prefixed hex quantity.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.is_empty() {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub fn is_zero_hash(h: &str) -> bool {
    let hex = h.trim_start_matches("0x");
    !hex.is_empty() && hex.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("0x0"), Some(0));
        assert_eq!(parse_quantity("0x1a"), Some(26));
        assert_eq!(parse_quantity("1a"), None);
        assert_eq!(parse_quantity("0x"), None);
    }

    #[test]
    fn zero_hash() {
        assert!(is_zero_hash(ZERO_HASH));
        assert!(!is_zero_hash("0x01"));
        assert!(!is_zero_hash("0x"));
    }

    proptest! {
        #[test]
        fn quantity_round_trip(n: u64) {
            prop_assert_eq!(parse_quantity(&format!("{n:#x}")), Some(n));
        }
    }
}
