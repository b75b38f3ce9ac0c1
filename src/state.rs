//! The etcd key layout under one chain's prefix and the JSON records stored there; no I/O and no policy.

use serde::{Deserialize, Serialize};

use crate::sequencer::BlockId;

/// Key names for one chain. Every key lives under `prefix`, so one etcd can serve many chains.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The election name for `etcdctl elect -l`: candidates' keys live below it.
    pub fn election(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// `<prefix>/leader/` with the trailing slash, for range reads and compares.
    pub fn leader_dir(&self) -> String {
        format!("{}/leader/", self.prefix)
    }

    /// The Election API layout (`<name>/<lease id hex>`), so stock `etcdctl elect -l` sees it.
    pub fn leader_key(&self, lease: i64) -> String {
        format!("{}/leader/{:x}", self.prefix, lease)
    }

    pub fn head(&self) -> String {
        format!("{}/head", self.prefix)
    }

    /// Where versions up to 0.1 kept the whole last envelope (one value, at most 1.4 MB). Read
    /// as a fallback and deleted by the first chunked commit, so a rolling upgrade loses nothing.
    pub fn legacy_payload(&self) -> String {
        format!("{}/payload", self.prefix)
    }

    /// `<prefix>/payload/`: the stored chunks of committed blocks, by block hash.
    pub fn payload_dir(&self) -> String {
        format!("{}/payload/", self.prefix)
    }

    /// `<prefix>/payload/<hash>/`: one block's chunks.
    pub fn payload_block(&self, hash: &str) -> String {
        format!("{}/payload/{}/", self.prefix, hash.to_ascii_lowercase())
    }

    /// The first key after every `<prefix>/payload/<hash>/...` key ('0' follows '/').
    pub fn payload_block_end(&self, hash: &str) -> String {
        format!("{}/payload/{}0", self.prefix, hash.to_ascii_lowercase())
    }

    /// The first key after every `<prefix>/payload/...` key.
    pub fn payload_dir_end(&self) -> String {
        format!("{}/payload0", self.prefix)
    }

    /// `<prefix>/payload/<hash>/<index>`, zero-padded so key order is chunk order.
    pub fn payload_chunk(&self, hash: &str, index: usize) -> String {
        format!("{}{index:04}", self.payload_block(hash))
    }

    pub fn stopped(&self) -> String {
        format!("{}/stopped", self.prefix)
    }

    pub fn members_dir(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    pub fn member(&self, id: &str) -> String {
        format!("{}/members/{id}", self.prefix)
    }

    pub fn control_dir(&self) -> String {
        format!("{}/control/", self.prefix)
    }

    pub fn election_stopped(&self) -> String {
        format!("{}/control/election-stopped", self.prefix)
    }

    /// The configured membership (absent until an operator first changes it).
    pub fn membership(&self) -> String {
        format!("{}/control/membership", self.prefix)
    }

    pub fn transfer(&self) -> String {
        format!("{}/control/transfer", self.prefix)
    }
}

/// The last head a leader recorded: committed (conductor mode) or observed (sidecar-driven mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    pub number: u64,
    pub hash: String,
    #[serde(rename = "parentHash", default)]
    pub parent_hash: String,
    /// The recording leader's epoch (create revision of its leader key).
    pub epoch: i64,
    pub id: String,
    /// The recording leader's op-node admin URL, so a successor can stop it even after its
    /// sidecar died and its member key expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl HeadRecord {
    pub fn block(&self) -> BlockId {
        BlockId {
            number: self.number,
            hash: self.hash.clone(),
        }
    }
}

/// Where the last leader stopped its sequencer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedRecord {
    pub hash: String,
    pub number: u64,
    pub id: String,
    pub epoch: i64,
}

/// One sidecar's advertisement, bound to its lease so it vanishes with the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    /// The sidecar's JSON-RPC URL.
    pub rpc: String,
    /// The op-node admin URL.
    pub node: String,
    pub healthy: bool,
    /// The latest check failed only because the unsafe head is old (true of every node while
    /// the chain is halted).
    #[serde(default)]
    pub only_stale: bool,
    pub paused: bool,
    /// Whether its op-node reported an active sequencer at the last check.
    pub active: bool,
    pub head: Option<BlockId>,
    pub version: String,
}

/// Raft's suffrage values as op-conductor reports them.
pub const VOTER: u8 = 0;
pub const NONVOTER: u8 = 1;

/// One configured server: `suffrage` 0 = voter (may lead), 1 = non-voter (follows, never leads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub addr: String,
    pub suffrage: u8,
}

/// The cluster's configured servers. `version` changes only when the membership does (raft's
/// configuration index in op-conductor). Absent from etcd = open membership: every live
/// sidecar is a voter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub servers: Vec<Server>,
    pub version: u64,
}

impl Membership {
    pub fn get(&self, id: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.id == id)
    }

    pub fn is_voter(&self, id: &str) -> bool {
        self.get(id).is_some_and(|s| s.suffrage == VOTER)
    }
}

/// A leadership transfer an operator asked for; candidates other than `target` stand back
/// while it is pending, and the leader of `epoch` steps down for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    pub target: String,
    pub from: String,
    pub epoch: i64,
    /// Unix milliseconds after which the transfer is void and anyone may contend again.
    pub expires_ms: u64,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("/op/chain-1/");
        assert_eq!(
            k.leader_key(0x694d7b0a1c2b),
            "/op/chain-1/leader/694d7b0a1c2b"
        );
        assert!(k.leader_key(1).starts_with(&k.leader_dir()));
        assert_eq!(k.election(), "/op/chain-1/leader");
        assert_eq!(k.member("seq-0"), "/op/chain-1/members/seq-0");
        assert!(k.transfer().starts_with(&k.control_dir()));
        assert_eq!(k.payload_chunk("0xAB", 3), "/op/chain-1/payload/0xab/0003");
        assert!(k.payload_chunk("0xab", 0).starts_with(&k.payload_dir()));
        assert!(!k.legacy_payload().starts_with(&k.payload_dir()));
        // The two ranges a commit deletes cover every payload key but the new block's.
        let (dir, end) = (k.payload_dir(), k.payload_dir_end());
        let (block, block_end) = (k.payload_block("0xab"), k.payload_block_end("0xab"));
        for other in ["0xaa", "0xab0", "0xac", "0xab-"] {
            let key = k.payload_chunk(other, 0);
            let in_first = key >= dir && key < block;
            let in_second = key >= block_end && key < end;
            assert!(
                in_first || in_second,
                "{key} would survive the commit of 0xab"
            );
        }
        let mine = k.payload_chunk("0xab", 9);
        assert!(mine >= block && mine < block_end);
    }

    #[test]
    fn head_record_json_shape() {
        let h = HeadRecord {
            number: 5,
            hash: "0x05".into(),
            parent_hash: "0x04".into(),
            epoch: 9,
            id: "a".into(),
            node: None,
        };
        let v = serde_json::to_value(&h).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"number": 5, "hash": "0x05", "parentHash": "0x04", "epoch": 9, "id": "a"})
        );
        let back: HeadRecord = serde_json::from_value(v).expect("back");
        assert_eq!(back, h);
    }
}
