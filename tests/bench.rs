//! Benchmarks, never run by `cargo test` (every one is `#[ignore]`); `deploy/bench.sh` runs them
//! in release mode and records the results with the date and machine in `BENCHMARKS.md`:
//!
//! ```text
//! cargo test --release --test bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each benchmark prints a markdown section and appends it to `$BENCH_OUT`
//! (default `target/bench-results.md`). Every number is set against a baseline measured in the
//! same run on the same machine: a direct call to the simulated op-node, or a raw etcd Txn.
//! Everything runs on loopback; every load loop is bounded in calls and time.
//!
//! - `a_rpc_latency_throughput_memory`: `coordinator_requestBuildingBlock` and `conductor_leader`
//!   latency and throughput, proxy overhead of `optimism_syncStatus`, sidecar memory.
//! - `b_commit_unsafe_payload`: `conductor_commitUnsafePayload` at 1 KiB .. 10 MiB against raw
//!   etcd Txns writing the same bytes.
//! - `c_failover`: failover time per fault kind over `BENCH_RUNS` runs (default 20), with the
//!   simulator's chain invariants checked after every run.
//! - `d_soak_etcd_size`: etcd's database size over `BENCH_SOAK_MINUTES` (default 30) of
//!   conductor-mode blocks of a realistic size mix.
#![allow(clippy::unwrap_used)]

mod common;

use op_node_sim::hex_encode;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, WatchOptions};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use common::{Etcd, Sidecar, SidecarBuilder, TcpProxy};

// === settings (stated in every section) ===

const LEASE_TTL: &str = "2s";
/// `--healthcheck.interval`: `$BENCH_HC_INTERVAL` (humantime), 100ms unless set: the setting
/// for the fastest failover (README, Health). Runs before 2026-11-22 08:50 UTC used 250ms.
fn hc_interval() -> String {
    std::env::var("BENCH_HC_INTERVAL").unwrap_or_else(|_| "100ms".into())
}

fn hc_interval_ms() -> u64 {
    humantime::parse_duration(&hc_interval())
        .expect("BENCH_HC_INTERVAL is a duration such as 100ms")
        .as_millis() as u64
}

const UNSAFE_INTERVAL: &str = "3s";
const BLOCK_TIME: Duration = Duration::from_secs(1);
/// The sidecar's health-handover grace: unsafe-interval + interval * (failures + successes).
fn health_grace() -> Duration {
    Duration::from_millis(3000 + hc_interval_ms() * 5)
}

fn settings_line() -> String {
    format!(
        "Settings: `--lease.ttl {LEASE_TTL} --healthcheck.interval {} \
         --healthcheck.unsafe-interval {UNSAFE_INTERVAL}` (failures/successes 3/2, \
         etcd timeout 2s), simulator block time {}s, loopback only.",
        hc_interval(),
        BLOCK_TIME.as_secs()
    )
}

// === small helpers ===

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn out_path() -> PathBuf {
    std::env::var("BENCH_OUT").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.md"),
        PathBuf::from,
    )
}

/// A markdown section: printed and appended to `$BENCH_OUT` when finished.
struct Report {
    text: String,
}

impl Report {
    fn new(title: &str) -> Self {
        let mut r = Report {
            text: String::new(),
        };
        r.line(&format!("### {title}\n"));
        r.line(&format!(
            "Load average (1/5/15 min) at start: {}.",
            loadavg()
        ));
        r
    }

    fn line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
    }

    fn finish(mut self) {
        self.line(&format!("\nLoad average at end: {}.\n", loadavg()));
        print!("{}", self.text);
        let path = out_path();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        f.write_all(self.text.as_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Percentiles by nearest rank over milliseconds.
#[derive(Clone, Copy, Debug)]
struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Some(Stats {
            p50: rank(50.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

/// Latency in ms with a precision that suits its size.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn opt_ms(s: Option<Stats>, f: impl Fn(&Stats) -> f64) -> String {
    s.map_or_else(|| "-".into(), |s| ms(f(&s)))
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

// === a keep-alive JSON-RPC client (the same one for the sidecar and its baseline) ===

#[derive(Clone)]
struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    fn new() -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        Http(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(c),
        )
    }

    /// POSTs a JSON-RPC body; Ok(result) or Err(error text).
    async fn call_body(&self, url: &str, body: Bytes) -> Result<Value, String> {
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self.0.request(req).await.map_err(|e| format!("{e:?}"))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            Ok::<_, String>(bytes)
        };
        let bytes = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| format!("no answer from {url} within 10s"))??;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if let Some(err) = v.get("error") {
            return Err(err.to_string());
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| format!("no result: {v}"))
    }

    async fn call(&self, url: &str, method: &str, params: Value) -> Result<Value, String> {
        self.call_body(url, request_body(method, &params)).await
    }
}

fn request_body(method: &str, params: &Value) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .unwrap(),
    )
}

/// One call target of a load test: URL, request body and the result every answer must have.
#[derive(Clone)]
struct Target {
    name: String,
    url: String,
    body: Bytes,
    expect: Value,
}

impl Target {
    fn new(name: &str, url: &str, method: &str, params: Value, expect: Value) -> Self {
        Target {
            name: name.into(),
            url: url.into(),
            body: request_body(method, &params),
            expect,
        }
    }
}

#[derive(Default)]
struct Load {
    lat_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Load {
    fn ok(&self) -> usize {
        self.lat_ms.len()
    }

    fn throughput(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: Load) {
        self.lat_ms.extend(other.lat_ms);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
    }
}

/// `clients` concurrent loops, each one call at a time on its own kept-alive connection, until
/// `max_calls` calls were started or `max_time` passed. An answer other than `expect` counts as
/// an error (its latency is not recorded).
async fn load(
    http: &Http,
    t: &Target,
    clients: usize,
    max_time: Duration,
    max_calls: usize,
) -> Load {
    load_judged(http, t, clients, max_time, max_calls, |t, v| *v == t.expect).await
}

/// [`load`] with `ok` deciding which answers count as successes.
async fn load_judged(
    http: &Http,
    t: &Target,
    clients: usize,
    max_time: Duration,
    max_calls: usize,
    ok: fn(&Target, &Value) -> bool,
) -> Load {
    let started = Arc::new(AtomicUsize::new(0));
    let begin = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, t, started) = (http.clone(), t.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let mut l = Load::default();
            while begin.elapsed() < max_time && started.fetch_add(1, Ordering::Relaxed) < max_calls
            {
                let t0 = Instant::now();
                let r = http.call_body(&t.url, t.body.clone()).await;
                let dt = t0.elapsed().as_secs_f64() * 1000.0;
                match r {
                    Ok(v) if ok(&t, &v) => l.lat_ms.push(dt),
                    Ok(v) => {
                        l.errors += 1;
                        l.first_error
                            .get_or_insert_with(|| format!("unexpected result {v}"));
                    }
                    Err(e) => {
                        l.errors += 1;
                        l.first_error.get_or_insert(e);
                    }
                }
            }
            l
        }));
    }
    let mut total = Load::default();
    for task in tasks {
        total.merge(task.await.unwrap());
    }
    total.elapsed = begin.elapsed();
    total
}

/// Sequential latency of several targets, alternating blocks of `block` calls so that all of
/// them see the same machine conditions.
async fn paired_latency(http: &Http, targets: &[Target], calls: usize, block: usize) -> Vec<Load> {
    for t in targets {
        let _ = load(http, t, 1, Duration::from_secs(2), 100).await; // warm-up
    }
    let mut out: Vec<Load> = targets.iter().map(|_| Load::default()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    while done < calls && Instant::now() < deadline {
        let n = block.min(calls - done);
        for (i, t) in targets.iter().enumerate() {
            out[i].merge(load(http, t, 1, Duration::from_secs(10), n).await);
        }
        done += n;
    }
    out
}

fn latency_row(name: &str, l: &Load) -> String {
    let s = Stats::of(&l.lat_ms);
    format!(
        "| {name} | {} | {} | {} | {} | {} |",
        l.ok(),
        opt_ms(s, |s| s.p50),
        opt_ms(s, |s| s.p99),
        opt_ms(s, |s| s.max),
        errors_cell(l)
    )
}

fn throughput_row(name: &str, clients: usize, l: &Load) -> String {
    let s = Stats::of(&l.lat_ms);
    format!(
        "| {name} | {clients} | {} | {:.0} | {} | {} | {} |",
        l.ok(),
        l.throughput(),
        opt_ms(s, |s| s.p50),
        opt_ms(s, |s| s.p99),
        errors_cell(l)
    )
}

fn errors_cell(l: &Load) -> String {
    match &l.first_error {
        None => l.errors.to_string(),
        Some(e) => format!(
            "{} (first: {})",
            l.errors,
            e.chars().take(80).collect::<String>()
        ),
    }
}

// === the simulator on its own runtime ===

/// The op-node simulator on a dedicated 2-thread runtime, so that its servers do not share a
/// scheduler with the load generator (it still shares the machine, like the sidecar does).
struct SimHost {
    cluster: Option<op_node_sim::Cluster>,
    rt: Option<tokio::runtime::Runtime>,
}

impl SimHost {
    async fn start(cfg: op_node_sim::ClusterConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("op-node-sim")
            .enable_all()
            .build()
            .expect("simulator runtime");
        let cluster = rt
            .spawn(op_node_sim::Cluster::start(cfg))
            .await
            .unwrap()
            .expect("start the op-node simulator");
        SimHost {
            cluster: Some(cluster),
            rt: Some(rt),
        }
    }

    fn cluster(&self) -> &op_node_sim::Cluster {
        self.cluster.as_ref().unwrap()
    }

    fn node(&self, i: usize) -> &op_node_sim::NodeHandle {
        self.cluster().node(i)
    }

    async fn restart_node(&self, i: usize) {
        let node = self.node(i).clone();
        self.rt
            .as_ref()
            .unwrap()
            .spawn(async move { node.restart().await })
            .await
            .unwrap()
            .expect("restart a simulated node");
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        drop(self.cluster.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

// === a driven-mode cluster: etcd, simulator, n sidecars, observers ===

type LeaderEvents = Arc<Mutex<Vec<(u64, Option<String>)>>>;
type ActiveEvents = Arc<Mutex<Vec<(u64, usize, bool)>>>;

struct Bench {
    // Drop order: sidecars before the proxies, simulator and etcd they use.
    sidecars: Vec<Sidecar>,
    proxies: Vec<Option<TcpProxy>>,
    sim: SimHost,
    /// Kept running until the bench ends.
    _etcd: Etcd,
    prefix: String,
    http: Http,
    kv: etcd_client::Client,
    /// (unix ms, Some(id) on a put of a leader key / None on a delete), from an etcd watch.
    leader_events: LeaderEvents,
    /// (unix ms, node index, active) on every change of a simulated sequencer's state, polled
    /// every 5 ms.
    active_events: ActiveEvents,
    /// Conductor mode: sidecars start (and restart) paused and are resumed by the bench.
    conductor: bool,
    observers: Vec<JoinHandle<()>>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for o in &self.observers {
            o.abort();
        }
    }
}

fn id(i: usize) -> String {
    format!("seq-{i}")
}

impl Bench {
    async fn start(n: usize, etcd_proxy: bool, rust_log: &str) -> Bench {
        Self::start_mode(n, etcd_proxy, rust_log, false).await
    }

    /// `conductor`: every node commits through its own sidecar (op-node `--conductor.rpc`).
    /// The sidecars start paused and are resumed once every node knows its conductor, so the
    /// first leader already runs in conductor mode.
    async fn start_mode(n: usize, etcd_proxy: bool, rust_log: &str, conductor: bool) -> Bench {
        let etcd = Etcd::start().await;
        let sim = SimHost::start(op_node_sim::ClusterConfig {
            nodes: n,
            block_time: BLOCK_TIME,
            ..Default::default()
        })
        .await;
        let prefix = format!("/op-sidecar/{}", common::unique("bench"));
        let kv = etcd_client::Client::connect([etcd.client_url()], None)
            .await
            .expect("connect to etcd");
        let leader_events: LeaderEvents = Arc::default();
        let active_events: ActiveEvents = Arc::default();
        let mut observers = Vec::new();

        let mut watch_client = kv.clone();
        let mut stream = watch_client
            .watch(
                format!("{prefix}/leader/"),
                Some(WatchOptions::new().with_prefix()),
            )
            .await
            .expect("watch the leader keys");
        let ev = leader_events.clone();
        observers.push(tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                let t = now_ms();
                for e in resp.events() {
                    let who = match e.event_type() {
                        etcd_client::EventType::Put => e
                            .kv()
                            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                        etcd_client::EventType::Delete => None,
                    };
                    ev.lock().unwrap().push((t, who));
                }
            }
        }));
        let nodes: Vec<op_node_sim::NodeHandle> = sim.cluster().nodes().to_vec();
        let ev = active_events.clone();
        observers.push(tokio::spawn(async move {
            let mut last = vec![false; nodes.len()];
            loop {
                let t = now_ms();
                for (i, n) in nodes.iter().enumerate() {
                    let a = n.is_active();
                    if a != last[i] {
                        last[i] = a;
                        ev.lock().unwrap().push((t, i, a));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));

        let mut proxies = Vec::new();
        for _ in 0..n {
            proxies.push(if etcd_proxy {
                Some(TcpProxy::start(&etcd.client_url()).await)
            } else {
                None
            });
        }
        let mut sidecars = Vec::new();
        for (i, p) in proxies.iter().enumerate() {
            let endpoints = p.as_ref().map_or_else(|| etcd.client_url(), TcpProxy::url);
            let node = sim.node(i);
            let mut builder = SidecarBuilder::new(
                &id(i),
                &node.node_url(),
                &node.geth_url(),
                &endpoints,
                &prefix,
            )
            .flag("--lease.ttl", LEASE_TTL)
            .flag("--healthcheck.interval", &hc_interval())
            .flag("--healthcheck.unsafe-interval", UNSAFE_INTERVAL)
            .env("RUST_LOG", rust_log);
            if conductor {
                builder = builder.paused();
            }
            sidecars.push(builder.start().await);
        }
        if conductor {
            let http = Http::new();
            for (i, sc) in sidecars.iter().enumerate() {
                sim.node(i).set_conductor(Some(sc.url()));
            }
            for sc in &sidecars {
                http.call(&sc.url(), "conductor_resume", json!([]))
                    .await
                    .expect("conductor_resume");
            }
        }
        Bench {
            sidecars,
            proxies,
            sim,
            _etcd: etcd,
            prefix,
            http: Http::new(),
            kv,
            leader_events,
            active_events,
            observers,
            conductor,
        }
    }

    fn n(&self) -> usize {
        self.sidecars.len()
    }

    /// Restarts sidecar `i` with its original flags (resuming it in conductor mode, where it
    /// starts paused).
    async fn restart_sidecar(&mut self, i: usize) {
        self.sidecars[i].restart().await;
        if self.conductor {
            let url = self.sidecars[i].url();
            let _ = self.http.call(&url, "conductor_resume", json!([])).await;
        }
    }

    /// One observation of the steady state; Ok(leader index) or why not.
    async fn settled_now(&mut self) -> Result<usize, String> {
        let active: Vec<usize> = (0..self.n())
            .filter(|&i| self.sim.node(i).is_active())
            .collect();
        if active.len() != 1 {
            return Err(format!("active nodes {active:?}"));
        }
        let l = active[0];
        for i in 0..self.n() {
            if !self.sidecars[i].is_responsive() {
                return Err(format!("{} not running", id(i)));
            }
            let url = self.sidecars[i].url();
            match self
                .http
                .call(&url, "coordinator_getMaster", json!([]))
                .await
            {
                Ok(Value::String(s)) if s == id(l) => {}
                other => return Err(format!("{} says leader {other:?}", id(i))),
            }
        }
        let members = self
            .kv
            .get(
                format!("{}/members/", self.prefix),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let healthy = members
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(kv.value()).ok())
            .filter(|m| m["healthy"] == json!(true) && m["paused"] == json!(false))
            .count();
        if healthy != self.n() {
            return Err(format!("{healthy} healthy members"));
        }
        let top = self.sim.node(l).head().number;
        for i in 0..self.n() {
            if self.sim.node(i).head().number + 1 < top {
                return Err(format!("{} behind", id(i)));
            }
        }
        Ok(l)
    }

    /// When node `l` last became active (unix ms).
    fn active_since(&self, l: usize) -> Option<u64> {
        self.active_events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, i, a)| *i == l && *a)
            .map(|(t, _, _)| *t)
    }

    /// Waits until one node is active, every sidecar names its sidecar as leader, every member
    /// is healthy and caught up, for 1 s on end, and the leader has led for `min_age`.
    async fn wait_settled(
        &mut self,
        min_age: Duration,
        timeout: Duration,
    ) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let mut since: Option<(usize, Instant)> = None;
        let mut why = String::new();
        while Instant::now() < deadline {
            match self.settled_now().await {
                Ok(l) => {
                    let held = match since {
                        Some((j, t)) if j == l => t.elapsed(),
                        _ => {
                            since = Some((l, Instant::now()));
                            Duration::ZERO
                        }
                    };
                    let age = self.active_since(l).map_or(Duration::ZERO, |t| {
                        Duration::from_millis(now_ms().saturating_sub(t))
                    });
                    if held >= Duration::from_secs(1) && age >= min_age {
                        return Ok(l);
                    }
                }
                Err(e) => {
                    why = e;
                    since = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "not settled after {timeout:?}: {why}; active {:?}; {}",
            self.sim.cluster().active_nodes(),
            self.sim.cluster().check()
        ))
    }

    fn log_tails(&self) -> String {
        let mut s = String::new();
        for sc in &self.sidecars {
            let _ = writeln!(
                s,
                "----- {} -----\n{}",
                sc.id(),
                common::log_tail_collapsed(&sc.log_path(), 60)
            );
        }
        s
    }

    fn keep_logs(&self, tag: &str) -> Vec<PathBuf> {
        let dir = out_path()
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join("bench-logs");
        let _ = std::fs::create_dir_all(&dir);
        let mut kept = Vec::new();
        for sc in &self.sidecars {
            let to = dir.join(format!("{tag}-{}.log", sc.id()));
            if std::fs::copy(sc.log_path(), &to).is_ok() {
                kept.push(to);
            }
        }
        kept
    }
}

// === a: RPC latency, throughput, proxy overhead and memory ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with deploy/bench.sh"]
async fn a_rpc_latency_throughput_memory() {
    let mut r = Report::new("RPC latency, throughput, proxy overhead and memory");
    r.line(&settings_line());
    r.line(
        "Three sidecars (sidecar-driven mode, `RUST_LOG=info` as in production) on one etcd \
         and three simulated op-nodes. The load generator is this test process: one kept-alive \
         HTTP/1.1 connection per client, the same client code for the sidecar and for its \
         baseline (a direct call of a trivial method, `admin_sequencerActive`, to the simulated \
         op-node, served from its own 2-thread runtime). Client, sidecars, simulator and etcd \
         share the machine's cores, so these are whole-system loopback numbers. Latency in ms.\n",
    );
    let mut b = Bench::start(3, false, "info").await;
    let leader = b
        .wait_settled(Duration::ZERO, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tails()));
    let follower = (leader + 1) % b.n();
    let lurl = b.sidecars[leader].url();
    let furl = b.sidecars[follower].url();
    let nurl = b.sim.node(leader).node_url();
    let (lpid, fpid) = (b.sidecars[leader].pid(), b.sidecars[follower].pid());
    let transitions_before = b.leader_events.lock().unwrap().len();

    tokio::time::sleep(Duration::from_secs(5)).await;
    let mem_idle_leader = memory_kib(lpid);
    let mem_idle_follower = memory_kib(fpid);

    let http = Http::new();
    let rbb = Target::new(
        "`coordinator_requestBuildingBlock` on the leader's sidecar",
        &lurl,
        "coordinator_requestBuildingBlock",
        json!([id(leader)]),
        Value::Null,
    );
    let base = Target::new(
        "baseline: `admin_sequencerActive` direct to the op-node",
        &nurl,
        "admin_sequencerActive",
        json!([]),
        json!(true),
    );
    let cl = Target::new(
        "`conductor_leader` on the leader's sidecar",
        &lurl,
        "conductor_leader",
        json!([]),
        json!(true),
    );

    // b: requestBuildingBlock.
    let seq = paired_latency(&http, &[rbb.clone(), base.clone()], 2000, 100).await;
    r.line(
        "#### `coordinator_requestBuildingBlock` (answered from memory on the leader's sidecar)\n",
    );
    r.line("Sequential latency (one client, alternating blocks of 100 calls with the baseline):\n");
    r.line("| target | calls | p50 | p99 | max | errors |\n|---|---|---|---|---|---|");
    r.line(&latency_row(&rbb.name, &seq[0]));
    r.line(&latency_row(&base.name, &seq[1]));
    r.line("\nThroughput (3 s per row; latency under load):\n");
    r.line("| target | clients | calls | calls/s | p50 | p99 | errors |\n|---|---|---|---|---|---|---|");
    for clients in [1, 32] {
        for t in [&rbb, &base] {
            let l = load(&http, t, clients, Duration::from_secs(3), 2_000_000).await;
            r.line(&throughput_row(&t.name, clients, &l));
        }
    }

    // d: conductor_leader under concurrent load.
    r.line("\n#### `conductor_leader` under concurrent load (5 s per row)\n");
    r.line("| target | clients | calls | calls/s | p50 | p99 | errors |\n|---|---|---|---|---|---|---|");
    for clients in [1, 16, 64] {
        for t in [&cl, &base] {
            let l = load(&http, t, clients, Duration::from_secs(5), 5_000_000).await;
            r.line(&throughput_row(&t.name, clients, &l));
        }
    }

    // d: proxy overhead.
    let via_f = Target::new(
        "through a follower's sidecar (-> leader's sidecar -> op-node)",
        &furl,
        "optimism_syncStatus",
        json!([]),
        Value::Null,
    );
    let via_l = Target::new(
        "through the leader's sidecar (-> op-node)",
        &lurl,
        "optimism_syncStatus",
        json!([]),
        Value::Null,
    );
    let direct = Target::new(
        "baseline: direct to the leader's op-node",
        &nurl,
        "optimism_syncStatus",
        json!([]),
        Value::Null,
    );
    // syncStatus changes every block: accept any result object for this one.
    let sync_targets = [via_f, via_l, direct];
    let seq = paired_sync_latency(&http, &sync_targets, 1000, 100).await;
    r.line("\n#### Proxy overhead: `optimism_syncStatus`\n");
    r.line("Sequential latency (one client, alternating blocks of 100 calls):\n");
    r.line("| path | calls | p50 | p99 | max | errors |\n|---|---|---|---|---|---|");
    for (t, l) in sync_targets.iter().zip(&seq) {
        r.line(&latency_row(&t.name, l));
    }
    r.line("\nThroughput with 16 clients (3 s per row):\n");
    r.line(
        "| path | clients | calls | calls/s | p50 | p99 | errors |\n|---|---|---|---|---|---|---|",
    );
    for t in &sync_targets {
        let l = sync_load(&http, t, 16, Duration::from_secs(3), 2_000_000).await;
        r.line(&throughput_row(&t.name, 16, &l));
    }

    // e: memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mem_after_leader = memory_kib(lpid);
    let mem_after_follower = memory_kib(fpid);
    r.line("\n#### Memory of a sidecar process (`/proc/<pid>/status`, MiB)\n");
    r.line("| process | when | VmRSS | VmHWM (peak) |\n|---|---|---|---|");
    for (who, when, (rss, hwm)) in [
        (
            "leader's sidecar",
            "idle, 5 s after settling",
            mem_idle_leader,
        ),
        (
            "follower's sidecar",
            "idle, 5 s after settling",
            mem_idle_follower,
        ),
        ("leader's sidecar", "after the load above", mem_after_leader),
        (
            "follower's sidecar",
            "after the load above (it forwarded the syncStatus load)",
            mem_after_follower,
        ),
    ] {
        r.line(&format!("| {who} | {when} | {} | {} |", mib(rss), mib(hwm)));
    }

    // The cluster must have stayed as it was under load.
    let transitions = b.leader_events.lock().unwrap().len() - transitions_before;
    let still = b
        .wait_settled(Duration::ZERO, Duration::from_secs(30))
        .await;
    let report = b.sim.cluster().check();
    r.line(&format!(
        "\nLeader-key changes during the load: {transitions}; leader afterwards: {}; \
         simulator invariants: {report}.",
        still
            .as_ref()
            .map_or_else(|e| format!("NOT SETTLED ({e})"), |l| id(*l))
    ));
    r.finish();
    assert_eq!(transitions, 0, "leadership moved during the load test");
    assert_eq!(
        still.ok(),
        Some(leader),
        "leadership moved during the load test"
    );
    assert!(report.is_clean(), "{report}");
}

/// Like [`paired_latency`] but any non-null result object counts as an answer.
async fn paired_sync_latency(
    http: &Http,
    targets: &[Target],
    calls: usize,
    block: usize,
) -> Vec<Load> {
    for t in targets {
        let _ = sync_load(http, t, 1, Duration::from_secs(2), 100).await;
    }
    let mut out: Vec<Load> = targets.iter().map(|_| Load::default()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    while done < calls && Instant::now() < deadline {
        let n = block.min(calls - done);
        for (i, t) in targets.iter().enumerate() {
            out[i].merge(sync_load(http, t, 1, Duration::from_secs(10), n).await);
        }
        done += n;
    }
    out
}

/// [`load`] for a method whose result changes: an object with `unsafe_l2` counts as success.
async fn sync_load(
    http: &Http,
    t: &Target,
    clients: usize,
    max_time: Duration,
    max_calls: usize,
) -> Load {
    load_judged(http, t, clients, max_time, max_calls, |_, v| {
        v.get("unsafe_l2").is_some()
    })
    .await
}

// === b: commitUnsafePayload against a raw etcd Txn ===

fn random_hash() -> String {
    hex_encode(&rand::random::<[u8; 32]>())
}

/// The `transactions` array body: `bytes` of fake transaction data in 4 KiB transactions.
fn transactions_json(bytes: usize) -> String {
    let mut parts = Vec::new();
    let mut left = bytes;
    let mut k = 0u8;
    while left > 0 {
        let n = left.min(4096);
        let tx: Vec<u8> = (0..n)
            .map(|i| {
                k = k.wrapping_mul(31).wrapping_add(i as u8);
                k
            })
            .collect();
        parts.push(format!("\"{}\"", hex_encode(&tx)));
        left -= n;
    }
    parts.join(",")
}

fn envelope(number: u64, parent: &str, hash: &str, txs: &str) -> String {
    let root = random_hash();
    format!(
        r#"{{"executionPayload":{{"parentHash":"{parent}","feeRecipient":"0x4200000000000000000000000000000000000011","stateRoot":"{root}","receiptsRoot":"{root}","logsBloom":"0x{bloom}","prevRandao":"{root}","blockNumber":"0x{number:x}","gasLimit":"0x1c9c380","gasUsed":"0x5208","timestamp":"0x{ts:x}","extraData":"0x","baseFeePerGas":"0x3b9aca00","blockHash":"{hash}","transactions":[{txs}],"withdrawals":[]}},"parentBeaconBlockRoot":"{root}"}}"#,
        bloom = "0".repeat(512),
        ts = now_ms() / 1000,
    )
}

/// The raw etcd baseline: the same etcd requests as the sidecar's fenced commit, with the same
/// bytes, sent with etcd-client from this process on its own keys in the same etcd: the block's
/// packed payload but its last chunk in fenced chunk Txns (all at once), then one Txn that
/// compares the leader key's create revision and the head's mod revision, puts the head and the
/// last chunk and deletes the other blocks' chunks (one Txn in all for a block whose packed
/// payload fits one 1 MiB chunk). The packing is done before the clock starts: this is what etcd alone costs.
struct RawCommitter {
    kv: etcd_client::Client,
    keys: op_sidecar::state::Keys,
    fence_key: String,
    epoch: i64,
    head_rev: i64,
}

impl RawCommitter {
    async fn new(mut kv: etcd_client::Client, prefix: &str) -> Self {
        let fence_key = format!("{prefix}/leader/bench");
        let resp = kv.put(fence_key.clone(), "bench", None).await.unwrap();
        let epoch = resp.header().unwrap().revision();
        RawCommitter {
            kv,
            keys: op_sidecar::state::Keys::new(prefix),
            fence_key,
            epoch,
            head_rev: 0,
        }
    }

    /// The etcd values a commit of `env` writes (outside the timed part).
    fn chunks(env: &str) -> Vec<Vec<u8>> {
        op_sidecar::payload::chunks(&op_sidecar::payload::pack(env.as_bytes()).unwrap())
    }

    async fn commit(
        &mut self,
        number: u64,
        hash: &str,
        parent: &str,
        chunks: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        let fence =
            || Compare::create_revision(self.fence_key.clone(), CompareOp::Equal, self.epoch);
        let mut chunks = chunks;
        let last = chunks.pop().expect("a stored form has at least one chunk");
        let last_key = self.keys.payload_chunk(hash, chunks.len());
        let writes = chunks.into_iter().enumerate().map(|(i, v)| {
            let mut kv = self.kv.clone();
            let txn = Txn::new().when(vec![fence()]).and_then(vec![TxnOp::put(
                self.keys.payload_chunk(hash, i),
                v,
                None,
            )]);
            async move { kv.txn(txn).await }
        });
        for r in futures_util::future::join_all(writes).await {
            if !r.map_err(|e| e.to_string())?.succeeded() {
                return Err("raw chunk Txn compare failed".into());
            }
        }
        let head = serde_json::to_vec(&json!({
            "number": number, "hash": hash, "parentHash": parent, "epoch": self.epoch, "id": "bench"
        }))
        .unwrap();
        let k = &self.keys;
        let txn = Txn::new()
            .when(vec![
                fence(),
                Compare::mod_revision(k.head(), CompareOp::Equal, self.head_rev),
            ])
            .and_then(vec![
                TxnOp::put(k.head(), head, None),
                TxnOp::put(last_key, last, None),
                TxnOp::delete(
                    k.payload_dir(),
                    Some(DeleteOptions::new().with_range(k.payload_block(hash))),
                ),
                TxnOp::delete(
                    k.payload_block_end(hash),
                    Some(DeleteOptions::new().with_range(k.payload_dir_end())),
                ),
                TxnOp::delete(k.legacy_payload(), None),
            ])
            .or_else(vec![
                TxnOp::get(self.fence_key.clone(), None),
                TxnOp::get(k.head(), None),
            ]);
        let resp = self.kv.txn(txn).await.map_err(|e| e.to_string())?;
        if !resp.succeeded() {
            return Err("raw head Txn compare failed".into());
        }
        self.head_rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok(())
    }
}

/// Sum and count of one stage of `op_sidecar_commit_stage_seconds` in a /metrics text.
fn stage_sum_count(metrics: &str, stage: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        let name = format!("op_sidecar_commit_stage_seconds_{suffix}{{stage=\"{stage}\"}}");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    (get("sum"), get("count"))
}

async fn admin_metrics(admin_url: &str) -> String {
    let http = Http::new();
    let req = http::Request::get(format!("{admin_url}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    match http.0.request(req).await {
        Ok(resp) => resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with deploy/bench.sh"]
async fn b_commit_unsafe_payload() {
    let mut r =
        Report::new("`conductor_commitUnsafePayload` vs raw etcd Txns writing the same bytes");
    r.line(&settings_line());
    r.line(
        "Setup: one sidecar in conductor mode (`RUST_LOG=info`) on its own etcd, managing one \
         simulated op-node started with `--conductor.rpc` = the sidecar. The sidecar bootstraps \
         on the empty store and starts the node normally (the node asks `conductor_leader`, \
         then commits its blocks through the sidecar). Then the node is detached from the \
         conductor (simulator `set_conductor(None)`): it keeps sequencing, so its head stays \
         fresh and the sidecar stays a healthy leader, but it no longer commits, and this test \
         is the only committer. Each commit extends the committed head (number + 1, parentHash \
         = previous blockHash, random 32-byte hashes), sent as one JSON-RPC POST over a \
         keep-alive connection, timed from the first byte sent to the answer. The baseline \
         sends the same etcd requests with the same bytes straight from this process with \
         etcd-client (the block's packed payload as fenced chunk Txns of at most 1 MiB, all at \
         once, but the last chunk, which goes in the fenced head Txn that also deletes the \
         previous block's chunks: one Txn for a block under 1 MiB packed), with \
         the packing done before its clock starts; one sidecar commit alternates with one raw \
         commit. Payload size = bytes of fake transaction data (4 KiB transactions; the JSON \
         envelope carries them as hex, twice the bytes). etcd runs with its default fsync on \
         the machine's disk and its default 1.5 MiB request limit; the sidecar compacts its \
         history every 5 s (the default). Latency in ms.\n",
    );
    let tmp_fs = std::process::Command::new("df")
        .args(["--output=fstype,source"])
        .arg(std::env::temp_dir())
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    r.line(&format!(
        "etcd's data dir is under {} (filesystem: {}).\n",
        std::env::temp_dir().display(),
        tmp_fs.split_whitespace().collect::<Vec<_>>().join(" on ")
    ));
    let etcd = Etcd::start().await;
    let sim = SimHost::start(op_node_sim::ClusterConfig {
        nodes: 1,
        block_time: BLOCK_TIME,
        ..Default::default()
    })
    .await;
    let prefix = format!("/op-sidecar/{}", common::unique("commit"));
    let node = sim.node(0).clone();
    let mut sc = SidecarBuilder::new(
        "seq-0",
        &node.node_url(),
        &node.geth_url(),
        &etcd.client_url(),
        &prefix,
    )
    .flag("--lease.ttl", LEASE_TTL)
    .flag("--healthcheck.interval", &hc_interval())
    .flag("--healthcheck.unsafe-interval", UNSAFE_INTERVAL)
    .flag("--rpc.timeout", "30s")
    .env("RUST_LOG", "info")
    .paused()
    .start()
    .await;
    node.set_conductor(Some(sc.url()));
    let http = Http::new();
    http.call(&sc.url(), "conductor_resume", json!([]))
        .await
        .expect("conductor_resume");
    let ok = common::poll_until(Duration::from_secs(30), || async {
        node.is_active()
            && http.call(&sc.url(), "conductor_leader", json!([])).await == Ok(json!(true))
    })
    .await;
    assert!(
        ok,
        "the conductor-mode sidecar did not lead:\n{}",
        sc.log_tail(60)
    );
    // Let a few blocks go through the real op-node -> sidecar commit path, then detach.
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.set_conductor(None);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut kv = etcd_client::Client::connect([etcd.client_url()], None)
        .await
        .unwrap();
    let read_head = |mut kv: etcd_client::Client, key: String| async move {
        let resp = kv.get(key, None).await.unwrap();
        let v: Value = serde_json::from_slice(resp.kvs()[0].value()).unwrap();
        (
            v["number"].as_u64().unwrap(),
            v["hash"].as_str().unwrap().to_string(),
        )
    };
    let (mut number, mut hash) = read_head(kv.clone(), format!("{prefix}/head")).await;
    let node_commits = number;
    let mut raw =
        RawCommitter::new(kv.clone(), &format!("/bench-raw/{}", common::unique("raw"))).await;
    let (mut rnum, mut rhash) = (0u64, random_hash());

    r.line(&format!(
        "The node committed blocks 1..={node_commits} through the sidecar before it was detached.\n"
    ));
    // Means next to the stage means: the sidecar's etcd stage against the raw Txns' mean
    // shows how much of the gap is etcd and how much is receiving and decoding the request.
    r.line("| payload (tx bytes) | envelope JSON | stored in etcd (chunks) | commits | sidecar p50 | sidecar p99 | sidecar max | raw Txns p50 | raw Txns p99 | raw Txns max | p99 ratio | sidecar mean / raw mean | sidecar stages, mean (receive / decode / etcd) | errors |");
    r.line("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let sizes: [(usize, &str, usize, u64); 4] = [
        (1024, "1 KiB", 400, 40),
        (100 * 1024, "100 KiB", 200, 40),
        (1024 * 1024, "1 MiB", 100, 60),
        (10 * 1024 * 1024, "10 MiB", 40, 120),
    ];
    let mem_before = memory_kib(sc.pid());
    let mut worst_ratio = 0.0f64;
    for (bytes, label, iterations, secs) in sizes {
        let txs = transactions_json(bytes);
        let (mut side, mut base) = (Vec::new(), Vec::new());
        let mut errors = 0usize;
        let mut first_error: Option<String> = None;
        let (mut env_len, mut stored_len, mut nchunks) = (0, 0, 0);
        let warmup = 3;
        let stages_before: Vec<(f64, f64)> = {
            let m = admin_metrics(&sc.admin_url()).await;
            ["receive", "decode", "etcd"]
                .iter()
                .map(|st| stage_sum_count(&m, st))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        for i in 0..iterations + warmup {
            if Instant::now() >= deadline {
                break;
            }
            // Sidecar.
            let h = random_hash();
            let env = envelope(number + 1, &hash, &h, &txs);
            env_len = env.len();
            let body = Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"conductor_commitUnsafePayload","params":[{env}]}}"#
            ));
            drop(env);
            let t0 = Instant::now();
            let res = http.call_body(&sc.url(), body).await;
            let dt = t0.elapsed().as_secs_f64() * 1000.0;
            match res {
                Ok(Value::Null) => {
                    number += 1;
                    hash = h;
                    if i >= warmup {
                        side.push(dt);
                    }
                }
                other => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("sidecar: {other:?}"));
                }
            }
            // Raw etcd Txns with the same bytes.
            let h = random_hash();
            let env = envelope(rnum + 1, &rhash, &h, &txs);
            let chunks = RawCommitter::chunks(&env);
            stored_len = chunks.iter().map(Vec::len).sum::<usize>();
            nchunks = chunks.len();
            drop(env);
            let t0 = Instant::now();
            let res = raw.commit(rnum + 1, &h, &rhash, chunks).await;
            let dt = t0.elapsed().as_secs_f64() * 1000.0;
            match res {
                Ok(()) => {
                    rnum += 1;
                    rhash = h;
                    if i >= warmup {
                        base.push(dt);
                    }
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("raw: {e}"));
                }
            }
        }
        let stages: Vec<String> = {
            let m = admin_metrics(&sc.admin_url()).await;
            ["receive", "decode", "etcd"]
                .iter()
                .zip(&stages_before)
                .map(|(st, (s0, c0))| {
                    let (s1, c1) = stage_sum_count(&m, st);
                    if c1 > *c0 {
                        ms((s1 - s0) / (c1 - c0) * 1000.0)
                    } else {
                        "-".into()
                    }
                })
                .collect()
        };
        let (s, b) = (Stats::of(&side), Stats::of(&base));
        let size = |n: usize| {
            if n < 100_000 {
                format!("{:.1} kB", n as f64 / 1e3)
            } else {
                format!("{:.2} MB", n as f64 / 1e6)
            }
        };
        let ratio = match (s, b) {
            (Some(s), Some(b)) => {
                worst_ratio = worst_ratio.max(s.p99 / b.p99);
                format!("{:.2}", s.p99 / b.p99)
            }
            _ => "-".into(),
        };
        r.line(&format!(
            "| {label} | {} | {} ({nchunks}) | {} | {} | {} | {} | {} | {} | {} | {ratio} | {} / {} | {} | {} |",
            size(env_len),
            size(stored_len),
            side.len(),
            opt_ms(s, |s| s.p50),
            opt_ms(s, |s| s.p99),
            opt_ms(s, |s| s.max),
            opt_ms(b, |s| s.p50),
            opt_ms(b, |s| s.p99),
            opt_ms(b, |s| s.max),
            opt_ms(s, |s| s.mean),
            opt_ms(b, |s| s.mean),
            stages.join(" / "),
            match first_error {
                None => errors.to_string(),
                Some(e) => format!(
                    "{errors} (first: {})",
                    e.chars().take(120).collect::<String>()
                ),
            }
        ));
    }
    let (stored_num, _) = read_head(kv.clone(), format!("{prefix}/head")).await;
    let still_leader = http.call(&sc.url(), "conductor_leader", json!([])).await;
    let (rss, hwm) = memory_kib(sc.pid());
    let status = kv.status().await.unwrap();
    r.line(&format!(
        "\nWorst p99 ratio (sidecar / raw): {worst_ratio:.2}. Committed head in etcd after the \
         run: {stored_num} (expected {number}); sidecar still leader: {still_leader:?}. etcd \
         backend after the run: {:.1} MB ({:.1} MB in use). Sidecar memory before the commits: \
         VmRSS {} MiB; after: VmRSS {} MiB, VmHWM {} MiB (peak while holding 21 MB request \
         bodies).",
        status.db_size() as f64 / 1e6,
        status.raft_used_db_size() as f64 / 1e6,
        mib(mem_before.0),
        mib(rss),
        mib(hwm)
    ));
    let _ = kv
        .delete(
            "/bench-raw/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
    r.finish();
    assert_eq!(
        stored_num, number,
        "etcd head does not match the last commit"
    );
    assert_eq!(still_leader, Ok(json!(true)));
    sc.kill();
    drop(sim);
}

// === c: failover time per fault kind ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    SidecarKill,
    NodeCrash,
    NodeStall,
    SidecarStop,
    EtcdPartition,
    SidecarTerm,
    /// The leader's op-node accepts connections but never answers (its RPC hangs; it keeps
    /// producing until stopped or, in conductor mode, until its commits are refused).
    NodeHang,
}

/// `$BENCH_FAULTS` (comma-separated keys such as `node-hang,node-crash`), all kinds unless set.
fn selected_faults() -> Vec<Fault> {
    let Ok(keys) = std::env::var("BENCH_FAULTS") else {
        return Fault::ALL.to_vec();
    };
    let picked: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|f| keys.split(',').any(|k| k.trim() == f.key()))
        .collect();
    assert!(
        !picked.is_empty(),
        "BENCH_FAULTS={keys:?} names no fault kind"
    );
    picked
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::SidecarKill,
        Fault::NodeCrash,
        Fault::NodeStall,
        Fault::SidecarStop,
        Fault::EtcdPartition,
        Fault::SidecarTerm,
        Fault::NodeHang,
    ];

    fn label(self) -> &'static str {
        match self {
            Fault::SidecarKill => "leader sidecar SIGKILL",
            Fault::NodeCrash => "leader node crash",
            Fault::NodeStall => "leader node stall (head stops)",
            Fault::SidecarStop => "leader sidecar SIGSTOP",
            Fault::EtcdPartition => "leader cut from etcd (blackhole)",
            Fault::SidecarTerm => "graceful SIGTERM of leader sidecar",
            Fault::NodeHang => "leader node hang (accepts, never answers)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Fault::SidecarKill => "sigkill",
            Fault::NodeCrash => "node-crash",
            Fault::NodeStall => "node-stall",
            Fault::SidecarStop => "sigstop",
            Fault::EtcdPartition => "partition",
            Fault::SidecarTerm => "sigterm",
            Fault::NodeHang => "node-hang",
        }
    }

    /// Detected by the health check, so subject to the new-leader health grace.
    fn health_based(self) -> bool {
        matches!(self, Fault::NodeCrash | Fault::NodeStall | Fault::NodeHang)
    }
}

#[derive(Clone, Debug)]
struct Run {
    fault: Fault,
    run: usize,
    old: usize,
    new: usize,
    t0: u64,
    key_ms: Option<f64>,
    started_ms: Option<f64>,
    first_ms: f64,
    gap_ms: f64,
    orphans: usize,
    /// When the old leader's sidecar logged "stepping down" (ms from the fault), if it did.
    stepped_ms: Option<f64>,
    /// Health-detected faults: when the old leader's sidecar logged its "node unhealthy"
    /// verdict (ms from the fault).
    verdict_ms: Option<f64>,
    clean: bool,
    note: String,
}

/// Unix ms of a log line's leading RFC 3339 UTC timestamp (`2026-01-02T03:04:05.678901Z`).
fn log_line_ms(line: &str) -> Option<u64> {
    let ts = line.get(..line.find('Z')?)?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let secs: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = (days * 86_400 + hh * 3600 + mm * 60) * 1000 + (secs * 1000.0).round() as i64;
    u64::try_from(ms).ok()
}

/// The first line of a log at or after `t0` (unix ms) containing `needle`: its time.
fn first_log_after(path: &std::path::Path, t0: u64, needle: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter(|l| l.contains(needle))
        .filter_map(log_line_ms)
        .find(|&t| t >= t0)
}

async fn inject(b: &mut Bench, fault: Fault, old: usize) {
    match fault {
        Fault::SidecarKill => b.sidecars[old].kill(),
        Fault::NodeCrash => b.sim.node(old).crash(),
        Fault::NodeStall => b.sim.node(old).stall_head(true),
        Fault::SidecarStop => b.sidecars[old].pause(),
        Fault::EtcdPartition => b.proxies[old].as_ref().unwrap().partition(),
        Fault::SidecarTerm => b.sidecars[old].terminate(),
        Fault::NodeHang => b.sim.node(old).hang(true),
    }
}

async fn recover(b: &mut Bench, fault: Fault, old: usize) -> String {
    match fault {
        Fault::SidecarKill => b.restart_sidecar(old).await,
        Fault::NodeCrash => b.sim.restart_node(old).await,
        Fault::NodeStall => b.sim.node(old).stall_head(false),
        Fault::SidecarStop => b.sidecars[old].resume(),
        Fault::EtcdPartition => b.proxies[old].as_ref().unwrap().heal(),
        Fault::NodeHang => b.sim.node(old).hang(false),
        Fault::SidecarTerm => {
            let status = b.sidecars[old].wait_exit(Duration::from_secs(15)).await;
            b.restart_sidecar(old).await;
            return match status {
                Some(s) if s.success() => String::new(),
                Some(s) => format!("SIGTERM exit status {s}"),
                None => "did not exit within 15 s of SIGTERM (killed)".into(),
            };
        }
    }
    String::new()
}

/// One run: settle, inject, wait for the first block by another node, recover.
async fn failover_run(b: &mut Bench, fault: Fault, run: usize) -> Result<Run, String> {
    let min_age = if fault.health_based() {
        health_grace() + Duration::from_millis(750)
    } else {
        Duration::ZERO
    };
    let old = b.wait_settled(min_age, Duration::from_secs(90)).await?;
    let old_name = id(old);
    let from = b.sim.cluster().ledger().published.len();
    let t0 = now_ms();
    inject(b, fault, old).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let (idx, first) = loop {
        let ledger = b.sim.cluster().ledger();
        if let Some((i, blk)) = ledger
            .published
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, p)| p.producer != old_name && p.unix_ms >= t0)
        {
            break (i, blk.clone());
        }
        if Instant::now() >= deadline {
            let note = recover(b, fault, old).await;
            return Err(format!(
                "{} run {run}: no block by another node within 60 s of the fault {note}\n{}",
                fault.label(),
                b.log_tails()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut note = recover(b, fault, old).await;
    // Let the observers (5 ms poll, etcd watch) catch up before reading them, and give the
    // old sidecar (resumed, healed) time to log its step-down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = b.sidecars[old].log_path();
    let mut stepped = None;
    if fault != Fault::SidecarKill {
        let until = Instant::now() + Duration::from_secs(3);
        while stepped.is_none() && Instant::now() < until {
            stepped = first_log_after(&log, t0, "stepping down");
            if stepped.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    let verdict = if fault.health_based() {
        first_log_after(&log, t0, "op_sidecar::health: node unhealthy")
    } else {
        None
    };

    let ledger = b.sim.cluster().ledger();
    let prev = ledger.published[idx - 1].unix_ms;
    let orphans = ledger.published[from..idx]
        .iter()
        .filter(|p| p.producer == old_name && p.unix_ms >= t0)
        .count();
    let key_ms = b
        .leader_events
        .lock()
        .unwrap()
        .iter()
        .find(|(t, who)| *t >= t0 && who.as_deref().is_some_and(|w| w != old_name))
        .map(|(t, _)| (t - t0) as f64);
    let started_ms = b
        .active_events
        .lock()
        .unwrap()
        .iter()
        .find(|(t, i, a)| *t >= t0 && *i != old && *a)
        // A block cannot precede its sequencer's start: clamp the poll's lag away.
        .map(|(t, _, _)| ((t - t0) as f64).min((first.unix_ms - t0) as f64));
    let new = first
        .producer
        .strip_prefix("seq-")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let report = b.sim.cluster().check();
    if !report.is_clean() {
        note.push_str(&format!(" INVARIANTS VIOLATED: {report}"));
    }
    Ok(Run {
        fault,
        run,
        old,
        new,
        t0,
        key_ms,
        started_ms,
        first_ms: (first.unix_ms - t0) as f64,
        gap_ms: first.unix_ms.saturating_sub(prev) as f64,
        orphans,
        stepped_ms: stepped.map(|t| t.saturating_sub(t0) as f64),
        verdict_ms: verdict.map(|t| t.saturating_sub(t0) as f64),
        clean: report.is_clean(),
        note,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with deploy/bench.sh"]
async fn c_failover() {
    failover_bench(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with deploy/bench.sh"]
async fn c_failover_conductor() {
    failover_bench(true).await;
}

async fn failover_bench(conductor: bool) {
    let runs = env_usize("BENCH_RUNS", 20).max(1);
    let mode = if conductor {
        "conductor mode"
    } else {
        "sidecar-driven mode"
    };
    let mut r = Report::new(&format!(
        "Failover time per fault kind, {mode} ({runs} runs each)"
    ));
    r.line(&settings_line());
    r.line(&format!(
        "Setup: three sidecars ({mode}, debug logs) on one etcd, each behind its \
         own TCP proxy to etcd (so any leader can be cut off), and three simulated op-nodes. \
         One cluster for all runs; the fault kinds take turns (round-robin), each run waits \
         for a settled cluster first: one active sequencer, every sidecar naming it with \
         `coordinator_getMaster`, all three members healthy in etcd and caught up, for 1 s; \
         before a health-detected fault (node crash, stall) the leader must also have led for \
         {:.2} s, past the sidecar's health-handover grace (unsafe-interval + 5 health \
         intervals = {:.2} s), so that the grace is not what is measured. After each run the \
         fault is undone (sidecar restarted/resumed, node restarted/unstalled, proxy healed). \
         Time 0 is the fault injection; the end is the first block published by another node \
         (the simulator's ledger timestamp). Breakdown: *key* = a new leader key appears in \
         etcd (bench's etcd watch), *started* = the new node's sequencer became active \
         (polled every 5 ms), *first block* = the headline number. With {}/{} runs, p99 is \
         the maximum (nearest rank).\n",
        (health_grace() + Duration::from_millis(750)).as_secs_f64(),
        health_grace().as_secs_f64(),
        runs,
        runs
    ));
    r.line(
        "Block time quantizes the end point: the simulator builds a block when its head's slot \
         + 1 s has passed, so a new leader whose head is the previous leader's fresh block \
         waits up to 1 s after *started* for its first slot (as op-node would wait for the \
         next L2 slot); when the chain already stood still for over 1 s (crash, stall) the \
         first block follows *started* immediately. *started* is free of this quantization. \
         Sub-second block times were not used: the simulator advances block timestamps by at \
         least 1 s per block, so at 250 ms blocks the chain's timestamps would run ahead of \
         the wall clock by 0.75 s per block and the unsafe-head-age health check (stall \
         detection) would stop working.\n",
    );

    let iv = hc_interval_ms();
    let poll_timeout =
        op_sidecar::health::poll_timeout(Duration::from_millis(iv)).as_millis() as u64;
    r.line(&format!(
        "What bounds each kind, by design, with these settings: SIGKILL, SIGSTOP and the etcd \
         cut need the old leader's lease to expire in etcd: TTL 2 s after its last keepalive \
         (sent every 0.5 s) plus etcd's expiry sweep (every 0.5 s), so *key* ≈ 1.5–2.5 s (the \
         followers are woken by their etcd watch). A crashed node fails 3 health polls {iv} ms \
         apart ({}–{} ms after the crash), then the leader hands over to a named successor. A \
         hung node's polls fail only at their timeout ({poll_timeout} ms: the interval, at \
         least 0.5 s), so 3 failures in a row take {}–{} ms. A stalled head must be older than \
         the 3 s unsafe interval, which with whole-second block timestamps is 3–4 s after the \
         stall, plus 3 failed polls. On SIGTERM the leader stops its node and resigns at once. \
         The handover itself (stop the old node, check the head, start) takes a few ms in every \
         kind.\n",
        2 * iv,
        3 * iv,
        poll_timeout + 2 * iv,
        poll_timeout + 3 * iv,
    ));
    let mut b = Bench::start_mode(3, true, "info,op_sidecar=debug", conductor).await;
    let began = Instant::now();
    let mut results: Vec<Run> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    'outer: for run in 0..runs {
        for fault in selected_faults() {
            match failover_run(&mut b, fault, run).await {
                Ok(x) => {
                    eprintln!(
                        "[bench] {} run {run}: {} -> {}: key {:?} started {:?} first block {} ms {}",
                        fault.key(),
                        id(x.old),
                        id(x.new),
                        x.key_ms,
                        x.started_ms,
                        x.first_ms,
                        x.note
                    );
                    results.push(x);
                }
                Err(e) => {
                    eprintln!("[bench] FAILED: {e}");
                    failures.push(e.lines().next().unwrap_or_default().to_string());
                    if failures.len() >= 3 {
                        break 'outer;
                    }
                }
            }
        }
    }
    let total = began.elapsed();

    r.line("| fault | runs | p50 | p99 | max | mean | started p50 | started max |");
    r.line("|---|---|---|---|---|---|---|---|");
    let mut by: BTreeMap<Fault, Vec<&Run>> = BTreeMap::new();
    for x in &results {
        by.entry(x.fault).or_default().push(x);
    }
    for fault in selected_faults() {
        let xs = by.get(&fault).cloned().unwrap_or_default();
        let first = Stats::of(&xs.iter().map(|x| x.first_ms).collect::<Vec<_>>());
        let started = Stats::of(&xs.iter().filter_map(|x| x.started_ms).collect::<Vec<_>>());
        r.line(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            fault.label(),
            xs.len(),
            opt_ms(first, |s| s.p50),
            opt_ms(first, |s| s.p99),
            opt_ms(first, |s| s.max),
            opt_ms(first, |s| s.mean),
            opt_ms(started, |s| s.p50),
            opt_ms(started, |s| s.max),
        ));
    }
    r.line("\nBreakdown, p50 / max in ms from the fault; *gap* = time between the new leader's first block and the block before it (how long the chain stood still); *old-node blocks* = blocks the old leader's node still published after the fault (it keeps sequencing until the new leader stops it); *old sidecar stepped down* = the first `stepping down` line in the old leader's sidecar log after the fault (after a SIGSTOP that is once it is resumed); *verdict* = health-detected faults only: the old leader's sidecar logged its `node unhealthy` verdict, and *to step-down* = from that verdict to its `stepping down` line (how long the control loop took to act on it); *after the new key* = runs in which that came after the new leader's key appeared in etcd, i.e. the old sidecar still acted as leader (its node sequencing) after etcd had given leadership to another, and by how much (such overlap is harmless only as long as the new leader can reach and stop the old node, which it tries first):\n");
    r.line("| fault | key | started | first block | gap | old-node blocks (max) | old sidecar stepped down (its log) | verdict | to step-down | ... after the new key (runs, max ms) |");
    r.line("|---|---|---|---|---|---|---|---|---|---|");
    for fault in selected_faults() {
        let xs = by.get(&fault).cloned().unwrap_or_default();
        let pm = |v: Vec<f64>| {
            Stats::of(&v).map_or_else(|| "-".into(), |s| format!("{} / {}", ms(s.p50), ms(s.max)))
        };
        let late: Vec<f64> = xs
            .iter()
            .filter_map(|x| Some(x.stepped_ms? - x.key_ms?))
            .filter(|d| *d > 0.0)
            .collect();
        let react: Vec<f64> = xs
            .iter()
            .filter_map(|x| Some(x.stepped_ms? - x.verdict_ms?))
            .collect();
        r.line(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fault.label(),
            pm(xs.iter().filter_map(|x| x.key_ms).collect()),
            pm(xs.iter().filter_map(|x| x.started_ms).collect()),
            pm(xs.iter().map(|x| x.first_ms).collect()),
            pm(xs.iter().map(|x| x.gap_ms).collect()),
            xs.iter().map(|x| x.orphans).max().unwrap_or(0),
            if fault == Fault::SidecarKill {
                "- (killed)".to_string()
            } else {
                pm(xs.iter().filter_map(|x| x.stepped_ms).collect())
            },
            pm(xs.iter().filter_map(|x| x.verdict_ms).collect()),
            pm(react),
            if fault == Fault::SidecarKill {
                "-".to_string()
            } else {
                format!(
                    "{}{}",
                    late.len(),
                    late.iter()
                        .copied()
                        .reduce(f64::max)
                        .map_or(String::new(), |m| format!(", {}", ms(m)))
                )
            },
        ));
    }
    let report = b.sim.cluster().check();
    let dirty: Vec<String> = results
        .iter()
        .filter(|x| !x.clean)
        .map(|x| format!("{} run {}", x.fault.key(), x.run))
        .collect();
    let notes: Vec<String> = results
        .iter()
        .filter(|x| !x.note.is_empty())
        .map(|x| format!("{} run {}: {}", x.fault.key(), x.run, x.note.trim()))
        .collect();
    r.line(&format!(
        "\n{} runs in {:.0} s. Simulator invariants over all runs: **{}**{}.",
        results.len(),
        total.as_secs_f64(),
        if report.is_clean() {
            "clean"
        } else {
            "VIOLATED"
        },
        if report.is_clean() {
            format!(" ({report})")
        } else {
            format!(": {report}; first dirty after {dirty:?}")
        }
    ));
    if !failures.is_empty() {
        r.line(&format!("\n**FAILED runs**: {failures:?}"));
    }
    if !notes.is_empty() {
        r.line(&format!("\nNotes: {notes:?}"));
    }

    // Per-run data and the sidecar logs, for explaining outliers.
    let dir = out_path()
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let mut csv = String::from("fault,run,old,new,t0_unix_ms,key_ms,started_ms,first_block_ms,gap_ms,old_node_blocks,old_stepped_down_ms,verdict_ms,clean\n");
    for x in &results {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            x.fault.key(),
            x.run,
            id(x.old),
            id(x.new),
            x.t0,
            x.key_ms.map_or(String::new(), |v| v.to_string()),
            x.started_ms.map_or(String::new(), |v| v.to_string()),
            x.first_ms,
            x.gap_ms,
            x.orphans,
            x.stepped_ms.map_or(String::new(), |v| v.to_string()),
            x.verdict_ms.map_or(String::new(), |v| v.to_string()),
            x.clean
        );
    }
    let tag = if conductor {
        "failover-conductor"
    } else {
        "failover"
    };
    let csv_path = dir.join(format!("bench-{tag}-runs.csv"));
    let _ = std::fs::write(&csv_path, csv);
    let logs = b.keep_logs(tag);
    let mut mem = String::new();
    for sc in &mut b.sidecars {
        if sc.is_running() {
            let (rss, hwm) = memory_kib(sc.pid());
            let _ = write!(
                mem,
                "{} VmRSS {} MiB / VmHWM {} MiB; ",
                sc.id(),
                mib(rss),
                mib(hwm)
            );
        }
    }
    r.line(&format!(
        "\nSidecar memory at the end (debug logging; processes restarted by the runs are younger): {mem}"
    ));
    eprintln!(
        "[bench] per-run data in {}, sidecar logs in {:?}",
        csv_path.display(),
        logs
    );
    r.finish();
    assert!(failures.is_empty(), "failed runs: {failures:?}");
    assert!(report.is_clean(), "chain invariants violated: {report}");
}

// === d: soak: etcd's size over a long run of realistic blocks ===

/// Payload sizes picked at random per block: mostly 50-200 KB, some 0.5-1.3 MB (busy OP Stack
/// chains today), and one block in twenty of 3 or 10 MiB (the gossip limit). ~0.9 MB mean.
const SOAK_MIX: [usize; 20] = [
    50_000, 50_000, 50_000, 50_000, 50_000, 50_000, 100_000, 100_000, 100_000, 100_000, 100_000,
    200_000, 200_000, 200_000, 500_000, 500_000, 1_300_000, 1_300_000, 3_000_000, 10_485_760,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with deploy/bench.sh"]
async fn d_soak_etcd_size() {
    let minutes = env_usize("BENCH_SOAK_MINUTES", 30) as u64;
    let mut r = Report::new("Soak: etcd's database size under a long run of conductor-mode blocks");
    r.line(&format!(
        "Setup: three sidecars in conductor mode with their default etcd settings \
         (`--etcd.compaction-interval 5s`), one etcd with its default quota (2 GiB), simulated \
         op-nodes sealing a block every second with a payload picked at random from {} sizes \
         (6× 50 kB, 5× 100 kB, 3× 200 kB, 2× 500 kB, 2× 1.3 MB, 1× 3 MB, 1× 10 MiB: ~0.9 MB \
         mean), for {minutes} min. Sampled every 30 s: payload bytes committed (the sidecars' \
         `op_sidecar_commit_stored_bytes_total`), etcd's backend size and the part in use \
         (`etcdctl endpoint status`), the leader sidecar's memory.\n",
        SOAK_MIX.len()
    ));
    let mut opts = common::FixtureOpts::conductor();
    opts.payload_bytes = SOAK_MIX.to_vec();
    let mut f = common::Fixture::start(3, opts).await;
    let leader = f.wait_single_active(Duration::from_secs(60)).await;
    f.wait_leader_producing(Duration::from_secs(60)).await;
    let url = f.etcd.client_url();
    let mut kv = etcd_client::Client::connect([url.clone()], None)
        .await
        .unwrap();
    r.line("| time | committed | height | etcd db | in use | leader RSS | alarms |");
    r.line("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let (mut max_db, mut db_at_5min) = (0i64, None);
    let mut last_db;
    let mut last_row = Instant::now() - Duration::from_secs(3600);
    let mut alarms_seen = Vec::new();
    loop {
        let mut committed = 0.0;
        for i in 0..f.n() {
            if f.sidecar(i).is_running() {
                let m = admin_metrics(&f.sidecar(i).admin_url()).await;
                committed += m
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("op_sidecar_commit_stored_bytes_total ")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                    .unwrap_or(0.0);
            }
        }
        let st = kv.status().await.unwrap();
        let alarms: Vec<String> = kv
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .unwrap()
            .alarms()
            .iter()
            .map(|a| format!("{:?}", a.alarm()))
            .collect();
        alarms_seen.extend(alarms.iter().cloned());
        let (db, in_use) = (st.db_size(), st.raft_used_db_size());
        max_db = max_db.max(db);
        last_db = db;
        let elapsed = started.elapsed();
        if db_at_5min.is_none() && elapsed >= Duration::from_secs(300) {
            db_at_5min = Some(db);
        }
        let leader_now = f.leader_id().await.map(|id| common::Fixture::index_of(&id));
        let rss = leader_now
            .map(|i| mib(memory_kib(f.sidecar(i).pid()).0))
            .unwrap_or_else(|| "-".into());
        let done = Instant::now() >= end;
        // A row a minute in the report (every sample on stderr).
        let row = format!(
            "| {:.1} min | {:.0} MB | {} | {:.1} MB | {:.1} MB | {rss} MiB | {} |",
            elapsed.as_secs_f64() / 60.0,
            committed / 1e6,
            f.chain_height(),
            db as f64 / 1e6,
            in_use as f64 / 1e6,
            if alarms.is_empty() {
                "-".to_string()
            } else {
                alarms.join(",")
            }
        );
        eprintln!("{row}");
        if last_row.elapsed() >= Duration::from_secs(59) || done {
            r.line(&row);
            last_row = Instant::now();
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let report = f.sim.check();
    r.line(&format!(
        "\nLargest etcd backend: {:.1} MB; at 5 min: {}; at the end: {:.1} MB. Alarms seen: {}. \
         Chain: {report}. First leader: seq-{leader}.",
        max_db as f64 / 1e6,
        db_at_5min.map_or("-".to_string(), |d| format!("{:.1} MB", d as f64 / 1e6)),
        last_db as f64 / 1e6,
        if alarms_seen.is_empty() {
            "none".to_string()
        } else {
            alarms_seen.join(", ")
        },
    ));
    r.finish();
    assert!(alarms_seen.is_empty(), "etcd alarms: {alarms_seen:?}");
    assert!(report.is_clean(), "chain invariants violated: {report}");
}
