//! The cluster fixture: one etcd, the in-process op-node simulator with `n` nodes, and `n` real
//! sidecars (sidecar `i` is `seq-i` and manages simulated node `i`), optionally each behind its
//! own TCP proxy to etcd so one can be partitioned.
//!
//! Two modes, as in production: sidecar-driven (default; op-node runs `--sequencer.stopped` and
//! only the sidecar starts and stops it) and conductor mode ([`FixtureOpts::conductor`]: each
//! simulated op-node runs `--conductor.enabled --conductor.rpc <its own sidecar's RPC URL>`, asks
//! `conductor_leader` inside `admin_startSequencer` and commits every sealed block through
//! `conductor_commitUnsafePayload` before inserting or gossiping it). In conductor mode the
//! sidecars' RPC ports are chosen before any sidecar starts, so every node knows its conductor
//! from the first moment a sidecar could lead.

use std::time::Duration;

use serde_json::{json, Value};

use super::certs::TestCerts;
use super::tls_proxy::TlsTerminator;
use super::{etcd, rpc, unique, wait_until, Etcd, Sidecar, SidecarBuilder, TcpProxy};

/// How long the one-active-sequencer condition must hold before it counts as settled.
const STABLE_FOR: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct FixtureOpts {
    /// Put a [`TcpProxy`] between each sidecar and etcd.
    pub etcd_proxy: bool,
    /// Extra `(flag, value)` pairs for every sidecar (replacing defaults of the same name).
    pub flags: Vec<(String, String)>,
    pub block_time: Duration,
    /// Conductor mode: node `i`'s conductor is sidecar `i`.
    pub conductor: bool,
    /// Fake transaction bytes per sealed block (one size, or several picked at random per
    /// block); change it while running with `f.sim.set_payload_sizes`.
    pub payload_bytes: Vec<usize>,
    /// The simulated op-node's `--conductor.rpc-timeout` (op-node's default is 1 s).
    pub conductor_timeout: Duration,
    /// Extra etcd flags, e.g. a small `--quota-backend-bytes`.
    pub etcd_args: Vec<String>,
    /// etcd with client-certificate auth; the sidecars get the matching TLS flags.
    pub etcd_tls: Option<std::sync::Arc<super::etcd::EtcdTls>>,
    /// Extra environment of every sidecar.
    pub env: Vec<(String, String)>,
    /// Sidecars serve JSON-RPC over TLS with the server certificate and trust the CA for
    /// https:// peers; the harness's own calls trust it too (see [`rpc::trust`]).
    pub rpc_tls: Option<std::sync::Arc<TestCerts>>,
    /// With `rpc_tls`: the RPC port also requires a client certificate signed by the CA, and
    /// every sidecar presents the client certificate (the harness always does).
    pub rpc_mtls: bool,
    /// Sidecars reach their op-node and op-geth over https://, through a TLS terminator in
    /// front of each simulated endpoint, trusting this CA.
    pub node_tls: Option<std::sync::Arc<TestCerts>>,
}

impl Default for FixtureOpts {
    fn default() -> Self {
        Self {
            etcd_proxy: false,
            flags: Vec::new(),
            block_time: Duration::from_secs(1),
            conductor: false,
            payload_bytes: vec![1024],
            conductor_timeout: Duration::from_secs(1),
            etcd_args: Vec::new(),
            etcd_tls: None,
            env: Vec::new(),
            rpc_tls: None,
            rpc_mtls: false,
            node_tls: None,
        }
    }
}

impl FixtureOpts {
    /// Defaults, in conductor mode.
    pub fn conductor() -> Self {
        Self {
            conductor: true,
            ..Self::default()
        }
    }

    pub fn with_proxy(mut self) -> Self {
        self.etcd_proxy = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn flag(mut self, name: &str, value: &str) -> Self {
        self.flags.push((name.to_string(), value.to_string()));
        self
    }

    pub fn etcd_arg(mut self, name: &str, value: &str) -> Self {
        self.etcd_args.push(name.to_string());
        self.etcd_args.push(value.to_string());
        self
    }
}

pub struct Fixture {
    // Field order is drop order: sidecars die before the simulator and etcd they talk to.
    /// Index-aligned with the simulated nodes once [`Fixture::start_sidecars`] ran; empty before.
    pub sidecars: Vec<Sidecar>,
    pub proxies: Vec<Option<TcpProxy>>,
    /// With [`FixtureOpts::node_tls`]: node `i`'s https:// op-node and op-geth fronts.
    pub node_fronts: Vec<(TlsTerminator, TlsTerminator)>,
    pub sim: op_node_sim::Cluster,
    pub etcd: Etcd,
    pub prefix: String,
    opts: FixtureOpts,
    /// Conductor mode: the RPC port reserved for sidecar `i` (node `i`'s conductor URL).
    rpc_ports: Vec<Option<u16>>,
}

impl Fixture {
    /// Starts etcd, the simulator with `n` nodes and `n` sidecars; does not wait for a leader.
    pub async fn start(n: usize, opts: FixtureOpts) -> Self {
        let mut f = Self::start_without_sidecars(n, opts).await;
        f.start_sidecars().await;
        f
    }

    /// Starts etcd, the proxies and the simulator (every sequencer stopped; in conductor mode
    /// each node already points at the URL its sidecar will serve), but no sidecar yet: for
    /// scenarios that act on the chain before the sidecars exist. Then [`Fixture::start_sidecars`].
    pub async fn start_without_sidecars(n: usize, opts: FixtureOpts) -> Self {
        assert!(
            !(opts.conductor && opts.rpc_tls.is_some()),
            "the simulator's conductor client speaks plain HTTP: no conductor mode with rpc_tls"
        );
        let etcd_args: Vec<&str> = opts.etcd_args.iter().map(String::as_str).collect();
        let etcd = Etcd::start_with(&etcd_args, opts.etcd_tls.clone()).await;
        let rpc_ports: Vec<Option<u16>> = (0..n)
            .map(|_| opts.conductor.then(super::free_port))
            .collect();
        let node_configs = rpc_ports
            .iter()
            .map(|p| op_node_sim::NodeConfig {
                conductor_rpc: p.map(sidecar_url),
                coordinator: None,
            })
            .collect();
        let sim = op_node_sim::Cluster::start(op_node_sim::ClusterConfig {
            nodes: n,
            block_time: opts.block_time,
            node_configs,
            payload_mix: opts.payload_bytes.clone(),
            conductor_timeout: opts.conductor_timeout,
            ..Default::default()
        })
        .await
        .expect("start the op-node simulator");
        let prefix = format!("/op-sidecar/{}", unique("t"));
        let mut proxies = Vec::with_capacity(n);
        for _ in 0..n {
            proxies.push(if opts.etcd_proxy {
                Some(TcpProxy::start(&etcd.client_url()).await)
            } else {
                None
            });
        }
        let mut node_fronts = Vec::new();
        if let Some(certs) = &opts.node_tls {
            for node in sim.nodes() {
                node_fronts.push((
                    TlsTerminator::start(certs, &node.node_url()).await,
                    TlsTerminator::start(certs, &node.geth_url()).await,
                ));
            }
        }
        if let Some(certs) = &opts.rpc_tls {
            // Always the client certificate: it is sent only to servers that ask for one, and
            // the setting is process-wide, shared by fixtures with and without mutual TLS.
            let identity = Some((certs.client_cert.clone(), certs.client_key.clone()));
            rpc::trust(
                op_sidecar::tls::client_config(&op_sidecar::tls::ClientFiles {
                    ca: Some(certs.ca.clone()),
                    identity,
                })
                .expect("client TLS config from the test certificates"),
            );
        }
        Self {
            sidecars: Vec::new(),
            proxies,
            node_fronts,
            sim,
            etcd,
            prefix,
            opts,
            rpc_ports,
        }
    }

    /// Starts sidecar `i` for every node, in index order.
    pub async fn start_sidecars(&mut self) {
        let order: Vec<usize> = (0..self.n()).collect();
        self.start_sidecars_in(&order).await;
    }

    /// Starts one sidecar per node in the given order (a permutation of `0..n`), each after the
    /// previous one answers RPC.
    pub async fn start_sidecars_in(&mut self, order: &[usize]) {
        self.check_order(order);
        let mut started: Vec<Option<Sidecar>> = (0..self.n()).map(|_| None).collect();
        for &i in order {
            let sc = self.builder(i).start().await;
            started[i] = Some(self.started(i, sc));
        }
        self.sidecars = started
            .into_iter()
            .map(|s| s.expect("every sidecar started"))
            .collect();
    }

    /// Starts sidecar `first`, waits (30 s) until it holds the leader key, then starts the
    /// others in index order.
    pub async fn start_sidecars_after_leader(&mut self, first: usize) {
        let all: Vec<usize> = (0..self.n()).collect();
        self.check_order(&all);
        let mut started: Vec<Option<Sidecar>> = (0..self.n()).map(|_| None).collect();
        let sc = self.builder(first).start().await;
        started[first] = Some(self.started(first, sc));
        let dir = format!("{}/", self.key("leader"));
        let id = Self::id(first);
        wait_until(
            Duration::from_secs(30),
            &format!("{id}, started alone, to hold the leader key"),
            || async { self.etcd.get_prefix(&dir).iter().any(|(_, v)| *v == id) },
        )
        .await;
        for i in all.into_iter().filter(|&i| i != first) {
            let sc = self.builder(i).start().await;
            started[i] = Some(self.started(i, sc));
        }
        self.sidecars = started
            .into_iter()
            .map(|s| s.expect("every sidecar started"))
            .collect();
    }

    /// Starts every sidecar at once (spawned together, then each awaited until it answers),
    /// as an operator enabling the sidecars on a running chain would.
    pub async fn start_sidecars_together(&mut self) {
        let all: Vec<usize> = (0..self.n()).collect();
        self.check_order(&all);
        let builders: Vec<SidecarBuilder> = all.iter().map(|&i| self.builder(i)).collect();
        let started =
            futures_util::future::join_all(builders.into_iter().map(SidecarBuilder::start)).await;
        self.sidecars = started
            .into_iter()
            .enumerate()
            .map(|(i, sc)| self.started(i, sc))
            .collect();
    }

    fn check_order(&self, order: &[usize]) {
        assert!(self.sidecars.is_empty(), "sidecars already started");
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..self.n()).collect::<Vec<_>>(),
            "start order must name every node once"
        );
    }

    /// The command line of sidecar `i`: its node, etcd (or its proxy), the prefix, the
    /// reserved RPC port in conductor mode and the fixture's extra flags.
    fn builder(&self, i: usize) -> SidecarBuilder {
        let endpoints = self.proxies[i]
            .as_ref()
            .map_or_else(|| self.etcd.client_url(), TcpProxy::url);
        let node = self.sim.node(i);
        let (node_url, geth_url) = match self.node_fronts.get(i) {
            Some((n, g)) => (n.url(), g.url()),
            None => (node.node_url(), node.geth_url()),
        };
        let mut b =
            SidecarBuilder::new(&Self::id(i), &node_url, &geth_url, &endpoints, &self.prefix);
        let path = |p: &std::path::Path| p.display().to_string();
        if let Some(c) = &self.opts.node_tls {
            b = b.flag("--tls.ca", &path(&c.ca));
        }
        if let Some(c) = &self.opts.rpc_tls {
            b = b
                .flag("--rpc.tls.cert", &path(&c.server_cert))
                .flag("--rpc.tls.key", &path(&c.server_key))
                .flag("--tls.ca", &path(&c.ca));
            if self.opts.rpc_mtls {
                b = b
                    .flag("--rpc.tls.client-ca", &path(&c.ca))
                    .flag("--tls.cert", &path(&c.client_cert))
                    .flag("--tls.key", &path(&c.client_key));
            }
        }
        if let Some(port) = self.rpc_ports[i] {
            b = b.rpc_port(port);
        }
        if let Some(t) = &self.opts.etcd_tls {
            b = b
                .flag("--etcd.tls.ca", &path(&t.ca))
                .flag("--etcd.tls.cert", &path(&t.client_cert))
                .flag("--etcd.tls.key", &path(&t.client_key));
        }
        for (name, value) in &self.opts.flags {
            b = b.flag(name, value);
        }
        for (key, value) in &self.opts.env {
            b = b.env(key, value);
        }
        b
    }

    /// Points node `i` at its sidecar if the reserved port was taken meanwhile and the sidecar
    /// runs elsewhere (until then the node's commits and leader checks fail, which is safe).
    fn started(&mut self, i: usize, sc: Sidecar) -> Sidecar {
        if let Some(port) = self.rpc_ports[i] {
            if sc.url() != sidecar_url(port) {
                self.sim.node(i).set_conductor(Some(sc.url()));
                self.rpc_ports[i] = sc.url().rsplit(':').next().and_then(|p| p.parse().ok());
            }
        }
        sc
    }

    /// Whether the nodes run in conductor mode.
    pub fn conductor_mode(&self) -> bool {
        self.opts.conductor
    }

    /// Sidecar id for index `i`.
    pub fn id(i: usize) -> String {
        format!("seq-{i}")
    }

    /// Index for a sidecar id (`seq-i`).
    pub fn index_of(id: &str) -> usize {
        id.strip_prefix("seq-")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected sidecar id {id:?}"))
    }

    /// Number of simulated nodes (and of sidecars once started).
    pub fn n(&self) -> usize {
        self.sim.nodes().len()
    }

    pub fn node(&self, i: usize) -> &op_node_sim::NodeHandle {
        self.sim.node(i)
    }

    pub fn sidecar(&mut self, i: usize) -> &mut Sidecar {
        &mut self.sidecars[i]
    }

    pub fn proxy(&self, i: usize) -> &TcpProxy {
        self.proxies[i]
            .as_ref()
            .expect("fixture started without etcd proxies (FixtureOpts::with_proxy)")
    }

    /// Whether sidecar `i` can answer from etcd state: running, not SIGSTOPped and not cut off
    /// from etcd by its proxy (a partitioned sidecar may only have a stale view).
    fn is_live(&mut self, i: usize) -> bool {
        let cut = self.proxies[i]
            .as_ref()
            .is_some_and(TcpProxy::is_partitioned);
        !cut && self.sidecars[i].is_responsive()
    }

    /// `(id, url)` of the sidecars that can answer.
    fn live(&mut self) -> Vec<(String, String)> {
        let live: Vec<usize> = (0..self.sidecars.len())
            .filter(|&i| self.is_live(i))
            .collect();
        live.into_iter()
            .map(|i| (Self::id(i), self.sidecars[i].url()))
            .collect()
    }

    /// URLs of sidecars that can answer (running, not SIGSTOPped, not partitioned).
    pub fn live_urls(&mut self) -> Vec<String> {
        self.live().into_iter().map(|(_, url)| url).collect()
    }

    /// Calls `method` on the first live sidecar that gives a JSON-RPC answer.
    pub async fn rpc_any(&mut self, method: &str, params: Value) -> Result<Value, rpc::RpcError> {
        let mut last = None;
        for url in self.live_urls() {
            match rpc::rpc(&url, method, params.clone()).await {
                Err(e) if e.is_transport() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| rpc::RpcError {
            code: rpc::RpcError::TRANSPORT,
            message: "no live sidecar".into(),
        }))
    }

    /// `coordinator_getMaster` as answered by any live sidecar; `None` for null or no answer.
    pub async fn leader_id(&mut self) -> Option<String> {
        match self.rpc_any("coordinator_getMaster", json!([])).await {
            Ok(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// `coordinator_getMaster` from every live sidecar (they must agree once settled).
    pub async fn leader_views(&mut self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for (id, url) in self.live() {
            let v = rpc::rpc(&url, "coordinator_getMaster", json!([])).await;
            out.push((id, v.ok().and_then(|v| v.as_str().map(str::to_string))));
        }
        out
    }

    /// Indexes of simulated nodes that are sequencing now.
    pub fn active_indexes(&self) -> Vec<usize> {
        self.sim
            .active_nodes()
            .iter()
            .map(|name| self.node_index(name))
            .collect()
    }

    fn node_index(&self, name: &str) -> usize {
        (0..self.n())
            .find(|&i| self.node(i).name() == name)
            .unwrap_or_else(|| panic!("simulator reports unknown active node {name:?}"))
    }

    /// One settled observation: exactly one node active and getMaster names its sidecar.
    async fn single_active_now(&mut self) -> Option<usize> {
        let active = self.active_indexes();
        if active.len() != 1 {
            return None;
        }
        let leader = self.leader_id().await?;
        (leader == Self::id(active[0])).then_some(active[0])
    }

    /// Waits until exactly one node is active, it is the leader's, and that holds for ~2 s.
    /// Returns the leader's index.
    pub async fn wait_single_active(&mut self, timeout: Duration) -> usize {
        self.wait_single_active_where(
            timeout,
            "exactly one active sequencer matching getMaster",
            |_| true,
        )
        .await
    }

    /// Like [`Fixture::wait_single_active`], but the leader must not be `old`.
    pub async fn wait_new_leader(&mut self, old: usize, timeout: Duration) -> usize {
        let what = format!("a single active sequencer other than {}", Self::id(old));
        self.wait_single_active_where(timeout, &what, |i| i != old)
            .await
    }

    pub async fn wait_single_active_where(
        &mut self,
        timeout: Duration,
        what: &str,
        accept: impl Fn(usize) -> bool,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut since: Option<(usize, tokio::time::Instant)> = None;
        loop {
            let now = tokio::time::Instant::now();
            match self.single_active_now().await.filter(|&i| accept(i)) {
                Some(i) => match since {
                    Some((j, t)) if j == i => {
                        if now.duration_since(t) >= STABLE_FOR {
                            return i;
                        }
                    }
                    _ => since = Some((i, now)),
                },
                None => since = None,
            }
            if now >= deadline {
                let views = self.leader_views().await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}; active nodes {:?}, getMaster views {views:?}\n{}",
                    self.sim.active_nodes(),
                    self.sim.check()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts the simulator saw no two blocks at one height and no rewind.
    pub fn assert_invariants(&self) {
        let report = self.sim.check();
        assert!(report.is_clean(), "chain invariants violated:\n{report}");
    }

    /// Highest unsafe head number over all simulated nodes.
    pub fn chain_height(&self) -> u64 {
        (0..self.n())
            .map(|i| self.node(i).head().number)
            .max()
            .unwrap_or(0)
    }

    /// Waits until some node's head is at least 3 blocks above the height when called.
    pub async fn assert_chain_progresses(&self) {
        let from = self.chain_height();
        self.assert_chain_passes(from + 3).await;
    }

    /// Waits (30 s) until some node's head reaches `height`.
    pub async fn assert_chain_passes(&self, height: u64) {
        wait_until(
            Duration::from_secs(30),
            &format!("the chain to reach height {height}"),
            || async { self.chain_height() >= height },
        )
        .await;
    }

    /// Full key for a suffix under the prefix (`"stopped"` -> `<prefix>/stopped`).
    pub fn key(&self, suffix: &str) -> String {
        format!("{}/{}", self.prefix, suffix)
    }

    /// Value of `<prefix>/<suffix>` read with etcdctl, parsed as JSON.
    pub fn etcd_json(&self, suffix: &str) -> Option<Value> {
        let raw = self.etcd.get(&self.key(suffix))?;
        Some(
            serde_json::from_str(&raw)
                .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {raw}", self.key(suffix))),
        )
    }

    /// The `members/<id>` record of sidecar `i`, if present.
    pub fn member(&self, i: usize) -> Option<Value> {
        self.etcd_json(&format!("members/{}", Self::id(i)))
    }

    // === conductor mode ===

    /// Waits until every live sidecar names the same leader `seq-i` (with `accept(i)`), node `i`
    /// is sequencing and seals at least two more blocks while that holds: the leader's commits
    /// go through. Unlike [`Fixture::wait_single_active`] it tolerates other nodes that are
    /// still active but fenced off (a frozen sidecar cannot stop its node; in conductor mode
    /// that node's commits fail, so it publishes nothing). Returns `i`.
    pub async fn wait_leader_producing_where(
        &mut self,
        timeout: Duration,
        what: &str,
        accept: impl Fn(usize) -> bool,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut since: Option<(usize, u64)> = None;
        loop {
            let views = self.leader_views().await;
            let first = views.first().and_then(|(_, v)| v.clone());
            let agreed =
                first.filter(|id| views.iter().all(|(_, v)| v.as_deref() == Some(id.as_str())));
            let leader = agreed
                .map(|id| Self::index_of(&id))
                .filter(|&i| accept(i) && self.node(i).is_active());
            match leader {
                Some(i) => {
                    let produced = self.node(i).blocks_produced();
                    match since {
                        Some((j, p0)) if j == i => {
                            if produced >= p0 + 2 {
                                return i;
                            }
                        }
                        _ => since = Some((i, produced)),
                    }
                }
                None => since = None,
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; active nodes {:?}, getMaster views {views:?}, blocks produced {:?}\n{}",
                    self.sim.active_nodes(),
                    (0..self.n()).map(|i| self.node(i).blocks_produced()).collect::<Vec<_>>(),
                    self.sim.check()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Fixture::wait_leader_producing_where`] for any leader.
    pub async fn wait_leader_producing(&mut self, timeout: Duration) -> usize {
        self.wait_leader_producing_where(timeout, "a leader whose node produces blocks", |_| true)
            .await
    }

    /// [`Fixture::wait_leader_producing_where`] for a leader other than `old`.
    pub async fn wait_new_leader_producing(&mut self, old: usize, timeout: Duration) -> usize {
        let what = format!(
            "a leader other than {} whose node produces blocks",
            Self::id(old)
        );
        self.wait_leader_producing_where(timeout, &what, |i| i != old)
            .await
    }

    /// `<prefix>/head` and the envelope stored for the block it names (its chunks under
    /// `<prefix>/payload/<hash>/`), read at one etcd revision, parsed as JSON.
    pub async fn head_and_payload(&self) -> (Option<Value>, Option<Value>) {
        let (head, payload) = etcd::head_and_payload(&self.etcd.client_url(), &self.prefix).await;
        let parse = |what: &str, v: &Option<String>| {
            v.as_ref().map(|raw| {
                serde_json::from_str(raw)
                    .unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {raw}"))
            })
        };
        (
            parse("the head", &head),
            parse("the stored payload", &payload),
        )
    }

    /// Packed size of the payload stored for the committed head (data bytes of its chunks);
    /// `None` if nothing is stored for it.
    pub async fn stored_payload_bytes(&self) -> Option<usize> {
        let head = self.etcd_json("head")?;
        let hash = head["hash"].as_str()?;
        let chunks = etcd::stored_chunks(&self.etcd.client_url(), &self.prefix, hash, 0).await;
        // Each value is a 10-byte header and the data.
        (!chunks.is_empty()).then(|| chunks.iter().map(|c| c.len() - 10).sum())
    }

    /// Every `<prefix>/head` record ever written, oldest first (etcd's history of the key).
    pub async fn head_history(&self) -> Vec<Value> {
        etcd::key_versions(&self.etcd.client_url(), &self.key("head"))
            .await
            .into_iter()
            .map(|(rev, raw)| {
                serde_json::from_str(&raw).unwrap_or_else(|e| {
                    panic!(
                        "{} at revision {rev} is not JSON ({e}): {raw}",
                        self.key("head")
                    )
                })
            })
            .collect()
    }

    /// Published blocks (the simulator's ledger) whose producer is node `i`.
    pub fn published_by(&self, i: usize) -> Vec<op_node_sim::PublishedBlock> {
        let name = self.node(i).name().to_string();
        self.sim
            .ledger()
            .published
            .into_iter()
            .filter(|b| b.producer == name)
            .collect()
    }
}

/// The RPC URL of a sidecar listening on `port`.
fn sidecar_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- fixture {}: simulator report -----\n{}\nactive nodes: {:?}\n-----",
                self.prefix,
                self.sim.check(),
                self.sim.active_nodes()
            );
        }
    }
}
