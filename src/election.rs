//! The etcd lease (keepalives and a locally computed validity deadline) and the leader key, taken and released by single fenced Txns; knows nothing of op-node.
//!
//! Safety does not rest on etcd answering: the lease is valid locally only until the send time
//! of the last acknowledged keepalive plus the TTL minus a margin, measured on the monotonic
//! clock. etcd can only expire the lease later than that, because it starts its own countdown
//! when it receives the keepalive, after we sent it.
//!
//! The leader key is taken with one Txn (`if no key under leader/ then put mine with my lease`)
//! rather than the Election API's Campaign, which can report leadership after the caller's lease
//! expired while it waited (etcd-io/etcd#19597). A put bound to an expired lease fails, so a
//! successful Txn means the lease was alive at that revision.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{EtcdTls, EtcdUser};
use crate::state::Keys;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ElectionError {
    #[error("etcd: {0}")]
    Etcd(String),
    /// The member could not be reached or has no leader: worth trying another member.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
}

impl ElectionError {
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ElectionError::Unavailable(_) | ElectionError::Timeout(_)
        )
    }
}

impl From<etcd_client::Error> for ElectionError {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let unavailable = match &e {
            E::TransportError(_) | E::IoError(_) => true,
            E::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
            ),
            _ => false,
        };
        if unavailable {
            ElectionError::Unavailable(e.to_string())
        } else {
            ElectionError::Etcd(e.to_string())
        }
    }
}

/// Runs an etcd call under a time limit.
pub async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ElectionError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(ElectionError::from),
        Err(_) => Err(ElectionError::Timeout(limit)),
    }
}

fn connect_options(tls: Option<&TlsOptions>, user: Option<&EtcdUser>) -> ConnectOptions {
    let mut o = ConnectOptions::new();
    if let Some(t) = tls {
        o = o.with_tls(t.clone());
    }
    if let Some(u) = user {
        // etcd-client authenticates at connect and renews the token when etcd reports it expired.
        o = o.with_user(u.name.clone(), u.password.expose().to_string());
    }
    o.with_connect_timeout(Duration::from_secs(2))
        // HTTP/2 keepalives detect a blackholed connection so it reconnects after a partition heals.
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        // A member cut off from its quorum must fail requests, not serve stale reads or hang.
        .with_require_leader(true)
}

/// Reads the PEM files of the TLS settings.
fn tls_options(t: &EtcdTls) -> Result<TlsOptions, AccessError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| AccessError::Files(format!("{}: {e}", p.display())))
    };
    let mut o = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&t.ca)?));
    if let Some((cert, key)) = &t.identity {
        o = o.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(o)
}

/// Why etcd cannot be used with the configured TLS and credentials; each message is one line
/// saying which setting to look at. The password never appears in one.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AccessError {
    #[error("etcd TLS files: {0}")]
    Files(String),
    #[error("etcd server certificate not trusted: it is not signed by etcd.tls.ca, or its name does not match the endpoint ({0})")]
    UntrustedServer(String),
    #[error("etcd refused our client certificate (etcd.tls.cert / etcd.tls.key): {0}")]
    ClientCertificate(String),
    #[error("etcd refused the credentials of user {user:?}: wrong user name or password (from {origin})")]
    Credentials { user: String, origin: String },
    #[error("etcd requires authentication: set etcd.username and etcd.password-file")]
    AuthRequired,
    #[error("etcd user {user:?} lacks permission on {prefix}/ (grant it: etcdctl role grant-permission --prefix=true <role> readwrite {prefix}/): {reason}")]
    Permission {
        user: String,
        prefix: String,
        reason: String,
    },
    #[error("cannot reach etcd: {0}")]
    Unreachable(String),
    #[error("etcd: {0}")]
    Other(String),
}

impl AccessError {
    /// A setting is wrong (exit code 64), as opposed to etcd being unreachable right now.
    pub fn is_config(&self) -> bool {
        !matches!(self, AccessError::Unreachable(_) | AccessError::Other(_))
    }

    fn classify(e: &etcd_client::Error, user: Option<&EtcdUser>) -> Self {
        let text = error_chain(e);
        use etcd_client::Error as E;
        let unavailable = match e {
            E::TransportError(_) | E::IoError(_) => true,
            E::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ),
            _ => false,
        };
        let classified = Self::from_message(&text, user, "");
        match classified {
            AccessError::Other(m) if unavailable => AccessError::Unreachable(m),
            other => other,
        }
    }

    fn from_message(text: &str, user: Option<&EtcdUser>, prefix: &str) -> Self {
        let lower = text.to_ascii_lowercase();
        let name = || user.map(|u| u.name.clone()).unwrap_or_default();
        if lower.contains("unknownissuer")
            || lower.contains("invalid peer certificate")
            || lower.contains("notvalidforname")
            || lower.contains("certificate verify failed")
        {
            AccessError::UntrustedServer(text.to_string())
        } else if lower.contains("certificate required")
            || lower.contains("bad certificate")
            || lower.contains("unknown ca")
            || lower.contains("certificaterequired")
            || lower.contains("badcertificate")
            || lower.contains("unknownca")
            || lower.contains("received fatal alert")
        {
            AccessError::ClientCertificate(text.to_string())
        } else if lower.contains("authentication failed") {
            AccessError::Credentials {
                user: name(),
                origin: user.map(|u| u.source.clone()).unwrap_or_default(),
            }
        } else if lower.contains("user name is empty") {
            AccessError::AuthRequired
        } else if lower.contains("permission denied") {
            AccessError::Permission {
                user: name(),
                prefix: prefix.to_string(),
                reason: text.to_string(),
            }
        } else if lower.contains("transport error")
            || lower.contains("unavailable")
            || lower.contains("connection refused")
            || lower.contains("timed out")
        {
            AccessError::Unreachable(text.to_string())
        } else {
            AccessError::Other(text.to_string())
        }
    }
}

/// An error with its sources: tonic hides the TLS reason (unknown issuer, bad certificate)
/// several levels down.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

/// One client per etcd member, used one at a time; a request that fails for transport reasons
/// moves us to the next member. etcd-client's own balanced channel keeps routing requests to a
/// dead member (tonic reports an unconnected endpoint as ready), which turns the loss of one
/// member into failed keepalives and needless failovers.
///
/// No client has a global request timeout (long waits such as watches need none); every other
/// call gets the per-request limit in [`EtcdPool::run`].
pub struct EtcdPool {
    clients: Vec<(String, Client)>,
    current: AtomicUsize,
}

impl EtcdPool {
    /// Creates the clients; connections are made lazily, so members may be down at start.
    /// With a user, etcd-client authenticates at connect: a member that cannot be reached then is
    /// left out (logged) as long as one can be; refused credentials or TLS fail at once.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<&EtcdTls>,
        user: Option<&EtcdUser>,
    ) -> Result<Self, AccessError> {
        let tls = tls.map(tls_options).transpose()?;
        let mut clients = Vec::with_capacity(endpoints.len());
        let mut unreachable = None;
        for ep in endpoints {
            match Client::connect([ep.as_str()], Some(connect_options(tls.as_ref(), user))).await {
                Ok(c) => clients.push((ep.clone(), c)),
                Err(e) => match AccessError::classify(&e, user) {
                    AccessError::Unreachable(reason) if user.is_some() => {
                        tracing::warn!(endpoint = %ep, error = %reason, "etcd endpoint unreachable at start: left out until restart");
                        unreachable = Some(reason);
                    }
                    other => return Err(other),
                },
            }
        }
        if clients.is_empty() {
            return Err(unreachable.map_or_else(
                || AccessError::Other("no etcd endpoints".into()),
                AccessError::Unreachable,
            ));
        }
        Ok(EtcdPool {
            clients,
            current: AtomicUsize::new(0),
        })
    }

    /// Checks at start that this user may read and write under `prefix` and grant leases, so a
    /// wrong CA, certificate, password or role is one clear error instead of endless retries.
    /// Nothing is written: the Txn's put sits behind a compare that never holds, and etcd checks
    /// the permissions of every operation of a Txn whichever branch runs.
    pub async fn check_access(
        &self,
        prefix: &str,
        limit: Duration,
        user: Option<&EtcdUser>,
        client_cert: bool,
    ) -> Result<(), AccessError> {
        // With TLS 1.3 the server checks our certificate after the client considers the
        // handshake done, so a refused certificate mostly surfaces as a bare "connection closed"
        // or "broken pipe", and only sometimes as the alert itself: try a few times.
        let mut last = AccessError::Other("not checked".into());
        let mut closed = 0;
        const ATTEMPTS: u32 = 8;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            match self.check_access_once(prefix, limit, user).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_config() => return Err(e),
                Err(e) => {
                    let t = e.to_string().to_ascii_lowercase();
                    let was_closed = t.contains("connection closed") || t.contains("broken pipe");
                    last = e;
                    if !was_closed {
                        // Down or refusing connections: no point delaying the start further.
                        break;
                    }
                    closed += 1;
                }
            }
        }
        // Every connection was accepted and then closed by etcd: with a client certificate
        // configured that is etcd refusing it.
        if client_cert && closed == ATTEMPTS {
            return Err(AccessError::ClientCertificate(format!(
                "etcd closed every connection after the TLS handshake ({last})"
            )));
        }
        Err(last)
    }

    async fn check_access_once(
        &self,
        prefix: &str,
        limit: Duration,
        user: Option<&EtcdUser>,
    ) -> Result<(), AccessError> {
        let probe = format!("{prefix}/.access-check");
        let r = self
            .run(limit, |mut c| async move {
                c.get(
                    format!("{prefix}/"),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_limit(1)
                            .with_keys_only(),
                    ),
                )
                .await?;
                c.txn(
                    Txn::new()
                        .when([Compare::version(probe.as_str(), CompareOp::Less, 0)])
                        .and_then([TxnOp::put(probe.as_str(), "", None)]),
                )
                .await?;
                let lease = c.lease_grant(2, None).await?;
                c.lease_revoke(lease.id()).await?;
                Ok(())
            })
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(ElectionError::Timeout(d)) => {
                Err(AccessError::Unreachable(format!("no answer within {d:?}")))
            }
            Err(ElectionError::Unavailable(m) | ElectionError::Etcd(m)) => {
                Err(AccessError::from_message(&m, user, prefix))
            }
        }
    }

    /// The member to use now, and its index for [`EtcdPool::failed`].
    pub fn pick(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].1.clone())
    }

    /// Moves on from member `i` (unless someone already did).
    pub fn failed(&self, i: usize) {
        let n = self.clients.len();
        if n > 1
            && self
                .current
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(failed = %self.clients[i].0, next = %self.clients[(i + 1) % n].0, "switching etcd endpoint");
        }
    }

    /// Runs one request on the current member under `limit`.
    pub async fn run<T, Fut>(
        &self,
        limit: Duration,
        f: impl FnOnce(Client) -> Fut,
    ) -> Result<T, ElectionError>
    where
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let (i, client) = self.pick();
        let r = timed(limit, f(client)).await;
        if r.as_ref().is_err_and(ElectionError::is_unavailable) {
            self.failed(i);
        }
        r
    }
}

/// Our current lease as the keepalive loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    pub id: i64,
    /// Monotonic instant after which we must behave as if the lease were gone.
    pub valid_until: Instant,
    /// The same deadline on CLOCK_BOOTTIME, which keeps counting while the host is suspended
    /// (the monotonic clock does not): a VM resumed after a pause must not believe a lease
    /// etcd has long expired is still valid.
    pub valid_until_boot: Duration,
}

impl LeaseState {
    /// The lease as granted or extended by a request sent at `sent`, answered with `granted`.
    pub fn new(id: i64, sent: Stamp, granted: Duration, ttl: Duration) -> Self {
        LeaseState {
            id,
            valid_until: deadline(sent.mono, granted, ttl),
            valid_until_boot: (sent.boot + granted.min(ttl)).saturating_sub(margin(ttl)),
        }
    }

    /// Moves the deadline later (never earlier) for a keepalive sent at `sent`; true if it moved.
    pub fn extend(&mut self, sent: Stamp, granted: Duration, ttl: Duration) -> bool {
        let next = LeaseState::new(self.id, sent, granted, ttl);
        if next.valid_until > self.valid_until {
            self.valid_until = next.valid_until;
            self.valid_until_boot = self.valid_until_boot.max(next.valid_until_boot);
            return true;
        }
        false
    }

    /// Valid at `now` on the monotonic (tokio) clock AND on the boot clock right now.
    pub fn valid_at(&self, now: Instant) -> bool {
        now < self.valid_until && boottime() < self.valid_until_boot
    }
}

/// One reading of both clocks, taken when a lease request is sent.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub mono: Instant,
    pub boot: Duration,
}

impl Stamp {
    pub fn now() -> Self {
        Stamp {
            mono: Instant::now(),
            boot: boottime(),
        }
    }
}

/// CLOCK_BOOTTIME since boot. On failure (never seen on Linux) it reads as the end of time, so
/// every lease looks expired: fail closed.
pub fn boottime() -> Duration {
    #[cfg(target_os = "linux")]
    const CLOCK: libc::clockid_t = libc::CLOCK_BOOTTIME;
    #[cfg(not(target_os = "linux"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(CLOCK, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return Duration::MAX;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// How long before etcd could expire the lease we stop trusting it: a quarter of the TTL,
/// which covers stopping the sequencer and scheduling delays; keepalives go out at the same
/// rate so two lost ones are tolerated.
pub fn margin(ttl: Duration) -> Duration {
    ttl / 4
}

pub fn keepalive_interval(ttl: Duration) -> Duration {
    ttl / 4
}

/// The deadline implied by a keepalive sent at `sent` and acknowledged with `granted` seconds.
pub fn deadline(sent: Instant, granted: Duration, ttl: Duration) -> Instant {
    sent + granted.min(ttl) - margin(ttl)
}

/// Who the lease is kept for: its heartbeat, and how long it may go without beating before
/// it counts as stuck.
pub struct Owner {
    pub beat: Arc<crate::status::Heartbeat>,
    pub bound: Duration,
}

/// Keeps one lease alive and publishes it; grants a new one when etcd says it is gone. Runs
/// until cancelled; the caller revokes the lease during shutdown. Stops renewing (but keeps
/// running) while `owner` is stuck.
pub async fn run_lease(
    pool: Arc<EtcdPool>,
    ttl: Duration,
    limit: Duration,
    tx: watch::Sender<Option<LeaseState>>,
    beat: Arc<crate::status::Heartbeat>,
    owner: Owner,
    cancel: CancellationToken,
) {
    let ttl_secs = ttl.as_secs() as i64;
    let mut backoff = Duration::from_millis(100);
    let mut failed_grants = 0u32;
    'grant: loop {
        beat.beat();
        if cancel.is_cancelled() {
            return;
        }
        let sent = Stamp::now();
        let id = match pool
            .run(limit, |c| async move {
                c.lease_client().grant(ttl_secs, None).await
            })
            .await
        {
            Ok(r) => r.id(),
            Err(e) => {
                // At the first failure, then about every 30 s (retries back off to 2 s).
                failed_grants += 1;
                if failed_grants == 1 || failed_grants % 15 == 0 {
                    tracing::warn!(error = %e, attempts = failed_grants, "cannot get an etcd lease; retrying");
                } else {
                    tracing::debug!(error = %e, "lease grant failed");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        failed_grants = 0;
        let mut state = LeaseState::new(id, sent, ttl, ttl);
        tx.send_replace(Some(state));
        tracing::info!(lease = format_args!("{id:x}"), ttl = ?ttl, "lease granted");

        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut stream_member = 0usize;
        // Warn once per outage, not at every keepalive tick.
        let mut outage = false;
        // Send instants of keepalives not yet acknowledged, oldest first. Matching an ack to an
        // older send than its own only makes the deadline earlier, never later.
        let mut pending: VecDeque<Stamp> = VecDeque::new();
        let mut withheld = false;
        let mut tick = tokio::time::interval(keepalive_interval(ttl));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            beat.beat();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                msg = next_ack(&mut stream) => match msg {
                    Ok(Some(resp)) => {
                        let sent = pending.pop_front();
                        if resp.ttl() <= 0 {
                            tracing::warn!(lease = format_args!("{id:x}"), "etcd reports the lease expired");
                            tx.send_replace(None);
                            continue 'grant;
                        }
                        if let Some(sent) = sent {
                            if state.extend(sent, Duration::from_secs(resp.ttl() as u64), ttl) {
                                tx.send_replace(Some(state));
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!(lease = format_args!("{id:x}"), "lease keepalive stream closed; reopening");
                        pool.failed(stream_member);
                        stream = None;
                        pending.clear();
                    }
                },
                _ = tick.tick() => {
                    // A lease is only worth renewing for an owner that acts on it: with its
                    // owner stuck, let the lease lapse so another sidecar can lead.
                    let idle = owner.beat.age();
                    if idle > owner.bound {
                        if !std::mem::replace(&mut withheld, true) {
                            tracing::error!(lease = format_args!("{id:x}"), stuck = ?idle, "control loop stuck: no longer renewing the lease, so another sidecar can take over");
                        }
                        continue;
                    }
                    if std::mem::take(&mut withheld) {
                        tracing::info!(lease = format_args!("{id:x}"), "control loop moving again: renewing the lease");
                    }
                    let now = Stamp::now();
                    match stream.as_mut() {
                        Some((keeper, _)) => {
                            if keeper.keep_alive().await.is_ok() {
                                pending.push_back(now);
                            } else {
                                pool.failed(stream_member);
                                stream = None;
                                pending.clear();
                            }
                        }
                        None => {
                            // Opening the stream sends one keepalive and waits for its ack.
                            let (member, client) = pool.pick();
                            stream_member = member;
                            match timed(limit, async move { client.lease_client().keep_alive(id).await }).await {
                                Ok(s) => {
                                    if std::mem::take(&mut outage) {
                                        tracing::info!(lease = format_args!("{id:x}"), "lease keepalives flowing again");
                                    }
                                    stream = Some(s);
                                    if state.extend(now, ttl, ttl) {
                                        tx.send_replace(Some(state));
                                    }
                                }
                                Err(ElectionError::Etcd(e)) if e.contains("lease not found") => {
                                    tracing::warn!(lease = format_args!("{id:x}"), "lease not found; granting a new one");
                                    tx.send_replace(None);
                                    continue 'grant;
                                }
                                Err(e) => {
                                    if e.is_unavailable() {
                                        pool.failed(member);
                                    }
                                    if !std::mem::replace(&mut outage, true) {
                                        tracing::warn!(error = %e, "lease keepalive failed; retrying every {:?}", keepalive_interval(ttl));
                                    } else {
                                        tracing::debug!(error = %e, "lease keepalive failed");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn next_ack(
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error> {
    match stream.as_mut() {
        Some((_, s)) => s.message().await,
        None => std::future::pending().await,
    }
}

/// A leadership we won. `epoch` (the create revision of `key`) is the fencing token: every
/// write a leader makes is conditional on the key still having it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub key: String,
    pub epoch: i64,
    pub lease: i64,
}

/// Whoever holds the leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub id: String,
    pub key: String,
    pub epoch: i64,
    pub lease: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    Won(Leadership),
    Held(Option<LeaderInfo>),
}

/// Leader-key operations for one chain and one server id.
#[derive(Clone)]
pub struct Election {
    pool: Arc<EtcdPool>,
    keys: Keys,
    id: String,
    limit: Duration,
}

impl Election {
    pub fn new(pool: Arc<EtcdPool>, keys: Keys, id: impl Into<String>, limit: Duration) -> Self {
        Election {
            pool,
            keys,
            id: id.into(),
            limit,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn pool(&self) -> &Arc<EtcdPool> {
        &self.pool
    }

    /// Runs one request under the per-request limit, moving to another member if this one is
    /// unreachable.
    pub async fn run<T, Fut>(&self, f: impl FnOnce(Client) -> Fut) -> Result<T, ElectionError>
    where
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.pool.run(self.limit, f).await
    }

    /// Runs one Txn.
    pub async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, ElectionError> {
        self.run(|c| async move { c.kv_client().txn(txn).await })
            .await
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The time limit applied to each etcd request.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The compare that fences a write to the holder of `l`.
    pub fn fence(&self, l: &Leadership) -> Compare {
        Compare::create_revision(l.key.clone(), CompareOp::Equal, l.epoch)
    }

    /// Takes the leader key if nobody holds it, in one Txn. Never waits.
    pub async fn try_acquire(&self, lease: i64) -> Result<Acquire, ElectionError> {
        let dir = self.keys.leader_dir();
        let key = self.keys.leader_key(lease);
        // A range compare with no keys in the range compares against a zero key, so
        // `create_revision == 0` over the directory means "no leader key exists".
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                dir.clone(),
                CompareOp::Equal,
                0,
            )
            .with_prefix()])
            .and_then(vec![TxnOp::put(
                key.clone(),
                self.id.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(dir, Some(GetOptions::new().with_prefix()))]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            let epoch = resp.header().map(|h| h.revision()).unwrap_or_default();
            return Ok(Acquire::Won(Leadership { key, epoch, lease }));
        }
        let holder = get_responses(&resp)
            .first()
            .and_then(|g| leader_of(g.kvs()));
        Ok(Acquire::Held(holder))
    }

    /// The current leader: the lowest create revision under `leader/`, as `etcdctl elect -l` sees it.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError> {
        let dir = self.keys.leader_dir();
        let resp = self
            .run(|c| async move {
                c.kv_client()
                    .get(dir, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        Ok(leader_of(resp.kvs()))
    }

    /// Applies `ops` only if we still hold the leader key with our epoch.
    pub async fn fenced(&self, l: &Leadership, ops: Vec<TxnOp>) -> Result<bool, ElectionError> {
        let txn = Txn::new().when(vec![self.fence(l)]).and_then(ops);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Releases the key, applying `ops` in the same fenced Txn (e.g. recording the stopped head).
    /// Returns false if the key was no longer ours (expired or taken), in which case nothing was written.
    pub async fn resign(&self, l: &Leadership, mut ops: Vec<TxnOp>) -> Result<bool, ElectionError> {
        ops.push(TxnOp::delete(l.key.clone(), None));
        self.fenced(l, ops).await
    }

    /// Revokes the lease: every key bound to it (leader, member) disappears at once.
    pub async fn revoke(&self, lease: i64) -> Result<(), ElectionError> {
        self.run(|c| async move { c.lease_client().revoke(lease).await })
            .await
            .map(|_| ())
    }
}

/// The range reads of a Txn's answer, in order (other operations skipped).
pub fn get_responses(resp: &etcd_client::TxnResponse) -> Vec<etcd_client::GetResponse> {
    resp.op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect()
}

/// The leader among the keys under `leader/`: the lowest create revision, as `etcdctl elect -l` decides.
pub fn leader_of(kvs: &[etcd_client::KeyValue]) -> Option<LeaderInfo> {
    kvs.iter()
        .min_by_key(|kv| kv.create_revision())
        .map(|kv| LeaderInfo {
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            epoch: kv.create_revision(),
            lease: kv.lease(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_before_etcd_expiry() {
        let ttl = Duration::from_secs(3);
        let sent = Instant::now();
        let d = deadline(sent, ttl, ttl);
        assert!(d < sent + ttl);
        assert_eq!(d, sent + ttl - margin(ttl));
        // etcd may answer with less than the full TTL (a keepalive after a long gap); never more.
        assert_eq!(
            deadline(sent, Duration::from_secs(2), ttl),
            sent + Duration::from_secs(2) - margin(ttl)
        );
        assert_eq!(deadline(sent, Duration::from_secs(9), ttl), d);
    }

    #[tokio::test(start_paused = true)]
    async fn validity_follows_the_monotonic_clock() {
        let ttl = Duration::from_secs(4);
        let s = LeaseState::new(1, Stamp::now(), ttl, ttl);
        assert!(s.valid_at(Instant::now()));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!s.valid_at(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn validity_also_ends_on_the_boot_clock() {
        // A host suspended for longer than the TTL: the monotonic clock did not move, the boot
        // clock did. Simulated by a send stamp whose boot reading lies a TTL in the past.
        let ttl = Duration::from_secs(3);
        let mut sent = Stamp::now();
        sent.boot = sent.boot.saturating_sub(ttl);
        let s = LeaseState::new(1, sent, ttl, ttl);
        assert!(
            Instant::now() < s.valid_until,
            "monotonic clock alone says valid"
        );
        assert!(
            !s.valid_at(Instant::now()),
            "the boot clock must say expired"
        );
    }

    #[test]
    fn extend_never_moves_the_deadline_earlier() {
        let ttl = Duration::from_secs(3);
        let t0 = Stamp::now();
        let mut s = LeaseState::new(1, t0, ttl, ttl);
        let before = s;
        let mut older = t0;
        older.mono -= Duration::from_millis(500);
        older.boot = older.boot.saturating_sub(Duration::from_millis(500));
        assert!(!s.extend(older, ttl, ttl));
        assert_eq!(s, before);
        let mut later = t0;
        later.mono += Duration::from_millis(500);
        later.boot += Duration::from_millis(500);
        assert!(s.extend(later, ttl, ttl));
        assert!(s.valid_until > before.valid_until && s.valid_until_boot > before.valid_until_boot);
    }
}
