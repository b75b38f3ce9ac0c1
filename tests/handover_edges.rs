//! Handover edge cases of op-node's admin API that the sidecar must absorb: an
//! `admin_stopSequencer` that answers the zero hash (the stopped head then comes from
//! `optimism_syncStatus`), and an `admin_startSequencer` refused once with `block hash does not
//! match` (the sidecar re-reads the head and retries). Both faults are one-shot simulator
//! controls armed on a node before a graceful leader handover.
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Fixture, FixtureOpts};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(30);
const FAILOVER: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(10);

fn zero_hash() -> String {
    format!("0x{}", "0".repeat(64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_hash_from_stop_records_the_real_unsafe_head() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    let old_id = Fixture::id(old);

    f.node(old).zero_hash_on_next_stop();
    f.sidecar(old).terminate();
    let status = f
        .sidecar(old)
        .wait_exit(EXIT)
        .await
        .expect("the sidecar must exit within 10 s of SIGTERM");
    // Read at once: until the next leader seals a block this is where the node stopped.
    let head = f.node(old).head();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    assert!(!f.node(old).is_active(), "its node must be stopped");
    assert!(
        !f.node(old).status().zero_hash_on_next_stop,
        "the sidecar's admin_stopSequencer must have answered the zero hash"
    );

    let stopped = f
        .etcd_json("stopped")
        .expect("<prefix>/stopped written on shutdown");
    assert_eq!(stopped["id"], json!(old_id), "stopped record {stopped}");
    let hash = stopped["hash"].as_str().expect("stopped.hash").to_string();
    let number = stopped["number"].as_u64().expect("stopped.number");
    assert_ne!(hash, zero_hash(), "the zero hash was recorded: {stopped}");
    // The last block the old leader sealed is the head it stopped at.
    let last = f
        .published_by(old)
        .into_iter()
        .max_by_key(|b| b.number)
        .expect("the old leader sealed blocks");
    assert_eq!(
        (number, hash.to_lowercase()),
        (last.number, last.hash.to_lowercase()),
        "stopped record {stopped} is not the old leader's last block"
    );
    if head.number == number {
        assert_eq!(hash.to_lowercase(), head.hash.to_string().to_lowercase());
    } else {
        // The next leader already built on top: the stopped block is the one it extended.
        assert!(
            head.number > number,
            "head {head:?} below stopped {stopped}"
        );
    }

    let new = f.wait_new_leader(old, FAILOVER).await;
    assert_ne!(new, old);
    f.assert_chain_passes(number + 3).await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_mismatch_on_start_is_retried_with_the_reread_head() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    let followers: Vec<usize> = (0..f.n()).filter(|&i| i != old).collect();
    for &i in &followers {
        f.node(i).hash_mismatch_on_next_start();
    }

    f.sidecar(old).terminate();
    f.sidecar(old)
        .wait_exit(EXIT)
        .await
        .expect("the sidecar must exit within 10 s of SIGTERM");

    let new = f.wait_new_leader(old, FAILOVER).await;
    assert!(followers.contains(&new));
    assert!(
        !f.node(new).status().hash_mismatch_on_next_start,
        "the new leader's first admin_startSequencer must have been refused"
    );
    let log = f.sidecar(new).log();
    assert!(
        log.contains("head moved while starting"),
        "{} never logged the retry:\n{}",
        Fixture::id(new),
        f.sidecar(new).log_tail(40)
    );
    f.assert_chain_progresses().await;
    f.assert_invariants();
}
