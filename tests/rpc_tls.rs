//! TLS on the sidecar's JSON-RPC listener and https:// to nodes and peers, against real sidecar
//! processes, a real etcd and the op-node simulator, with certificates made by `openssl`: a
//! client with the CA is served (JSON-RPC and GET /healthz), one without it, with plain HTTP, or
//! (under mutual TLS) without an accepted client certificate is refused in the handshake and
//! changes nothing; a client that stalls its handshake delays no one else; a cluster whose
//! sidecars require client certificates and reach their nodes over https:// elects, produces,
//! forwards reads between sidecars and fails over; `ctl` talks to it with `--tls.*`.
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::certs::TestCerts;
use common::rpc::{get, rpc_tls};
use common::sidecar::BIN;
use common::{rpc, rpc_timeout, wait_until, Fixture, FixtureOpts};
use op_sidecar::tls::{client_config, ClientFiles};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SETTLE: Duration = Duration::from_secs(60);
/// op-node gives each conductor call 1 s; twice that on a noisy 2-core machine.
const BUDGET: Duration = Duration::from_secs(2);

/// One PKI for the whole binary: the harness's https:// settings are process-wide
/// (`rpc::trust`), so every fixture here must trust the same CA.
fn certs() -> Arc<TestCerts> {
    static CERTS: OnceLock<Arc<TestCerts>> = OnceLock::new();
    CERTS
        .get_or_init(|| Arc::new(TestCerts::generate()))
        .clone()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Client TLS settings: trusting `ca` (or the built-in public roots) and presenting `identity`.
fn client(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    Arc::new(
        client_config(&ClientFiles {
            ca: ca.map(Path::to_path_buf),
            identity: identity.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
        })
        .unwrap(),
    )
}

/// `https://127.0.0.1:port` -> `127.0.0.1:port`.
fn authority(url: &str) -> String {
    url.trim_start_matches("https://").to_string()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|rest| rest.trim().parse().ok())
    })
}

async fn refused(admin_url: &str, reason: &str) -> f64 {
    let (status, text) = get(&format!("{admin_url}/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    metric(
        &text,
        &format!(r#"op_sidecar_rpc_refused_total{{reason="{reason}"}}"#),
    )
    .unwrap_or(0.0)
}

/// The refusal is a TLS failure, not a JSON-RPC answer.
fn assert_handshake_refused(r: Result<Value, common::RpcError>, what: &str) -> String {
    match r {
        Err(e) if e.is_transport() => e.message,
        other => panic!("{what}: expected a refused TLS handshake, got {other:?}"),
    }
}

async fn ctl(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("ctl")
        .args(args)
        .env_remove("OP_SIDECAR_CTL_RPC")
        .env_remove("OP_SIDECAR_CTL_TLS_CA")
        .env_remove("OP_SIDECAR_CTL_TLS_CERT")
        .env_remove("OP_SIDECAR_CTL_TLS_KEY")
        .output()
        .await
        .unwrap()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_over_tls_serves_clients_with_the_ca_and_refuses_the_rest() {
    let c = certs();
    let opts = FixtureOpts {
        rpc_tls: Some(c.clone()),
        ..FixtureOpts::default()
    };
    let mut f = Fixture::start(1, opts).await;
    let leader = Fixture::id(f.wait_leader_producing(SETTLE).await);
    let url = f.sidecar(0).url();
    let admin = f.sidecar(0).admin_url();
    assert!(url.starts_with("https://"), "{url}");

    // With the CA: served, including op-service's GET /healthz on the RPC port.
    let with_ca = client(Some(&c.ca), None);
    assert_eq!(
        rpc_tls(&url, "conductor_leader", json!([]), with_ca.clone()).await,
        Ok(json!(true))
    );
    let (status, body) = get(&format!("{url}/healthz"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("version"), "{body}");
    // The member record advertises the https:// URL other sidecars and ctl use.
    assert_eq!(f.member(0).unwrap()["rpc"], json!(url));

    // Without the CA (the built-in public roots), or trusting another CA: the handshake fails
    // on the client's side, and the control call it carried never runs.
    let before = refused(&admin, "tls_handshake").await;
    for (what, tls) in [
        ("no CA", client(None, None)),
        ("another CA", client(Some(&c.other_ca), None)),
    ] {
        let e =
            assert_handshake_refused(rpc_tls(&url, "conductor_pause", json!([]), tls).await, what);
        assert!(e.contains("certificate"), "{what}: {e}");
    }
    // Plain HTTP to the TLS port gets no answer either.
    let plain = url.replacen("https://", "http://", 1);
    assert_handshake_refused(
        rpc_timeout(&plain, "conductor_pause", json!([]), BUDGET).await,
        "plain http://",
    );
    assert_eq!(
        rpc_tls(&url, "conductor_paused", json!([]), with_ca.clone()).await,
        Ok(json!(false)),
        "a refused client changed nothing"
    );
    assert_eq!(
        rpc(&url, "coordinator_getMaster", json!([])).await,
        Ok(json!(leader))
    );
    wait_until(
        Duration::from_secs(10),
        "the sidecar to count the three failed handshakes",
        || async { refused(&admin, "tls_handshake").await >= before + 3.0 },
    )
    .await;

    // ctl: https:// with --tls.ca works; without it the sidecar is unreachable (exit 3) and the
    // reason names the certificate; an unusable CA file is a usage error (exit 2).
    let o = ctl(&["--rpc", &url, "--tls.ca", &path(&c.ca), "--json", "status"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["leader"], json!(leader), "{s}");
    let o = ctl(&["--rpc", &url, "status"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate"),
        "{}",
        describe(&o)
    );
    let o = ctl(&["--rpc", &url, "--tls.ca", &path(&c.garbage), "status"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{}", describe(&o));
    assert!(err.contains("garbage.pem"), "{}", describe(&o));

    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_do_not_delay_conductor_leader() {
    const SILENT: usize = 40;
    const PARTIAL: usize = 40;
    let read_timeout = Duration::from_secs(3);
    let c = certs();
    let opts = FixtureOpts {
        rpc_tls: Some(c.clone()),
        ..FixtureOpts::default()
    }
    .flag("--rpc.read-timeout", "3s");
    let mut f = Fixture::start(1, opts).await;
    f.wait_leader_producing(SETTLE).await;
    let url = f.sidecar(0).url();
    let admin = f.sidecar(0).admin_url();
    let before = refused(&admin, "tls_handshake_timeout").await;

    // Clients that connect and say nothing, and clients that start a ClientHello (a record
    // header announcing 512 bytes, then a few of them) and stop.
    let began = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..SILENT + PARTIAL {
        let mut s = TcpStream::connect(authority(&url)).await.unwrap();
        if i >= SILENT {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(s);
    }

    // Meanwhile op-node's call is answered on fresh TLS connections within its budget, again
    // and again (if handshakes ran on the accept loop, the first stalled one would hold every
    // later accept for the whole read timeout).
    for round in 0..10 {
        let t = Instant::now();
        let r = rpc_timeout(&url, "conductor_leader", json!([]), BUDGET).await;
        assert_eq!(
            r,
            Ok(json!(true)),
            "conductor_leader round {round} with {} stalled handshakes, after {:?}",
            stalled.len(),
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stalled connections are closed at the handshake deadline, not before.
    for (i, s) in stalled.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(read_timeout + Duration::from_secs(15), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stalled connection {i} still open"));
        // A close (0) or a reset; a partial hello may first get an alert.
        if let Ok(n) = r {
            if n > 0 {
                let rest =
                    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut Vec::new()))
                        .await;
                assert!(rest.is_ok(), "stalled connection {i} not closed");
            }
        }
    }
    assert!(
        began.elapsed() >= read_timeout - Duration::from_millis(200),
        "stalled handshakes closed before the deadline ({:?})",
        began.elapsed()
    );
    wait_until(
        Duration::from_secs(10),
        "the sidecar to count the silent handshakes as timed out",
        || async { refused(&admin, "tls_handshake_timeout").await >= before + SILENT as f64 },
    )
    .await;
    assert_eq!(
        rpc(&url, "conductor_leader", json!([])).await,
        Ok(json!(true))
    );
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_cluster_with_https_nodes_elects_produces_forwards_and_fails_over() {
    let c = certs();
    let opts = FixtureOpts {
        rpc_tls: Some(c.clone()),
        rpc_mtls: true,
        node_tls: Some(c.clone()),
        ..FixtureOpts::default()
    };
    let mut f = Fixture::start(2, opts).await;
    let leader = f.wait_leader_producing(SETTLE).await;
    let follower = 1 - leader;
    let leader_id = Fixture::id(leader);
    f.assert_chain_progresses().await;
    assert!(f.sim.node(0).node_url().starts_with("http://"));
    assert!(f.node_fronts[0].0.url().starts_with("https://"));

    let (leader_url, follower_url) = (f.sidecar(leader).url(), f.sidecar(follower).url());
    let with_cert = client(Some(&c.ca), Some((&c.client_cert, &c.client_key)));
    assert_eq!(
        rpc_tls(
            &leader_url,
            "conductor_leader",
            json!([]),
            with_cert.clone()
        )
        .await,
        Ok(json!(true))
    );
    assert_eq!(
        rpc_tls(
            &follower_url,
            "conductor_leader",
            json!([]),
            with_cert.clone()
        )
        .await,
        Ok(json!(false))
    );

    // Without a client certificate, or with one from a CA the sidecars do not trust: refused
    // (under TLS 1.3 the server's alert arrives with the first read), and nothing changes.
    for (what, tls) in [
        ("no client certificate", client(Some(&c.ca), None)),
        (
            "a client certificate from another CA",
            client(
                Some(&c.ca),
                Some((&c.other_client_cert, &c.other_client_key)),
            ),
        ),
    ] {
        assert_handshake_refused(
            rpc_tls(&leader_url, "conductor_pause", json!([]), tls).await,
            what,
        );
    }
    assert_eq!(
        rpc_tls(
            &leader_url,
            "conductor_paused",
            json!([]),
            with_cert.clone()
        )
        .await,
        Ok(json!(false)),
        "a refused client changed nothing"
    );

    // A read asked of the follower is forwarded to the leader's sidecar over https:// with
    // the follower's client certificate, and answered from the leader's node over https://.
    let status = rpc(&follower_url, "optimism_syncStatus", json!([]))
        .await
        .expect("a read forwarded sidecar to sidecar over mutual TLS");
    assert!(status["unsafe_l2"]["number"].is_u64(), "{status}");

    // ctl needs the CA and a client certificate here.
    let o = ctl(&[
        "--rpc",
        &follower_url,
        "--tls.ca",
        &path(&c.ca),
        "--tls.cert",
        &path(&c.client_cert),
        "--tls.key",
        &path(&c.client_key),
        "--json",
        "status",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["leader"], json!(leader_id), "{s}");
    let rows = s["members"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{s}");
    assert!(
        rows.iter().all(|r| r["up"] == json!(true)),
        "every member answered ctl over mutual TLS: {s}"
    );
    let o = ctl(&["--rpc", &follower_url, "--tls.ca", &path(&c.ca), "status"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));

    // Failover: the leader's sidecar dies with its node still sequencing; the new leader must
    // stop that node through its advertised https:// URL before it starts its own (one active
    // sequencer, no fork).
    f.sidecar(leader).kill();
    let new = f.wait_new_leader(leader, SETTLE).await;
    assert_eq!(new, follower);
    assert!(!f.node(leader).is_active(), "the old node was stopped");
    f.assert_chain_progresses().await;
    f.assert_invariants();
    let log = f.sidecar(follower).log();
    assert!(
        log.contains("stopped the previous leader's node"),
        "the new leader stopped the old node over https://"
    );
}
