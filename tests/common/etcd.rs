//! A real etcd (single member or a 3-member cluster) on free loopback ports with temp data dirs.
//!
//! Never skips: a missing `etcd`/`etcdctl` binary is a loud panic, because a skipped safety test
//! is a hidden hole. `ETCD_BIN` / `ETCDCTL_BIN` override the binaries found on PATH.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{file_tail, free_port, signal, unique, wait_child_blocking};

const START_TIMEOUT: Duration = Duration::from_secs(30);

fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

fn etcdctl_bin() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_string())
}

fn missing(bin: &str, e: &std::io::Error) -> ! {
    panic!(
        "cannot run `{bin}` ({e}): these tests need a real etcd 3.4+ on PATH \
         (Debian: apt-get install etcd-server etcd-client) or ETCD_BIN/ETCDCTL_BIN set; \
         they fail instead of skipping on purpose"
    )
}

/// Runs `etcdctl --endpoints ENDPOINTS ARGS...` (API v3) and returns its stdout; panics on failure.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    match etcdctl_try(endpoints, args) {
        Ok(out) => out,
        Err(e) => panic!("etcdctl --endpoints {endpoints} {args:?} failed: {e}"),
    }
}

/// Runs etcdctl and returns stdout, or stderr (and exit status) as the error.
pub fn etcdctl_try(endpoints: &str, args: &[&str]) -> Result<String, String> {
    etcdctl_tls_try(endpoints, None, args)
}

/// As [`etcdctl_try`], over TLS with the client certificate of `tls` when given.
pub fn etcdctl_tls_try(
    endpoints: &str,
    tls: Option<&EtcdTls>,
    args: &[&str],
) -> Result<String, String> {
    let bin = etcdctl_bin();
    let mut cmd = Command::new(&bin);
    if let Some(t) = tls {
        cmd.arg("--cacert")
            .arg(&t.ca)
            .arg("--cert")
            .arg(&t.client_cert)
            .arg("--key")
            .arg(&t.client_key);
    }
    let out = cmd
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(["--dial-timeout", "2s", "--command-timeout", "3s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| missing(&bin, &e));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The etcd tests' certificates are the shared test PKI.
pub use super::certs::TestCerts as EtcdTls;

// === impl Member ===

/// One etcd process: its identity, ports and data dir survive restarts.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Extra etcd flags (e.g. `--quota-backend-bytes`), kept across restarts.
    extra: Vec<String>,
    tls: Option<std::sync::Arc<EtcdTls>>,
    /// `user:password` etcdctl authenticates as (once RBAC is enabled).
    ctl_user: Option<String>,
}

impl Member {
    fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("op-sidecar-etcd-")
            .tempdir()
            .expect("create etcd temp dir");
        Self {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            dir,
            child: None,
            extra: Vec::new(),
            tls: None,
            ctl_user: None,
        }
    }

    fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn ctl_try(&self, args: &[&str]) -> Result<String, String> {
        match &self.ctl_user {
            Some(u) => {
                let mut all = vec!["--user", u.as_str()];
                all.extend_from_slice(args);
                etcdctl_tls_try(&self.client_url(), self.tls.as_deref(), &all)
            }
            None => etcdctl_tls_try(&self.client_url(), self.tls.as_deref(), args),
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self, initial_cluster: &str, token: &str) {
        assert!(
            self.child.is_none(),
            "etcd member {} already running",
            self.name
        );
        let (log, log2) = log_pair(&self.log_path());
        let bin = etcd_bin();
        let mut cmd = Command::new(&bin);
        if let Some(t) = &self.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key);
        }
        let child = cmd
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-token", token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-level", "error"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| {
                if e.kind() == ErrorKind::NotFound {
                    missing(&bin, &e)
                }
                panic!("spawn {bin}: {e}")
            });
        self.child = Some(child);
    }

    /// `None` while running (or not started), `Some(log tail)` if it has exited.
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(format!(
                    "{status}; log:\n{}",
                    file_tail(&self.log_path(), 30)
                ))
            }
            _ => None,
        }
    }

    fn healthy(&self) -> bool {
        self.ctl_try(&["endpoint", "health"]).is_ok()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            if wait_child_blocking(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn print_tail_if_panicking(&mut self, label: &str) {
        if std::thread::panicking() {
            eprintln!(
                "----- {label} {} log tail ({}) -----\n{}\n-----",
                self.name,
                self.log_path().display(),
                file_tail(&self.log_path(), 20)
            );
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.print_tail_if_panicking("etcd");
        self.kill();
    }
}

/// Waits until every member answers `endpoint health`; panics with the log of any that exited.
/// Returns false if a member exited with a port clash (caller retries on fresh ports).
async fn wait_healthy(members: &mut [Member]) -> bool {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        for m in members.iter_mut() {
            if let Some(why) = m.exited() {
                if why.contains("address already in use") {
                    return false;
                }
                panic!("etcd member {} exited during start: {why}", m.name);
            }
        }
        let mut all = true;
        for m in members.iter() {
            let url = m.client_url();
            let tls = m.tls.clone();
            let ok = tokio::task::spawn_blocking(move || {
                etcdctl_tls_try(&url, tls.as_deref(), &["endpoint", "health"]).is_ok()
            })
            .await
            .unwrap_or(false);
            all &= ok;
        }
        if all {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            let logs: Vec<String> = members
                .iter()
                .map(|m| format!("{}:\n{}", m.name, file_tail(&m.log_path(), 30)))
                .collect();
            panic!(
                "etcd did not become healthy within {START_TIMEOUT:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

// === impl Etcd ===

/// A single-member etcd.
pub struct Etcd {
    member: Member,
    token: String,
}

impl Etcd {
    /// Starts etcd on free ports and waits until it answers `endpoint health`.
    pub async fn start() -> Self {
        Self::start_with(&[], None).await
    }

    /// As [`Etcd::start`], with extra etcd flags (e.g. `["--quota-backend-bytes", "25165824"]`,
    /// kept across restarts) and, with `tls`, clients that must use https:// and a certificate
    /// signed by its CA.
    pub async fn start_with(extra: &[&str], tls: Option<std::sync::Arc<EtcdTls>>) -> Self {
        for _ in 0..3 {
            let mut member = Member::new("etcd0");
            member.extra = extra.iter().map(|s| s.to_string()).collect();
            member.tls = tls.clone();
            let token = unique("tok");
            let ic = initial_cluster(std::slice::from_ref(&member));
            member.spawn(&ic, &token);
            if wait_healthy(std::slice::from_mut(&mut member)).await {
                return Self { member, token };
            }
        }
        panic!("etcd could not bind free ports three times in a row");
    }

    pub fn client_url(&self) -> String {
        self.member.client_url()
    }

    pub fn log_path(&self) -> PathBuf {
        self.member.log_path()
    }

    pub fn is_running(&mut self) -> bool {
        self.member.exited().is_none() && self.member.child.is_some()
    }

    /// SIGTERM and wait for the process to exit.
    pub fn stop(&mut self) {
        self.member.stop();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Starts the same member again (same ports, same data dir) and waits until healthy.
    pub async fn start_again(&mut self) {
        let ic = initial_cluster(std::slice::from_ref(&self.member));
        self.member.spawn(&ic, &self.token);
        assert!(
            wait_healthy(std::slice::from_mut(&mut self.member)).await,
            "etcd restart: its port was taken by another process meanwhile"
        );
    }

    /// Runs etcdctl against this etcd.
    pub fn ctl(&self, args: &[&str]) -> String {
        match self.member.ctl_try(args) {
            Ok(out) => out,
            Err(e) => panic!("etcdctl {args:?} failed: {e}"),
        }
    }

    /// Makes every later etcdctl call authenticate as `user:password` (after `auth enable`).
    pub fn set_ctl_user(&mut self, user_password: &str) {
        self.member.ctl_user = Some(user_password.to_string());
    }

    /// Runs etcdctl against this etcd; stderr as the error.
    pub fn ctl_try(&self, args: &[&str]) -> Result<String, String> {
        self.member.ctl_try(args)
    }

    /// Value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.ctl(&["get", key, "--print-value-only"]);
        let v = out.strip_suffix('\n').unwrap_or(&out);
        (!out.is_empty()).then(|| v.to_string())
    }

    /// All `(key, value)` pairs under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self.ctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }
}

/// `etcdctl get KEY --print-value-only`, `None` when the key is absent.
pub fn get_value(endpoints: &str, key: &str) -> Option<String> {
    let out = etcdctl(endpoints, &["get", key, "--print-value-only"]);
    let v = out.strip_suffix('\n').unwrap_or(&out);
    if out.is_empty() {
        None
    } else {
        Some(v.to_string())
    }
}

// === impl EtcdCluster ===

/// A multi-member etcd cluster on loopback.
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    initial_cluster: String,
}

impl EtcdCluster {
    pub async fn start(n: usize) -> Self {
        assert!(n >= 1, "an etcd cluster needs at least one member");
        for _ in 0..3 {
            let mut members: Vec<Member> =
                (0..n).map(|i| Member::new(&format!("etcd{i}"))).collect();
            let token = unique("tok");
            let ic = initial_cluster(&members);
            for m in members.iter_mut() {
                m.spawn(&ic, &token);
            }
            if wait_healthy(&mut members).await {
                return Self {
                    members,
                    token,
                    initial_cluster: ic,
                };
            }
        }
        panic!("etcd cluster could not bind free ports three times in a row");
    }

    /// Comma-separated client URLs of all members (alive or not).
    pub fn client_urls(&self) -> String {
        self.members
            .iter()
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_url(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    pub fn kill_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    pub fn stop_member(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Restarts member `i` from its data dir and waits until it is healthy (needs a quorum).
    pub async fn restart_member(&mut self, i: usize) {
        let ic = self.initial_cluster.clone();
        self.members[i].spawn(&ic, &self.token);
        assert!(
            wait_healthy(std::slice::from_mut(&mut self.members[i])).await,
            "etcd member restart: its port was taken meanwhile"
        );
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.members[i].healthy()
    }
}

/// Opens (creating) a log file for a child's stdout and stderr.
pub(crate) fn log_pair(path: &Path) -> (File, File) {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file");
    let g = f.try_clone().expect("clone log handle");
    (f, g)
}

/// Runs `etcdctl elect -l NAME` (observe the election) and returns the first `want` lines it
/// prints within `timeout`, then kills it. A leader shows as two lines: its key and its value.
pub fn etcdctl_observe_election(
    endpoints: &str,
    name: &str,
    want: usize,
    timeout: Duration,
) -> Vec<String> {
    use std::io::BufRead;
    let bin = etcdctl_bin();
    let mut child = Command::new(&bin)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "elect", "-l", name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| missing(&bin, &e));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut lines = Vec::new();
    while lines.len() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

// === history (etcd keeps every revision until compaction, which these tests never run) ===

async fn client(endpoint: &str) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap_or_else(|e| panic!("connect an etcd client to {endpoint}: {e}"))
}

/// Every value `key` ever held, oldest first, as `(mod_revision, value)`: walks back from the
/// current version one `mod_revision - 1` read at a time (one read per version).
pub async fn key_versions(endpoint: &str, key: &str) -> Vec<(i64, String)> {
    use etcd_client::GetOptions;
    let mut c = client(endpoint).await;
    let mut out = Vec::new();
    let mut rev = 0i64; // 0 = the current revision
    loop {
        let opts = (rev > 0).then(|| GetOptions::new().with_revision(rev));
        let resp = c
            .get(key, opts)
            .await
            .unwrap_or_else(|e| panic!("etcd get {key} at revision {rev}: {e}"));
        let Some(kv) = resp.kvs().first() else { break };
        out.push((
            kv.mod_revision(),
            String::from_utf8_lossy(kv.value()).into_owned(),
        ));
        // The version before this one is whatever the key held one revision earlier.
        rev = kv.mod_revision() - 1;
        if rev < 1 {
            break;
        }
    }
    out.reverse();
    out
}

/// Values of `keys` read at one etcd revision (`None` where absent).
pub async fn get_consistent(endpoint: &str, keys: &[&str]) -> Vec<Option<String>> {
    use etcd_client::GetOptions;
    let mut c = client(endpoint).await;
    let mut out = Vec::with_capacity(keys.len());
    let mut rev = 0i64;
    for key in keys {
        let opts = (rev > 0).then(|| GetOptions::new().with_revision(rev));
        let resp = c
            .get(*key, opts)
            .await
            .unwrap_or_else(|e| panic!("etcd get {key}: {e}"));
        if rev == 0 {
            rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        out.push(
            resp.kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        );
    }
    out
}

/// The first key put under `prefix` in etcd's whole history, as `(key, value)`; `None` if
/// nothing was ever put there (waits at most `timeout` for the history to arrive).
pub async fn first_put(
    endpoint: &str,
    prefix: &str,
    timeout: Duration,
) -> Option<(String, String)> {
    use etcd_client::{EventType, WatchOptions};
    let mut c = client(endpoint).await;
    let opts = WatchOptions::new().with_start_revision(1).with_prefix();
    let mut stream = c
        .watch(prefix, Some(opts))
        .await
        .unwrap_or_else(|e| panic!("etcd watch {prefix} from revision 1: {e}"));
    let read = async {
        while let Ok(Some(resp)) = stream.message().await {
            for ev in resp.events() {
                if ev.event_type() == EventType::Put {
                    if let Some(kv) = ev.kv() {
                        return Some((
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            String::from_utf8_lossy(kv.value()).into_owned(),
                        ));
                    }
                }
            }
        }
        None
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Waits for the next put under `prefix` (from now on) whose value is `value`; returns its key.
/// Watching, not polling, so the caller can act within milliseconds of the write.
pub async fn next_put_of(
    endpoint: &str,
    prefix: &str,
    value: &str,
    timeout: Duration,
) -> Option<String> {
    use etcd_client::{EventType, WatchOptions};
    let mut c = client(endpoint).await;
    let mut stream = c
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap_or_else(|e| panic!("etcd watch {prefix}: {e}"));
    let read = async {
        while let Ok(Some(resp)) = stream.message().await {
            for ev in resp.events() {
                if ev.event_type() != EventType::Put {
                    continue;
                }
                if let Some(kv) = ev.kv() {
                    if kv.value() == value.as_bytes() {
                        return Some(String::from_utf8_lossy(kv.key()).into_owned());
                    }
                }
            }
        }
        None
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Waits for the next put of `key` (from now on) and returns the lease it was written with
/// (0 = none).
pub async fn next_put_lease(endpoint: &str, key: &str, timeout: Duration) -> Option<i64> {
    use etcd_client::EventType;
    let mut c = client(endpoint).await;
    let mut stream = c
        .watch(key, None)
        .await
        .unwrap_or_else(|e| panic!("etcd watch {key}: {e}"));
    let read = async {
        while let Ok(Some(resp)) = stream.message().await {
            for ev in resp.events() {
                if ev.event_type() == EventType::Put {
                    if let Some(kv) = ev.kv() {
                        return Some(kv.lease());
                    }
                }
            }
        }
        None
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

// === stored payloads (chunks under `<prefix>/payload/<hash>/`, see src/payload.rs) ===

/// The envelope stored for block `hash` under `prefix`, read at `revision` (0 = now): its
/// chunks one by one (each answer stays under the client's 4 MiB limit), joined and unpacked
/// by the sidecar's own code. `None` if no chunk exists; panics on an incomplete or corrupt
/// set (a safety bug: a committed head must be repairable).
pub async fn stored_payload(
    endpoint: &str,
    prefix: &str,
    hash: &str,
    revision: i64,
) -> Option<String> {
    let values = stored_chunks(endpoint, prefix, hash, revision).await;
    if values.is_empty() {
        return None;
    }
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    Some(
        op_sidecar::payload::assemble(&refs)
            .unwrap_or_else(|e| panic!("stored payload of {hash} under {prefix}: {e}")),
    )
}

/// The chunk values stored for block `hash`, in order, up to the one flagged last.
pub async fn stored_chunks(
    endpoint: &str,
    prefix: &str,
    hash: &str,
    revision: i64,
) -> Vec<Vec<u8>> {
    use etcd_client::GetOptions;
    let keys = op_sidecar::state::Keys::new(prefix);
    let mut c = client(endpoint).await;
    let mut values: Vec<Vec<u8>> = Vec::new();
    loop {
        let key = keys.payload_chunk(hash, values.len());
        let opts = (revision > 0).then(|| GetOptions::new().with_revision(revision));
        let resp = c
            .get(key.clone(), opts)
            .await
            .unwrap_or_else(|e| panic!("etcd get {key}: {e}"));
        let Some(kv) = resp.kvs().first() else { break };
        let header =
            op_sidecar::payload::chunk_header(kv.value()).unwrap_or_else(|e| panic!("{key}: {e}"));
        values.push(kv.value().to_vec());
        if header.last {
            break;
        }
    }
    values
}

/// `<prefix>/head` and the envelope stored for the block it names, read at one revision.
pub async fn head_and_payload(endpoint: &str, prefix: &str) -> (Option<String>, Option<String>) {
    let keys = op_sidecar::state::Keys::new(prefix);
    let mut c = client(endpoint).await;
    let resp = c
        .get(keys.head(), None)
        .await
        .unwrap_or_else(|e| panic!("etcd get {}: {e}", keys.head()));
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    let Some(kv) = resp.kvs().first() else {
        return (None, None);
    };
    let head = String::from_utf8_lossy(kv.value()).into_owned();
    let hash = serde_json::from_str::<serde_json::Value>(&head)
        .ok()
        .and_then(|v| v["hash"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{} is not a head record: {head}", keys.head()));
    let payload = stored_payload(endpoint, prefix, &hash, rev).await;
    (Some(head), payload)
}

/// The distinct block hashes that have chunks under `<prefix>/payload/` now.
pub async fn payload_blocks(endpoint: &str, prefix: &str) -> Vec<String> {
    use etcd_client::GetOptions;
    let keys = op_sidecar::state::Keys::new(prefix);
    let dir = keys.payload_dir();
    let mut c = client(endpoint).await;
    let resp = c
        .get(
            dir.clone(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .unwrap_or_else(|e| panic!("etcd get --prefix {dir}: {e}"));
    let mut hashes: Vec<String> = resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            key.strip_prefix(&dir)
                .and_then(|rest| rest.split('/').next())
                .map(str::to_string)
        })
        .collect();
    hashes.dedup();
    hashes
}

/// etcd's backend size, the part in use, and the active alarms (`NOSPACE`, ...).
pub async fn storage(endpoint: &str) -> (i64, i64, Vec<String>) {
    let mut c = client(endpoint).await;
    let st = c
        .status()
        .await
        .unwrap_or_else(|e| panic!("etcd status of {endpoint}: {e}"));
    let alarms = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("etcd alarm list of {endpoint}: {e}"));
    let names = alarms
        .alarms()
        .iter()
        .map(|a| format!("{:?}", a.alarm()).to_uppercase())
        .collect();
    (st.db_size(), st.raft_used_db_size(), names)
}
