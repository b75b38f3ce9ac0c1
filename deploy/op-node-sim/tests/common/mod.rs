//! Test helpers: JSON-RPC calls, polling, and a scriptable fake conductor/coordinator server.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use op_node_sim::rpc::{CallError, RpcClient};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub async fn call(url: &str, method: &str, params: Value) -> Result<Value, CallError> {
    RpcClient::new()
        .call(url, method, params, Duration::from_secs(3))
        .await
}

pub async fn call_timeout(
    url: &str,
    method: &str,
    params: Value,
    t: Duration,
) -> Result<Value, CallError> {
    RpcClient::new().call(url, method, params, t).await
}

/// The message of a JSON-RPC error answer (panics on success or transport error).
pub async fn rpc_err(url: &str, method: &str, params: Value) -> (i64, String) {
    match call(url, method, params).await {
        Err(CallError::Rpc(e)) => (e.code, e.message),
        other => panic!("{method}: expected a JSON-RPC error, got {other:?}"),
    }
}

/// Raw POST of a JSON body, returns the parsed JSON response.
pub async fn post_raw(url: &str, body: Value) -> Value {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn wait_until<F: FnMut() -> bool>(within: Duration, mut cond: F) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_until_async<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the fake conductor/coordinator answers and what it saw.
#[derive(Default)]
pub struct FakeState {
    pub leader: bool,
    pub commit_ok: bool,
    pub coordinator_allows: bool,
    pub leader_calls: u64,
    pub commit_calls: u64,
    pub coordinator_calls: u64,
    /// Envelopes accepted by conductor_commitUnsafePayload.
    pub committed: Vec<Value>,
}

pub struct FakeConductor {
    pub url: String,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeConductor {
    pub async fn start() -> FakeConductor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let st = st.clone();
                            async move {
                                let body = req.into_body().collect().await?.to_bytes();
                                let call: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                let out = answer(&st, &call);
                                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(
                                    serde_json::to_vec(&out).unwrap(),
                                ))))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeConductor {
            url: format!("http://{addr}"),
            state,
        }
    }
}

fn answer(st: &Mutex<FakeState>, call: &Value) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call.get("method").and_then(Value::as_str).unwrap_or("");
    let mut s = st.lock();
    let result: Result<Value, &str> = match method {
        "conductor_leader" => {
            s.leader_calls += 1;
            Ok(json!(s.leader))
        }
        "conductor_commitUnsafePayload" => {
            s.commit_calls += 1;
            if s.commit_ok {
                s.committed.push(call["params"][0].clone());
                Ok(Value::Null)
            } else {
                Err("not the leader")
            }
        }
        "coordinator_requestBuildingBlock" => {
            s.coordinator_calls += 1;
            if s.coordinator_allows {
                Ok(Value::Null)
            } else {
                Err("unmatched active sequencer")
            }
        }
        _ => Err("method not found"),
    };
    match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(m) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": m}}),
    }
}
