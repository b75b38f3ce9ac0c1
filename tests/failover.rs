//! Failover scenarios: three real sidecars on a real etcd driving three simulated op-nodes in
//! sidecar-driven mode. Each test settles on one active sequencer, injects one fault, waits for
//! a new leader, and checks the chain invariants (one active sequencer after settling, no height
//! with two blocks, no rewind) and that the chain moves past the fault.
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Fixture, FixtureOpts};

const SETTLE: Duration = Duration::from_secs(30);
const FAILOVER: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_node_crash_fails_over_to_another_node() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    let fault_height = f.chain_height();

    f.node(old).crash();

    let new = f.wait_new_leader(old, FAILOVER).await;
    assert_ne!(new, old);
    f.assert_chain_passes(fault_height + 3).await;
    f.assert_invariants();

    // The crashed node returns as a follower; the cluster stays on one sequencer.
    f.node(old)
        .restart()
        .await
        .expect("restart the crashed node");
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.wait_single_active(SETTLE).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_leader_node_hands_over_and_is_stopped() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    let fault_height = f.chain_height();

    // The leader's unsafe head stops advancing: after the 3 s unsafe interval it is unhealthy.
    f.node(old).stall_head(true);

    let new = f.wait_new_leader(old, FAILOVER).await;
    assert!(
        !f.node(old).is_active(),
        "the stalled node {} must be stopped",
        Fixture::id(old)
    );
    assert_ne!(new, old);
    f.assert_chain_passes(fault_height + 3).await;
    f.assert_invariants();
}

/// The leader's node turns unhealthy while it still produces (its peer count drops below
/// `--healthcheck.min-peer-count`): the followers stay fresh and healthy, so this isolates the
/// unhealthy-leader handover from the "every head is stale" case above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_node_losing_peers_hands_over_to_a_healthy_follower() {
    let opts = FixtureOpts::default().flag("--healthcheck.min-peer-count", "1");
    let mut f = Fixture::start(3, opts).await;
    let old = f.wait_single_active(SETTLE).await;
    let fault_height = f.chain_height();

    f.node(old).set_peer_count(Some(0));

    let new = f.wait_new_leader(old, FAILOVER).await;
    assert!(
        !f.node(old).is_active(),
        "the unhealthy node must be stopped"
    );
    assert_ne!(new, old);
    f.assert_chain_passes(fault_height + 3).await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_sidecar_is_replaced_and_its_node_stopped() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    let fault_height = f.chain_height();

    // SIGKILL: the sidecar cannot stop its node; the new leader must, through the advertised URL.
    f.sidecar(old).kill();

    let new = f.wait_new_leader(old, FAILOVER).await;
    assert!(
        !f.node(old).is_active(),
        "the orphaned node must be stopped"
    );
    f.assert_chain_passes(fault_height + 3).await;
    f.assert_invariants();

    // Coming back, the killed sidecar joins as a follower and does not disturb the leader.
    f.sidecar(old).restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = f.wait_single_active(SETTLE).await;
    assert_eq!(
        after, new,
        "a returning sidecar must not take over from a healthy leader"
    );
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_sidecar_never_produces_again_after_resume() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    let fault_height = f.chain_height();

    // SIGSTOP for well over the 2 s lease TTL: the frozen sidecar still believes it leads.
    let paused_at = tokio::time::Instant::now();
    f.sidecar(old).pause();
    let new = f.wait_new_leader(old, FAILOVER).await;
    let min_pause = Duration::from_secs(6);
    let elapsed = paused_at.elapsed();
    if elapsed < min_pause {
        tokio::time::sleep(min_pause - elapsed).await;
    }
    assert!(
        !f.node(old).is_active(),
        "the new leader must have stopped the old node"
    );
    let produced = f.node(old).blocks_produced();

    f.sidecar(old).resume();
    // Several health intervals and lease TTLs for the old sidecar to act on stale beliefs.
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(
        f.node(old).blocks_produced(),
        produced,
        "the old leader's node produced blocks after its sidecar resumed"
    );
    let after = f.wait_single_active(SETTLE).await;
    assert_eq!(
        after, new,
        "the resumed sidecar must not take leadership back"
    );
    assert_eq!(f.node(old).blocks_produced(), produced);
    f.assert_chain_passes(fault_height + 3).await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_partitioned_from_etcd_is_replaced_and_rejoins_as_follower() {
    let mut f = Fixture::start(3, FixtureOpts::default().with_proxy()).await;
    let old = f.wait_single_active(SETTLE).await;
    let fault_height = f.chain_height();

    // Blackhole the leader's etcd traffic: its keepalives go unanswered, it must step down
    // on its own deadline, and the others take over once its lease expires.
    f.proxy(old).partition();

    let new = f.wait_new_leader(old, FAILOVER).await;
    f.assert_chain_passes(fault_height + 3).await;
    f.assert_invariants();

    f.proxy(old).heal();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = f.wait_single_active(SETTLE).await;
    assert_eq!(after, new, "healing the partition must not move leadership");
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_ends_with_one_leader() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    f.wait_single_active(SETTLE).await;
    f.assert_chain_progresses().await;

    f.etcd.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.etcd.start_again().await;

    f.wait_single_active(Duration::from_secs(45)).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();
}
