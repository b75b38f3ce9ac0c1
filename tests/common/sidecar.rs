//! The real `op-sidecar` binary as a child process with free ports and a log file.
//!
//! On Drop it is killed; if the test is panicking its log tail is printed, so a failing test
//! shows what every one of its sidecars was doing.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::etcd::log_pair;
use super::{
    file_tail, free_port, log_tail_collapsed, rpc, signal, wait_child, wait_child_blocking,
};

/// Path of the binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_op-sidecar");

/// The binary the cluster tests run: [`BIN`], or `TEST_SIDECAR_BIN` to run today's scenarios
/// against another build (e.g. to see a regression test fail on the code before a fix).
pub fn bin() -> String {
    std::env::var("TEST_SIDECAR_BIN").unwrap_or_else(|_| BIN.to_string())
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of log printed per sidecar when a test fails.
const PANIC_TAIL: usize = 80;

/// Builds the `op-sidecar run` command line. Defaults are fast timings for tests; any flag
/// can be replaced with [`SidecarBuilder::flag`].
#[derive(Clone, Debug)]
pub struct SidecarBuilder {
    id: String,
    flags: Vec<(String, Option<String>)>,
    env: Vec<(String, String)>,
    wait_ready: bool,
    /// RPC port to try first (e.g. one already given to op-node as its conductor URL).
    rpc_port: Option<u16>,
}

impl SidecarBuilder {
    pub fn new(
        id: &str,
        node_rpc: &str,
        execution_rpc: &str,
        etcd_endpoints: &str,
        prefix: &str,
    ) -> Self {
        let mut b = Self {
            id: id.to_string(),
            flags: Vec::new(),
            env: vec![
                ("RUST_LOG".into(), "info,op_sidecar=debug".into()),
                // Plain text in log files.
                ("NO_COLOR".into(), "1".into()),
            ],
            wait_ready: true,
            rpc_port: None,
        };
        b = b
            .flag("--server.id", id)
            .flag("--node.rpc", node_rpc)
            .flag("--execution.rpc", execution_rpc)
            .flag("--etcd.endpoints", etcd_endpoints)
            .flag("--etcd.prefix", prefix)
            .flag("--rpc.addr", "127.0.0.1")
            .flag("--lease.ttl", "2s")
            .flag("--healthcheck.interval", "250ms")
            .flag("--healthcheck.unsafe-interval", "3s");
        b
    }

    /// Sets `name` to `value`, replacing an earlier value of the same flag.
    pub fn flag(mut self, name: &str, value: &str) -> Self {
        self.flags.retain(|(n, _)| n != name);
        self.flags.push((name.to_string(), Some(value.to_string())));
        self
    }

    /// Adds a boolean switch such as `--paused`.
    pub fn switch(mut self, name: &str) -> Self {
        self.flags.retain(|(n, _)| n != name);
        self.flags.push((name.to_string(), None));
        self
    }

    /// Removes a flag (including a default one).
    pub fn without(mut self, name: &str) -> Self {
        self.flags.retain(|(n, _)| n != name);
        self
    }

    pub fn paused(self) -> Self {
        self.switch("--paused")
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Whether `start` waits for the RPC port to accept connections (default true).
    pub fn wait_ready(mut self, yes: bool) -> Self {
        self.wait_ready = yes;
        self
    }

    /// Tries `port` for the RPC listener first (falls back to a free port on a clash, so check
    /// [`Sidecar::url`] afterwards).
    pub fn rpc_port(mut self, port: u16) -> Self {
        self.rpc_port = Some(port);
        self
    }

    /// Spawns the sidecar on free RPC and admin ports; retries on a port clash.
    pub async fn start(self) -> Sidecar {
        let dir = tempfile::Builder::new()
            .prefix(&format!("op-sidecar-{}-", self.id))
            .tempdir()
            .expect("create sidecar temp dir");
        let mut sc = Sidecar {
            builder: self,
            rpc_port: 0,
            admin_port: 0,
            dir: Some(dir),
            child: None,
            paused: false,
            starts: 0,
        };
        let preferred = sc.builder.rpc_port;
        for attempt in 0..3 {
            sc.rpc_port = match preferred {
                Some(p) if attempt == 0 => p,
                _ => free_port(),
            };
            sc.admin_port = free_port();
            sc.spawn();
            if !sc.builder.wait_ready {
                return sc;
            }
            match sc.wait_ready().await {
                Ok(()) => return sc,
                Err(why) if why.contains("in use") && attempt < 2 => continue,
                Err(why) => panic!("sidecar {} did not start: {why}", sc.id()),
            }
        }
        unreachable!("the loop returns or panics")
    }
}

pub struct Sidecar {
    builder: SidecarBuilder,
    rpc_port: u16,
    admin_port: u16,
    dir: Option<TempDir>,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl Sidecar {
    pub fn id(&self) -> &str {
        &self.builder.id
    }

    /// Its RPC URL: https:// when it serves TLS (`--rpc.tls.cert`).
    pub fn url(&self) -> String {
        let tls = self
            .builder
            .flags
            .iter()
            .any(|(n, _)| n == "--rpc.tls.cert");
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.rpc_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("sidecar dir present until drop")
            .path()
            .join("sidecar.log")
    }

    /// The pid of the running process; panics if it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("sidecar is running").id()
    }

    /// Running (not exited, not killed); a SIGSTOPped sidecar counts as running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Running and not SIGSTOPped: it can answer RPC.
    pub fn is_responsive(&mut self) -> bool {
        !self.paused && self.is_running()
    }

    /// The command line after `op-sidecar`, for logs and `restart`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        for (name, value) in &self.builder.flags {
            args.push(name.clone());
            if let Some(v) = value {
                args.push(v.clone());
            }
        }
        args.extend([
            "--rpc.port".to_string(),
            self.rpc_port.to_string(),
            "--rpc.advertise".to_string(),
            self.url(),
            "--admin.port".to_string(),
            self.admin_port.to_string(),
        ]);
        args
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "sidecar {} already running",
            self.id()
        );
        let (out, err) = log_pair(&self.log_path());
        let args = self.args();
        use std::io::Write;
        let mut header = out.try_clone().expect("clone log handle");
        let _ = writeln!(
            header,
            "===== harness: start #{}: {} {}",
            self.starts,
            bin(),
            args.join(" ")
        );
        let mut cmd = Command::new(bin());
        cmd.args(&args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, _) in std::env::vars() {
            if k.starts_with("OP_SIDECAR_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.builder.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin()));
        self.child = Some(child);
        self.paused = false;
        self.starts += 1;
    }

    /// Waits until the RPC port answers an HTTP request (any JSON-RPC answer counts).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let url = self.url();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "exited with {status}; log:\n{}",
                        file_tail(&self.log_path(), 40)
                    ));
                }
            }
            let probe = br#"{"jsonrpc":"2.0","id":0,"method":"coordinator_version","params":[]}"#;
            if rpc::post(&url, probe.to_vec(), Duration::from_secs(2))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "RPC at {url} not answering after {READY_TIMEOUT:?}; log:\n{}",
                    file_tail(&self.log_path(), 40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process is frozen, its sockets stay open.
    pub fn pause(&mut self) {
        signal(self.pid(), libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        signal(self.pid(), libc::SIGCONT);
        self.paused = false;
    }

    /// SIGTERM (graceful shutdown); see [`Sidecar::wait_exit`].
    pub fn terminate(&mut self) {
        signal(self.pid(), libc::SIGTERM);
    }

    /// Sends any signal.
    pub fn signal(&mut self, sig: libc::c_int) {
        signal(self.pid(), sig);
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_child(child, timeout).await;
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Kills the process if running and starts it again with the same ports and flags.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        if self.builder.wait_ready {
            if let Err(why) = self.wait_ready().await {
                panic!("sidecar {} did not restart: {why}", self.id());
            }
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        file_tail(&self.log_path(), n)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.paused {
                let _ = signal_quiet(child.id(), libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = wait_child_blocking(child, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            let kept = self.dir.take().map(TempDir::keep);
            let path = kept
                .as_ref()
                .map(|d| d.join("sidecar.log"))
                .unwrap_or_default();
            eprintln!(
                "----- sidecar {} (rpc {}) last {PANIC_TAIL} log lines (similar runs collapsed), kept at {} -----\n{}\n----- end {} -----",
                self.builder.id,
                self.url(),
                path.display(),
                log_tail_collapsed(&path, PANIC_TAIL),
                self.builder.id,
            );
        }
    }
}

fn signal_quiet(pid: u32, sig: libc::c_int) -> i32 {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return -1;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) }
}
