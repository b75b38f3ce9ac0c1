//! Authenticated control (`--rpc.jwt-secret`): control methods need an HS256 token with a fresh
//! `iat`, refused calls change nothing, op-node's calls and read-only queries need none, and
//! sidecar-to-sidecar calls carry their own token. Real sidecars on a real etcd.
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::rpc::{post_with_headers, rpc_auth};
use common::{rpc, wait_until, Fixture, FixtureOpts, SidecarBuilder};
use op_sidecar::rpc::auth::{unix_now, JwtSecret, UNAUTHORIZED};
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_secs(45);

fn write_secret(dir: &Path) -> (String, JwtSecret) {
    let path = dir.join("jwt.hex");
    let hex = "0x".to_string() + &"5a".repeat(32);
    std::fs::write(&path, &hex).unwrap();
    (
        path.display().to_string(),
        JwtSecret::from_hex(&hex).unwrap(),
    )
}

async fn paused(url: &str) -> bool {
    rpc(url, "conductor_paused", json!([])).await.unwrap() == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_calls_need_a_fresh_token_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, secret) = write_secret(dir.path());
    let mut f = Fixture::start(2, FixtureOpts::default().flag("--rpc.jwt-secret", &path)).await;
    let leader = f.wait_leader_producing(SETTLE).await;
    let follower = 1 - leader;
    let url = f.sidecar(leader).url();

    // Read-only queries need no token.
    rpc(&url, "conductor_leader", json!([])).await.unwrap();
    rpc(&url, "conductor_active", json!([])).await.unwrap();

    // Missing, wrong key, stale iat (both directions), malformed: -32001, HTTP 401, not paused.
    let wrong = JwtSecret::from_bytes([1; 32]).token(None);
    let stale = secret.token_at(None, unix_now() - 120);
    let future = secret.token_at(None, unix_now() + 120);
    for (token, why) in [
        (None, "missing token"),
        (Some(wrong.as_str()), "invalid token"),
        (Some(stale.as_str()), "stale token"),
        (Some(future.as_str()), "stale token"),
        (Some("not-a-jwt"), "invalid token"),
    ] {
        let e = rpc_auth(&url, "conductor_pause", json!([]), token)
            .await
            .unwrap_err();
        assert_eq!(e.code, UNAUTHORIZED, "{why}: {e}");
        assert!(e.message.starts_with("HTTP 401"), "{why}: {e}");
        assert!(e.message.contains(why), "{why}: {e}");
        assert!(!paused(&url).await, "{why}: a refused pause paused");
    }

    // A batch hiding a control call among open ones is refused as a whole.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "conductor_leader", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "conductor_pause", "params": []},
    ]);
    let (status, v) = post_with_headers(&url, batch, &[]).await.unwrap();
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], json!(UNAUTHORIZED), "{v}");
    assert!(!paused(&url).await);

    // A valid token (with or without a subject) works, and the call is logged with the caller.
    let token = secret.token(Some("alice"));
    rpc_auth(&url, "conductor_pause", json!([]), Some(&token))
        .await
        .unwrap();
    assert!(paused(&url).await);
    rpc_auth(
        &url,
        "conductor_resume",
        json!([]),
        Some(&secret.token(None)),
    )
    .await
    .unwrap();
    assert!(!paused(&url).await);
    let log = f.sidecar(leader).log();
    assert!(
        log.contains("control call") && log.contains("alice"),
        "no audit line naming the caller:\n{}",
        f.sidecar(leader).log_tail(40)
    );

    // A transfer asked of the follower (which is not the leader) works with a token, and not
    // without one.
    let furl = f.sidecar(follower).url();
    let target = Fixture::id(follower);
    let e = rpc_auth(
        &furl,
        "conductor_transferLeaderToServer",
        json!([target, ""]),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, UNAUTHORIZED, "{e}");
    assert_eq!(f.leader_id().await, Some(Fixture::id(leader)));
    rpc_auth(
        &furl,
        "conductor_transferLeaderToServer",
        json!([target, ""]),
        Some(&secret.token(Some("ops"))),
    )
    .await
    .unwrap();
    f.wait_new_leader_producing(leader, SETTLE).await;

    // Sidecar-to-sidecar: miner_setMaxDASize fans out to the other sidecar, which requires a
    // token for it; the fan-out carries the sending sidecar's own.
    let new_leader = follower;
    let other = leader;
    rpc_auth(
        &f.sidecar(new_leader).url(),
        "miner_setMaxDASize",
        json!(["0x100", "0x1000"]),
        Some(&secret.token(Some("batcher"))),
    )
    .await
    .unwrap();
    let expect = format!("op-sidecar/{}", Fixture::id(new_leader));
    wait_until(
        Duration::from_secs(10),
        "the fanned-out call is accepted",
        || {
            let log = f.sidecar(other).log();
            let ok = log.contains("miner_setMaxDASize") && log.contains(&expect);
            async move { ok }
        },
    )
    .await;
    assert!(
        !f.sidecar(new_leader)
            .log()
            .contains("could not forward miner_setMaxDASize"),
        "fan-out refused:\n{}",
        f.sidecar(new_leader).log_tail(40)
    );

    // Forwarded reads (follower -> leader's sidecar) still work.
    let v: Value = rpc(&f.sidecar(other).url(), "optimism_syncStatus", json!([]))
        .await
        .unwrap();
    assert!(v.get("unsafe_l2").is_some(), "{v}");
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_mode_commits_need_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_secret(dir.path());
    let mut f = Fixture::start(2, FixtureOpts::conductor().flag("--rpc.jwt-secret", &path)).await;
    f.wait_leader_producing(SETTLE).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_policy_serves_control_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_secret(dir.path());
    let mut f = Fixture::start(
        1,
        FixtureOpts::default()
            .flag("--rpc.jwt-secret", &path)
            .flag("--rpc.auth-control", "false"),
    )
    .await;
    let url = f.sidecar(0).url();
    rpc(&url, "conductor_pause", json!([])).await.unwrap();
    assert!(paused(&url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_file_is_generated_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generated.hex");
    let etcd = common::Etcd::start().await;
    let sim = op_node_sim::Cluster::start(op_node_sim::ClusterConfig {
        nodes: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let node = sim.node(0);
    let sc = SidecarBuilder::new(
        "gen",
        &node.node_url(),
        &node.geth_url(),
        &etcd.client_url(),
        "/op-sidecar/jwtgen",
    )
    .flag("--rpc.jwt-secret", &path.display().to_string())
    .start()
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 64, "{text:?}");
    assert!(text.chars().all(|c| c.is_ascii_hexdigit()), "{text:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The generated secret is the one enforced.
    let secret = JwtSecret::from_hex(&text).unwrap();
    let e = rpc_auth(&sc.url(), "conductor_pause", json!([]), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, UNAUTHORIZED);
    rpc_auth(
        &sc.url(),
        "conductor_pause",
        json!([]),
        Some(&secret.token(None)),
    )
    .await
    .unwrap();
}
