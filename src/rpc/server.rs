//! The JSON-RPC HTTP listener: optional TLS (handshake per connection, under the read deadline), connection caps, body deadline and byte budget, request permits, request parsing, batches, per-request time limit and graceful drain; method semantics live in `methods`, the limits' bookkeeping in `limits`, TLS configuration in `crate::tls`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response as HttpResponse, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::auth;
use super::client::AnswerGate;
use super::error::{ErrorObject, RpcError};
use super::limits::{peek_class, BytesError, Charge, Class, Conn, Limits};
use super::methods::CallCtx;
use super::types::{raw_null, Request as RpcRequest, Response};
use crate::status::Shared;

/// Header marking a call forwarded by another sidecar; a forwarded call is never forwarded again.
pub const FORWARDED: &str = "x-op-sidecar-forwarded";

/// Most calls accepted in one batch.
pub const MAX_BATCH: usize = 100;

/// How long in-flight requests may finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// hyper's per-connection read buffer, which bounds a request head; JSON-RPC heads are tiny.
const MAX_HEAD_BUF: usize = 64 * 1024;

/// Concurrent HTTP/2 streams per connection (hyper's default is 200): one connection must not
/// multiply into hundreds of requests.
const H2_MAX_STREAMS: u32 = 32;

/// The first bytes of a body that tell a single call's method (see `limits::peek_class`).
const PEEK_BYTES: usize = 512;

/// Serves until `shutdown` completes, then stops accepting and waits (bounded) for in-flight
/// requests. With `tls`, every connection is a TLS connection (no plain HTTP on the same port).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let c = &shared.config;
    let limits = Arc::new(Limits::new(
        c.rpc_max_conns,
        c.rpc_max_conns_per_ip,
        c.rpc_max_buffered,
        c.rpc_max_body,
        c.rpc_read_timeout,
        shared.metrics.clone(),
    ));
    let read_timeout = c.rpc_read_timeout;
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    // Connections still in their TLS handshake are not yet watched by `graceful`; this ends them.
    let stopping = CancellationToken::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also closes a keep-alive connection idle this long: hyper starts the timer as soon as
        // it waits for the next request head.
        .header_read_timeout(read_timeout)
        .max_buf_size(MAX_HEAD_BUF)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(MAX_HEAD_BUF).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    let mut fd_warned = false;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors: free one by closing the connection idle longest,
                    // so a fresh client (op-node reconnecting) still gets in.
                    if is_fd_exhaustion(&e) && limits.conns.shed_one() {
                        if !fd_warned {
                            tracing::warn!(error = %e, open = limits.conns.open(), "out of file descriptors: closing idle connections to accept new ones (raise the fd limit or lower rpc.max-conns)");
                            fd_warned = true;
                        }
                        // Let the closed connection's task release its descriptor.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        // Admitted before the handshake: a connection counts against the caps from its first
        // byte, and one stalled in its handshake is idle and the first to be evicted.
        let Some(guard) = limits.conns.admit(canonical(peer.ip())) else {
            limits.refused("conn_refused");
            tracing::debug!(%peer, "connection refused: every connection is processing a request");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = guard.conn.clone();
        let svc = {
            let (shared, limits, conn) = (shared.clone(), limits.clone(), conn.clone());
            service_fn(move |req| {
                let (shared, limits, conn) = (shared.clone(), limits.clone(), conn.clone());
                async move { Ok::<_, Infallible>(handle_http(&shared, &limits, &conn, peer, req).await) }
            })
        };
        let watcher = graceful.watcher();
        let (limits, builder, acceptor, stopping) = (
            limits.clone(),
            builder.clone(),
            acceptor.clone(),
            stopping.clone(),
        );
        tokio::spawn(async move {
            let _guard = guard;
            // A connection must finish its handshake and send a first request (or finish
            // choosing HTTP/1 or 2) within the read timeout of its accept; hyper's own timers
            // cover the rest.
            let deadline = accepted + read_timeout;
            let io = StallIo::new(stream, read_timeout);
            let io = match acceptor {
                None => Either::Left(io),
                // Here, in the connection's own task: a client that stalls or trickles its
                // handshake delays nobody else's accept or requests.
                Some(acceptor) => tokio::select! {
                    r = tokio::time::timeout_at(deadline, acceptor.accept(io)) => match r {
                        Ok(Ok(tls)) => Either::Right(tls),
                        Ok(Err(e)) => {
                            limits.refused("tls_handshake");
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            limits.refused("tls_handshake_timeout");
                            tracing::debug!(%peer, "tls handshake not completed within rpc.read-timeout");
                            return;
                        }
                    },
                    _ = conn.kill.cancelled() => return,
                    _ = stopping.cancelled() => return,
                },
            };
            let served = builder.serve_connection(TokioIo::new(io), svc).into_owned();
            let served = watcher.watch(served);
            let first_request = tokio::time::sleep_until(deadline);
            tokio::pin!(served, first_request);
            let mut awaiting_first = true;
            loop {
                tokio::select! {
                    r = &mut served => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with error");
                        }
                        break;
                    }
                    _ = conn.kill.cancelled() => {
                        tracing::debug!(%peer, "connection closed to make room for a new one");
                        break;
                    }
                    _ = &mut first_request, if awaiting_first => {
                        if !conn.has_requests() {
                            limits.refused("idle_timeout");
                            break;
                        }
                        awaiting_first = false;
                    }
                }
            }
        });
    }
    drop(listener);
    stopping.cancel();
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http drain timed out; closing remaining connections");
    }
}

/// EMFILE / ENFILE (the same numbers on Linux and the BSDs).
fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// One address per host whether it connected over IPv4 or as an IPv4-mapped IPv6 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

// === impl AnswerBody ===

/// A response body that keeps the request's bytes counted until hyper has taken the last of
/// them. It hands them out a slice at a time, and hyper asks for the next slice only when its
/// write buffer has room, so an answer a client is slow to read stays counted.
pub struct AnswerBody {
    data: Bytes,
    _charge: Option<Charge>,
}

/// Slice of an answer handed to hyper at once.
const ANSWER_SLICE: usize = 64 * 1024;

impl AnswerBody {
    fn new(data: Vec<u8>) -> Self {
        AnswerBody {
            data: Bytes::from(data),
            _charge: None,
        }
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = this.data.len().min(ANSWER_SLICE);
        Poll::Ready(Some(Ok(Frame::data(this.data.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

// === impl StallIo ===

/// A socket whose writes fail once they have made no progress for `limit`: a client that does
/// not read its answers cannot pin them (and their bytes) in memory. hyper has no write timeout.
struct StallIo<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallIo<T> {
    fn new(inner: T, limit: Duration) -> Self {
        StallIo {
            inner,
            limit,
            stalled: None,
        }
    }

    fn progress<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of its answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, r)
    }
}

impl AnswerGate for Charge {
    fn admit(&self, bytes: usize) -> Result<(), String> {
        self.add_answer(bytes).map_err(|e| e.to_string())
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse<AnswerBody> {
    let mut resp = HttpResponse::new(AnswerBody::new(body));
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

fn busy_response(message: String) -> HttpResponse<AnswerBody> {
    let mut resp = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        error_body(&RpcError::LimitExceeded(message)),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp
}

/// Why a request body was not read.
enum BodyError {
    TooLarge,
    Busy(BytesError),
    Timeout,
    Transport(String),
}

async fn handle_http(
    shared: &Shared,
    limits: &Limits,
    conn: &Arc<Conn>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> HttpResponse<AnswerBody> {
    conn.request_started();
    let deadline = Instant::now() + limits.read_timeout;
    // op-service's RPC servers (op-conductor's among them) answer GET /healthz with their
    // version on the RPC port; probes copied from such a deployment use it.
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        let body = serde_json::json!({ "version": crate::status::VERSION }).to_string();
        return json_response(StatusCode::OK, body.into_bytes());
    }
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
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_string).unwrap_or_default());
    let max = limits.max_body;
    let receiving = std::time::Instant::now();
    // The body is read under its own deadline and byte budget BEFORE a request permit is taken:
    // a client that sends slowly holds no permit, and only bytes it has announced or sent.
    let (body, charge) = match read_body(limits, req.into_body(), deadline).await {
        Ok(x) => x,
        Err(BodyError::TooLarge) => {
            limits.refused("body_too_large");
            tracing::warn!(limit = max, "request body over rpc.max-body refused");
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body(&RpcError::InvalidRequest(format!(
                    "request body exceeds {max} bytes"
                ))),
            );
        }
        Err(BodyError::Busy(e)) => {
            limits.refused("busy_bytes");
            tracing::debug!(error = %e, "request refused: byte budget exhausted");
            return busy_response(e.to_string());
        }
        Err(BodyError::Timeout) => {
            limits.refused("read_timeout");
            return json_response(
                StatusCode::REQUEST_TIMEOUT,
                error_body(&RpcError::InvalidRequest(format!(
                    "request body not received within {:?}",
                    limits.read_timeout
                ))),
            );
        }
        Err(BodyError::Transport(e)) => {
            return json_response(StatusCode::BAD_REQUEST, error_body(&RpcError::Parse(e)))
        }
    };
    let received = (receiving, receiving.elapsed());
    let class = peek_class(&body).unwrap_or(Class::General);
    // Checked before a permit is taken: a refused call costs no more than reading it. op-node's
    // own single calls (all open) skip the second parse of their payload.
    if class != Class::Critical {
        if let Err(refused) = authorize(shared, &body, authorization.as_deref(), peer) {
            return refused;
        }
    }
    let Some(permit) = limits
        .permits
        .acquire(class, Instant::now() + shared.config.rpc_timeout)
        .await
    else {
        limits.refused("busy_permits");
        return busy_response("server busy: too many requests in progress; retry shortly".into());
    };
    let busy = conn.busy();
    let ctx = CallCtx {
        forwarded,
        gate: &charge,
        received,
    };
    let out = handle_body(shared, &body, &ctx).await;
    drop(permit);
    drop(busy);
    match out {
        Some(out) => {
            let mut resp = json_response(StatusCode::OK, out);
            resp.body_mut()._charge = Some(charge);
            resp
        }
        None => {
            let mut resp = json_response(StatusCode::NO_CONTENT, Vec::new());
            resp.headers_mut().remove(header::CONTENT_TYPE);
            resp
        }
    }
}

/// The method and id of one call, read without decoding its params.
#[derive(serde::Deserialize)]
struct CallHead {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    id: Option<Box<RawValue>>,
}

/// Applies the per-method policy (`auth::access`) to a single call or a whole batch: a batch
/// with any control method needs the token, so a control call cannot hide among open ones.
/// Logs who made each control call. A refusal answers HTTP 401 and runs nothing.
#[allow(clippy::result_large_err)]
fn authorize(
    shared: &Shared,
    body: &[u8],
    authorization: Option<&str>,
    peer: SocketAddr,
) -> Result<(), HttpResponse<AnswerBody>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    // Bodies that do not parse carry no control call; the normal path answers their error.
    let heads: Vec<CallHead> = if first == Some(&b'[') {
        serde_json::from_slice::<Vec<&RawValue>>(body)
            .map(|items| {
                items
                    .into_iter()
                    // An item that is not a call object is answered as invalid, not run.
                    .filter_map(|v| serde_json::from_str(v.get()).ok())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        serde_json::from_slice::<CallHead>(body)
            .map(|h| vec![h])
            .unwrap_or_default()
    };
    let control: Vec<&str> = heads
        .iter()
        .filter_map(|h| h.method.as_deref())
        .filter(|m| auth::is_control(m))
        .collect();
    if control.is_empty() {
        return Ok(());
    }
    let enforce = shared.config.rpc_auth_control;
    let caller = match shared.http.cluster_secret() {
        Some(secret) if enforce => match secret.verify_header(authorization) {
            Ok(sub) => sub.unwrap_or_else(|| peer.to_string()),
            Err(e) => {
                tracing::warn!(%peer, methods = ?control, reason = %e, "control call refused");
                let err = RpcError::from(e);
                let body = if first == Some(&b'[') {
                    error_body(&err)
                } else {
                    let id = heads
                        .first()
                        .and_then(|h| h.id.clone())
                        .unwrap_or_else(raw_null);
                    serde_json::to_vec(&Response::err(id, ErrorObject::from(&err)))
                        .unwrap_or_default()
                };
                let mut resp = json_response(StatusCode::UNAUTHORIZED, body);
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return Err(resp);
            }
        },
        _ => peer.to_string(),
    };
    for m in control {
        tracing::info!(method = m, caller = %caller, "control call");
    }
    Ok(())
}

/// Reads a whole body by `deadline`, counting its bytes: a declared length is charged at once
/// (all or nothing, so bodies never hold half of what they need while waiting for the rest),
/// a chunked body frame by frame. The class (reserve or not) comes from the first bytes.
async fn read_body(
    limits: &Limits,
    mut body: Incoming,
    deadline: Instant,
) -> Result<(Bytes, Charge), BodyError> {
    let max = limits.max_body;
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let declared = declared.and_then(|n| usize::try_from(n).ok());
    let mut charge = limits.bytes.charge(Class::General);
    let read = async {
        let mut buf = BytesMut::new();
        let mut charged_upfront = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Transport(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            if !charged_upfront {
                if buf.is_empty() {
                    // Decided on the first bytes; a body trickled a few bytes at a time counts
                    // as general.
                    let head = &data[..data.len().min(PEEK_BYTES)];
                    charge.set_class(peek_class(head).unwrap_or(Class::General));
                }
                match declared {
                    Some(n) => {
                        charge.add(n, deadline).await.map_err(BodyError::Busy)?;
                        buf.reserve(n);
                        charged_upfront = true;
                    }
                    None => charge
                        .add(data.len(), deadline)
                        .await
                        .map_err(BodyError::Busy)?,
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(bytes)) => Ok((bytes, charge)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::Timeout),
    }
}

/// Answers a request body: one call or a batch. `None` when there is nothing to answer (only notifications).
pub async fn handle_body(shared: &Shared, body: &[u8], ctx: &CallCtx<'_>) -> Option<Vec<u8>> {
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
        let answers =
            futures_util::future::join_all(items.iter().map(|item| handle_one(shared, item, ctx)))
                .await;
        let answers: Vec<Response> = answers.into_iter().flatten().collect();
        if answers.is_empty() {
            return None;
        }
        return serde_json::to_vec(&answers).ok();
    }
    // One pass over the body for a single call: a commit's body is megabytes of hex, and every
    // full pass costs about a millisecond per 2 MB. Only a body that is not a request object is
    // read again, to tell malformed JSON (parse error) from a JSON value that is no request.
    // UTF-8 is checked first, over the whole body, at memory speed: serde_json does not check
    // the strings it skips.
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => return Some(error_body(&RpcError::Parse(format!("not UTF-8: {e}")))),
    };
    let answer = match serde_json::from_str::<RpcRequest<'_>>(text) {
        Ok(req) => dispatch(shared, req, ctx).await,
        Err(_) => match serde_json::from_str::<&RawValue>(text) {
            Ok(_) => Some(not_a_request()),
            Err(e) => return Some(error_body(&RpcError::Parse(e.to_string()))),
        },
    }?;
    serde_json::to_vec(&answer).ok()
}

fn not_a_request() -> Response {
    Response::err(
        raw_null(),
        ErrorObject::from(&RpcError::InvalidRequest(
            "not a JSON-RPC request object".into(),
        )),
    )
}

/// Validates and dispatches one call of a batch. `None` for a valid notification.
async fn handle_one(shared: &Shared, raw: &RawValue, ctx: &CallCtx<'_>) -> Option<Response> {
    match serde_json::from_str::<RpcRequest<'_>>(raw.get()) {
        Ok(req) => dispatch(shared, req, ctx).await,
        Err(_) => Some(not_a_request()),
    }
}

/// Validates and runs one decoded call. `None` for a valid notification.
async fn dispatch(shared: &Shared, req: RpcRequest<'_>, ctx: &CallCtx<'_>) -> Option<Response> {
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
            super::methods::call(shared, &method, req.params, ctx),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_after_the_limit() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut io = StallIo::new(near, Duration::from_secs(10));
        io.write_all(&[0u8; 1024]).await.expect("fits the buffer");
        let t0 = Instant::now();
        let e = io.write_all(&[0u8; 10]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed(), Duration::from_secs(10));

        // A peer that reads, however slowly, keeps it going.
        let (near, mut far2) = tokio::io::duplex(16);
        let mut io = StallIo::new(near, Duration::from_secs(10));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            while total < 64 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                total += far2.read(&mut buf).await.expect("read");
            }
        });
        io.write_all(&[0u8; 64])
            .await
            .expect("a slow reader is not cut off");
        reader.await.expect("reader");
    }

    #[test]
    fn answers_are_handed_out_in_slices() {
        let mut body = AnswerBody::new(vec![7u8; ANSWER_SLICE * 2 + 1]);
        assert_eq!(
            body.size_hint().exact(),
            Some((ANSWER_SLICE * 2 + 1) as u64)
        );
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            sizes.push(frame.into_data().map(|d| d.len()).unwrap_or(0));
        }
        assert_eq!(sizes, vec![ANSWER_SLICE, ANSWER_SLICE, 1]);
        assert!(body.is_end_stream());
    }
}
