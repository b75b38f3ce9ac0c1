//! One arm per JSON-RPC method this sidecar serves: parameter decoding and the answer; transport lives in `server`, forwarding in `proxy`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::error::RpcError;
use super::proxy::{self, Upstream};
use super::types::{raw_empty_params, raw_null, to_raw};
use crate::app::{Command, Shared, VERSION};
use crate::cluster;
use crate::transfer::{self, TransferError};

/// Every method name answered here, for metric labels (unknown names are folded into one label).
const KNOWN: &[&str] = &[
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
];

pub fn is_known(method: &str) -> bool {
    KNOWN.contains(&method)
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

pub async fn call(
    s: &Shared,
    method: &str,
    p: Option<&RawValue>,
    forwarded: bool,
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
            proxy::forward(s, Upstream::OpNode, method, &raw_params(p), forwarded).await
        }
        "eth_getBlockByNumber" => {
            proxy::forward(s, Upstream::OpGeth, method, &raw_params(p), forwarded).await
        }

        // === conductor_* (op-conductor's API) ===
        "conductor_leader" => {
            let () = no_params(p)?;
            ok(s.leader_now().is_some())
        }
        "conductor_leaderWithID" => {
            let () = no_params(p)?;
            let leader = s.election.leader().await.map_err(etcd)?;
            let view = cluster::read_view(&s.election).await.map_err(etcd)?;
            match leader {
                Some(l) => {
                    let addr = view
                        .members
                        .get(&l.id)
                        .map(|m| m.rpc.clone())
                        .unwrap_or_default();
                    ok(json!({"id": l.id, "addr": addr, "suffrage": 0}))
                }
                None => Err(RpcError::Server("no leader".into())),
            }
        }
        "conductor_active" => {
            let () = no_params(p)?;
            let st = s.status.borrow();
            ok(!st.paused && !st.shutting_down)
        }
        "conductor_paused" => {
            let () = no_params(p)?;
            ok(s.status.borrow().paused)
        }
        "conductor_stopped" => {
            let () = no_params(p)?;
            ok(s.status.borrow().shutting_down)
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
    match s.status.borrow().leader.as_ref() {
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
        .map_err(|_| RpcError::Server("sidecar is shutting down".into()))
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
