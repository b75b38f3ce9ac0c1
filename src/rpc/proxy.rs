//! Forwards read calls to the leader's node, through the leader's sidecar when that is not us; passes params and results through as raw bytes and upstream errors unchanged.

use std::time::Duration;

use serde_json::value::RawValue;

use super::client::CallError;
use super::error::RpcError;
use super::methods::CallCtx;
use crate::status::Shared;

/// Which of the leader's processes answers a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    OpNode,
    OpGeth,
}

/// op-conductor's text for the same situation, kept so tooling that matches on it still works.
pub const NOT_LEADER: &str = "refusing to proxy request to non-leader sequencer";
pub const NO_LEADER: &str = "no leader: no sequencer is active";

const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

fn upstream_error(e: CallError) -> RpcError {
    match e {
        CallError::Rpc(obj) => RpcError::Upstream(obj),
        CallError::TooLarge { reason, .. } => RpcError::LimitExceeded(reason),
        other => RpcError::Server(format!("leader unreachable: {other}")),
    }
}

pub async fn forward(
    s: &Shared,
    upstream: Upstream,
    method: &str,
    params: &RawValue,
    ctx: &CallCtx<'_>,
) -> Result<Box<RawValue>, RpcError> {
    if s.leader_now().is_some() {
        let url = match upstream {
            Upstream::OpNode => s.config.node_rpc.as_str(),
            Upstream::OpGeth => s.config.execution_rpc.as_str(),
        };
        return s
            .http
            .call_raw_gated(url, method, params, &[], FORWARD_TIMEOUT, ctx.gate)
            .await
            .map_err(upstream_error);
    }
    if ctx.forwarded {
        return Err(RpcError::Server(NOT_LEADER.into()));
    }
    let leader = s.status.borrow().leader.clone();
    match leader {
        None => Err(RpcError::Server(NO_LEADER.into())),
        Some(l) if l.id == s.config.server_id => Err(RpcError::Server(
            "this sidecar is taking over; retry shortly".into(),
        )),
        Some(l) => {
            let Some(url) = l.rpc else {
                return Err(RpcError::Server(format!(
                    "leader {} has not advertised an RPC URL",
                    l.id
                )));
            };
            s.http
                .call_peer(&url, method, params, FORWARD_TIMEOUT, ctx.gate)
                .await
                .map_err(upstream_error)
        }
    }
}
