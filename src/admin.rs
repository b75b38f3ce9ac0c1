//! The admin listener, separate from the JSON-RPC data path so probes answer under load: /healthz (process alive), /readyz (serving and in contact with etcd), /metrics.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::status::Shared;

/// Time to receive a request head; also how long a keep-alive connection may idle.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let svc = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(route(&shared, &req)) }
        });
        // Without a timer hyper has no header timeout: a client that connects and says
        // nothing would hold its connection (and a descriptor) forever.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn route(s: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        // Alive = the control loop and the lease task are making progress (a watchdog on their
        // heartbeats), not merely "the process answers HTTP".
        "/healthz" => {
            match crate::status::liveness(s.control_beat.age(), s.lease_beat.age(), &s.config) {
                Ok(()) => text(StatusCode::OK, "ok\n".into(), "text/plain"),
                Err(why) => {
                    tracing::error!(reason = %why, "liveness check failed");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{why}\n"),
                        "text/plain",
                    )
                }
            }
        }
        // Patroni's /leader: 200 only on the sidecar leading with a locally valid lease, for
        // load balancers and the batcher.
        "/leader" => match s.leader_now() {
            Some(_) => text(StatusCode::OK, "leader\n".into(), "text/plain"),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not leader\n".into(),
                "text/plain",
            ),
        },
        "/readyz" => {
            // Copies, not guards: see `Shared::leader_now`.
            let st = s.status_now();
            let health = s.health_now();
            let etcd = s.etcd_now();
            let body = serde_json::json!({
                "ready": st.started && st.etcd_reachable && !st.shutting_down,
                "leader": s.leader_now().is_some(),
                "role": format!("{:?}", st.role).to_lowercase(),
                "paused": st.paused,
                "etcd_reachable": st.etcd_reachable,
                "node_healthy": health.healthy,
                "node": health.summary(),
                "shutting_down": st.shutting_down,
                "etcd": etcd.to_json(),
            });
            let code = if st.started && st.etcd_reachable && !st.shutting_down {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, format!("{body}\n"), "application/json")
        }
        "/metrics" => {
            refresh_gauges(s);
            text(
                StatusCode::OK,
                s.metrics.encode(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

/// Sets the gauges that mirror shared state, at scrape time, so the control loop need not.
/// Every watch value is copied out before the next is read (see `Shared::leader_now`).
fn refresh_gauges(s: &Shared) {
    let st = s.status_now();
    let health = s.health_now();
    let lease = *s.lease.borrow();
    let m = &s.metrics;
    m.unsafe_head_number
        .set(health.head.as_ref().map_or(0, |h| h.number as i64));
    let age = match health.head_time {
        Some(t) if health.reachable => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            (now - t as f64).max(0.0)
        }
        _ => -1.0,
    };
    m.unsafe_head_age.set(age);
    let now = tokio::time::Instant::now();
    m.lease_time_left.set(lease.map_or(0.0, |l| {
        l.valid_until.saturating_duration_since(now).as_secs_f64()
    }));
    // The local deadline is the acknowledged keepalive's send time + TTL - margin, so the send
    // time (the last moment etcd is known to have been in contact) is the deadline less that.
    let ttl = s.config.lease_ttl;
    let validity = ttl.saturating_sub(crate::election::margin(ttl));
    let contact = lease
        .and_then(|l| l.valid_until.checked_sub(validity))
        .map_or(-1.0, |sent| {
            now.saturating_duration_since(sent).as_secs_f64()
        });
    m.etcd_last_contact.set(contact);
    m.leader_overridden
        .set(i64::from(s.leader_override.load(Ordering::SeqCst)));
    m.election_stopped.set(i64::from(st.election_stopped));
    m.etcd_reachable.set(i64::from(st.etcd_reachable));
}
