//! Regression tests for the bugs an outside review reproduced against the running binary
//! (issue 6): each drives real sidecar processes, a real etcd and the simulator into the path
//! that broke, and checks the simulator's ledger (no height with two blocks, no rewind) and
//! that the chain goes on.
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{etcd, rpc, Fixture, FixtureOpts};

const SETTLE: Duration = Duration::from_secs(30);
const FAILOVER: Duration = Duration::from_secs(40);

/// Bug 1 (S1/S2): a follower wins the key, then is cut off from etcd and gossip while its node
/// turns slow (1.9 s per call, just under the 2 s node timeout) exactly where the start path
/// reads it: `optimism_syncStatus` and `admin_startSequencer`. The start path used to check the
/// lease once and then wait on the node with no bound: it started its node after its lease had
/// lapsed and another sidecar had started (forked heights). Now every await of the take-over is
/// raced against the lease deadline and the start needs TTL/2 of the lease left, so the
/// cut-off winner gives up and exactly one node sequences. Default lease TTL (3 s), as in the
/// reproduction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_winner_cut_off_from_etcd_never_starts_after_its_lease() {
    let opts = FixtureOpts::default()
        .with_proxy()
        .flag("--lease.ttl", "3s");
    let mut f = Fixture::start(3, opts).await;
    let old = f.wait_single_active(SETTLE).await;
    let winner = (old + 1) % 3;
    let other = (old + 2) % 3;
    // Only `winner` may contend when the leader dies: `other` is cut off from etcd meanwhile.
    f.proxy(other).partition();
    let leader_dir = f.key("leader/");
    let etcd_url = f.etcd.client_url();
    let won = tokio::spawn({
        let id = Fixture::id(winner);
        async move { etcd::next_put_of(&etcd_url, &leader_dir, &id, FAILOVER).await }
    });
    // The winner's first take-over call answers after 1 s, which leaves the test time to cut it
    // off before the start path runs (health checks do not use that method). The lease is
    // still valid when the start path begins: the old code checked it there, once.
    f.node(winner)
        .set_rpc_delay_for(Duration::from_secs(1), &["admin_conductorEnabled"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.sidecar(old).kill();

    // The moment `winner` holds the key: cut it off from etcd and gossip; its node turns slow.
    let key = won.await.unwrap();
    assert!(key.is_some(), "{} never won the key", Fixture::id(winner));
    f.proxy(winner).partition();
    f.node(winner).cut_gossip(true);
    f.node(winner).set_rpc_delay_for(
        Duration::from_millis(1900),
        &["optimism_syncStatus", "admin_startSequencer"],
    );
    let before = f.published_by(winner).len();
    f.proxy(other).heal();

    // `other` takes over once etcd expires winner's lease; winner must never start meanwhile.
    f.wait_single_active_where(FAILOVER, "the unpaused follower to lead", |i| i == other)
        .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    f.assert_invariants();
    let after = f.published_by(winner);
    assert_eq!(
        after.len(),
        before,
        "the cut-off winner published blocks: {:?}\n{}",
        &after[before..],
        f.sidecar(winner).log_tail(60)
    );

    f.node(winner).set_rpc_delay(Duration::ZERO);
    f.node(winner).cut_gossip(false);
    f.proxy(winner).heal();
    f.sidecar(old).restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.wait_single_active(SETTLE).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// Bug 4 (L2): with the election stopped, the leader restarts gracefully (it resigns, so there is
/// no leader at all). Nobody used to contend, not even the previous leader: a permanent halt.
/// Now the last leader takes the lease back at once, and any eligible member after a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_election_with_no_leader_does_not_halt_the_chain() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    f.rpc_any("coordinator_stopElection", json!([]))
        .await
        .unwrap();
    for url in f.live_urls() {
        common::wait_until(
            Duration::from_secs(10),
            "electionStopped everywhere",
            || async {
                rpc(&url, "coordinator_electionStopped", json!([])).await == Ok(json!(true))
            },
        )
        .await;
    }
    // Graceful stop: the sidecar stops its node, records the head and resigns.
    f.sidecar(old).terminate();
    assert!(f
        .sidecar(old)
        .wait_exit(Duration::from_secs(20))
        .await
        .is_some());
    let halted_at = f.chain_height();
    // Nobody else leads yet... then, after the bound, one of the others must.
    let new = f.wait_new_leader(old, FAILOVER).await;
    assert_ne!(new, old);
    f.assert_chain_passes(halted_at + 3).await;
    // The election stays stopped: the operator's setting is not undone.
    assert_eq!(
        f.rpc_any("coordinator_electionStopped", json!([])).await,
        Ok(json!(true))
    );
    // The previous leader restarts while another leads: it must not take over.
    f.sidecar(old).restart().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(f.wait_single_active(SETTLE).await, new);

    // Now the leader restarts gracefully while the others are up: as the last leader it
    // takes the key back itself, before the bound lets anyone else in.
    f.sidecar(new).terminate();
    assert!(f
        .sidecar(new)
        .wait_exit(Duration::from_secs(20))
        .await
        .is_some());
    f.sidecar(new).restart().await;
    f.wait_single_active(FAILOVER).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// Bug 3 (L2, conductor mode), run as op-conductor-ops' escape hatch runs it: pause every
/// sidecar; `override-leader X` (conductor_overrideLeader(true) on X's sidecar and
/// admin_overrideLeader on X's op-node); `force-active-sequencer X` (admin_stopSequencer on the
/// active node, admin_startSequencer(<returned hash>) on X's node); `override-leader X --remove`;
/// resume. It used to end in a permanent halt: blocks produced under the override never
/// advanced `<prefix>/head`, so every later commit was refused ("does not extend the committed
/// head"). A leader now records the head its node really starts from (verified to contain the
/// committed head) in one fenced Txn before starting, and stops a node started by hand before
/// restarting its own. X's op-node keeps its node-level override (only a restart clears it):
/// the test does not restart it, the harder case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_recovery_runbook_ends_with_a_producing_chain() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let leader = f.wait_leader_producing(SETTLE).await;
    let urls: Vec<String> = (0..3).map(|i| f.sidecar(i).url()).collect();
    for u in &urls {
        rpc(u, "conductor_pause", json!([])).await.unwrap();
    }
    // Paused means no automatic action: the leader keeps its lease and keeps sequencing.
    let paused_at = f.chain_height();
    f.assert_chain_passes(paused_at + 2).await;
    assert_eq!(f.wait_single_active(SETTLE).await, leader);

    let x = (leader + 1) % 3;
    rpc(&urls[x], "conductor_overrideLeader", json!([true]))
        .await
        .unwrap();
    let x_node = f.node(x).node_url();
    rpc(&x_node, "admin_overrideLeader", json!([]))
        .await
        .unwrap();
    let stopped = rpc(&f.node(leader).node_url(), "admin_stopSequencer", json!([]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rpc(&x_node, "admin_startSequencer", json!([stopped]))
        .await
        .unwrap();
    let forced_from = f.chain_height();
    f.assert_chain_passes(forced_from + 4).await;
    assert_eq!(
        f.active_indexes(),
        vec![x],
        "only the forced node sequences"
    );
    rpc(&urls[x], "conductor_overrideLeader", json!([false]))
        .await
        .unwrap();
    for u in &urls {
        rpc(u, "conductor_resume", json!([])).await.unwrap();
    }
    // The cluster takes over from the forced sequencer and keeps producing, fenced again.
    let resumed_at = f.chain_height();
    f.assert_chain_passes(resumed_at + 5).await;
    let producer = f.wait_leader_producing(FAILOVER).await;
    assert_ne!(
        producer, x,
        "the forced node was stopped; a fenced leader produces"
    );
    let head = f.etcd_json("head").expect("committed head");
    assert!(
        head["number"].as_u64().unwrap() > resumed_at,
        "the committed head must follow the chain again: {head}"
    );
    f.assert_chain_passes(f.chain_height() + 3).await;
    f.wait_single_active(SETTLE).await;
    f.assert_invariants();
}

/// Bug 6 (conductor mode): an unhealthy leader whose op-node accepts connections but never
/// answers used to wait for admin_stopSequencer to time out (6 s) before resigning. The fence
/// makes resigning first safe: the gate goes down, the key is released, then the stop is
/// attempted (bounded), so a successor can start while the stop is still pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_leader_node_resigns_before_its_stop_times_out() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let old = f.wait_leader_producing(SETTLE).await;
    f.node(old).hang(true);
    let new = f.wait_new_leader_producing(old, FAILOVER).await;
    assert_ne!(new, old);
    let log = f.sidecar(old).log();
    let down = log
        .rfind("stepping down")
        .expect("the old leader stepped down");
    let after = &log[down..];
    let resigned = after.find("resigned").expect("it resigned");
    let stop_failed = after
        .find("admin_stopSequencer failed")
        .unwrap_or(usize::MAX);
    assert!(
        resigned < stop_failed,
        "the key must be released before the hung node's stop is given up:\n{}",
        f.sidecar(old).log_tail(40)
    );
    f.node(old).hang(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.wait_single_active(SETTLE).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// The transfer record used to expire by comparing wall clocks across hosts; it is now bound
/// to an etcd lease whose TTL is the transfer window, so etcd's clock alone ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_record_expires_with_an_etcd_lease() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let old = f.wait_single_active(SETTLE).await;
    let target = Fixture::id((old + 1) % 3);
    let (etcd_url, key) = (f.etcd.client_url(), f.key("control/transfer"));
    let put = tokio::spawn(async move {
        etcd::next_put_lease(&etcd_url, &key, Duration::from_secs(30)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = f.sidecar(old).url();
    rpc(&url, "coordinator_setMaster", json!([target]))
        .await
        .unwrap();
    let lease = put.await.unwrap().expect("a transfer record was written");
    assert_ne!(lease, 0, "the transfer record must be bound to a lease");
    f.wait_single_active(SETTLE).await;
    f.assert_invariants();
}

/// The control loop wakes at its lease deadline even when nothing else happens. Health is
/// sampled every 9 s here (just under the 10 s lease TTL, the slowest allowed), and etcd refuses
/// every connection: keepalives fail fast, so nothing is published on the lease channel and no
/// etcd call is pending at the deadline. Without a deadline arm the lapse was noticed only at
/// the next health sample, up to 9 s late, with the node sequencing on; now the sidecar steps
/// down within milliseconds of the deadline. Its step-down reason states how late it noticed.
/// Two cuts, at arbitrary points of the health cycle. One sidecar, so no successor stops the
/// node on its behalf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_leader_steps_down_at_the_lease_deadline() {
    let opts = FixtureOpts::default()
        .with_proxy()
        .flag("--lease.ttl", "10s")
        .flag("--healthcheck.interval", "9s")
        .flag("--healthcheck.unsafe-interval", "600s")
        .flag("--healthcheck.successes", "1");
    let mut f = Fixture::start(1, opts).await;
    for cut in 0..2 {
        f.wait_single_active(Duration::from_secs(60)).await;
        // An arbitrary point of the 9 s health cycle.
        tokio::time::sleep(Duration::from_millis(1300 + 3100 * cut)).await;
        let seen = f.sidecar(0).log().matches("lease lapsed").count();
        f.proxy(0).refuse();
        let cut_at = tokio::time::Instant::now();
        let late_ms = loop {
            let log = f.sidecar(0).log();
            if let Some(line) = log.split("lease lapsed ").nth(seen + 1) {
                break line
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .expect("a lateness in ms");
            }
            assert!(
                cut_at.elapsed() < Duration::from_secs(40),
                "no step-down 40 s after etcd went away (lease TTL 10 s)\n{}",
                f.sidecar(0).log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Generous for a loaded machine; a missed deadline shows up as seconds.
        assert!(
            late_ms < 1000,
            "cut {cut}: the lapsed lease was noticed {late_ms} ms after its deadline\n{}",
            f.sidecar(0).log_tail(30)
        );
        let stop_by = tokio::time::Instant::now() + Duration::from_secs(10);
        while f.node(0).is_active() {
            assert!(
                tokio::time::Instant::now() < stop_by,
                "the node kept sequencing"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        f.proxy(0).heal();
    }
    f.wait_single_active(Duration::from_secs(60)).await;
    f.assert_invariants();
}

/// F1 of the fault campaign (conductor mode): a commit reached etcd just as quorum was lost, so
/// its acknowledgement never came back and no node has that block; the operator then ran the
/// override runbook, and the forced sequencer built other blocks at that height. The committed
/// head was a block nobody has or will ever have: every candidate waited for it, gave way, and
/// the chain halted for good. The committed record is injected here exactly as such a commit
/// leaves it (the next height, parent = the last block, the leader's epoch). Now the sidecar
/// where the override is cleared sees the committed head is not on its node's chain and
/// records its node's head in its place (compare-and-swap), and the cluster goes on. The old
/// leader is gone (its lease lost with quorum), so no leader hands the forced node's head on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_after_a_lost_commit_acknowledgement_does_not_halt() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let leader = f.wait_leader_producing(SETTLE).await;
    let urls: Vec<String> = (0..3).map(|i| f.sidecar(i).url()).collect();
    for u in &urls {
        rpc(u, "conductor_pause", json!([])).await.unwrap();
    }
    let live: Vec<&String> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, u)| u)
        .collect();
    let stopped = rpc(&f.node(leader).node_url(), "admin_stopSequencer", json!([]))
        .await
        .unwrap();
    let stopped = stopped.as_str().unwrap().to_string();
    // The last acknowledged block is committed before op-node inserts it: wait for the record.
    let mut head = Value::Null;
    for _ in 0..50 {
        head = f.etcd_json("head").expect("committed head");
        if head["hash"].as_str() == Some(&stopped) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(head["hash"].as_str(), Some(stopped.as_str()), "{head}");
    let phantom_n = head["number"].as_u64().unwrap() + 1;
    let mut phantom = head.clone();
    phantom["number"] = json!(phantom_n);
    phantom["hash"] = json!(format!("0x{}", "ab".repeat(32)));
    phantom["parentHash"] = json!(stopped);
    f.etcd.ctl(&["put", &f.key("head"), &phantom.to_string()]);
    // Leadership was lost with quorum: no leader is left to stop the forced sequencer and hand
    // its head on.
    f.sidecar(leader).kill();

    // The override runbook on another member, as in the test above.
    let x = (leader + 1) % 3;
    rpc(&urls[x], "conductor_overrideLeader", json!([true]))
        .await
        .unwrap();
    let x_node = f.node(x).node_url();
    rpc(&x_node, "admin_overrideLeader", json!([]))
        .await
        .unwrap();
    rpc(&x_node, "admin_startSequencer", json!([stopped]))
        .await
        .unwrap();
    f.assert_chain_passes(phantom_n + 2).await;
    rpc(&urls[x], "conductor_overrideLeader", json!([false]))
        .await
        .unwrap();
    for u in &live {
        rpc(u, "conductor_resume", json!([])).await.unwrap();
    }
    // Give the sidecar where the override was cleared a moment to look at the committed head.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The runbook ends with a restart of the forced op-node (only that clears its node-level
    // override); from then on every block is fenced and committed again.
    f.node(x).crash();
    f.node(x).restart().await.unwrap();
    let resumed_at = f.chain_height();
    f.assert_chain_passes(resumed_at + 5).await;
    let producer = f.wait_leader_producing(FAILOVER).await;
    let head = f.etcd_json("head").expect("committed head");
    assert!(
        head["number"].as_u64().unwrap() > resumed_at,
        "the committed head must follow the chain again: {head}\n{}",
        f.sidecar(producer).log_tail(30)
    );
    // Which sidecar replaced the unreachable committed head (the one where the override was
    // cleared, or a later leader) depends on timing, so only the outcome is asserted: on the
    // code before the fix every candidate waited for the phantom block and the chain halted.
    f.wait_single_active(SETTLE).await;
    f.assert_invariants();
}

/// The 16 s wedge of the second 200-fault campaign (conductor mode, seed 0x481fc34b740202e1): a
/// transfer named a member whose node passes health checks but answers every `admin_*` call in
/// 1.5-1.9 s. It won the key, could not get `admin_startSequencer` answered with enough of the lease
/// left, and gave way; but the transfer record still named it and its member record still looked
/// able, so every caught-up candidate stood back for the rest of the transfer window. Now a
/// target that gives way drops the record naming it and the next candidate takes over at once.
/// The catch-up timeout is raised to 30 s so the window (catch-up + 2 TTLs = 34 s) is far longer
/// than the bound below: the old code fails it by the whole window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_target_that_gives_way_does_not_hold_the_chain() {
    let opts = FixtureOpts::conductor().flag("--handover.catchup-timeout", "30s");
    let mut f = Fixture::start(3, opts).await;
    let old = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let target = (old + 1) % 3;
    let bystander = (old + 2) % 3;
    let target_id = Fixture::id(target);
    // Longer than the 2 s lease: the start can never be answered in time, so the target gives
    // way on every try (in the campaign it was 1.5-1.9 s and the second try happened to fit).
    f.node(target)
        .set_rpc_delay_for(Duration::from_secs(3), &["admin_startSequencer"]);
    let won = tokio::spawn({
        let (etcd_url, dir, id) = (f.etcd.client_url(), f.key("leader/"), target_id.clone());
        async move { etcd::next_put_of(&etcd_url, &dir, &id, FAILOVER).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let transfer = tokio::spawn({
        let (url, addr) = (f.sidecar(bystander).url(), f.sidecar(target).url());
        async move {
            rpc::rpc_timeout(
                &url,
                "conductor_transferLeaderToServer",
                json!([target_id, addr]),
                Duration::from_secs(60),
            )
            .await
        }
    });
    assert!(
        won.await.unwrap().is_some(),
        "the transfer target never won the key"
    );
    // The target cannot start its node within its lease; the chain must not wait for the
    // transfer window to lapse (34 s) before another member produces.
    let producer = f
        .wait_leader_producing_where(
            Duration::from_secs(15),
            "a member other than the stuck transfer target producing",
            |i| i != target,
        )
        .await;
    assert!(
        f.etcd_json("control/transfer").is_none(),
        "the transfer record naming the target that gave way is still there"
    );
    assert!(
        f.sidecar(target)
            .log()
            .contains("dropped the transfer naming this sidecar"),
        "{}",
        f.sidecar(target).log_tail(30)
    );
    // The transfer call reports that the target did not take over.
    assert!(
        transfer.await.unwrap().is_err(),
        "the transfer call succeeded"
    );
    f.node(target).set_rpc_delay(Duration::ZERO);
    assert_eq!(f.wait_single_active(SETTLE).await, producer);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// The record a target that gives way deletes is only the transfer that brought it in: one
/// naming another member, or a new request naming it again once it resigned (written after its
/// term began), stays. Against a real etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_gives_way_drops_only_the_transfer_that_named_it_before_its_term() {
    use op_sidecar::{cluster, election, state};
    let etcd = etcd::Etcd::start().await;
    let pool = election::EtcdPool::connect(&[etcd.client_url()], None, None)
        .await
        .unwrap();
    let keys = state::Keys::new("/t");
    let e = election::Election::new(
        std::sync::Arc::new(pool),
        keys.clone(),
        "seq-1",
        Duration::from_secs(2),
    );
    let mut kv = etcd_client::Client::connect([etcd.client_url()], None)
        .await
        .unwrap();
    let put = |target: &str| {
        serde_json::to_vec(&state::TransferRecord {
            target: target.into(),
            from: "seq-0".into(),
            epoch: 1,
            expires_ms: 0,
        })
        .unwrap()
    };
    let rev = |r: &etcd_client::PutResponse| r.header().unwrap().revision();
    let exists = |kv: &mut etcd_client::Client| {
        let mut kv = kv.clone();
        let key = keys.transfer();
        async move { kv.get(key, None).await.unwrap().count() == 1 }
    };

    let named = rev(&kv.put(keys.transfer(), put("seq-1"), None).await.unwrap());
    // A term won after the record was written: it is the transfer that brought us in.
    let epoch = named + 1;
    assert!(!cluster::drop_transfer_to(&e, "seq-2", epoch).await.unwrap());
    assert!(
        exists(&mut kv).await,
        "a transfer naming another member was deleted"
    );
    assert!(cluster::drop_transfer_to(&e, "seq-1", epoch).await.unwrap());
    assert!(!exists(&mut kv).await);

    // A new request naming us, made after our term began (after we resigned): kept.
    kv.put(keys.transfer(), put("seq-1"), None).await.unwrap();
    assert!(!cluster::drop_transfer_to(&e, "seq-1", epoch).await.unwrap());
    assert!(
        exists(&mut kv).await,
        "a newer transfer naming us was deleted"
    );
    // Nothing there: nothing to do.
    kv.delete(keys.transfer(), None).await.unwrap();
    assert!(!cluster::drop_transfer_to(&e, "seq-1", epoch).await.unwrap());
}
