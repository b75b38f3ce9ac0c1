//! A leadership term: the lease-deadline bound on everything a sidecar awaits while it holds or is acquiring the leader lease. Knows the lease, not op-node or etcd calls.
//!
//! S1 rests on one rule: from the moment a lease is won until it is given up, no await may
//! outlive the local lease deadline. [`Term::run`] is the only way the control loop runs
//! candidate or leader work: the work is raced against the deadline (following every extension
//! the keepalive loop publishes) and abandoned when it passes. [`Term::budget`] additionally
//! bounds a single call that must land well inside the validity (`admin_startSequencer`).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::election::{Leadership, LeaseState};

/// The lease deadline passed (or the lease was replaced) before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease deadline passed")]
pub struct Lapsed;

/// One won leadership and the lease it rests on.
#[derive(Debug, Clone)]
pub struct Term {
    pub leadership: Leadership,
    lease: watch::Receiver<Option<LeaseState>>,
}

impl Term {
    pub fn new(leadership: Leadership, lease: watch::Receiver<Option<LeaseState>>) -> Self {
        Term { leadership, lease }
    }

    /// The local validity deadline, if the lease is still ours. The watch guard is dropped
    /// before this returns.
    pub fn deadline(&self) -> Option<Instant> {
        let state = *self.lease.borrow();
        state
            .filter(|s| s.id == self.leadership.lease)
            .map(|s| s.valid_until)
    }

    /// True while the lease is locally valid on both clocks.
    pub fn valid(&self) -> bool {
        let state = *self.lease.borrow();
        state.is_some_and(|s| s.id == self.leadership.lease && s.valid_at(Instant::now()))
    }

    /// Validity left (zero once lapsed).
    pub fn remaining(&self) -> Duration {
        if !self.valid() {
            return Duration::ZERO;
        }
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::ZERO)
    }

    /// Runs `work` unless the lease deadline passes first.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Lapsed> {
        tokio::select! {
            biased;
            _ = expiry(self.lease.clone(), self.leadership.lease) => Err(Lapsed),
            out = work => if self.valid() { Ok(out) } else { Err(Lapsed) },
        }
    }

    /// Waits (within the lease) until at least `need` validity is left, so a call sent now and
    /// answered within `need` lands before the deadline; returns the validity left. A lease
    /// that is not being renewed lapses instead.
    pub async fn budget(&self, need: Duration) -> Result<Duration, Lapsed> {
        let mut rx = self.lease.clone();
        self.run(async {
            loop {
                let left = self.remaining();
                if left >= need {
                    return left;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
    }

    /// Completes when the lease is no longer locally valid.
    pub async fn expired(&self) {
        expiry(self.lease.clone(), self.leadership.lease).await
    }
}

/// Completes when lease `id` is no longer valid locally: its deadline passed (following every
/// extension the keepalive loop publishes) or it was replaced or lost.
pub async fn expiry(mut lease: watch::Receiver<Option<LeaseState>>, id: i64) {
    loop {
        let state = *lease.borrow_and_update();
        let until = match state {
            Some(l) if l.id == id && l.valid_at(Instant::now()) => l.valid_until,
            _ => return,
        };
        // Re-checked at least every 250 ms: the boot clock (host suspend) has no timer of its own.
        let wake = until.min(Instant::now() + Duration::from_millis(250));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            changed = lease.changed() => {
                if changed.is_err() {
                    // The keepalive loop is gone: nothing will extend the deadline.
                    tokio::time::sleep_until(until).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::Stamp;

    fn lease(id: i64, ttl_ms: u64) -> LeaseState {
        let ttl = Duration::from_millis(ttl_ms);
        // margin(ttl) = ttl/4: valid for 3/4 of the TTL.
        LeaseState::new(id, Stamp::now(), ttl, ttl)
    }

    fn term(rx: watch::Receiver<Option<LeaseState>>) -> Term {
        Term::new(
            Leadership {
                key: "k".into(),
                epoch: 1,
                lease: 7,
            },
            rx,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_fires_at_the_deadline_and_follows_extensions() {
        let t0 = Instant::now();
        let (tx, rx) = watch::channel(Some(lease(7, 4000)));
        let waiter = tokio::spawn(expiry(rx.clone(), 7));
        tokio::time::sleep(Duration::from_millis(2000)).await;
        // A keepalive ack moves the deadline: the waiter must not fire at the old one (3 s).
        let mut extended = lease(7, 4000);
        extended.valid_until = t0 + Duration::from_secs(5);
        tx.send_replace(Some(extended));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !waiter.is_finished(),
            "fired at a deadline that had been extended"
        );
        waiter.await.expect("waiter");
        assert!(Instant::now() >= t0 + Duration::from_secs(5));
        // A different (re-granted) lease means ours is gone: immediate.
        let before = Instant::now();
        expiry(rx.clone(), 8).await;
        assert_eq!(Instant::now(), before);
        tx.send_replace(None);
        expiry(rx, 7).await;
    }

    #[tokio::test(start_paused = true)]
    async fn run_abandons_work_at_the_deadline() {
        let (_tx, rx) = watch::channel(Some(lease(7, 4000)));
        let t = term(rx);
        let t0 = Instant::now();
        // A node call that would answer in 10 s is cut at the 3 s deadline.
        let out = t.run(tokio::time::sleep(Duration::from_secs(10))).await;
        assert_eq!(out, Err(Lapsed));
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
        // Work that finishes in time returns its value.
        let (_tx, rx) = watch::channel(Some(lease(7, 4000)));
        let t = term(rx);
        assert_eq!(t.run(async { 5 }).await, Ok(5));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_waits_for_a_renewal_or_lapses() {
        let (tx, rx) = watch::channel(Some(lease(7, 4000)));
        let t = term(rx);
        assert!(t.budget(Duration::from_secs(2)).await.is_ok());
        tokio::time::advance(Duration::from_millis(1500)).await;
        // 1.5 s left, 2 s needed: a renewal 200 ms later satisfies it.
        let renew = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send_replace(Some(lease(7, 4000)));
            tx
        });
        let left = t.budget(Duration::from_secs(2)).await.expect("renewed");
        assert!(left >= Duration::from_secs(2));
        let tx = renew.await.expect("renew");
        // No renewal: the wait ends at the deadline with Lapsed, never later.
        let t0 = Instant::now();
        assert_eq!(t.budget(Duration::from_secs(5)).await, Err(Lapsed));
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
        drop(tx);
    }
}
