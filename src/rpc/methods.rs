//! One arm per JSON-RPC method this sidecar serves: parameter decoding and the answer; transport lives in `server`, forwarding in `proxy`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::client::{AnswerGate, CallError};
use crate::commit::{CommitError, Envelope};

use super::error::RpcError;
use super::proxy::{self, Upstream};
use super::types::{raw_empty_params, raw_null, to_raw};
use crate::cluster;
use crate::state::{Server, NONVOTER, VOTER};
use crate::status::{Command, Shared, VERSION};
use crate::transfer::{self, TransferError};

/// Every method name answered here, for metric labels (unknown names are folded into one label).
pub const KNOWN: &[&str] = &[
    "coordinator_getMaster",
    "coordinator_getActiveSequencer",
    "coordinator_setMaster",
    "coordinator_setActiveSequencer",
    "coordinator_startElection",
    "coordinator_stopElection",
    "coordinator_electionStopped",
    "coordinator_getStoppedHash",
    "coordinator_version",
    "coordinator_requestBuildingBlock",
    "optimism_syncStatus",
    "optimism_outputAtBlock",
    "optimism_rollupConfig",
    "optimism_version",
    "eth_getBlockByNumber",
    "admin_sequencerActive",
    "conductor_leader",
    "conductor_leaderWithID",
    "conductor_active",
    "conductor_paused",
    "conductor_stopped",
    "conductor_sequencerHealthy",
    "conductor_pause",
    "conductor_resume",
    "conductor_stop",
    "conductor_commitUnsafePayload",
    "conductor_overrideLeader",
    "conductor_leaderOverridden",
    "conductor_transferLeader",
    "conductor_transferLeaderToServer",
    "conductor_clusterMembership",
    "conductor_addServerAsVoter",
    "conductor_addServerAsNonvoter",
    "conductor_removeServer",
    "conductor_demoteVoter",
    "health_status",
    "rpc_modules",
    "miner_setMaxDASize",
    "sidecar_status",
];

pub fn is_known(method: &str) -> bool {
    KNOWN.contains(&method)
}

/// The time limit for answering `method`. Transfers wait for the target to lead, bounded by the
/// transfer window; cutting them off earlier would report a failure for a transfer that then
/// completes (op-conductor #22924).
pub fn time_limit(s: &Shared, method: &str) -> std::time::Duration {
    match method {
        "coordinator_setMaster"
        | "coordinator_setActiveSequencer"
        | "conductor_transferLeader"
        | "conductor_transferLeaderToServer" => s
            .config
            .rpc_timeout
            .max(transfer::window(s) + std::time::Duration::from_secs(5)),
        _ => s.config.rpc_timeout,
    }
}

/// Decodes positional params; absent or null params count as `[]`.
fn params<T: DeserializeOwned>(p: Option<&RawValue>) -> Result<T, RpcError> {
    let text = match p.map(RawValue::get) {
        None | Some("null") => "[]",
        Some(t) => t,
    };
    serde_json::from_str(text).map_err(|e| RpcError::InvalidParams(e.to_string()))
}

fn ok<T: Serialize>(v: T) -> Result<Box<RawValue>, RpcError> {
    Ok(to_raw(&v))
}

fn etcd(e: impl std::fmt::Display) -> RpcError {
    RpcError::Etcd(e.to_string())
}

impl From<TransferError> for RpcError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Etcd(inner) => RpcError::Etcd(inner.to_string()),
            other => RpcError::Server(other.to_string()),
        }
    }
}

/// What a call needs to know about the request it came in.
pub struct CallCtx<'a> {
    /// Sent by another sidecar: never forwarded again.
    pub forwarded: bool,
    /// Admits the bytes of proxied answers (the request's share of the server's byte budget).
    pub gate: &'a dyn AnswerGate,
    /// When the request started to arrive and how long its body took to read (the commit
    /// metrics' `receive` and `total` stages).
    pub received: (Instant, Duration),
}

pub async fn call(
    s: &Shared,
    method: &str,
    p: Option<&RawValue>,
    ctx: &CallCtx<'_>,
) -> Result<Box<RawValue>, RpcError> {
    match method {
        // === coordinator_* (the op-coordinator seed design) ===
        "coordinator_getMaster" | "coordinator_getActiveSequencer" => {
            let () = no_params(p)?;
            let leader = s.election.leader().await.map_err(etcd)?;
            ok(leader.map(|l| l.id))
        }
        "coordinator_setMaster" | "coordinator_setActiveSequencer" => {
            let (id,): (String,) = params(p)?;
            transfer::transfer_to(s, &id).await?;
            Ok(raw_null())
        }
        "coordinator_startElection" => {
            let () = no_params(p)?;
            cluster::set_election_stopped(&s.election, false)
                .await
                .map_err(etcd)?;
            tracing::info!("election started by operator");
            Ok(raw_null())
        }
        "coordinator_stopElection" => {
            let () = no_params(p)?;
            cluster::set_election_stopped(&s.election, true)
                .await
                .map_err(etcd)?;
            tracing::warn!("election stopped by operator: leadership is frozen");
            Ok(raw_null())
        }
        "coordinator_electionStopped" => {
            let () = no_params(p)?;
            ok(cluster::read_view(&s.election)
                .await
                .map_err(etcd)?
                .election_stopped)
        }
        "coordinator_getStoppedHash" => {
            let () = no_params(p)?;
            ok(cluster::read_view(&s.election)
                .await
                .map_err(etcd)?
                .stopped
                .map(|st| st.hash))
        }
        // op-service's RPC server registers these on every OP Stack service's RPC port.
        "health_status" => {
            let () = no_params(p)?;
            ok(VERSION)
        }
        "rpc_modules" => {
            let () = no_params(p)?;
            ok(json!({
                "admin": "1.0", "conductor": "1.0", "coordinator": "1.0", "eth": "1.0",
                "health": "1.0", "miner": "1.0", "optimism": "1.0", "rpc": "1.0",
            }))
        }
        "coordinator_version" => {
            let () = no_params(p)?;
            ok(VERSION)
        }
        "coordinator_requestBuildingBlock" => {
            let (id,): (String,) = params(p)?;
            request_building_block(s, &id)
        }

        // === read methods proxied to the leader's node ===
        "optimism_syncStatus"
        | "optimism_outputAtBlock"
        | "optimism_rollupConfig"
        | "optimism_version"
        | "admin_sequencerActive" => {
            proxy::forward(s, Upstream::OpNode, method, &raw_params(p), ctx).await
        }
        "eth_getBlockByNumber" => {
            proxy::forward(s, Upstream::OpGeth, method, &raw_params(p), ctx).await
        }

        // === conductor_* (op-conductor's API) ===
        "conductor_leader" => {
            let () = no_params(p)?;
            ok(s.leader_now().is_some() || s.leader_override.load(Ordering::SeqCst))
        }
        "conductor_commitUnsafePayload" => {
            // Borrowed from the request body and scanned for its three block fields only: a
            // 10 MiB block is neither parsed nor copied here (the server already checked it is
            // JSON).
            let envelope = crate::commit::scan_param(p.map_or("[]", RawValue::get))
                .map_err(|e| RpcError::InvalidParams(e.to_string()))?;
            commit_unsafe_payload(s, &envelope, ctx.received).await
        }
        "conductor_overrideLeader" => {
            let (on,): (bool,) = params(p)?;
            let was = s.leader_override.swap(on, Ordering::SeqCst);
            if was && !on {
                s.override_cleared.store(true, Ordering::SeqCst);
            }
            if on {
                tracing::warn!("leader overridden by operator: conductor_leader answers true and commits are NOT fenced");
            } else {
                tracing::info!("leader override cleared");
            }
            Ok(raw_null())
        }
        "conductor_leaderOverridden" => {
            let () = no_params(p)?;
            ok(s.leader_override.load(Ordering::SeqCst))
        }
        "conductor_transferLeader" => {
            let () = no_params(p)?;
            if s.leader_now().is_none() {
                // op-conductor swallows raft's not-leader error: on a follower this is a no-op.
                tracing::info!("conductor_transferLeader on a follower: nothing to do");
                return Ok(raw_null());
            }
            let view = cluster::read_view(&s.election).await.map_err(etcd)?;
            let me = view
                .leader
                .as_ref()
                .map(|l| l.id.clone())
                .unwrap_or_default();
            let head = view.leader_member().and_then(|m| m.head.clone());
            let target =
                crate::cluster::best_candidate(&view, &me, head.as_ref()).ok_or_else(|| {
                    RpcError::Server(
                        "no healthy, caught-up server to transfer leadership to".into(),
                    )
                })?;
            transfer::transfer_to(s, &target).await?;
            Ok(raw_null())
        }
        "conductor_transferLeaderToServer" => {
            let (id, addr): (String, String) = params(p)?;
            let view = cluster::read_view(&s.election).await.map_err(etcd)?;
            if let Some(m) = view.members.get(&id) {
                if !addr.is_empty() && m.rpc.trim_end_matches('/') != addr.trim_end_matches('/') {
                    tracing::warn!(id, given = %addr, registered = %m.rpc, "transfer address differs from the registered one; using the registered one");
                }
            }
            transfer::transfer_to(s, &id).await?;
            Ok(raw_null())
        }
        "conductor_clusterMembership" => {
            let () = no_params(p)?;
            let view = cluster::read_view(&s.election).await.map_err(etcd)?;
            ok(cluster::effective_membership(&view))
        }
        "conductor_addServerAsVoter" | "conductor_addServerAsNonvoter" => {
            let (id, addr, version) = server_params(p)?;
            let suffrage = if method == "conductor_addServerAsVoter" {
                VOTER
            } else {
                NONVOTER
            };
            let m = cluster::update_membership(&s.election, version, |servers| {
                match servers.iter_mut().find(|x| x.id == id) {
                    // Raft: adding an existing voter as a voter is a no-op; adding a voter as a
                    // non-voter leaves it a voter (demote with conductor_demoteVoter).
                    Some(x) => {
                        let promote = suffrage == VOTER && x.suffrage != VOTER;
                        let moved = !addr.is_empty() && x.addr != addr;
                        if promote {
                            x.suffrage = VOTER;
                        }
                        if moved {
                            x.addr = addr.clone();
                        }
                        promote || moved
                    }
                    None => {
                        servers.push(Server {
                            id: id.clone(),
                            addr: addr.clone(),
                            suffrage,
                        });
                        true
                    }
                }
            })
            .await
            .map_err(membership_error)?;
            tracing::info!(
                id,
                addr,
                suffrage,
                version = m.version,
                "membership: server added"
            );
            Ok(raw_null())
        }
        "conductor_removeServer" | "conductor_demoteVoter" => {
            let (id, version): (String, u64) = params(p)?;
            let demote = method == "conductor_demoteVoter";
            let m = cluster::update_membership(&s.election, version, |servers| {
                if demote {
                    match servers
                        .iter_mut()
                        .find(|x| x.id == id && x.suffrage == VOTER)
                    {
                        Some(x) => {
                            x.suffrage = NONVOTER;
                            true
                        }
                        None => false,
                    }
                } else {
                    let before = servers.len();
                    servers.retain(|x| x.id != id);
                    servers.len() != before
                }
            })
            .await
            .map_err(membership_error)?;
            tracing::info!(
                id,
                demote,
                version = m.version,
                "membership: server removed or demoted"
            );
            Ok(raw_null())
        }
        "miner_setMaxDASize" => set_max_da_size(s, p, ctx.forwarded).await,
        // This sidecar's own view, from memory (no etcd or node call): `op-sidecar ctl status`
        // asks every member for it.
        "sidecar_status" => {
            let () = no_params(p)?;
            ok(local_status(s))
        }
        "conductor_leaderWithID" => {
            let () = no_params(p)?;
            let leader = s.election.leader().await.map_err(etcd)?;
            let view = cluster::read_view(&s.election).await.map_err(etcd)?;
            if s.leader_override.load(Ordering::SeqCst) {
                return ok(json!({"id": "N/A (Leader overridden)", "addr": "N/A", "suffrage": 0}));
            }
            match leader {
                Some(l) => {
                    let addr = view
                        .members
                        .get(&l.id)
                        .map(|m| m.rpc.clone())
                        .unwrap_or_default();
                    let suffrage = view
                        .membership
                        .as_ref()
                        .and_then(|(m, _)| m.get(&l.id).map(|x| x.suffrage))
                        .unwrap_or(VOTER);
                    ok(json!({"id": l.id, "addr": addr, "suffrage": suffrage}))
                }
                // op-conductor answers an empty server, not an error.
                None => ok(json!({"id": "", "addr": "", "suffrage": 0})),
            }
        }
        "conductor_active" => {
            let () = no_params(p)?;
            let (paused, stopped, shutting_down) = {
                let st = s.status.borrow();
                (st.paused, st.stopped, st.shutting_down)
            };
            ok(!paused && !stopped && !shutting_down)
        }
        "conductor_paused" => {
            let () = no_params(p)?;
            ok(s.status.borrow().paused)
        }
        "conductor_stopped" => {
            let () = no_params(p)?;
            let (stopped, shutting_down) = {
                let st = s.status.borrow();
                (st.stopped, st.shutting_down)
            };
            ok(stopped || shutting_down)
        }
        "conductor_stop" => {
            let () = no_params(p)?;
            let (tx, rx) = oneshot::channel();
            s.commands
                .send(Command::Stop(tx))
                .await
                .map_err(|_| RpcError::Server("sidecar is shutting down".into()))?;
            rx.await
                .map_err(|_| RpcError::Server("sidecar is shutting down".into()))?;
            Ok(raw_null())
        }
        "conductor_sequencerHealthy" => {
            let () = no_params(p)?;
            ok(s.health.borrow().healthy)
        }
        "conductor_pause" | "conductor_resume" => {
            let () = no_params(p)?;
            set_paused(s, method == "conductor_pause").await?;
            Ok(raw_null())
        }
        _ => Err(RpcError::MethodNotFound(method.to_string())),
    }
}

/// `(id, addr, version)` of the add-server calls; op-conductor-ops sends all three.
fn server_params(p: Option<&RawValue>) -> Result<(String, String, u64), RpcError> {
    let v: Vec<serde_json::Value> = params(p)?;
    let id = v
        .first()
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RpcError::InvalidParams("argument 0 must be a server id".into()))?;
    let addr = v
        .get(1)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let version = match v.get(2) {
        None | Some(serde_json::Value::Null) => 0,
        Some(x) => x
            .as_u64()
            .ok_or_else(|| RpcError::InvalidParams("argument 2 must be a version number".into()))?,
    };
    Ok((id.to_string(), addr.to_string(), version))
}

fn membership_error(e: cluster::MembershipError) -> RpcError {
    match e {
        cluster::MembershipError::Etcd(e) => etcd(e),
        other => RpcError::Server(other.to_string()),
    }
}

fn no_params(p: Option<&RawValue>) -> Result<(), RpcError> {
    let v: Vec<serde_json::Value> = params(p)?;
    if v.is_empty() {
        Ok(())
    } else {
        Err(RpcError::InvalidParams(format!(
            "expected no params, got {}",
            v.len()
        )))
    }
}

fn raw_params(p: Option<&RawValue>) -> Box<RawValue> {
    p.map(ToOwned::to_owned).unwrap_or_else(raw_empty_params)
}

/// Answered from memory with the monotonic clock: yes only for our own id while the gate is up
/// and the lease is locally valid.
fn request_building_block(s: &Shared, id: &str) -> Result<Box<RawValue>, RpcError> {
    if s.leader_now().is_some() {
        if id == s.config.server_id {
            return Ok(raw_null());
        }
        return Err(RpcError::Server("unmatched active sequencer".into()));
    }
    // Copied out: a guard held by a `match` scrutinee lives through every arm.
    let leader = s.status.borrow().leader.clone();
    match leader {
        None => Err(RpcError::Server("empty active sequencer".into())),
        Some(l) if l.id != id => Err(RpcError::Server("unmatched active sequencer".into())),
        Some(_) => Err(RpcError::Server(format!(
            "{id} is not leading with a valid lease on this sidecar; ask its own sidecar"
        ))),
    }
}

async fn set_paused(s: &Shared, paused: bool) -> Result<(), RpcError> {
    let (tx, rx) = oneshot::channel();
    s.commands
        .send(Command::SetPaused(paused, tx))
        .await
        .map_err(|_| RpcError::Server("sidecar is shutting down".into()))?;
    rx.await
        .map_err(|_| RpcError::Server("sidecar is shutting down".into()))?
        .map_err(RpcError::Server)
}

/// The fence: commits only under a locally valid leadership, with the block's payload stored
/// before one etcd Txn guarded by the epoch moves the head. With the operator's leader override
/// the block passes unfenced (logged).
async fn commit_unsafe_payload(
    s: &Shared,
    envelope: &Envelope<'_>,
    (arrived, receive): (Instant, Duration),
) -> Result<Box<RawValue>, RpcError> {
    // From the body's last byte: the request's UTF-8 and JSON checks, the permit, the scan.
    let checked = (arrived + receive).elapsed();
    let Some(l) = s.leader_now() else {
        if s.leader_override.load(Ordering::SeqCst) {
            tracing::warn!("leader overridden: accepting a block without fencing");
            return Ok(raw_null());
        }
        s.metrics.action("commit", "not_leader");
        return Err(RpcError::Server(CommitError::NotLeader.to_string()));
    };
    match s
        .committer
        .commit(&s.election, &l, &s.config.server_id, envelope)
        .await
    {
        Ok(c) => {
            s.metrics.action("commit", "ok");
            // From the first byte of the request to now.
            let (decode, total) = (checked + c.pack, arrived.elapsed());
            if c.new {
                let m = &s.metrics;
                m.commit_stage("receive", receive);
                m.commit_stage("decode", decode);
                m.commit_stage("etcd", c.etcd);
                m.commit_stage("total", total);
                m.commit_stored_bytes.inc_by(c.stored_bytes as u64);
            }
            tracing::debug!(
                number = c.meta.number,
                hash = %c.meta.hash,
                new = c.new,
                stored_bytes = c.stored_bytes,
                receive = ?receive,
                decode = ?decode,
                etcd = ?c.etcd,
                "block committed"
            );
            Ok(raw_null())
        }
        Err(CommitError::Invalid(m)) => Err(RpcError::InvalidParams(m)),
        Err(e) => {
            s.metrics.action("commit", "refused");
            tracing::warn!(error = %e, "commit refused");
            Err(RpcError::Server(e.to_string()))
        }
    }
}

/// op-batcher's DA throttle: every node's own op-geth must get it (op-conductor learned this the
/// hard way), so a call from outside is applied locally and fanned out to the other sidecars.
async fn set_max_da_size(
    s: &Shared,
    p: Option<&RawValue>,
    forwarded: bool,
) -> Result<Box<RawValue>, RpcError> {
    let params = raw_params(p);
    let timeout = std::time::Duration::from_secs(5);
    let local = s
        .http
        .call_raw(
            &s.config.execution_rpc,
            "miner_setMaxDASize",
            &params,
            timeout,
        )
        .await;
    if !forwarded {
        if let Ok(view) = cluster::read_view(&s.election).await {
            let peers: Vec<_> = view
                .members
                .values()
                .filter(|m| m.id != s.config.server_id)
                .map(|m| m.rpc.clone())
                .collect();
            let calls = peers.iter().map(|url| {
                s.http.call_peer(
                    url,
                    "miner_setMaxDASize",
                    &params,
                    timeout,
                    &super::client::Ungated,
                )
            });
            for (url, r) in peers
                .iter()
                .zip(futures_util::future::join_all(calls).await)
            {
                if let Err(e) = r {
                    tracing::warn!(peer = %url, error = %e, "could not forward miner_setMaxDASize");
                }
            }
        }
    }
    local.map_err(|e| match e {
        CallError::Rpc(obj) => RpcError::Upstream(obj),
        other => RpcError::Server(format!("op-geth: {other}")),
    })
}

/// `sidecar_status`: what this sidecar knows about itself, copied out of the watch channels.
fn local_status(s: &Shared) -> serde_json::Value {
    let st = s.status_now();
    let health = s.health_now();
    let leading = s.leader_now();
    let lease_left = (*s.lease.borrow()).map(|l| {
        l.valid_until
            .saturating_duration_since(tokio::time::Instant::now())
            .as_millis() as u64
    });
    json!({
        "id": s.config.server_id,
        "version": VERSION,
        "commit": crate::status::COMMIT,
        "role": format!("{:?}", st.role).to_lowercase(),
        "leader": leading.is_some(),
        "epoch": leading.map(|l| l.epoch),
        "paused": st.paused,
        "stopped": st.stopped,
        "healthy": health.healthy,
        "problems": health.summary(),
        "node_reachable": health.reachable,
        "unsafe_head": health.head.as_ref().map(|h| json!({
            "number": h.number,
            "hash": h.hash,
            "timestamp": health.head_time,
        })),
        "election_stopped": st.election_stopped,
        "leader_overridden": s.leader_override.load(Ordering::SeqCst),
        "etcd_reachable": st.etcd_reachable,
        "lease_time_left_ms": lease_left,
        "mode": format!("{:?}", st.mode).to_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("valid json")
    }

    #[test]
    fn params_decoding() {
        let (id,): (String,) = params(Some(&raw("[\"seq-1\"]"))).expect("ok");
        assert_eq!(id, "seq-1");
        let e = params::<(String,)>(Some(&raw("[1]"))).unwrap_err();
        assert!(matches!(e, RpcError::InvalidParams(_)));
        assert!(no_params(None).is_ok());
        assert!(no_params(Some(&raw("null"))).is_ok());
        assert!(no_params(Some(&raw("[]"))).is_ok());
        assert!(no_params(Some(&raw("[1]"))).is_err());
    }
}
