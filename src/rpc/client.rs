//! Outgoing JSON-RPC over HTTP/1.1, plain or https:// (to op-node, op-geth and other sidecars) with a per-call time limit; knows no method semantics.

use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use std::sync::Arc;

use super::auth::JwtSecret;
use super::error::ErrorObject;
use super::types::{to_raw, OutRequest, Response};

/// Responses larger than this are refused rather than buffered (a block with full txs is < 10 MiB).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CallError {
    #[error("{url} unreachable: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{} (code {})", .0.message, .0.code)]
    Rpc(ErrorObject),
    #[error("{url} sent an undecodable answer: {reason}")]
    Decode { url: String, reason: String },
    /// The answer was not buffered: over the size limit, or the caller's gate refused it.
    #[error("answer from {url} refused: {reason}")]
    TooLarge { url: String, reason: String },
}

/// Admits each chunk of an answer before it is buffered; an error ends the call. Lets the RPC
/// server count proxied answers against its byte budget while they arrive.
pub trait AnswerGate: Sync {
    fn admit(&self, bytes: usize) -> Result<(), String>;
}

/// Admits everything (up to the client's own size limit).
pub struct Ungated;

impl AnswerGate for Ungated {
    fn admit(&self, _bytes: usize) -> Result<(), String> {
        Ok(())
    }
}

impl CallError {
    /// The JSON-RPC error message when the peer answered with an error object.
    pub fn rpc_message(&self) -> Option<&str> {
        match self {
            CallError::Rpc(e) => Some(&e.message),
            _ => None,
        }
    }

    pub fn is_method_not_found(&self) -> bool {
        matches!(self, CallError::Rpc(e) if e.code == super::error::METHOD_NOT_FOUND)
    }
}

/// Connects http:// URLs as they are and https:// ones over TLS with `tls` (see
/// `crate::tls::client_config`). The connect timeout bounds TCP only; the TLS handshake runs
/// inside each call's own time limit.
pub fn connector(tls: rustls::ClientConfig) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    // The scheme is the TLS wrapper's business; the TCP connector must let https:// through.
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// A pooled HTTP client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The cluster's JWT secret and this sidecar's id: calls to other sidecars carry a fresh
    /// token, since forwarded control calls need one there too.
    peer_auth: Option<(Arc<JwtSecret>, Arc<str>)>,
}

impl HttpClient {
    /// A client for http:// and https:// URLs, the latter checked with `tls`.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let inner = Client::builder(TokioExecutor::new())
            // A crashed or restarted peer leaves dead pooled connections; keep them short-lived.
            .pool_idle_timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(16)
            .build(connector(tls));
        HttpClient {
            inner,
            peer_auth: None,
        }
    }

    /// Signs calls made with [`call_peer`](Self::call_peer) with `secret`, as `server_id`.
    pub fn with_peer_auth(mut self, secret: Arc<JwtSecret>, server_id: &str) -> Self {
        self.peer_auth = Some((secret, Arc::from(server_id)));
        self
    }

    /// The cluster secret, if one is configured.
    pub fn cluster_secret(&self) -> Option<&Arc<JwtSecret>> {
        self.peer_auth.as_ref().map(|(s, _)| s)
    }

    /// Calls another sidecar: marked as forwarded (it is never forwarded again) and, with a
    /// cluster secret, carrying a fresh token.
    pub async fn call_peer(
        &self,
        url: &str,
        method: &str,
        params: &RawValue,
        timeout: Duration,
        gate: &dyn AnswerGate,
    ) -> Result<Box<RawValue>, CallError> {
        let bearer = self
            .peer_auth
            .as_ref()
            .map(|(s, id)| format!("Bearer {}", s.peer_token(id)));
        let mut headers: Vec<(&'static str, &str)> = vec![(super::server::FORWARDED, "1")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        self.call_raw_gated(url, method, params, &headers, timeout, gate)
            .await
    }

    /// POSTs a body and returns the status and the whole answer, all within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        body: Bytes,
        extra: &[(&'static str, &str)],
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), CallError> {
        self.post_gated(url, body, extra, timeout, &Ungated).await
    }

    /// As [`post`](Self::post), with every chunk of the answer admitted by `gate` first.
    pub async fn post_gated(
        &self,
        url: &str,
        body: Bytes,
        extra: &[(&'static str, &str)],
        timeout: Duration,
        gate: &dyn AnswerGate,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let fut = async {
            let mut req = Request::post(url).header(header::CONTENT_TYPE, "application/json");
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Full::new(body))
                .map_err(|e| CallError::Transport {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| CallError::Transport {
                    url: url.to_string(),
                    reason: error_chain(&e),
                })?;
            let status = resp.status();
            let too_large = |reason: String| CallError::TooLarge {
                url: url.to_string(),
                reason,
            };
            let mut body = resp.into_body();
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| CallError::Transport {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if buf.len() + data.len() > MAX_RESPONSE {
                    return Err(too_large(format!("larger than {MAX_RESPONSE} bytes")));
                }
                gate.admit(data.len()).map_err(too_large)?;
                buf.extend_from_slice(&data);
            }
            Ok((status, buf.freeze()))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| CallError::Timeout {
                url: url.to_string(),
                timeout,
            })?
    }

    /// Calls one method with raw params; the result comes back raw (bytes unchanged).
    pub async fn call_raw(
        &self,
        url: &str,
        method: &str,
        params: &RawValue,
        timeout: Duration,
    ) -> Result<Box<RawValue>, CallError> {
        self.call_raw_with(url, method, params, &[], timeout).await
    }

    /// As [`call_raw`](Self::call_raw), with extra request headers.
    pub async fn call_raw_with(
        &self,
        url: &str,
        method: &str,
        params: &RawValue,
        headers: &[(&'static str, &str)],
        timeout: Duration,
    ) -> Result<Box<RawValue>, CallError> {
        self.call_raw_gated(url, method, params, headers, timeout, &Ungated)
            .await
    }

    /// As [`call_raw_with`](Self::call_raw_with), with the answer admitted chunk by chunk by `gate`.
    pub async fn call_raw_gated(
        &self,
        url: &str,
        method: &str,
        params: &RawValue,
        headers: &[(&'static str, &str)],
        timeout: Duration,
        gate: &dyn AnswerGate,
    ) -> Result<Box<RawValue>, CallError> {
        let id = to_raw(&1);
        let body = serde_json::to_vec(&OutRequest {
            jsonrpc: "2.0",
            method,
            params,
            id: &id,
        })
        .map_err(|e| CallError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let (status, bytes) = self
            .post_gated(url, Bytes::from(body), headers, timeout, gate)
            .await?;
        let resp: Response = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(_) if !status.is_success() => {
                return Err(CallError::Http {
                    url: url.to_string(),
                    status: status.as_u16(),
                })
            }
            Err(e) => {
                return Err(CallError::Decode {
                    url: url.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        match (resp.result, resp.error) {
            (_, Some(err)) => Err(CallError::Rpc(err)),
            (Some(result), None) => Ok(result),
            // `"result": null` deserializes to None: a null result.
            (None, None) => Ok(super::types::raw_null()),
        }
    }

    /// Calls one method and decodes the result.
    pub async fn call<P: Serialize, T: DeserializeOwned>(
        &self,
        url: &str,
        method: &str,
        params: P,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let params = serde_json::value::to_raw_value(&params).map_err(|e| CallError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let raw = self.call_raw(url, method, &params, timeout).await?;
        serde_json::from_str(raw.get()).map_err(|e| CallError::Decode {
            url: url.to_string(),
            reason: format!("{method}: {e}"),
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
