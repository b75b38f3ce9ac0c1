//! The JSON-RPC listener under hostile load, against a real sidecar, a real etcd and the op-node
//! simulator in conductor mode (every block is committed through the sidecar): clients that send
//! their bodies slowly, or send many big bodies, cannot delay the calls op-node makes while
//! producing blocks, cannot make the sidecar buffer unbounded bytes, get a clear error when the
//! sidecar has no room, and leave a sidecar that serves normally afterwards.
//!
//! The tests of this file run one at a time (each loads the 2-core machine on its own).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::rpc::get;
use common::{rpc, rpc_timeout, wait_until, Fixture, FixtureOpts};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SETTLE: Duration = Duration::from_secs(60);
/// More connections than the old listener had request permits (1024).
const SLOW_CLIENTS: usize = 1_100;
/// How long a slow client waits between two bytes of its body.
const TRICKLE_EVERY: Duration = Duration::from_millis(300);
/// No slow client lives longer than this, whatever happens.
const TRICKLE_MAX: Duration = Duration::from_secs(60);
/// op-node gives each conductor call 1 s; twice that on a noisy 2-core machine.
const BUDGET: Duration = Duration::from_secs(2);
/// The sidecar's default `--rpc.max-conns-per-ip`.
const DEFAULT_PER_IP: f64 = 128.0;
/// The sidecar's default `--rpc.read-timeout`.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `http://127.0.0.1:port` -> `127.0.0.1:port`.
fn authority(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// One sample of a metric (`name` may include its labels); `None` if absent.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|rest| rest.trim().parse().ok())
    })
}

async fn metrics(admin_url: &str) -> String {
    let (status, text) = get(&format!("{admin_url}/metrics"), Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

/// op-node's block-path calls on fresh connections, each within [`BUDGET`].
async fn assert_block_path_answers(url: &str, leader: &str, what: &str) {
    for round in 0..5 {
        for (method, params, want) in [
            ("conductor_leader", json!([]), json!(true)),
            ("conductor_active", json!([]), json!(true)),
            (
                "coordinator_requestBuildingBlock",
                json!([leader]),
                Value::Null,
            ),
        ] {
            let t = Instant::now();
            let r = rpc_timeout(url, method, params, BUDGET).await;
            assert_eq!(
                r,
                Ok(want),
                "{what}: {method} (round {round}) on a fresh connection, after {:?}",
                t.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Default)]
struct SlowStats {
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// The sidecar answered (an error) or closed the connection.
    ended_by_server: AtomicUsize,
}

/// One client that sends its headers and the start of a JSON-RPC body, then one more byte every
/// [`TRICKLE_EVERY`], never finishing: until `stop`, until the sidecar ends the connection, or
/// [`TRICKLE_MAX`].
async fn slow_client(addr: String, stop: CancellationToken, stats: Arc<SlowStats>) {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await;
    let Ok(Ok(mut s)) = stream else {
        stats.failed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    stats.connected.fetch_add(1, Ordering::SeqCst);
    let start = r#"{"jsonrpc":"2.0","id":1,"method":"optimism_syncStatus","params":[""#;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{start}"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        stats.ended_by_server.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let give_up = tokio::time::sleep(TRICKLE_MAX);
    tokio::pin!(give_up);
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = &mut give_up => return,
            _ = s.read(&mut buf) => {
                // An answer (408, 503) or EOF or a reset: the sidecar is done with us.
                stats.ended_by_server.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ = tokio::time::sleep(TRICKLE_EVERY) => {
                if s.write_all(b"x").await.is_err() {
                    stats.ended_by_server.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// Opens [`SLOW_CLIENTS`] slow clients (in waves, so the listen backlog never overflows) and
/// waits until each has connected or failed to.
async fn start_slow_clients(
    addr: &str,
    stop: &CancellationToken,
    stats: &Arc<SlowStats>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for i in 0..SLOW_CLIENTS {
        set.spawn(slow_client(addr.to_string(), stop.clone(), stats.clone()));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_until(
        Duration::from_secs(30),
        "every slow client to connect (or fail to)",
        || async {
            stats.connected.load(Ordering::SeqCst) + stats.failed.load(Ordering::SeqCst)
                >= SLOW_CLIENTS
        },
    )
    .await;
    set
}

async fn stop_slow_clients(stop: CancellationToken, mut set: JoinSet<()>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), async {
        while set.join_next().await.is_some() {}
    })
    .await
    .expect("slow clients stop when told to");
}

/// The sidecar serves normally: op-node's calls, a read from etcd, a proxied call, and the
/// chain keeps growing through fenced commits.
async fn assert_serving_after(f: &mut Fixture, leader: &str) {
    let url = f.sidecar(0).url();
    assert_block_path_answers(&url, leader, "after the load").await;
    assert_eq!(
        rpc(&url, "coordinator_getMaster", json!([])).await,
        Ok(json!(leader))
    );
    let status = rpc(&url, "optimism_syncStatus", json!([]))
        .await
        .expect("a proxied call after the load");
    assert!(status["unsafe_l2"]["number"].is_u64(), "{status}");
    f.assert_chain_progresses().await;
    assert!(f.sidecar(0).is_running());
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_do_not_delay_op_nodes_calls() {
    let _serial = SERIAL.lock().await;
    // Default limits: all clients share 127.0.0.1 with the simulated op-node, so the per-IP
    // cap applies to everyone and the connections that make no progress are the ones closed.
    let mut f = Fixture::start(1, FixtureOpts::conductor()).await;
    let leader = Fixture::id(f.wait_leader_producing(SETTLE).await);
    let url = f.sidecar(0).url();
    let admin = f.sidecar(0).admin_url();
    let height = f.chain_height();

    let stop = CancellationToken::new();
    let stats = Arc::new(SlowStats::default());
    let set = start_slow_clients(&authority(&url), &stop, &stats).await;

    assert_block_path_answers(&url, &leader, "with 1,100 slow clients").await;
    // op-node's own commits (the simulator's, through its pooled connections) go through too.
    wait_until(
        Duration::from_secs(20),
        "the chain to grow 3 blocks while the slow clients trickle",
        || async { f.chain_height() >= height + 3 },
    )
    .await;
    let text = metrics(&admin).await;
    let open = metric(&text, "op_sidecar_rpc_connections").expect("connection gauge");
    assert!(
        open <= DEFAULT_PER_IP,
        "at most {DEFAULT_PER_IP} connections from one IP may be open, {open} are"
    );
    let evicted = metric(
        &text,
        r#"op_sidecar_rpc_refused_total{reason="conn_evicted"}"#,
    );
    assert!(
        evicted.is_some_and(|n| n >= (SLOW_CLIENTS as f64 - DEFAULT_PER_IP)),
        "connections past the per-IP cap are closed: {evicted:?}"
    );
    assert!(stats.ended_by_server.load(Ordering::SeqCst) > SLOW_CLIENTS / 2);

    stop_slow_clients(stop, set).await;
    assert_serving_after(&mut f, &leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_no_request_permit_and_are_cut_at_the_read_deadline() {
    let _serial = SERIAL.lock().await;
    // Connection caps out of the way: every slow client stays connected, so only the order of
    // body read and request permit (and the read deadline) stand between them and op-node.
    let mut f = Fixture::start(
        1,
        FixtureOpts::conductor()
            .flag("--rpc.max-conns", "4096")
            .flag("--rpc.max-conns-per-ip", "4096"),
    )
    .await;
    let leader = Fixture::id(f.wait_leader_producing(SETTLE).await);
    let url = f.sidecar(0).url();
    let admin = f.sidecar(0).admin_url();
    let height = f.chain_height();

    let stop = CancellationToken::new();
    let stats = Arc::new(SlowStats::default());
    let began = Instant::now();
    let set = start_slow_clients(&authority(&url), &stop, &stats).await;
    let connected = stats.connected.load(Ordering::SeqCst);
    assert_eq!(connected, SLOW_CLIENTS, "every slow client connected");
    wait_until(
        Duration::from_secs(10),
        "the sidecar to hold every slow client's connection",
        || async {
            metric(&metrics(&admin).await, "op_sidecar_rpc_connections")
                .is_some_and(|n| n >= SLOW_CLIENTS as f64)
        },
    )
    .await;

    assert_block_path_answers(&url, &leader, "with 1,100 slow clients connected").await;
    wait_until(
        Duration::from_secs(20),
        "the chain to grow 3 blocks while the slow clients trickle",
        || async { f.chain_height() >= height + 3 },
    )
    .await;

    // None of them ever finishes its body: the sidecar answers each at its read deadline.
    wait_until(
        DEFAULT_READ_TIMEOUT + Duration::from_secs(20),
        "the sidecar to end every slow client's request at the read deadline",
        || async { stats.ended_by_server.load(Ordering::SeqCst) >= connected },
    )
    .await;
    assert!(
        began.elapsed() >= DEFAULT_READ_TIMEOUT,
        "cut before the read deadline ({:?})",
        began.elapsed()
    );
    let text = metrics(&admin).await;
    let cut = metric(
        &text,
        r#"op_sidecar_rpc_refused_total{reason="read_timeout"}"#,
    );
    assert!(
        cut.is_some_and(|n| n >= SLOW_CLIENTS as f64),
        "read deadline refusals: {cut:?}"
    );

    stop_slow_clients(stop, set).await;
    assert_serving_after(&mut f, &leader).await;
}

/// Bodies sent by the greedy clients below.
const BIG_BODY: usize = 8 * 1024 * 1024;
const GREEDY_CLIENTS: usize = 40;

/// A JSON-RPC call padded to exactly `len` bytes.
fn padded_call(len: usize) -> Bytes {
    let start = r#"{"jsonrpc":"2.0","id":1,"method":"coordinator_version","params":[""#;
    let end = r#""]}"#;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(start.as_bytes());
    body.resize(len - end.len(), b'x');
    body.extend_from_slice(end.as_bytes());
    Bytes::from(body)
}

/// The status code of a raw HTTP/1.1 answer, if one came.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends all of `body` but its last byte, waits for `release`, sends the last byte; returns
/// whatever the sidecar answered (read concurrently, so an early refusal is seen).
async fn greedy_client(addr: String, body: Bytes, release: CancellationToken) -> Vec<u8> {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await
    else {
        return Vec::new();
    };
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let read_all = async {
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 || answer.len() > 64 * 1024 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(40), read_all).await;
        answer
    });
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let send = async {
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(&body[..body.len() - 1]).await?;
        release.cancelled().await;
        wr.write_all(&body[body.len() - 1..]).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), send).await;
    reader.await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_are_not_all_buffered_and_a_full_sidecar_says_so() {
    let _serial = SERIAL.lock().await;
    let mut f = Fixture::start(1, FixtureOpts::conductor()).await;
    let leader = Fixture::id(f.wait_leader_producing(SETTLE).await);
    let url = f.sidecar(0).url();
    let admin = f.sidecar(0).admin_url();
    let addr = authority(&url);
    let pid = f.sidecar(0).pid();
    let rss_before = peak_rss(pid);
    let height = f.chain_height();

    // 40 clients x 8 MiB = 320 MiB of bodies, all sent at once and all held open unfinished.
    let body = padded_call(BIG_BODY);
    let release = CancellationToken::new();
    let mut greedy = JoinSet::new();
    let began = Instant::now();
    for _ in 0..GREEDY_CLIENTS {
        greedy.spawn(greedy_client(addr.clone(), body.clone(), release.clone()));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Bounded memory: only what fits the byte budget was read.
    let growth = peak_rss(pid).saturating_sub(rss_before);
    eprintln!("peak RSS grew by {} MiB", growth / (1024 * 1024));
    assert!(
        growth < 160 * 1024 * 1024,
        "{GREEDY_CLIENTS} x {BIG_BODY} bytes of bodies raised the sidecar's peak RSS by {} MiB",
        growth / (1024 * 1024)
    );

    // A request that cannot get room is told so, promptly, with a JSON-RPC error.
    let probe = async {
        let mut s = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            BIG_BODY + 1024
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(&body[..64 * 1024])
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(8), probe)
        .await
        .expect("a request the sidecar has no room for is answered, not left hanging")
        .expect("probe connection");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), Some(503), "no room: {text}");
    let json_body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(json_body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["error"]["code"], json!(-32005), "{v}");

    // op-node's calls, including its commits, use the reserve and are not held up.
    assert_block_path_answers(&url, &leader, "with the byte budget full").await;
    let during = f.chain_height();
    assert!(
        during > height,
        "commits went through while the budget was full ({height} -> {during})"
    );

    let text = metrics(&admin).await;
    let buffered = metric(&text, "op_sidecar_rpc_buffered_bytes").expect("buffered bytes gauge");
    assert!(
        buffered > 0.0 && buffered <= (64 + 11) as f64 * 1024.0 * 1024.0,
        "buffered bytes within the default budget and reserve: {buffered}"
    );
    assert!(
        began.elapsed() < DEFAULT_READ_TIMEOUT,
        "still inside the read deadline of the greedy clients: {:?}",
        began.elapsed()
    );

    release.cancel();
    let mut statuses = Vec::new();
    while let Some(answer) = greedy.join_next().await {
        statuses.push(status_of(&answer.expect("greedy client")));
    }
    eprintln!("greedy clients' HTTP statuses: {statuses:?}");
    let served = statuses.iter().filter(|s| **s == Some(200)).count();
    let refused = statuses.iter().filter(|s| **s == Some(503)).count();
    assert!(
        served >= 1,
        "some big bodies are served once there is room: {statuses:?}"
    );
    assert!(
        refused >= 1,
        "the others are refused with 503: {statuses:?}"
    );
    wait_until(
        Duration::from_secs(15),
        "every buffered byte to be released",
        || async { metric(&metrics(&admin).await, "op_sidecar_rpc_buffered_bytes") == Some(0.0) },
    )
    .await;
    assert_serving_after(&mut f, &leader).await;
}
