//! Resource limits of the JSON-RPC listener: open connections (in total and per peer IP), bytes
//! buffered for requests and proxied answers, and the request permits, with a reserve for the
//! calls op-node makes on its block path. Pure bookkeeping: no sockets and no method semantics.
//!
//! A slow or greedy client must never delay `conductor_leader`, `conductor_commitUnsafePayload`,
//! `conductor_active` or `coordinator_requestBuildingBlock` past op-node's 1 s budget. So a
//! request body is read under its own deadline before any permit is taken, the bytes it holds
//! come from a bounded pool, and those four methods draw from reserves that other calls never
//! touch. Someone who imitates those calls can still compete for the reserves; nothing without
//! authentication can prevent that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The methods op-node calls while producing blocks, answered from reserved permits and bytes.
pub const CRITICAL: &[&str] = &[
    "conductor_leader",
    "conductor_commitUnsafePayload",
    "conductor_active",
    "coordinator_requestBuildingBlock",
];

/// Requests processed at once, other than the critical ones.
pub const GENERAL_PERMITS: usize = 1024;
/// Requests processed at once for the critical methods, whatever else is running.
pub const CRITICAL_PERMITS: usize = 64;
/// Longest a request waits for buffer space before it is answered "busy". Short: when the pool is
/// full it tends to stay full for a while, and the client had better retry elsewhere or later.
pub const BYTES_WAIT: Duration = Duration::from_secs(2);
/// Bytes reserved for critical calls beyond one largest body: room for one maximal
/// `commitUnsafePayload` plus hundreds of small leader checks at once.
pub const CRITICAL_EXTRA_BYTES: usize = 1024 * 1024;
/// Most bytes of proxied answers one HTTP request (single call or whole batch) may gather,
/// as geth's `--rpc.batch-response-max-size` (25 MB) does.
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Whether a call may use the reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Critical,
    General,
}

impl Class {
    pub fn of_method(method: &str) -> Self {
        if CRITICAL.contains(&method) {
            Class::Critical
        } else {
            Class::General
        }
    }
}

/// Classifies a request from the start of its body, before all of it has arrived: the method of
/// a single call when it comes before any object or array value (every JSON-RPC client we know
/// writes `jsonrpc`, `id` and `method` before `params`). `None` while more bytes are needed.
/// Batches and anything unusual count as general.
pub fn peek_class(prefix: &[u8]) -> Option<Class> {
    let mut p = Scan { s: prefix, i: 0 };
    p.ws();
    match p.next()? {
        b'{' => {}
        _ => return Some(Class::General),
    }
    loop {
        p.ws();
        match p.peek()? {
            b'"' => {}
            _ => return Some(Class::General),
        }
        let key = p.string()?;
        p.ws();
        if p.next()? != b':' {
            return Some(Class::General);
        }
        p.ws();
        match p.peek()? {
            b'"' => {
                let value = p.string()?;
                if key == b"method" {
                    let method = std::str::from_utf8(value).ok();
                    return Some(method.map_or(Class::General, Class::of_method));
                }
            }
            b'{' | b'[' => return Some(Class::General),
            _ => {
                // A number, true, false or null.
                while !matches!(p.peek()?, b',' | b'}') && !p.peek()?.is_ascii_whitespace() {
                    p.i += 1;
                }
            }
        }
        p.ws();
        match p.next()? {
            b',' => {}
            _ => return Some(Class::General),
        }
    }
}

struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// A string's raw bytes between the quotes (escapes left as they are; a method name with an
    /// escape then matches no critical method, which only costs it the reserve).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.i += 1;
        let start = self.i;
        loop {
            match self.next()? {
                b'\\' => {
                    self.next()?;
                }
                b'"' => return Some(&self.s[start..self.i - 1]),
                _ => {}
            }
        }
    }
}

// === impl Limits ===

/// Everything the listener bounds, shared by all connections.
pub struct Limits {
    pub conns: Arc<Conns>,
    pub bytes: Arc<ByteBudget>,
    pub permits: Permits,
    pub read_timeout: Duration,
    pub max_body: usize,
    metrics: Arc<Metrics>,
}

impl Limits {
    pub fn new(
        max_conns: usize,
        max_conns_per_ip: usize,
        max_buffered: usize,
        max_body: usize,
        read_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Limits {
            conns: Arc::new(Conns::new(max_conns, max_conns_per_ip, metrics.clone())),
            bytes: Arc::new(ByteBudget::new(
                max_buffered,
                max_body.saturating_add(CRITICAL_EXTRA_BYTES),
                metrics.clone(),
            )),
            permits: Permits::new(),
            read_timeout,
            max_body,
            metrics,
        }
    }

    /// Counts a refused or cut-off request or connection, by reason.
    pub fn refused(&self, reason: &str) {
        self.metrics.refused(reason);
    }
}

// === impl Conns ===

/// The open connections, to cap them in total and per peer IP. When a new connection would pass
/// a cap, the connection that has gone longest without starting or finishing a request (and is
/// not processing one) is closed to make room: a fresh client always gets in, while clients
/// that hold connections without completing requests are the ones that lose them.
pub struct Conns {
    inner: Mutex<ConnTable>,
    max_total: usize,
    max_per_ip: usize,
    epoch: Instant,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct ConnTable {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// One open connection as the limits see it.
pub struct Conn {
    id: u64,
    ip: IpAddr,
    /// Milliseconds after `Conns::epoch` when a request last started or finished (or accept).
    progress_ms: AtomicU64,
    /// Requests being processed (holding a permit); such a connection is never evicted.
    busy: AtomicUsize,
    /// Requests that reached the handler at all.
    requests: AtomicU64,
    /// Cancelled to close the connection at once.
    pub kill: CancellationToken,
    epoch: Instant,
}

impl Conn {
    /// Records that a request started or finished on this connection.
    pub fn progress(&self) {
        self.progress_ms
            .store(millis_since(self.epoch), Ordering::Relaxed);
    }

    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.progress();
    }

    pub fn has_requests(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// Marks the connection busy until the guard drops.
    pub fn busy(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }
}

pub struct BusyGuard(Arc<Conn>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.progress();
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Removes the connection from the table when its task ends.
pub struct ConnGuard {
    conns: Arc<Conns>,
    pub conn: Arc<Conn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.remove(&self.conn);
    }
}

impl Conns {
    fn new(max_total: usize, max_per_ip: usize, metrics: Arc<Metrics>) -> Self {
        Conns {
            inner: Mutex::new(ConnTable::default()),
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            epoch: Instant::now(),
            metrics,
        }
    }

    fn table(&self) -> MutexGuard<'_, ConnTable> {
        // The table stays consistent whatever panicked while holding it: every update is one
        // insert or remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip`, closing another one first if a cap is reached. `None`
    /// when no connection can be closed (all are processing requests): refuse this one.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let mut t = self.table();
        if t.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            let victim = Self::victim(&t, Some(ip))?;
            Self::evict(&mut t, &victim);
            self.metrics.refused("conn_evicted");
        } else if t.open.len() >= self.max_total {
            let victim = Self::victim(&t, None)?;
            Self::evict(&mut t, &victim);
            self.metrics.refused("conn_evicted");
        }
        t.next_id += 1;
        let conn = Arc::new(Conn {
            id: t.next_id,
            ip,
            progress_ms: AtomicU64::new(millis_since(self.epoch)),
            busy: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            kill: CancellationToken::new(),
            epoch: self.epoch,
        });
        t.open.insert(conn.id, conn.clone());
        *t.per_ip.entry(ip).or_insert(0) += 1;
        self.metrics.rpc_connections.set(gauge(t.open.len()));
        Some(ConnGuard {
            conns: self.clone(),
            conn,
        })
    }

    /// Closes the connection that made no progress for longest, if any is idle; for when the
    /// process runs out of file descriptors.
    pub fn shed_one(&self) -> bool {
        let mut t = self.table();
        let Some(victim) = Self::victim(&t, None) else {
            return false;
        };
        Self::evict(&mut t, &victim);
        self.metrics.refused("conn_evicted");
        self.metrics.rpc_connections.set(gauge(t.open.len()));
        true
    }

    pub fn open(&self) -> usize {
        self.table().open.len()
    }

    fn victim(t: &ConnTable, ip: Option<IpAddr>) -> Option<Arc<Conn>> {
        t.open
            .values()
            .filter(|c| ip.is_none_or(|ip| c.ip == ip))
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.progress_ms.load(Ordering::Relaxed))
            .cloned()
    }

    fn evict(t: &mut ConnTable, victim: &Arc<Conn>) {
        victim.kill.cancel();
        Self::forget(t, victim);
    }

    fn forget(t: &mut ConnTable, conn: &Conn) {
        if t.open.remove(&conn.id).is_none() {
            return;
        }
        if let Some(n) = t.per_ip.get_mut(&conn.ip) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&conn.ip);
            }
        }
    }

    fn remove(&self, conn: &Conn) {
        let mut t = self.table();
        Self::forget(&mut t, conn);
        self.metrics.rpc_connections.set(gauge(t.open.len()));
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// === impl ByteBudget ===

/// Bytes held by request bodies and proxied answers, across all connections: a general pool and
/// a reserve only critical calls may use.
pub struct ByteBudget {
    general: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// Why bytes were not granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytesError {
    #[error("server busy: no room to buffer {0} more bytes; retry shortly")]
    Busy(usize),
    #[error("answers of this request exceed {MAX_ANSWER_BYTES} bytes")]
    AnswerTooLarge,
}

impl ByteBudget {
    fn new(general: usize, reserve: usize, metrics: Arc<Metrics>) -> Self {
        ByteBudget {
            general: Arc::new(Semaphore::new(general.min(Semaphore::MAX_PERMITS))),
            reserve: Arc::new(Semaphore::new(reserve.min(Semaphore::MAX_PERMITS))),
            metrics,
        }
    }

    /// An empty charge for one request; everything added to it is released when it drops.
    pub fn charge(self: &Arc<Self>, class: Class) -> Charge {
        Charge {
            budget: self.clone(),
            class,
            held: Mutex::new(Held::default()),
        }
    }
}

/// The bytes one request holds. Kept alive by the response body, so an answer still being
/// written stays counted.
pub struct Charge {
    budget: Arc<ByteBudget>,
    class: Class,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
    answer_bytes: usize,
}

impl Charge {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_class(&mut self, class: Class) {
        self.class = class;
    }

    pub fn bytes(&self) -> usize {
        self.held().bytes
    }

    fn keep(&self, permit: OwnedSemaphorePermit) {
        let n = permit.num_permits();
        let mut h = self.held();
        h.bytes += n;
        h.permits.push(permit);
        self.budget.metrics.rpc_buffered_bytes.inc_by(gauge(n));
    }

    fn try_now(&self, n: u32) -> bool {
        let pools = match self.class {
            Class::Critical => [&self.budget.reserve, &self.budget.general],
            Class::General => [&self.budget.general, &self.budget.general],
        };
        for pool in pools {
            if let Ok(p) = pool.clone().try_acquire_many_owned(n) {
                self.keep(p);
                return true;
            }
        }
        false
    }

    /// Adds `n` bytes, waiting (first come, first served) until `deadline` at the latest.
    pub async fn add(&self, n: usize, deadline: Instant) -> Result<(), BytesError> {
        let Ok(k) = u32::try_from(n) else {
            return Err(BytesError::Busy(n));
        };
        if k == 0 || self.try_now(k) {
            return Ok(());
        }
        let pool = match self.class {
            Class::Critical => &self.budget.reserve,
            Class::General => &self.budget.general,
        };
        let until = deadline.min(Instant::now() + BYTES_WAIT);
        match tokio::time::timeout_at(until, pool.clone().acquire_many_owned(k)).await {
            Ok(Ok(p)) => {
                self.keep(p);
                Ok(())
            }
            _ => Err(BytesError::Busy(n)),
        }
    }

    /// Adds `n` bytes of a proxied answer without waiting: the upstream is already sending.
    pub fn add_answer(&self, n: usize) -> Result<(), BytesError> {
        {
            let mut h = self.held();
            if h.answer_bytes.saturating_add(n) > MAX_ANSWER_BYTES {
                return Err(BytesError::AnswerTooLarge);
            }
            h.answer_bytes += n;
        }
        let Ok(k) = u32::try_from(n) else {
            return Err(BytesError::AnswerTooLarge);
        };
        if k == 0 || self.try_now(k) {
            Ok(())
        } else {
            Err(BytesError::Busy(n))
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = self.held().bytes;
        self.budget.metrics.rpc_buffered_bytes.dec_by(gauge(bytes));
    }
}

// === impl Permits ===

/// Requests processed at once: a general pool, and a reserve for critical calls.
pub struct Permits {
    general: Arc<Semaphore>,
    critical: Arc<Semaphore>,
}

impl Permits {
    fn new() -> Self {
        Permits {
            general: Arc::new(Semaphore::new(GENERAL_PERMITS)),
            critical: Arc::new(Semaphore::new(CRITICAL_PERMITS)),
        }
    }

    /// A permit for a request of `class`, waiting until `deadline` at the latest.
    pub async fn acquire(&self, class: Class, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let pool = match class {
            Class::Critical => {
                if let Ok(p) = self.critical.clone().try_acquire_owned() {
                    return Some(p);
                }
                if let Ok(p) = self.general.clone().try_acquire_owned() {
                    return Some(p);
                }
                &self.critical
            }
            Class::General => &self.general,
        };
        tokio::time::timeout_at(deadline, pool.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_finds_the_method_before_params() {
        let c = |s: &str| peek_class(s.as_bytes());
        assert_eq!(
            c(r#"{"jsonrpc":"2.0","id":1,"method":"conductor_leader","params":[]}"#),
            Some(Class::Critical)
        );
        assert_eq!(
            c(
                r#" { "id" : "x\"y", "jsonrpc": "2.0", "method": "conductor_commitUnsafePayload", "params": [{"#
            ),
            Some(Class::Critical)
        );
        assert_eq!(
            c(r#"{"id":null,"jsonrpc":"2.0","method":"coordinator_requestBuildingBlock""#),
            Some(Class::Critical)
        );
        assert_eq!(
            c(r#"{"jsonrpc":"2.0","id":1,"method":"optimism_syncStatus","params":[]}"#),
            Some(Class::General)
        );
        // params first: unknown, general.
        assert_eq!(
            c(r#"{"params":[],"method":"conductor_leader"}"#),
            Some(Class::General)
        );
        assert_eq!(
            c(r#"[{"jsonrpc":"2.0","method":"conductor_leader"}]"#),
            Some(Class::General)
        );
        assert_eq!(c("garbage"), Some(Class::General));
        // Not enough yet.
        assert_eq!(c(r#"{"jsonrpc":"2.0","id":1,"meth"#), None);
        assert_eq!(c(""), None);
        assert_eq!(c(r#"{"id":12"#), None);
    }

    fn limits(max_conns: usize, per_ip: usize, buffered: usize) -> Limits {
        Limits::new(
            max_conns,
            per_ip,
            buffered,
            1024,
            Duration::from_secs(10),
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_evicts_the_one_idle_longest() {
        let l = limits(3, 2, 1 << 20);
        let ip1: IpAddr = "10.0.0.1".parse().expect("ip");
        let ip2: IpAddr = "10.0.0.2".parse().expect("ip");
        let a = l.conns.admit(ip1).expect("a");
        tokio::time::advance(Duration::from_millis(10)).await;
        let b = l.conns.admit(ip1).expect("b");
        tokio::time::advance(Duration::from_millis(10)).await;
        a.conn.request_started();
        // ip1 is at its cap: b made no progress since it was accepted, a did.
        let c = l.conns.admit(ip1).expect("c");
        assert!(b.conn.kill.is_cancelled());
        assert!(!a.conn.kill.is_cancelled());
        assert_eq!(l.conns.open(), 2);
        drop(b);
        assert_eq!(l.conns.open(), 2);
        // Total cap: 3 open, ip2 evicts the oldest of all that is not busy.
        let _busy = a.conn.busy();
        tokio::time::advance(Duration::from_millis(10)).await;
        let d = l.conns.admit(ip2).expect("d");
        assert_eq!(l.conns.open(), 3);
        let e = l.conns.admit(ip2).expect("e");
        assert!(c.conn.kill.is_cancelled(), "c is the oldest idle one");
        assert!(!a.conn.kill.is_cancelled(), "a is processing a request");
        let _busy_d = d.conn.busy();
        // ip2 at its cap with one busy: the other ip2 connection goes.
        let f = l.conns.admit(ip2).expect("f");
        assert!(e.conn.kill.is_cancelled());
        // Everything busy: refuse.
        let _busy_f = f.conn.busy();
        assert!(l.conns.admit(ip2).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_bounded_and_critical_calls_have_a_reserve() {
        let l = limits(8, 8, 1000);
        let budget = l.bytes.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let big = budget.charge(Class::General);
        big.add(1000, deadline).await.expect("fits");
        let small = budget.charge(Class::General);
        let t0 = Instant::now();
        assert_eq!(small.add(10, deadline).await, Err(BytesError::Busy(10)));
        assert_eq!(t0.elapsed(), BYTES_WAIT, "waits a bounded time");
        let critical = budget.charge(Class::Critical);
        critical.add(10, deadline).await.expect("the reserve");
        drop(big);
        small.add(10, deadline).await.expect("freed");
        assert_eq!(small.bytes(), 10);
    }

    /// The defaults (rpc.max-body 32 MiB for a 10 MiB block as hex JSON, rpc.max-buffered
    /// 64 MiB): general calls holding the whole pool still leave room for a largest commit, and
    /// three largest commits fit at once.
    #[tokio::test(start_paused = true)]
    async fn largest_commits_fit_with_the_default_limits() {
        const MAX_BODY: usize = 32 << 20;
        let l = Limits::new(
            8,
            8,
            64 << 20,
            MAX_BODY,
            Duration::from_secs(10),
            Arc::new(Metrics::new()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let general: Vec<Charge> = (0..2).map(|_| l.bytes.charge(Class::General)).collect();
        for g in &general {
            g.add(MAX_BODY, deadline)
                .await
                .expect("two largest bodies in the pool");
        }
        let commit = l.bytes.charge(Class::Critical);
        commit.add(MAX_BODY, deadline).await.expect("the reserve");
        drop(general);
        let more: Vec<Charge> = (0..2).map(|_| l.bytes.charge(Class::Critical)).collect();
        for c in &more {
            c.add(MAX_BODY, deadline)
                .await
                .expect("commits also use the pool");
        }
        let fourth = l.bytes.charge(Class::Critical);
        assert_eq!(
            fourth.add(MAX_BODY, deadline).await,
            Err(BytesError::Busy(MAX_BODY))
        );
    }

    #[tokio::test]
    async fn answers_of_one_request_are_capped() {
        let l = limits(8, 8, MAX_ANSWER_BYTES * 4);
        let budget = l.bytes.clone();
        let c = budget.charge(Class::General);
        c.add_answer(MAX_ANSWER_BYTES - 10).expect("fits");
        assert_eq!(c.add_answer(11), Err(BytesError::AnswerTooLarge));
        c.add_answer(10).expect("exactly the cap");
        // The global pool applies too.
        let small = limits(8, 8, 100);
        let budget = small.bytes.clone();
        let c = budget.charge(Class::General);
        assert_eq!(c.add_answer(101), Err(BytesError::Busy(101)));
    }
}
