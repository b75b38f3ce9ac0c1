//! The JSON-RPC HTTP listener: body limit, request parsing, batches, per-request time limit and graceful drain; method semantics live in `methods`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response as HttpResponse, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tracing::Instrument;

use super::error::{ErrorObject, RpcError};
use super::types::{raw_null, Request as RpcRequest, Response};
use crate::status::Shared;

/// Header marking a call forwarded by another sidecar; a forwarded call is never forwarded again.
pub const FORWARDED: &str = "x-op-sidecar-forwarded";

/// Most calls accepted in one batch.
pub const MAX_BATCH: usize = 100;

/// How long in-flight requests may finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

tokio::task_local! {
    /// When the request being answered started to arrive, and how long its body took.
    static RECEIVED: (std::time::Instant, Duration);
}

/// When the current request started to arrive and how long its body took (the commit
/// metrics' `receive` and `total` stages); `None` outside a request served here.
pub fn received() -> Option<(std::time::Instant, Duration)> {
    RECEIVED.try_with(|r| *r).ok()
}

/// Serves until `shutdown` completes, then stops accepting and waits (bounded) for in-flight requests.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let limit = GlobalConcurrencyLimitLayer::new(1024);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let svc = ServiceBuilder::new()
            .layer(limit.clone())
            .service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle_http(&shared, req).await) }
            });
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http drain timed out; closing remaining connections");
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse<Full<Bytes>> {
    let mut resp = HttpResponse::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_body(e: &RpcError) -> Vec<u8> {
    serde_json::to_vec(&Response::err(raw_null(), ErrorObject::from(e))).unwrap_or_default()
}

async fn handle_http(shared: &Shared, req: Request<Incoming>) -> HttpResponse<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut resp = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            error_body(&RpcError::InvalidRequest("use POST".into())),
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return resp;
    }
    let forwarded = req.headers().contains_key(FORWARDED);
    let max = shared.config.rpc_max_body;
    let receiving = std::time::Instant::now();
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            tracing::warn!(limit = max, "request body over rpc.max-body refused");
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body(&RpcError::InvalidRequest(format!(
                    "request body exceeds {max} bytes"
                ))),
            );
        }
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                error_body(&RpcError::Parse(e.to_string())),
            )
        }
    };
    match RECEIVED
        .scope(
            (receiving, receiving.elapsed()),
            handle_body(shared, &body, forwarded),
        )
        .await
    {
        Some(out) => json_response(StatusCode::OK, out),
        None => {
            let mut resp = HttpResponse::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
    }
}

/// Answers a request body: one call or a batch. `None` when there is nothing to answer (only notifications).
pub async fn handle_body(shared: &Shared, body: &[u8], forwarded: bool) -> Option<Vec<u8>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Some(error_body(&RpcError::Parse(e.to_string()))),
        };
        if items.is_empty() {
            return Some(error_body(&RpcError::InvalidRequest("empty batch".into())));
        }
        if items.len() > MAX_BATCH {
            return Some(error_body(&RpcError::InvalidRequest(format!(
                "batch of {} calls exceeds the limit of {MAX_BATCH}",
                items.len()
            ))));
        }
        let answers = futures_util::future::join_all(
            items.iter().map(|item| handle_one(shared, item, forwarded)),
        )
        .await;
        let answers: Vec<Response> = answers.into_iter().flatten().collect();
        if answers.is_empty() {
            return None;
        }
        return serde_json::to_vec(&answers).ok();
    }
    let raw: &RawValue = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(error_body(&RpcError::Parse(e.to_string()))),
    };
    let answer = handle_one(shared, raw, forwarded).await?;
    serde_json::to_vec(&answer).ok()
}

/// Validates and dispatches one call. `None` for a valid notification.
async fn handle_one(shared: &Shared, raw: &RawValue, forwarded: bool) -> Option<Response> {
    let req: RpcRequest<'_> = match serde_json::from_str(raw.get()) {
        Ok(r) => r,
        Err(_) => {
            return Some(Response::err(
                raw_null(),
                ErrorObject::from(&RpcError::InvalidRequest(
                    "not a JSON-RPC request object".into(),
                )),
            ))
        }
    };
    let id: Option<Box<RawValue>> = req.id.map(|i| i.to_owned());
    let reply_id = || id.clone().unwrap_or_else(raw_null);
    let valid_id = req.id.is_none_or(|i| {
        let s = i.get().trim_start();
        s.starts_with('"')
            || s.starts_with('-')
            || s.starts_with(|c: char| c.is_ascii_digit())
            || s == "null"
    });
    if req.jsonrpc.map(|v| v.get()) != Some("\"2.0\"") || !valid_id {
        return Some(Response::err(
            reply_id(),
            ErrorObject::from(&RpcError::InvalidRequest(
                "jsonrpc must be \"2.0\" with a string, number or null id".into(),
            )),
        ));
    }
    let method: String = match req.method.map(|m| serde_json::from_str::<String>(m.get())) {
        Some(Ok(m)) => m,
        _ => {
            return Some(Response::err(
                reply_id(),
                ErrorObject::from(&RpcError::InvalidRequest("method must be a string".into())),
            ))
        }
    };
    if let Some(p) = req.params {
        let s = p.get().trim_start();
        if !(s.starts_with('[') || s.starts_with('{') || s == "null") {
            return Some(Response::err(
                reply_id(),
                ErrorObject::from(&RpcError::InvalidRequest(
                    "params must be an array or object".into(),
                )),
            ));
        }
    }
    let span = tracing::debug_span!("rpc", method = %method, code = tracing::field::Empty);
    let timeout = super::methods::time_limit(shared, &method);
    let result = async {
        match tokio::time::timeout(
            timeout,
            super::methods::call(shared, &method, req.params, forwarded),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(RpcError::Timeout(timeout)),
        }
    }
    .instrument(span.clone())
    .await;
    let code = match &result {
        Ok(_) => 0,
        Err(e) => ErrorObject::from(e).code,
    };
    span.record("code", code);
    let label = if super::methods::is_known(&method) {
        method.clone()
    } else {
        "unknown".to_string()
    };
    shared
        .metrics
        .rpc_requests
        .get_or_create(&crate::metrics::MethodLabels {
            method: label,
            code,
        })
        .inc();
    let id = id?;
    Some(match result {
        Ok(v) => Response::ok(id, v),
        Err(e) => {
            tracing::debug!(method = %method, error = %e, "rpc error");
            Response::err(id, ErrorObject::from(&e))
        }
    })
}
