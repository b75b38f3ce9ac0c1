//! Reads of the shared cluster state in etcd (leader, head, stopped, members, control keys) in one round trip, and the operator control writes; makes no leadership decisions.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use crate::election::{get_responses, leader_of, Election, ElectionError, LeaderInfo};
use crate::sequencer::BlockId;
use crate::state::{
    unix_ms, HeadRecord, MemberRecord, Membership, Server, StoppedRecord, TransferRecord, VOTER,
};

/// A consistent snapshot of one chain's shared state (all read at one etcd revision).
#[derive(Debug, Clone, Default)]
pub struct View {
    pub revision: i64,
    pub leader: Option<LeaderInfo>,
    pub head: Option<HeadRecord>,
    /// The head key's mod revision (0 = absent), for [`swap_head`].
    pub head_rev: i64,
    pub stopped: Option<StoppedRecord>,
    pub members: BTreeMap<String, MemberRecord>,
    pub election_stopped: bool,
    pub transfer: Option<TransferRecord>,
    /// The configured membership and its key's mod revision (for compare-and-swap); None =
    /// open membership (every live sidecar is a voter).
    pub membership: Option<(Membership, i64)>,
}

impl View {
    /// A transfer that has not expired. The record is bound to an etcd lease whose TTL is the
    /// transfer window, so etcd's clock alone decides when it lapses (hosts' wall clocks may
    /// disagree); `expires_ms` is informational.
    pub fn pending_transfer(&self) -> Option<&TransferRecord> {
        self.transfer.as_ref()
    }

    /// The highest block any leader recorded (committed head or stopped head).
    pub fn recorded_head(&self) -> Option<crate::sequencer::BlockId> {
        let head = self.head.as_ref().map(HeadRecord::block);
        let stopped = self.stopped.as_ref().map(|s| crate::sequencer::BlockId {
            number: s.number,
            hash: s.hash.clone(),
        });
        match (head, stopped) {
            (Some(h), Some(s)) => Some(if s.number > h.number { s } else { h }),
            (h, s) => h.or(s),
        }
    }

    /// True when no leader ever recorded anything: the first start of a chain.
    pub fn store_empty(&self) -> bool {
        self.head.is_none() && self.stopped.is_none()
    }

    /// May `id` lead? Every live sidecar under open membership; configured voters otherwise.
    pub fn may_lead(&self, id: &str) -> bool {
        self.membership.as_ref().is_none_or(|(m, _)| m.is_voter(id))
    }

    pub fn leader_member(&self) -> Option<&MemberRecord> {
        self.leader.as_ref().and_then(|l| self.members.get(&l.id))
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "ignoring undecodable record");
            None
        }
    }
}

/// Reads the whole view in one Txn of range reads.
pub async fn read_view(e: &Election) -> Result<View, ElectionError> {
    let k = e.keys();
    let prefix = || Some(GetOptions::new().with_prefix());
    let txn = Txn::new().and_then(vec![
        TxnOp::get(k.leader_dir(), prefix()),
        TxnOp::get(k.head(), None),
        TxnOp::get(k.stopped(), None),
        TxnOp::get(k.members_dir(), prefix()),
        TxnOp::get(k.control_dir(), prefix()),
    ]);
    let resp = e.txn(txn).await?;
    let mut view = View {
        revision: resp.header().map(|h| h.revision()).unwrap_or_default(),
        ..View::default()
    };
    let gets = get_responses(&resp);
    if gets.len() != 5 {
        return Err(ElectionError::Etcd(format!(
            "view read returned {} ranges, expected 5",
            gets.len()
        )));
    }
    view.leader = leader_of(gets[0].kvs());
    if let Some(kv) = gets[1].kvs().first() {
        view.head = decode(kv.key(), kv.value());
        view.head_rev = kv.mod_revision();
    }
    view.stopped = gets[2]
        .kvs()
        .first()
        .and_then(|kv| decode(kv.key(), kv.value()));
    for kv in gets[3].kvs() {
        if let Some(m) = decode::<MemberRecord>(kv.key(), kv.value()) {
            view.members.insert(m.id.clone(), m);
        }
    }
    for kv in gets[4].kvs() {
        let key = String::from_utf8_lossy(kv.key());
        if key == k.election_stopped() {
            view.election_stopped = true;
        } else if key == k.transfer() {
            view.transfer = decode(kv.key(), kv.value());
        } else if key == k.membership() {
            view.membership =
                decode::<Membership>(kv.key(), kv.value()).map(|m| (m, kv.mod_revision()));
        }
    }
    Ok(view)
}

/// Puts this sidecar's member record, bound to its lease.
pub async fn put_member(e: &Election, lease: i64, m: &MemberRecord) -> Result<(), ElectionError> {
    let value = serde_json::to_vec(m).map_err(|err| ElectionError::Etcd(err.to_string()))?;
    let key = e.keys().member(&m.id);
    e.run(|c| async move {
        c.kv_client()
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
    })
    .await
    .map(|_| ())
}

pub async fn set_election_stopped(e: &Election, stopped: bool) -> Result<(), ElectionError> {
    let key = e.keys().election_stopped();
    if stopped {
        let value = format!("stopped at {}", unix_ms());
        e.run(|c| async move { c.kv_client().put(key, value, None).await })
            .await
            .map(|_| ())
    } else {
        e.run(|c| async move { c.kv_client().delete(key, None).await })
            .await
            .map(|_| ())
    }
}

/// Records a transfer request, only if `leader` still holds the key with its epoch (or, with no
/// leader, only if there still is none), so a request based on a stale view changes nothing.
pub async fn put_transfer(
    e: &Election,
    leader: Option<&LeaderInfo>,
    t: &TransferRecord,
    window: Duration,
) -> Result<bool, ElectionError> {
    let value = serde_json::to_vec(t).map_err(|err| ElectionError::Etcd(err.to_string()))?;
    // The record lives exactly as long as a lease of the window's length: expiry by etcd's
    // clock, not by comparing wall clocks across hosts.
    let ttl = window.as_secs().max(1) as i64 + i64::from(window.subsec_nanos() > 0);
    let lease = e
        .run(|c| async move { c.lease_client().grant(ttl, None).await })
        .await?
        .id();
    let cmp = match leader {
        Some(l) => Compare::create_revision(l.key.clone(), CompareOp::Equal, l.epoch),
        None => Compare::create_revision(e.keys().leader_dir(), CompareOp::Equal, 0).with_prefix(),
    };
    let txn = Txn::new().when(vec![cmp]).and_then(vec![TxnOp::put(
        e.keys().transfer(),
        value,
        Some(PutOptions::new().with_lease(lease)),
    )]);
    Ok(e.txn(txn).await?.succeeded())
}

/// Replaces the head record with `new` only if it is still the version read at `mod_rev` and
/// the leadership is still as seen (`leader`, or no leader key at all): whatever a leader
/// committed or started since wins. Not fenced by an epoch: only for the operator's override,
/// whose blocks are not fenced either.
pub async fn swap_head(
    e: &Election,
    mod_rev: i64,
    leader: Option<&LeaderInfo>,
    new: &HeadRecord,
) -> Result<bool, ElectionError> {
    let value = serde_json::to_vec(new).map_err(|err| ElectionError::Etcd(err.to_string()))?;
    let key = e.keys().head();
    let leadership = match leader {
        Some(l) => Compare::create_revision(l.key.clone(), CompareOp::Equal, l.epoch),
        None => Compare::create_revision(e.keys().leader_dir(), CompareOp::Equal, 0).with_prefix(),
    };
    let txn = Txn::new()
        .when(vec![
            Compare::mod_revision(key.clone(), CompareOp::Equal, mod_rev),
            leadership,
        ])
        .and_then(vec![TxnOp::put(key, value, None)]);
    Ok(e.txn(txn).await?.succeeded())
}

/// Deletes the transfer record if it is still exactly `t`.
pub async fn clear_transfer(e: &Election, t: &TransferRecord) -> Result<(), ElectionError> {
    let value = serde_json::to_vec(t).map_err(|err| ElectionError::Etcd(err.to_string()))?;
    let txn = Txn::new()
        .when(vec![Compare::value(
            e.keys().transfer(),
            CompareOp::Equal,
            value,
        )])
        .and_then(vec![TxnOp::delete(e.keys().transfer(), None)]);
    e.txn(txn).await.map(|_| ())
}

/// Deletes the transfer record if it names `target` and was written before revision `before`
/// (compare-and-swap on the record as read), so a target that gave way does not keep holding
/// back the candidates a transfer defers. `before` is the epoch of the term the target gives up:
/// the transfer that brought it in is older, while a new request naming it again (made after it
/// resigned) is newer and stays. Returns true when a record was deleted.
pub async fn drop_transfer_to(
    e: &Election,
    target: &str,
    before: i64,
) -> Result<bool, ElectionError> {
    let key = e.keys().transfer();
    let resp = e
        .txn(Txn::new().and_then(vec![TxnOp::get(key.clone(), None)]))
        .await?;
    let Some(kv) = get_responses(&resp)
        .first()
        .and_then(|g| g.kvs().first().cloned())
    else {
        return Ok(false);
    };
    if kv.mod_revision() >= before {
        return Ok(false);
    }
    match decode::<TransferRecord>(kv.key(), kv.value()) {
        Some(t) if t.target == target => {}
        _ => return Ok(false),
    }
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then(vec![TxnOp::delete(key, None)]);
    Ok(e.txn(txn).await?.succeeded())
}

/// A membership change that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error(
        "membership version is {current}, not {given}: it changed meanwhile; re-read it and retry"
    )]
    Version { given: u64, current: u64 },
    #[error("membership changed concurrently; retry")]
    Raced,
    #[error(transparent)]
    Etcd(#[from] ElectionError),
}

/// The membership as `conductor_clusterMembership` reports it: the configured servers, or
/// under open membership every live sidecar as a voter (version 0).
pub fn effective_membership(v: &View) -> Membership {
    match &v.membership {
        Some((m, _)) => m.clone(),
        None => Membership {
            servers: v
                .members
                .values()
                .map(|m| Server {
                    id: m.id.clone(),
                    addr: m.rpc.clone(),
                    suffrage: VOTER,
                })
                .collect(),
            version: 0,
        },
    }
}

/// Applies `change` to the membership in one compare-and-swap. The first change seeds the
/// configured membership from the live sidecars (all voters), so a running cluster keeps its
/// leader and candidates. `prev` is raft's prevIndex: 0 = any version. `change` returns
/// whether it changed anything; an unchanged membership is not rewritten (idempotent, and the
/// version stays).
pub async fn update_membership(
    e: &Election,
    prev: u64,
    change: impl Fn(&mut Vec<Server>) -> bool,
) -> Result<Membership, MembershipError> {
    let view = read_view(e).await?;
    let mut m = effective_membership(&view);
    if prev != 0 && prev != m.version {
        return Err(MembershipError::Version {
            given: prev,
            current: m.version,
        });
    }
    if !change(&mut m.servers) && view.membership.is_some() {
        return Ok(m);
    }
    m.version += 1;
    let value = serde_json::to_vec(&m).map_err(|err| ElectionError::Etcd(err.to_string()))?;
    let key = e.keys().membership();
    let cmp = match &view.membership {
        Some((_, rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
        None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
    };
    let txn = Txn::new()
        .when(vec![cmp])
        .and_then(vec![TxnOp::put(key, value, None)]);
    if e.txn(txn).await?.succeeded() {
        Ok(m)
    } else {
        Err(MembershipError::Raced)
    }
}

/// Who an unhealthy leader hands over to: an unpaused member at most one block behind the
/// reference head (ours or the recorded one), excluding `me`. Healthy members first; then members
/// whose only problem is a stale head, because when the leader stops producing every follower's
/// head goes stale too, and refusing them would halt the chain (L2). Among equals, the highest head.
pub fn best_candidate(view: &View, me: &str, my_head: Option<&BlockId>) -> Option<String> {
    let reference = my_head
        .map(|b| b.number)
        .into_iter()
        .chain(view.recorded_head().map(|b| b.number))
        .max()
        .unwrap_or(0);
    view.members
        .values()
        .filter(|m| m.id != me && !m.paused && (m.healthy || m.only_stale) && view.may_lead(&m.id))
        .filter_map(|m| m.head.as_ref().map(|h| (m.healthy, h.number, m.id.clone())))
        .filter(|(_, n, _)| n + 1 >= reference)
        .max()
        .map(|(_, _, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, healthy: bool, n: u64) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            rpc: String::new(),
            node: String::new(),
            healthy,
            only_stale: !healthy,
            paused: false,
            active: false,
            head: Some(BlockId {
                number: n,
                hash: format!("0x{n:x}"),
            }),
            version: String::new(),
        }
    }

    #[test]
    fn candidate_must_be_healthy_and_caught_up() {
        let mut v = View::default();
        for m in [
            member("a", true, 10),
            member("b", false, 10),
            member("c", true, 7),
            member("d", true, 9),
        ] {
            v.members.insert(m.id.clone(), m);
        }
        let head = BlockId {
            number: 10,
            hash: "0xa".into(),
        };
        assert_eq!(best_candidate(&v, "me", Some(&head)), Some("a".into()));
        assert_eq!(best_candidate(&v, "a", Some(&head)), Some("d".into()));
        v.members.remove("d");
        v.members.get_mut("b").expect("b").only_stale = false;
        assert_eq!(
            best_candidate(&v, "a", Some(&head)),
            None,
            "b unreachable, c three blocks behind"
        );
    }

    #[test]
    fn stale_but_caught_up_member_is_a_candidate_when_no_one_is_healthy() {
        // The leader stalled: every follower's head is as old as the leader's.
        let mut v = View::default();
        for m in [
            member("a", false, 10),
            member("b", false, 10),
            member("c", true, 6),
        ] {
            v.members.insert(m.id.clone(), m);
        }
        let head = BlockId {
            number: 10,
            hash: "0xa".into(),
        };
        assert_eq!(best_candidate(&v, "a", Some(&head)), Some("b".into()));
        v.members.get_mut("b").expect("b").only_stale = false;
        assert_eq!(
            best_candidate(&v, "a", Some(&head)),
            None,
            "an unreachable node is never a candidate"
        );
        v.members.insert("d".into(), member("d", true, 9));
        v.members.get_mut("b").expect("b").only_stale = true;
        assert_eq!(
            best_candidate(&v, "a", Some(&head)),
            Some("d".into()),
            "healthy beats stale"
        );
    }
}
