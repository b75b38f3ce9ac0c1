//! Chain primitives: 32-byte hashes, hex helpers, blocks, public block refs and the clock.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A 32-byte hash (block hash, state root, ...), shown as lowercase 0x-hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct B256(pub [u8; 32]);

impl B256 {
    pub const ZERO: B256 = B256([0u8; 32]);

    /// A fresh random hash (block hashes are random and unique).
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        B256(b)
    }

    /// Parses `0x` + 64 hex digits (the `0x` is optional, case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = hex_decode(s)?;
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(B256(arr))
    }

    /// A deterministic pseudo-hash derived from this one (state roots, output roots, ...).
    pub fn derive(&self, tag: u64) -> B256 {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
            let v = splitmix64(u64::from_be_bytes(word) ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            chunk.copy_from_slice(&v.to_be_bytes());
        }
        B256(out)
    }

    /// A deterministic hash for a number (fake L1 block hashes).
    pub fn from_seed(seed: u64) -> B256 {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let v = splitmix64(seed.wrapping_add((i as u64).wrapping_mul(0x1234_5678_9abc_def1)));
            chunk.copy_from_slice(&v.to_be_bytes());
        }
        B256(out)
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl fmt::Display for B256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for B256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `0x` + lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Decodes hex with an optional `0x` prefix; None on odd length or a bad digit.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if s.len() & 1 == 1 {
        return None;
    }
    let nib = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// `0x`-prefixed hex quantity (no leading zeros), as in Ethereum JSON-RPC.
pub fn quantity(v: u64) -> String {
    format!("0x{v:x}")
}

/// Parses a hex quantity (`0x1a`); also accepts a JSON-ish decimal string without prefix.
pub fn parse_quantity(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() {
            return None;
        }
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// One L2 block as the simulator tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    /// Unix seconds.
    pub timestamp: u64,
    /// Name of the node that sealed it ("genesis" for block 0, "external" if unknown).
    pub producer: String,
    /// Wall-clock slot (unix ms) this block was scheduled for; drives production cadence
    /// (equals `timestamp * 1000` whenever the block time is whole seconds).
    pub(crate) sched_ms: u64,
}

impl Block {
    pub(crate) fn genesis(timestamp: u64) -> Block {
        Block {
            number: 0,
            hash: GENESIS_HASH,
            parent_hash: B256::ZERO,
            timestamp,
            producer: "genesis".to_string(),
            sched_ms: timestamp.saturating_mul(1000),
        }
    }

    pub fn to_ref(&self) -> BlockRef {
        BlockRef {
            number: self.number,
            hash: self.hash.to_string(),
            timestamp: self.timestamp,
        }
    }
}

/// The fixed genesis hash shared by every node of every cluster.
pub const GENESIS_HASH: B256 = B256([
    0x5e, 0x0d, 0x5e, 0xed, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6f, 0x70, 0x73, 0x69,
]);

/// Public view of a node's head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub number: u64,
    /// 0x-prefixed lowercase hex.
    pub hash: String,
    /// Unix seconds.
    pub timestamp: u64,
}

/// Wall clock in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let h = B256::random();
        let s = h.to_string();
        assert_eq!(s.len(), 66);
        assert_eq!(B256::parse(&s), Some(h));
        assert_eq!(B256::parse(&s.to_uppercase().replace("0X", "0x")), Some(h));
        assert_eq!(B256::parse("0x1234"), None);
        assert_eq!(B256::parse("0xzz"), None);
        assert_eq!(parse_quantity("0x1a"), Some(26));
        assert_eq!(parse_quantity("0x"), None);
        assert_eq!(quantity(255), "0xff");
        assert_eq!(quantity(0), "0x0");
    }
}
