//! The cluster-wide ledger of published blocks and head rewinds, and the invariant checker.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::types::{now_ms, Block, B256};

/// A block that entered the network (sealed and inserted by its producer, or first inserted
/// anywhere via `admin_postUnsafePayload`). Genesis is recorded as block 0 by "genesis".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedBlock {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
    pub producer: String,
    pub unix_ms: u64,
}

/// A node replaced part of its unsafe chain (an unsafe reorg).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewind {
    pub node: String,
    pub from_number: u64,
    pub from_hash: String,
    pub to_number: u64,
    pub to_hash: String,
}

/// A published block whose parent is not the single published block one height below.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
    /// The hash of the only published block at `number - 1`.
    pub expected_parent: String,
    pub producer: String,
}

/// Everything that was published and every rewind, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub published: Vec<PublishedBlock>,
    pub rewinds: Vec<Rewind>,
}

/// Result of [`Ledger::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantReport {
    /// Heights at which more than one block was published: (height, hashes in publish order).
    pub heights_with_multiple_blocks: Vec<(u64, Vec<String>)>,
    /// Producers of those blocks, parallel to `heights_with_multiple_blocks`.
    pub fork_producers: Vec<(u64, Vec<String>)>,
    pub rewinds: Vec<Rewind>,
    pub broken_links: Vec<BrokenLink>,
    pub max_height: u64,
}

impl InvariantReport {
    /// No forks, no rewinds, no broken links.
    pub fn is_clean(&self) -> bool {
        self.heights_with_multiple_blocks.is_empty()
            && self.rewinds.is_empty()
            && self.broken_links.is_empty()
    }
}

impl fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(
                f,
                "clean: one chain up to height {}, no forks, no rewinds, no broken links",
                self.max_height
            );
        }
        writeln!(f, "INVARIANTS VIOLATED (max height {}):", self.max_height)?;
        if !self.heights_with_multiple_blocks.is_empty() {
            writeln!(
                f,
                "  {} height(s) with more than one published block (two sequencers were active):",
                self.heights_with_multiple_blocks.len()
            )?;
            for (i, (h, hashes)) in self.heights_with_multiple_blocks.iter().enumerate() {
                let producers = self
                    .fork_producers
                    .get(i)
                    .map(|(_, p)| p.as_slice())
                    .unwrap_or(&[]);
                let parts: Vec<String> = hashes
                    .iter()
                    .enumerate()
                    .map(|(j, hash)| match producers.get(j) {
                        Some(p) => format!("{hash} by {p}"),
                        None => hash.clone(),
                    })
                    .collect();
                writeln!(f, "    height {h}: {}", parts.join(", "))?;
            }
        }
        if !self.rewinds.is_empty() {
            writeln!(
                f,
                "  {} unsafe head rewind(s) (a node replaced blocks it had already accepted):",
                self.rewinds.len()
            )?;
            for r in &self.rewinds {
                writeln!(
                    f,
                    "    {}: {}:{} -> {}:{}",
                    r.node, r.from_hash, r.from_number, r.to_hash, r.to_number
                )?;
            }
        }
        if !self.broken_links.is_empty() {
            writeln!(
                f,
                "  {} broken link(s) (parent is not the published block below):",
                self.broken_links.len()
            )?;
            for b in &self.broken_links {
                writeln!(
                    f,
                    "    height {} {} by {}: parent {} but height {} is {}",
                    b.number,
                    b.hash,
                    b.producer,
                    b.parent_hash,
                    b.number.saturating_sub(1),
                    b.expected_parent
                )?;
            }
        }
        Ok(())
    }
}

impl Ledger {
    /// Checks: one block per height, every block links to the block below, no rewinds.
    pub fn check(&self) -> InvariantReport {
        let mut by_height: BTreeMap<u64, Vec<&PublishedBlock>> = BTreeMap::new();
        for b in &self.published {
            let v = by_height.entry(b.number).or_default();
            if !v.iter().any(|x| x.hash == b.hash) {
                v.push(b);
            }
        }
        let mut report = InvariantReport {
            rewinds: self.rewinds.clone(),
            max_height: by_height.keys().next_back().copied().unwrap_or(0),
            ..Default::default()
        };
        for (h, blocks) in &by_height {
            if blocks.len() > 1 {
                report
                    .heights_with_multiple_blocks
                    .push((*h, blocks.iter().map(|b| b.hash.clone()).collect()));
                report
                    .fork_producers
                    .push((*h, blocks.iter().map(|b| b.producer.clone()).collect()));
            }
            if *h == 0 {
                continue;
            }
            if let Some(below) = by_height.get(&(h - 1)) {
                if below.len() == 1 {
                    for b in blocks {
                        if b.parent_hash != below[0].hash {
                            report.broken_links.push(BrokenLink {
                                number: b.number,
                                hash: b.hash.clone(),
                                parent_hash: b.parent_hash.clone(),
                                expected_parent: below[0].hash.clone(),
                                producer: b.producer.clone(),
                            });
                        }
                    }
                }
            }
        }
        report
    }
}

/// The shared, mutable ledger of a cluster.
#[derive(Default)]
pub(crate) struct LedgerStore {
    inner: Mutex<(Ledger, HashSet<B256>)>,
}

impl LedgerStore {
    /// Records a block the first time any node holds it.
    pub(crate) fn record(&self, block: &Block) {
        let mut g = self.inner.lock();
        if g.1.insert(block.hash) {
            g.0.published.push(PublishedBlock {
                number: block.number,
                hash: block.hash.to_string(),
                parent_hash: block.parent_hash.to_string(),
                producer: block.producer.clone(),
                unix_ms: now_ms(),
            });
        }
    }

    pub(crate) fn rewind(&self, r: Rewind) {
        self.inner.lock().0.rewinds.push(r);
    }

    pub(crate) fn snapshot(&self) -> Ledger {
        self.inner.lock().0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(number: u64, hash: &str, parent: &str) -> PublishedBlock {
        PublishedBlock {
            number,
            hash: hash.into(),
            parent_hash: parent.into(),
            producer: "p".into(),
            unix_ms: 0,
        }
    }

    #[test]
    fn clean_chain() {
        let l = Ledger {
            published: vec![pb(0, "a", "z"), pb(1, "b", "a"), pb(2, "c", "b")],
            rewinds: vec![],
        };
        let r = l.check();
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.max_height, 2);
        assert!(r.to_string().starts_with("clean"));
    }

    #[test]
    fn fork_and_broken_link_detected() {
        let l = Ledger {
            published: vec![
                pb(0, "a", "z"),
                pb(1, "b", "a"),
                pb(1, "b2", "a"),
                pb(2, "c", "b"),
                pb(3, "d", "x"),
            ],
            rewinds: vec![],
        };
        let r = l.check();
        assert!(!r.is_clean());
        assert_eq!(
            r.heights_with_multiple_blocks,
            vec![(1, vec!["b".to_string(), "b2".to_string()])]
        );
        assert_eq!(r.broken_links.len(), 1);
        assert_eq!(r.broken_links[0].number, 3);
        assert_eq!(r.broken_links[0].expected_parent, "c");
        let text = r.to_string();
        assert!(text.contains("height 1: b by p, b2 by p"), "{text}");
        assert!(text.contains("broken link"), "{text}");
    }

    #[test]
    fn rewind_is_a_violation() {
        let l = Ledger {
            published: vec![pb(0, "a", "z")],
            rewinds: vec![Rewind {
                node: "seq-1".into(),
                from_number: 5,
                from_hash: "x".into(),
                to_number: 4,
                to_hash: "y".into(),
            }],
        };
        let r = l.check();
        assert!(!r.is_clean());
        assert!(r.to_string().contains("seq-1: x:5 -> y:4"));
    }
}
