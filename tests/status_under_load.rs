//! Status reads racing status writes on a three-sidecar cluster (real etcd, simulated nodes in
//! sidecar-driven mode): several clients per sidecar poll `/readyz`, `/metrics` and the RPC
//! status methods as fast as they can while leadership moves around the cluster and followers
//! are paused and resumed, so the control loops keep publishing new status. Every sidecar must
//! keep answering all of it, and the control loops must still act afterwards.
//!
//! A handler that holds a borrow of the status channel while borrowing it again deadlocks
//! once a writer queues between the two reads (tokio's watch uses a writer-preferring lock):
//! the old `/readyz` froze RPC, admin and the control loop after a few thousand polls.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::rpc::get;
use common::{rpc_timeout, wait_until, Fixture, FixtureOpts};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(60);
/// How long the status reads race the leadership changes.
const WINDOW: Duration = Duration::from_secs(30);
/// One status read may take this long on a loaded 2-core machine; a frozen sidecar never answers.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// `setMaster` returns only once the target produces.
const TRANSFER: Duration = Duration::from_secs(30);
const ADMIN_CLIENTS_PER_SIDECAR: usize = 3;
const RPC_CLIENTS_PER_SIDECAR: usize = 2;

/// The RPC status calls a client cycles through (answered from the published status, the lease
/// and health channels, or etcd).
fn status_calls(id: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("conductor_leader", json!([])),
        ("conductor_active", json!([])),
        ("conductor_paused", json!([])),
        ("conductor_stopped", json!([])),
        ("conductor_sequencerHealthy", json!([])),
        ("coordinator_requestBuildingBlock", json!([id])),
        ("coordinator_getMaster", json!([])),
        ("coordinator_electionStopped", json!([])),
    ]
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    /// Requests with no HTTP answer within [`READ_TIMEOUT`].
    timed_out: AtomicU64,
    /// Transport errors other than a timeout (the client reconnects).
    errors: AtomicU64,
    slowest_ms: AtomicU64,
    last_error: std::sync::Mutex<String>,
}

impl Counts {
    fn record(&self, r: &Result<(), Outcome>, took: Duration) {
        match r {
            Ok(()) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(Outcome::TimedOut) => self.timed_out.fetch_add(1, Ordering::Relaxed),
            Err(Outcome::Failed(e)) => {
                *self.last_error.lock().unwrap() = e.clone();
                self.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.slowest_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        format!(
            "{} answered, {} timed out, {} failed (last: {:?}), slowest {} ms",
            self.ok.load(Ordering::Relaxed),
            self.timed_out.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.last_error.lock().unwrap(),
            self.slowest_ms.load(Ordering::Relaxed)
        )
    }
}

#[derive(Debug)]
enum Outcome {
    TimedOut,
    Failed(String),
}

/// One keep-alive HTTP/1.1 connection, reopened after an error, so a client polls as fast as
/// the sidecar answers.
struct KeepAlive {
    authority: String,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl KeepAlive {
    fn new(url: &str) -> Self {
        KeepAlive {
            authority: url.trim_start_matches("http://").to_string(),
            sender: None,
        }
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One request; `Ok` only for the expected status with a body that passes `check`.
    async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        check: impl Fn(u16, &[u8]) -> Result<(), String>,
    ) -> Result<(), Outcome> {
        let attempt = async {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            sender.ready().await.map_err(|e| format!("ready: {e}"))?;
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, self.authority.as_str());
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| e.to_string())?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("read: {e}"))?
                .to_bytes();
            check(status, &bytes)?;
            Ok::<_, String>(sender)
        };
        match tokio::time::timeout(READ_TIMEOUT, attempt).await {
            Ok(Ok(sender)) => {
                self.sender = Some(sender);
                Ok(())
            }
            Ok(Err(e)) => Err(Outcome::Failed(e)),
            Err(_) => Err(Outcome::TimedOut),
        }
    }
}

/// Polls `/readyz` (and every fourth time `/metrics`) until `stop`.
async fn admin_client(admin_url: String, stop: CancellationToken, counts: Arc<Counts>) {
    let mut client = KeepAlive::new(&admin_url);
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let t = Instant::now();
        let r = if n % 4 == 0 {
            client
                .call(hyper::Method::GET, "/metrics", None, |status, body| {
                    let text = String::from_utf8_lossy(body);
                    (status == 200 && text.contains("op_sidecar_is_leader"))
                        .then_some(())
                        .ok_or_else(|| format!("/metrics: HTTP {status}"))
                })
                .await
        } else {
            client
                .call(hyper::Method::GET, "/readyz", None, |status, body| {
                    let v: Value = serde_json::from_slice(body)
                        .map_err(|e| format!("/readyz HTTP {status}: {e}"))?;
                    v.get("leader")
                        .and_then(Value::as_bool)
                        .map(|_| ())
                        .ok_or_else(|| format!("/readyz HTTP {status}: {v}"))
                })
                .await
        };
        counts.record(&r, t.elapsed());
    }
}

/// Cycles through the RPC status calls until `stop`; every call must get a JSON-RPC answer.
async fn rpc_client(url: String, id: String, stop: CancellationToken, counts: Arc<Counts>) {
    let mut client = KeepAlive::new(&url);
    let calls = status_calls(&id);
    let mut n = 0usize;
    while !stop.is_cancelled() {
        let (method, params) = &calls[n % calls.len()];
        n += 1;
        let body = json!({"jsonrpc": "2.0", "id": n, "method": method, "params": params});
        let t = Instant::now();
        let r = client
            .call(
                hyper::Method::POST,
                "/",
                Some(serde_json::to_vec(&body).unwrap()),
                |status, body| {
                    let v: Value = serde_json::from_slice(body)
                        .map_err(|e| format!("{method}: HTTP {status}: {e}"))?;
                    (v.get("result").is_some() || v.get("error").is_some())
                        .then_some(())
                        .ok_or_else(|| format!("{method}: {v}"))
                },
            )
            .await;
        counts.record(&r, t.elapsed());
    }
}

/// `coordinator_setMaster` asked of a sidecar that is neither source nor target.
async fn set_master(f: &mut Fixture, from: usize, to: usize) -> Result<Value, common::RpcError> {
    let bystander = (0..3).find(|&i| i != from && i != to).unwrap();
    let url = f.sidecar(bystander).url();
    rpc_timeout(
        &url,
        "coordinator_setMaster",
        json!([Fixture::id(to)]),
        TRANSFER,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_racing_leadership_changes_never_freeze_a_sidecar() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let mut leader = f.wait_single_active(SETTLE).await;

    let stop = CancellationToken::new();
    let mut readers = JoinSet::new();
    let mut admin_counts = Vec::new();
    let mut rpc_counts = Vec::new();
    for i in 0..3 {
        let a = Arc::new(Counts::default());
        let r = Arc::new(Counts::default());
        for _ in 0..ADMIN_CLIENTS_PER_SIDECAR {
            readers.spawn(admin_client(
                f.sidecar(i).admin_url(),
                stop.clone(),
                a.clone(),
            ));
        }
        for _ in 0..RPC_CLIENTS_PER_SIDECAR {
            readers.spawn(rpc_client(
                f.sidecar(i).url(),
                Fixture::id(i),
                stop.clone(),
                r.clone(),
            ));
        }
        admin_counts.push(a);
        rpc_counts.push(r);
    }

    // Leadership moves round the cluster while a third sidecar is paused and resumed: each
    // step publishes new status on every sidecar involved.
    let began = Instant::now();
    let mut transfers = 0usize;
    let mut refused = Vec::new();
    while began.elapsed() < WINDOW {
        let target = (leader + 1) % 3;
        let other = (leader + 2) % 3;
        let other_url = f.sidecar(other).url();
        for method in ["conductor_pause", "conductor_resume"] {
            let r = rpc_timeout(&other_url, method, json!([]), READ_TIMEOUT).await;
            assert_eq!(
                r,
                Ok(Value::Null),
                "{method} on {} during the churn",
                Fixture::id(other)
            );
        }
        match set_master(&mut f, leader, target).await {
            Ok(_) => {
                transfers += 1;
                leader = target;
            }
            // A target that fell a block behind is refused with nothing changed: try the next.
            Err(e) if !e.is_transport() => refused.push(e.message),
            Err(e) => panic!(
                "setMaster {} -> {}: {e} (admin {:?}, rpc {:?})",
                Fixture::id(leader),
                Fixture::id(target),
                admin_counts.iter().map(|c| c.summary()).collect::<Vec<_>>(),
                rpc_counts.iter().map(|c| c.summary()).collect::<Vec<_>>()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        leader = f
            .leader_id()
            .await
            .map_or(leader, |id| Fixture::index_of(&id));
    }
    stop.cancel();
    tokio::time::timeout(READ_TIMEOUT * 2, async {
        while readers.join_next().await.is_some() {}
    })
    .await
    .expect("the readers stop");

    let report = format!(
        "transfers {transfers}, refused {refused:?}\nadmin: {:#?}\nrpc: {:#?}",
        admin_counts.iter().map(|c| c.summary()).collect::<Vec<_>>(),
        rpc_counts.iter().map(|c| c.summary()).collect::<Vec<_>>()
    );
    eprintln!("{report}");
    for i in 0..3 {
        let (a, r) = (&admin_counts[i], &rpc_counts[i]);
        assert_eq!(
            a.timed_out.load(Ordering::Relaxed) + r.timed_out.load(Ordering::Relaxed),
            0,
            "{} stopped answering status reads:\n{report}",
            Fixture::id(i)
        );
        assert!(
            a.ok.load(Ordering::Relaxed) >= 2_000,
            "{}: too few admin polls to exercise the race:\n{report}",
            Fixture::id(i)
        );
        assert!(
            r.ok.load(Ordering::Relaxed) >= 1_000,
            "{}: too few RPC status calls:\n{report}",
            Fixture::id(i)
        );
    }
    assert!(
        transfers >= 3,
        "leadership must have moved during the window:\n{report}"
    );

    // Every sidecar still answers admin and RPC.
    for i in 0..3 {
        let admin = f.sidecar(i).admin_url();
        let (status, body) = get(&format!("{admin}/readyz"), READ_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{} /readyz after the load: {e}", Fixture::id(i)));
        assert_eq!(status, 200, "{} /readyz: {body}", Fixture::id(i));
        let (status, _) = get(&format!("{admin}/metrics"), READ_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{} /metrics after the load: {e}", Fixture::id(i)));
        assert_eq!(status, 200);
        let url = f.sidecar(i).url();
        rpc_timeout(&url, "conductor_leader", json!([]), READ_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{} conductor_leader after the load: {e}", Fixture::id(i)));
    }

    // The control loops still act: a final transfer completes and the chain moves on, fork-free.
    let settled = f.wait_single_active(SETTLE).await;
    let target = (settled + 1) % 3;
    wait_until(
        Duration::from_secs(30),
        "a final setMaster to succeed",
        || async {
            let bystander = (settled + 2) % 3;
            let url = f.sidecars[bystander].url();
            rpc_timeout(
                &url,
                "coordinator_setMaster",
                json!([Fixture::id(target)]),
                TRANSFER,
            )
            .await
                == Ok(Value::Null)
        },
    )
    .await;
    assert_eq!(f.wait_single_active(SETTLE).await, target);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}
