//! A minimal JSON-RPC 2.0 client over HTTP/1.1 (one hyper connection per call) with a timeout;
//! https:// URLs use the process-wide TLS settings from [`trust`], or explicit ones
//! ([`rpc_tls`], [`request_tls`]) for tests about who is refused.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Default per-call timeout; long enough for a loaded 2-core machine, short enough to notice a hang.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// `code` is the JSON-RPC error code, or [`RpcError::TRANSPORT`] when no JSON-RPC answer came back
/// (connection refused, timeout, HTTP error, unparsable body).
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub const TRANSPORT: i64 = i64::MIN;

    fn transport(message: impl Into<String>) -> Self {
        Self {
            code: Self::TRANSPORT,
            message: message.into(),
        }
    }

    pub fn is_transport(&self) -> bool {
        self.code == Self::TRANSPORT
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_transport() {
            write!(f, "transport error: {}", self.message)
        } else {
            write!(f, "JSON-RPC error {}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for RpcError {}

/// Calls `method` with `params` at `url` with [`DEFAULT_TIMEOUT`].
pub async fn rpc(url: &str, method: &str, params: Value) -> Result<Value, RpcError> {
    rpc_timeout(url, method, params, DEFAULT_TIMEOUT).await
}

/// Calls `method` with `params` at `url`, giving up after `timeout`.
pub async fn rpc_timeout(
    url: &str,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, RpcError> {
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let body = serde_json::to_vec(&req).expect("serialize request");
    let (status, bytes) = post(url, body, timeout)
        .await
        .map_err(RpcError::transport)?;
    decode_answer(status, &bytes)
}

/// A JSON-RPC answer: its `result`, its `error` as [`RpcError`], or a transport error naming
/// the HTTP status when the body is neither.
fn decode_answer(status: u16, bytes: &[u8]) -> Result<Value, RpcError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        RpcError::transport(format!(
            "HTTP {status}, body is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        ))
    })?;
    if let Some(err) = v.get("error") {
        return Err(RpcError {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        });
    }
    match v.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(RpcError::transport(format!(
            "HTTP {status}, answer has neither result nor error: {v}"
        ))),
    }
}

/// POSTs raw bytes to `url` (content-type application/json); returns status and body text.
/// Panics on a transport failure: malformed-request tests expect an HTTP answer.
pub async fn raw_post(url: &str, body: impl Into<Vec<u8>>) -> (u16, String) {
    match post(url, body.into(), DEFAULT_TIMEOUT).await {
        Ok((status, bytes)) => (status, String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

/// The client TLS settings for https:// URLs of [`rpc`], [`post`], [`get`] and the fixture's
/// helpers; set once by a test binary whose sidecars serve TLS.
static TRUSTED: Mutex<Option<Arc<rustls::ClientConfig>>> = Mutex::new(None);

/// Uses `config` for every https:// call that is not given its own.
pub fn trust(config: rustls::ClientConfig) {
    *TRUSTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(config));
}

fn trusted() -> Option<Arc<rustls::ClientConfig>> {
    TRUSTED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `http://host:port/path` -> (https?, `host:port`, `/path`).
fn split_url(url: &str) -> Result<(bool, String, String), String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => {
            return Err(format!(
                "only http:// and https:// URLs are supported: {url}"
            ))
        }
    };
    Ok(match rest.find('/') {
        Some(i) => (https, rest[..i].to_string(), rest[i..].to_string()),
        None => (https, rest.to_string(), "/".to_string()),
    })
}

/// GETs `url` (e.g. an admin endpoint); `Err` only when no HTTP answer came back within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let (status, bytes) = request(hyper::Method::GET, url, Vec::new(), &[], timeout).await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// POSTs `body` to `url`; `Err` only when no HTTP answer came back within `timeout`.
pub async fn post(url: &str, body: Vec<u8>, timeout: Duration) -> Result<(u16, Bytes), String> {
    request(hyper::Method::POST, url, body, &[], timeout).await
}

/// POSTs `body` with extra headers (e.g. `authorization`); returns status and body text.
pub async fn post_with_headers(
    url: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    let body = serde_json::to_vec(&body).expect("serialize request");
    let (status, bytes) = request(hyper::Method::POST, url, body, headers, DEFAULT_TIMEOUT).await?;
    let v = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "HTTP {status}, body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    Ok((status, v))
}

/// Calls `method` with `params` and an `Authorization: Bearer <token>` header (none if `None`).
pub async fn rpc_auth(
    url: &str,
    method: &str,
    params: Value,
    token: Option<&str>,
) -> Result<Value, RpcError> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, v) = post_with_headers(url, req, &headers)
        .await
        .map_err(RpcError::transport)?;
    if let Some(err) = v.get("error") {
        return Err(RpcError {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: format!(
                "HTTP {status}: {}",
                err.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
        });
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| RpcError::transport(format!("HTTP {status}, no result: {v}")))
}

async fn request(
    method: hyper::Method,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    request_tls(method, url, body, headers, timeout, trusted()).await
}

/// Calls `method` at an https:// `url` with the given client TLS settings.
pub async fn rpc_tls(
    url: &str,
    method: &str,
    params: Value,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Value, RpcError> {
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let body = serde_json::to_vec(&req).expect("serialize request");
    let (status, bytes) = request_tls(
        hyper::Method::POST,
        url,
        body,
        &[],
        DEFAULT_TIMEOUT,
        Some(tls),
    )
    .await
    .map_err(RpcError::transport)?;
    decode_answer(status, &bytes)
}

/// One HTTP/1.1 exchange on a fresh connection; https:// URLs go over TLS with `tls` (an
/// https:// URL without settings is an error, not a silent plain-text call).
pub async fn request_tls(
    method: hyper::Method,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(u16, Bytes), String> {
    let (https, authority, path) = split_url(url)?;
    let call = async {
        let stream = TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        if !https {
            return exchange(stream, &authority, method, path, body, headers).await;
        }
        let tls = tls.ok_or_else(|| format!("{url}: https:// without client TLS settings"))?;
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| format!("server name of {url}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, stream)
            .await
            .map_err(|e| format!("tls handshake with {authority}: {e}"))?;
        exchange(stream, &authority, method, path, body, headers).await
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer from {url} within {timeout:?}")),
    }
}

/// GETs `url` (the admin endpoints); returns status and body text. Panics without an answer.
pub async fn http_get(url: &str) -> (u16, String) {
    get(url, DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The value of a Prometheus sample line `name{labels} value` (exact name with labels as
/// written), or `None` when absent.
pub fn metric(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == name_with_labels)
            .then(|| value.parse().ok())
            .flatten()
    })
}

async fn exchange<S>(
    stream: S,
    authority: &str,
    method: hyper::Method,
    path: String,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Result<(u16, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake {authority}: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("build request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send to {authority}: {}", chain(&e)))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("read body from {authority}: {}", chain(&e)))?
        .to_bytes();
    conn.abort();
    Ok((status, bytes))
}

/// An error and its sources on one line (a refused client certificate surfaces as the source
/// of an I/O error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
