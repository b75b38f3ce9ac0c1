//! Shared integration-test harness: a real etcd on free ports, a TCP fault proxy, the real
//! `op-sidecar` binary, a JSON-RPC client and the three-node cluster fixture built on the simulator.
//!
//! Every `tests/*.rs` does `mod common;` and uses only part of this, hence the `dead_code` allow.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub mod certs;
pub mod etcd;
pub mod fixture;
pub mod proxy;
pub mod rpc;
pub mod sidecar;
pub mod tls_proxy;

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

pub use etcd::{etcdctl, etcdctl_try, Etcd, EtcdCluster};
pub use fixture::{Fixture, FixtureOpts};
pub use proxy::TcpProxy;
pub use rpc::{http_get, metric, raw_post, rpc, rpc_timeout, RpcError};
pub use sidecar::{Sidecar, SidecarBuilder};

/// Polls `check` every ~100 ms until it returns true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !poll_until(timeout, &mut check).await {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}

/// Like [`wait_until`] but returns whether the condition became true instead of panicking.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback port that was free a moment ago (bind to port 0, read it, release it).
///
/// Another process may grab it before it is used; the spawners retry with fresh ports when a
/// child fails with "address already in use".
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// The last `n` lines of a text file (lossy UTF-8), or a note that it could not be read.
pub fn file_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The last `n` lines of a log, each cut to 400 characters, after folding lines that repeat
/// one of the previous 8 distinct line shapes (text without its leading timestamp and digits)
/// into a count, so periodic debug messages cannot push the interesting lines out of a
/// failure report.
pub fn log_tail_collapsed(path: &Path, n: usize) -> String {
    const WINDOW: usize = 8;
    let Ok(bytes) = std::fs::read(path) else {
        return format!("<cannot read {}>", path.display());
    };
    let text = String::from_utf8_lossy(&bytes);
    let shape = |line: &str| -> String {
        let body = line.split_once(' ').map_or(line, |(_, rest)| rest);
        body.chars().filter(|c| !c.is_ascii_digit()).collect()
    };
    let mut out: Vec<String> = Vec::new();
    let mut recent: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut folded = 0usize;
    for line in text.lines() {
        let sh = shape(line);
        if recent.contains(&sh) {
            folded += 1;
            continue;
        }
        if folded > 0 {
            out.push(format!("    ... {folded} repeated line(s) folded"));
            folded = 0;
        }
        out.push(line.chars().take(400).collect());
        recent.push_back(sh);
        if recent.len() > WINDOW {
            recent.pop_front();
        }
    }
    if folded > 0 {
        out.push(format!(
            "    ... {folded} repeated line(s) folded, up to the end"
        ));
    }
    out[out.len().saturating_sub(n)..].join("\n")
}

/// A short unique token for prefixes and cluster tokens within this test process.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends `sig` to `pid`; panics if the process does not exist.
pub fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Polls a std child until it exits or `timeout` passes, without blocking the runtime.
pub async fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on child") {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Blocking variant of [`wait_child`] for Drop and other sync contexts.
pub fn wait_child_blocking(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
