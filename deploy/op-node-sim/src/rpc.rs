//! JSON-RPC 2.0 over HTTP: a cancellable server (with batches) and a small client.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (payloads can be hundreds of KiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Bodies above this size are parsed and serialized on a blocking thread.
pub(crate) const LARGE_BODY: usize = 1 << 20;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    /// A handler error: code -32000 with the Go error text, as op-node sends it.
    pub fn server(message: impl Into<String>) -> Self {
        RpcError {
            code: -32000,
            message: message.into(),
        }
    }

    pub fn method_not_found(method: &str) -> Self {
        RpcError {
            code: -32601,
            message: format!("the method {method} does not exist/is not available"),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError {
            code: -32602,
            message: message.into(),
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub(crate) type RpcFuture = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;
/// Dispatches one call: (method, params) -> result.
pub(crate) type Handler = Arc<dyn Fn(String, Value) -> RpcFuture + Send + Sync>;

/// Binds 127.0.0.1:port with SO_REUSEADDR (port 0 = ephemeral).
pub(crate) fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

/// Binds, retrying for a while if the port is still held (a restart right after a crash).
pub(crate) async fn bind_retry(port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..60 {
        match bind(port) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

/// Stops a listener synchronously: new connections are refused from this call on.
pub(crate) fn close_listener(listener: &TcpListener) {
    let _ = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Both);
}

/// Serves JSON-RPC on `listener` until `token` is cancelled; cancellation also drops every
/// open connection (and any request hanging in it).
pub(crate) fn serve(listener: Arc<TcpListener>, token: CancellationToken, handler: Handler) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = token.cancelled() => break,
                r = listener.accept() => r,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(_) => {
                    // Closed by close_listener, or a transient error: wait for cancellation.
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let h = handler.clone();
            let t = token.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle_http(req, h.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    biased;
                    _ = t.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
}

async fn handle_http(
    req: Request<Incoming>,
    handler: Handler,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(http_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from(e.to_string()),
            ))
        }
    };
    // Multi-MB bodies (posted payloads) are parsed off the runtime, which the nodes share with
    // each other and, in tests, with the test itself: a real op-node is its own process.
    let parsed = if body.len() > LARGE_BODY {
        let b = body.clone();
        tokio::task::spawn_blocking(move || serde_json::from_slice::<Value>(&b))
            .await
            .unwrap_or_else(|e| Ok(json!({"error": e.to_string()})))
    } else {
        serde_json::from_slice::<Value>(&body)
    };
    let out = match parsed {
        Err(e) => error_response(
            Value::Null,
            &RpcError {
                code: -32700,
                message: format!("parse error: {e}"),
            },
        ),
        Ok(Value::Array(calls)) => {
            if calls.is_empty() {
                error_response(
                    Value::Null,
                    &RpcError {
                        code: -32600,
                        message: "empty batch".into(),
                    },
                )
            } else {
                let mut outs = Vec::with_capacity(calls.len());
                for c in calls {
                    outs.push(handle_call(c, &handler).await);
                }
                Value::Array(outs)
            }
        }
        Ok(call) => handle_call(call, &handler).await,
    };
    let bytes = serde_json::to_vec(&out).unwrap_or_default();
    Ok(http_response(StatusCode::OK, Bytes::from(bytes)))
}

fn http_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(id: Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
}

async fn handle_call(call: Value, handler: &Handler) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = call.get("method").and_then(Value::as_str) else {
        return error_response(
            id,
            &RpcError {
                code: -32600,
                message: "invalid request".into(),
            },
        );
    };
    let params = match call.get("params") {
        None | Some(Value::Null) => Value::Array(vec![]),
        Some(p) => p.clone(),
    };
    match handler(method.to_string(), params).await {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => error_response(id, &e),
    }
}

/// Why an outgoing call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Connection refused/reset, bad HTTP status, unparsable response.
    Transport(String),
    /// No answer within the timeout.
    Timeout,
    /// The server answered with a JSON-RPC error.
    Rpc(RpcError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(s) => f.write_str(s),
            CallError::Timeout => f.write_str("context deadline exceeded"),
            CallError::Rpc(e) => f.write_str(&e.message),
        }
    }
}

impl std::error::Error for CallError {}

/// A pooled HTTP JSON-RPC client.
#[derive(Clone)]
pub struct RpcClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for RpcClient {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        RpcClient { client }
    }

    /// One call with a timeout.
    pub async fn call(
        &self,
        url: &str,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        match tokio::time::timeout(timeout, self.call_inner(url, method, params)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// op-node's conductor discipline: `attempts` tries, each with `timeout`, `gap` apart.
    /// A JSON-RPC error answer is final (not retried).
    pub async fn call_retry(
        &self,
        url: &str,
        method: &str,
        params: Value,
        timeout: Duration,
        attempts: usize,
        gap: Duration,
    ) -> Result<Value, CallError> {
        let mut last = CallError::Timeout;
        for i in 0..attempts.max(1) {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            match self.call(url, method, params.clone(), timeout).await {
                Ok(v) => return Ok(v),
                Err(e @ CallError::Rpc(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Like [`RpcClient::call_retry`] with the request body already serialized (see
    /// [`request_body`]), so a multi-MB request is encoded once and off the runtime.
    pub async fn call_body_retry(
        &self,
        url: &str,
        body: Bytes,
        timeout: Duration,
        attempts: usize,
        gap: Duration,
    ) -> Result<Value, CallError> {
        let mut last = CallError::Timeout;
        for i in 0..attempts.max(1) {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            match tokio::time::timeout(timeout, self.send(url, body.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e @ CallError::Rpc(_))) => return Err(e),
                Ok(Err(e)) => last = e,
                Err(_) => last = CallError::Timeout,
            }
        }
        Err(last)
    }

    async fn call_inner(&self, url: &str, method: &str, params: Value) -> Result<Value, CallError> {
        let bytes = request_body(method, params)?;
        self.send(url, bytes).await
    }

    async fn send(&self, url: &str, bytes: Bytes) -> Result<Value, CallError> {
        let req = Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| CallError::Transport(format!("bad url {url}: {e}")))?;
        let resp =
            self.client.request(req).await.map_err(|e| {
                CallError::Transport(format!("Post \"{url}\": {}", error_chain(&e)))
            })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CallError::Transport(format!("Post \"{url}\": {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(CallError::Transport(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| CallError::Transport(format!("invalid JSON-RPC response: {e}")))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(CallError::Rpc(RpcError {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(-32000),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
            }));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// The body of a JSON-RPC request (id 1).
pub fn request_body(method: &str, params: Value) -> Result<Bytes, CallError> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| CallError::Transport(e.to_string()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Returns positional parameter `i` (params may be an array or absent).
pub(crate) fn param(params: &Value, i: usize) -> Option<&Value> {
    params
        .as_array()
        .and_then(|a| a.get(i))
        .filter(|v| !v.is_null())
}
