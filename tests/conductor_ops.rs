//! op-conductor's operator flows against op-sidecar (issue 8): the JSON-RPC sequences that
//! op-conductor-ops' commands and the runbooks built on them send (`pause`, `resume`,
//! `halt-sequencer`, `bootstrap-cluster`, `bootstrap-standby-cluster`,
//! `update-cluster-membership`, `remove-server`, `status`), each asserting the cluster ends where
//! op-conductor would leave it, with no height holding two blocks and no rewind. The escape
//! hatch (`override-leader`, `force-active-sequencer`) is in tests/adversity.rs.
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{rpc, Fixture, FixtureOpts};

const SETTLE: Duration = Duration::from_secs(30);
const FAILOVER: Duration = Duration::from_secs(40);

async fn call(url: &str, method: &str, params: Value) -> Value {
    rpc(url, method, params)
        .await
        .unwrap_or_else(|e| panic!("{method} on {url}: {e}"))
}

/// `pause` / `resume` of every conductor, and `halt-sequencer`: a paused leader keeps its lease
/// and keeps sequencing; once the operator stops its sequencer nothing restarts it until the
/// conductors are resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_all_keeps_the_leader_sequencing_and_halt_sequencer_halts_until_resume() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let leader = f.wait_leader_producing(SETTLE).await;
    let urls: Vec<String> = (0..3).map(|i| f.sidecar(i).url()).collect();
    for u in &urls {
        assert_eq!(call(u, "conductor_pause", json!([])).await, Value::Null);
    }
    for u in &urls {
        assert_eq!(call(u, "conductor_active", json!([])).await, json!(false));
        assert_eq!(call(u, "conductor_paused", json!([])).await, json!(true));
    }
    // Paused = no automatic action, not "step down".
    let h = f.chain_height();
    f.assert_chain_passes(h + 3).await;
    assert_eq!(
        call(&urls[leader], "conductor_leader", json!([])).await,
        json!(true)
    );
    assert_eq!(f.active_indexes(), vec![leader]);

    // halt-sequencer: admin_stopSequencer on the active node.
    call(&f.node(leader).node_url(), "admin_stopSequencer", json!([])).await;
    let halted = f.chain_height();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        f.active_indexes().is_empty(),
        "a paused cluster restarted a sequencer"
    );
    assert!(
        f.chain_height() <= halted + 1,
        "the chain moved while halted"
    );
    // The paused cluster still has a leader for the tools to find.
    let with_id = call(&urls[(leader + 1) % 3], "conductor_leaderWithID", json!([])).await;
    assert_eq!(with_id["id"], json!(Fixture::id(leader)));

    for u in &urls {
        assert_eq!(call(u, "conductor_resume", json!([])).await, Value::Null);
    }
    f.assert_chain_passes(f.chain_height() + 3).await;
    f.wait_single_active(SETTLE).await;
    f.assert_invariants();
}

/// `bootstrap-standby-cluster` then `bootstrap-cluster` on a new chain: every sidecar starts
/// paused (`--paused`), none sequences, yet one leads; the operator finds it, forces its
/// sequencer active (commits pass the fence), writes the membership and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_from_paused_sidecars_finds_a_leader_and_starts_it() {
    let opts = FixtureOpts::conductor().flag("--paused", "true");
    let mut f = Fixture::start(3, opts).await;
    let urls: Vec<String> = (0..3).map(|i| f.sidecar(i).url()).collect();
    // Standby: a leader exists, nothing sequences.
    let deadline = tokio::time::Instant::now() + FAILOVER;
    let leader = loop {
        let v = rpc(&urls[0], "conductor_leaderWithID", json!([])).await;
        if let Some(id) = v
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .filter(|id| !id.is_empty())
        {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader among the paused sidecars"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leader = Fixture::index_of(&leader);
    assert_eq!(
        call(&urls[leader], "conductor_leader", json!([])).await,
        json!(true)
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        f.active_indexes().is_empty(),
        "a paused sidecar started a sequencer"
    );
    for u in &urls {
        assert_eq!(call(u, "conductor_active", json!([])).await, json!(false));
    }
    // update-cluster-membership (on the leader, as the tool does).
    for i in 0..3 {
        let r = call(
            &urls[leader],
            "conductor_addServerAsVoter",
            json!([Fixture::id(i), urls[i], 0]),
        )
        .await;
        assert_eq!(r, Value::Null);
    }
    let m = call(
        &urls[(leader + 2) % 3],
        "conductor_clusterMembership",
        json!([]),
    )
    .await;
    assert_eq!(m["servers"].as_array().unwrap().len(), 3, "{m}");
    assert!(m["servers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["suffrage"] == json!(0)));

    // bootstrap-cluster: force the leader's sequencer active at its own head.
    let head = f.node(leader).head();
    call(
        &f.node(leader).node_url(),
        "admin_startSequencer",
        json!([head.hash]),
    )
    .await;
    f.assert_chain_passes(head.number + 3).await;
    assert!(
        f.etcd_json("head").is_some(),
        "the forced sequencer's blocks are committed (fenced)"
    );
    for u in &urls {
        call(u, "conductor_resume", json!([])).await;
    }
    assert_eq!(f.wait_single_active(SETTLE).await, leader);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// `update-cluster-membership`, `remove-server` and demotion: membership persists in etcd,
/// changes are idempotent like raft's, a non-voter never leads (not even when it is the only
/// sidecar left), `clusterMembership` lists down servers and its version moves only when the
/// membership does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_a_non_voter_never_leads() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let leader = f.wait_leader_producing(SETTLE).await;
    let voter = (leader + 1) % 3;
    let nonvoter = (leader + 2) % 3;
    let urls: Vec<String> = (0..3).map(|i| f.sidecar(i).url()).collect();

    // Open membership: every live sidecar, version 0.
    let m = call(&urls[0], "conductor_clusterMembership", json!([])).await;
    assert_eq!(m["version"], json!(0), "{m}");
    assert_eq!(m["servers"].as_array().unwrap().len(), 3);

    // The first change seeds the configured membership; repeating it changes nothing.
    let me = Fixture::id(leader);
    call(
        &urls[leader],
        "conductor_addServerAsVoter",
        json!([me, urls[leader], 0]),
    )
    .await;
    let v1 = call(&urls[0], "conductor_clusterMembership", json!([])).await["version"].clone();
    call(
        &urls[voter],
        "conductor_addServerAsVoter",
        json!([me, urls[leader], 0]),
    )
    .await;
    assert_eq!(
        call(&urls[0], "conductor_clusterMembership", json!([])).await["version"],
        v1,
        "adding an existing voter must not change the version"
    );
    // A stale version is refused and changes nothing.
    let err = rpc(
        &urls[0],
        "conductor_demoteVoter",
        json!([Fixture::id(nonvoter), 999]),
    )
    .await
    .expect_err("stale version");
    assert!(err.message.contains("version"), "{err}");

    // Demote one follower: it can no longer be named or lead.
    call(
        &urls[leader],
        "conductor_demoteVoter",
        json!([Fixture::id(nonvoter), 0]),
    )
    .await;
    let m = call(&urls[0], "conductor_clusterMembership", json!([])).await;
    let sx = m["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == json!(Fixture::id(nonvoter)))
        .cloned()
        .unwrap();
    assert_eq!(sx["suffrage"], json!(1), "{m}");
    let err = rpc(
        &urls[leader],
        "conductor_transferLeaderToServer",
        json!([Fixture::id(nonvoter), urls[nonvoter]]),
    )
    .await
    .expect_err("a non-voter must not be a transfer target");
    assert!(err.message.contains("not a voter"), "{err}");

    // The leader dies: the voter takes over, never the non-voter.
    f.sidecar(leader).kill();
    // (In conductor mode the dead leader's node keeps trying to seal; the fence refuses it.)
    let new = f.wait_new_leader_producing(leader, FAILOVER).await;
    assert_eq!(new, voter);
    // Then the voter dies too: the non-voter is the only sidecar left and must not lead.
    f.sidecar(voter).kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let with_id = call(&urls[nonvoter], "conductor_leaderWithID", json!([])).await;
    assert_eq!(
        with_id,
        json!({"id": "", "addr": "", "suffrage": 0}),
        "no leader: op-conductor's empty answer"
    );
    assert!(!f.node(nonvoter).is_active(), "a non-voter sequenced");
    // status with servers down: every configured server is still listed.
    let m = call(&urls[nonvoter], "conductor_clusterMembership", json!([])).await;
    assert_eq!(m["servers"].as_array().unwrap().len(), 3, "{m}");

    // Bring the voters back; promote the non-voter again and remove another server.
    f.sidecar(leader).restart().await;
    f.sidecar(voter).restart().await;
    f.wait_single_active(FAILOVER).await;
    call(
        &urls[nonvoter],
        "conductor_addServerAsVoter",
        json!([Fixture::id(nonvoter), urls[nonvoter], 0]),
    )
    .await;
    call(
        &urls[nonvoter],
        "conductor_removeServer",
        json!([Fixture::id(voter), 0]),
    )
    .await;
    // Removing an absent server is idempotent.
    call(
        &urls[nonvoter],
        "conductor_removeServer",
        json!([Fixture::id(voter), 0]),
    )
    .await;
    let m = call(&urls[0], "conductor_clusterMembership", json!([])).await;
    assert_eq!(m["servers"].as_array().unwrap().len(), 2, "{m}");
    // The removed server never leads: if it did, it hands over.
    let deadline = tokio::time::Instant::now() + FAILOVER;
    while f
        .leader_id()
        .await
        .is_none_or(|id| id == Fixture::id(voter))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed server still leads"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let l = f.wait_leader_producing(FAILOVER).await;
    assert_ne!(l, voter);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// The RPC port's extras that probes copied from an op-conductor deployment use, and the
/// result shapes op-conductor-ops reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_port_extras_and_result_shapes() {
    let mut f = Fixture::start(2, FixtureOpts::conductor()).await;
    let leader = f.wait_leader_producing(SETTLE).await;
    let follower = 1 - leader;
    let url = f.sidecar(follower).url();
    let version = call(&url, "health_status", json!([])).await;
    assert!(version.as_str().is_some_and(|v| !v.is_empty()));
    let modules = call(&url, "rpc_modules", json!([])).await;
    assert_eq!(modules["conductor"], json!("1.0"), "{modules}");
    // transferLeader on a follower is a no-op.
    assert_eq!(
        call(&url, "conductor_transferLeader", json!([])).await,
        Value::Null
    );
    assert_eq!(f.leader_id().await, Some(Fixture::id(leader)));
    // Overridden: op-conductor's placeholder leader.
    call(&url, "conductor_overrideLeader", json!([true])).await;
    assert_eq!(
        call(&url, "conductor_leaderWithID", json!([])).await,
        json!({"id": "N/A (Leader overridden)", "addr": "N/A", "suffrage": 0})
    );
    call(&url, "conductor_overrideLeader", json!([false])).await;
    let with_id = call(&url, "conductor_leaderWithID", json!([])).await;
    assert_eq!(with_id["id"], json!(Fixture::id(leader)));
    assert_eq!(with_id["suffrage"], json!(0));
    // Admin listener: Patroni-style /leader, and /healthz backed by the heartbeat watchdog.
    let admin = |i: usize| f.sidecars[i].admin_url();
    let get = |url: String| async move {
        common::rpc::get(&url, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .0
    };
    assert_eq!(get(format!("{}/leader", admin(leader))).await, 200);
    assert_eq!(get(format!("{}/leader", admin(follower))).await, 503);
    assert_eq!(get(format!("{}/healthz", admin(follower))).await, 200);
    // op-service's GET /healthz on the RPC port: {"version": ...}.
    let (code, body) = common::rpc::get(&format!("{url}/healthz"), Duration::from_secs(10))
        .await
        .expect("GET /healthz on the RPC port");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert!(
        v["version"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    f.assert_invariants();
}

/// /healthz is a watchdog, not a constant `ok`, and a stuck loop does not keep the lead: when
/// the leader's control loop stops making progress (a debug-build freeze point stands in for a
/// deadlock or a blocked await), its /healthz turns 503 and names the loop while /readyz and
/// the RPC port still answer, and its lease task stops renewing the lease, so the other sidecar
/// takes over (and stops the frozen leader's node). Once the loop moves again, /healthz is 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_control_loop_fails_healthz_and_gives_up_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let freeze = dir.path().join("freeze-control");
    let opts = FixtureOpts::default()
        .env("OP_SIDECAR_DEBUG_FREEZE_CONTROL", freeze.to_str().unwrap())
        .flag("--handover.catchup-timeout", "1s")
        .flag("--etcd.timeout", "1s");
    let mut f = Fixture::start(2, opts).await;
    let leader = f.wait_single_active(SETTLE).await;
    let healthz = format!("{}/healthz", f.sidecars[leader].admin_url());
    let get = |url: String| async move {
        common::rpc::get(&url, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    };
    assert_eq!(get(healthz.clone()).await.0, 200);

    std::fs::write(&freeze, Fixture::id(leader)).unwrap();
    // The bound is catch-up (1 s) + 3 lease TTLs + 2 etcd timeouts + 5 s: about 17 s here.
    let by = tokio::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (code, body) = get(healthz.clone()).await;
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            tokio::time::Instant::now() < by,
            "/healthz still 200 60 s into a frozen control loop"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(body.contains("control loop stuck"), "{body}");
    // The rest of the process still answers: only the watchdog reports the stuck loop.
    let (code, _) = get(format!("{}/readyz", f.sidecars[leader].admin_url())).await;
    assert!(code == 200 || code == 503, "/readyz answers");
    let url = f.sidecar(leader).url();
    rpc(&url, "conductor_leader", json!([])).await.unwrap();
    // The frozen leader's lease lapses; the other sidecar leads and stops the frozen one's node.
    let other = f.wait_new_leader(leader, FAILOVER).await;
    assert_ne!(other, leader);
    assert!(
        f.sidecar(leader)
            .log()
            .contains("no longer renewing the lease"),
        "{}",
        f.sidecar(leader).log_tail(30)
    );

    std::fs::remove_file(&freeze).unwrap();
    let by = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = get(healthz.clone()).await;
        if code == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < by,
            "/healthz stayed {code}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    f.wait_single_active(SETTLE).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();
}
