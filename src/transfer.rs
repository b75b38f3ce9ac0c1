//! Operator-requested leadership transfer: checks the target, records the request in etcd and waits until the target is sequencing; never calls the local sequencer.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{self, View};
use crate::election::ElectionError;
use crate::sequencer::NodeClient;
use crate::state::{unix_ms, TransferRecord};
use crate::status::Shared;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TransferError {
    #[error("unknown server {0}: no live sidecar with that id is registered")]
    Unknown(String),
    #[error("server {0} is not healthy; refusing to transfer leadership to it")]
    Unhealthy(String),
    #[error("server {0} is not a voter in the cluster membership; it may not lead")]
    NotVoter(String),
    #[error("server {0} is paused; resume it first")]
    Paused(String),
    #[error("server {id} is not caught up (head {have}, cluster head {want}); refusing to transfer leadership to it")]
    Behind { id: String, have: u64, want: u64 },
    #[error(
        "leadership changed while the transfer was being requested; nothing was changed, retry"
    )]
    Raced,
    #[error("transfer to {target} did not complete within {waited:?}; current leader: {leader}")]
    Timeout {
        target: String,
        waited: Duration,
        leader: String,
    },
    #[error("etcd unavailable: {0}")]
    Etcd(#[from] ElectionError),
}

/// How long a transfer may take: the target's catch-up bound plus two lease TTLs.
pub fn window(s: &Shared) -> Duration {
    s.config.catchup_timeout + s.config.lease_ttl * 2
}

/// Hands leadership to `target` and returns once its node is sequencing as leader.
pub async fn transfer_to(s: &Shared, target: &str) -> Result<(), TransferError> {
    let view = cluster::read_view(&s.election).await?;
    let member = view
        .members
        .get(target)
        .ok_or_else(|| TransferError::Unknown(target.to_string()))?;
    if !view.may_lead(target) {
        return Err(TransferError::NotVoter(target.to_string()));
    }
    if member.paused {
        return Err(TransferError::Paused(target.to_string()));
    }
    let already = view.leader.as_ref().is_some_and(|l| l.id == target);
    if !already {
        if !member.healthy {
            return Err(TransferError::Unhealthy(target.to_string()));
        }
        let want = cluster_head(&view);
        let have = member.head.as_ref().map(|h| h.number).unwrap_or(0);
        if have + 1 < want {
            return Err(TransferError::Behind {
                id: target.to_string(),
                have,
                want,
            });
        }
        let t = TransferRecord {
            target: target.to_string(),
            from: view
                .leader
                .as_ref()
                .map(|l| l.id.clone())
                .unwrap_or_default(),
            epoch: view.leader.as_ref().map(|l| l.epoch).unwrap_or(0),
            expires_ms: unix_ms() + window(s).as_millis() as u64,
        };
        if !cluster::put_transfer(&s.election, view.leader.as_ref(), &t, window(s)).await? {
            return Err(TransferError::Raced);
        }
        tracing::info!(target, from = %t.from, "leadership transfer requested");
        return wait(s, target, &member.node, Some(&t)).await;
    }
    wait(s, target, &member.node, None).await
}

fn cluster_head(view: &View) -> u64 {
    let leader_head = view
        .leader_member()
        .and_then(|m| m.head.as_ref())
        .map(|h| h.number);
    leader_head
        .into_iter()
        .chain(view.recorded_head().map(|b| b.number))
        .max()
        .unwrap_or(0)
}

async fn wait(
    s: &Shared,
    target: &str,
    node_url: &str,
    t: Option<&TransferRecord>,
) -> Result<(), TransferError> {
    let started = Instant::now();
    let deadline = started + window(s);
    let node = NodeClient::new(s.http.clone(), node_url, node_url, Duration::from_secs(2));
    let mut leader = String::from("none");
    while Instant::now() < deadline {
        if let Ok(view) = cluster::read_view(&s.election).await {
            leader = view
                .leader
                .as_ref()
                .map(|l| l.id.clone())
                .unwrap_or_else(|| "none".into());
            if leader == target && node.active().await.unwrap_or(false) {
                tracing::info!(target, elapsed = ?started.elapsed(), "leadership transfer complete");
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(t) = t {
        let _ = cluster::clear_transfer(&s.election, t).await;
    }
    Err(TransferError::Timeout {
        target: target.to_string(),
        waited: window(s),
        leader,
    })
}
