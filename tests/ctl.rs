//! `op-sidecar ctl` against a live three-sidecar cluster: status (table and --json, a killed
//! member shows as down), transfer with the leader moving, pause/resume one and all, election
//! stop/start, and the exit codes scripts rely on (2 usage, 3 unreachable, 1 refused).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::sidecar::BIN;
use common::{rpc, wait_until, Fixture, FixtureOpts};
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_secs(30);

async fn ctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::process::Command::new(BIN)
        .arg("ctl")
        .args(&args)
        .env_remove("OP_SIDECAR_CTL_RPC")
        .output()
        .await
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn status_json(url: &str) -> Value {
    let o = ctl(&["--rpc", url, "--json", "status"]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)))
}

fn row<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(id))
        .unwrap_or_else(|| panic!("no row for {id} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_sees_and_steers_a_live_cluster() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let leader = f.wait_single_active(SETTLE).await;
    let leader_id = Fixture::id(leader);
    let url = f.sidecar((leader + 1) % 3).url();
    // Let every member's health settle so the table shows three healthy rows.
    wait_until(SETTLE, "every member healthy in ctl status", || {
        let url = url.clone();
        async move {
            let s = status_json(&url).await;
            s["members"]
                .as_array()
                .is_some_and(|m| m.len() == 3 && m.iter().all(|r| r["healthy"] == json!(true)))
        }
    })
    .await;

    // --- status: table and JSON, asked of a follower ---
    let o = ctl(&["--rpc", &url, "status"]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let table = stdout(&o);
    assert!(table.starts_with("ID"), "{table}");
    for i in 0..3 {
        assert!(table.contains(&Fixture::id(i)), "{table}");
    }
    assert!(table.contains(&format!("leader: {leader_id}")), "{table}");
    let s = status_json(&url).await;
    assert_eq!(s["leader"], json!(leader_id), "{s}");
    assert!(s["epoch"].as_i64().is_some_and(|e| e > 0), "{s}");
    assert_eq!(s["election_stopped"], json!(false), "{s}");
    let lr = row(&s, &leader_id);
    assert_eq!(lr["leader"], json!(true), "{s}");
    assert_eq!(lr["lag"], json!(0), "{s}");
    assert!(lr["unsafe_head"].as_u64().is_some_and(|n| n > 0), "{s}");
    assert!(
        lr["unsafe_head_age_secs"].as_u64().is_some_and(|a| a < 10),
        "{s}"
    );

    // --- the scrape-time gauges on the leader's /metrics ---
    let admin = f.sidecar(leader).admin_url();
    let (code_, text) = common::rpc::get(&format!("{admin}/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code_, 200, "{text}");
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert!(gauge("op_sidecar_unsafe_head_number") > 0.0, "{text}");
    let age = gauge("op_sidecar_unsafe_head_age_seconds");
    assert!((0.0..10.0).contains(&age), "{text}");
    let left = gauge("op_sidecar_lease_time_left_seconds");
    assert!(left > 0.0, "{text}");
    let contact = gauge("op_sidecar_etcd_last_contact_seconds");
    assert!((0.0..2.0).contains(&contact), "{text}");
    assert_eq!(gauge("op_sidecar_leader_overridden"), 0.0, "{text}");
    assert_eq!(gauge("op_sidecar_election_stopped"), 0.0, "{text}");
    assert!(text.contains("op_sidecar_build_info{version=\""), "{text}");

    // --- transfer to a named member: returns once it leads, with a progress line ---
    let target = (leader + 2) % 3;
    let target_id = Fixture::id(target);
    let o = ctl(&["--rpc", &url, "transfer", &target_id]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    assert!(
        stdout(&o).contains(&format!("-> {target_id}")),
        "{}",
        describe(&o)
    );
    assert_eq!(f.leader_id().await.as_deref(), Some(target_id.as_str()));
    f.wait_single_active_where(SETTLE, "the transfer target sequencing", |i| i == target)
        .await;

    // --- transfer to an unknown member fails (1) and changes nothing ---
    let o = ctl(&["--rpc", &url, "--json", "transfer", "nobody"]).await;
    assert_eq!(code(&o), 1, "{}", describe(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], json!(false), "{v}");
    assert_eq!(f.leader_id().await.as_deref(), Some(target_id.as_str()));

    // --- pause one member by id, then resume all ---
    let one = Fixture::id(leader);
    let o = ctl(&["--rpc", &url, "pause", &one]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let paused = rpc(&f.sidecar(leader).url(), "conductor_paused", json!([]))
        .await
        .unwrap();
    assert_eq!(paused, json!(true));
    assert_eq!(row(&status_json(&url).await, &one)["paused"], json!(true));
    let o = ctl(&["--rpc", &url, "--json", "resume", "--all"]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["results"].as_array().map(Vec::len), Some(3), "{v}");
    for i in 0..3 {
        let p = rpc(&f.sidecar(i).url(), "conductor_paused", json!([]))
            .await
            .unwrap();
        assert_eq!(p, json!(false), "seq-{i} still paused");
    }

    // --- election stop / start is visible in status ---
    let o = ctl(&["--rpc", &url, "election", "stop"]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    wait_until(SETTLE, "election_stopped in ctl status", || {
        let url = url.clone();
        async move { status_json(&url).await["election_stopped"] == json!(true) }
    })
    .await;
    let o = ctl(&["--rpc", &url, "election", "start"]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    wait_until(SETTLE, "election running in ctl status", || {
        let url = url.clone();
        async move { status_json(&url).await["election_stopped"] == json!(false) }
    })
    .await;

    // --- a killed member is a DOWN row, not an error ---
    let victim = (target + 1) % 3;
    let victim_id = Fixture::id(victim);
    // Pin membership first, so the dead member stays listed (open membership lists live ones).
    let victim_url = f.sidecar(victim).url();
    f.rpc_any(
        "conductor_addServerAsVoter",
        json!([victim_id, victim_url, 0]),
    )
    .await
    .unwrap();
    f.sidecar(victim).kill();
    let ask = f.sidecar(target).url();
    let s = status_json(&ask).await;
    assert_eq!(row(&s, &victim_id)["up"], json!(false), "{s}");
    let o = ctl(&["--rpc", &ask, "status"]).await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    assert!(stdout(&o).contains("DOWN"), "{}", describe(&o));
    // Pausing everyone with one member down: the live ones are paused, the exit code says a
    // member was unreachable.
    let o = ctl(&["--rpc", &ask, "pause", "--all"]).await;
    assert_eq!(code(&o), 3, "{}", describe(&o));
    let o = ctl(&["--rpc", &ask, "resume", "--all"]).await;
    assert_eq!(code(&o), 3, "{}", describe(&o));
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_exit_codes_for_usage_unreachable_and_bad_secret() {
    // Nothing listens on a freshly released port.
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let o = ctl(&["--rpc", &url, "status"]).await;
    assert_eq!(code(&o), 3, "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unreachable"),
        "{}",
        describe(&o)
    );
    let o = ctl(&["--rpc", &url, "--json", "status"]).await;
    assert_eq!(code(&o), 3, "{}", describe(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["exit"], json!(3), "{v}");

    let o = ctl(&["--rpc", &url, "frobnicate"]).await;
    assert_eq!(code(&o), 2, "{}", describe(&o));
    let o = ctl(&["--rpc", &url, "override", "maybe", "x"]).await;
    assert_eq!(code(&o), 2, "{}", describe(&o));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.hex");
    let o = ctl(&[
        "--rpc",
        &url,
        "--jwt-secret",
        missing.to_str().unwrap(),
        "status",
    ])
    .await;
    assert_eq!(code(&o), 2, "{}", describe(&o));
    let short = dir.path().join("short.hex");
    std::fs::write(&short, "0x1234").unwrap();
    let o = ctl(&[
        "--rpc",
        &url,
        "--jwt-secret",
        short.to_str().unwrap(),
        "status",
    ])
    .await;
    assert_eq!(code(&o), 2, "{}", describe(&o));

    let o = tokio::process::Command::new(BIN)
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert_eq!(code(&o), 0);
    let v = stdout(&o);
    assert!(
        v.contains(env!("CARGO_PKG_VERSION")) && v.contains("commit "),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_sends_an_hs256_bearer_token_when_given_a_secret() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A one-shot JSON-RPC server that records the request head.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = r#"{"jsonrpc":"2.0","id":1,"result":null}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("jwt.hex");
    let secret = [0x5au8; 32];
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&secret_path, format!("0x{hex}\n")).unwrap();
    let o = ctl(&[
        "--rpc",
        &url,
        "--jwt-secret",
        secret_path.to_str().unwrap(),
        "election",
        "stop",
    ])
    .await;
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let head = server.await.unwrap();
    let token = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().strip_prefix("Bearer ").map(str::to_string))?
        })
        .unwrap_or_else(|| panic!("no bearer token in\n{head}"));
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    let claims =
        jsonwebtoken::decode::<Value>(&token, &jsonwebtoken::DecodingKey::from_secret(&secret), &v)
            .unwrap()
            .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        claims["iat"]
            .as_u64()
            .is_some_and(|iat| now.abs_diff(iat) <= 5),
        "{claims}"
    );
    assert!(head.starts_with("POST "), "{head}");
}
