//! Configuration errors and precedence, against the real binary (no etcd or node needed).
//!
//! Bad config must exit 64 with one stderr line naming the setting. Every invocation otherwise
//! carries a complete, valid configuration pointing at unreachable addresses, so a bad value
//! that is wrongly accepted shows as "still running" rather than passing by accident.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::sidecar::BIN;
use common::wait_child;
use serde_json::Value;

const EXIT_CONFIG: i32 = 64;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and `env` (no inherited `OP_SIDECAR_*`), killing it after 10 s.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("OP_SIDECAR_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let status = wait_child(&mut child, Duration::from_secs(10)).await;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let r = Run {
        code: status.and_then(|s| s.code()),
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    assert!(
        status.is_some(),
        "`op-sidecar {}` still running after 10 s (the bad setting was accepted?); stderr:\n{}",
        args.join(" "),
        r.stderr
    );
    r
}

/// A complete `run` command line aimed at nothing, minus the flags named in `drop`,
/// plus `extra`.
fn run_args<'a>(drop: &[&str], extra: &[&'a str]) -> Vec<&'a str> {
    let base: [(&str, &str); 7] = [
        ("--server.id", "cfg-test"),
        ("--node.rpc", "http://127.0.0.1:9"),
        ("--execution.rpc", "http://127.0.0.1:9"),
        ("--etcd.endpoints", "http://127.0.0.1:9"),
        ("--etcd.prefix", "/op-sidecar/config-test"),
        ("--rpc.port", "0"),
        ("--admin.port", "0"),
    ];
    let mut args = vec!["run"];
    for (k, v) in base {
        if !drop.contains(&k) && !extra.contains(&k) {
            args.push(k);
            args.push(v);
        }
    }
    args.extend_from_slice(extra);
    args
}

/// Exit 64 and exactly one non-empty stderr line that names one of `names`.
fn assert_config_error(r: &Run, names: &[&str], what: &str) {
    assert_eq!(
        r.code,
        Some(EXIT_CONFIG),
        "{what}: expected exit {EXIT_CONFIG}; stderr:\n{}",
        r.stderr
    );
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got {}:\n{}",
        lines.len(),
        r.stderr
    );
    let line = lines[0].to_lowercase();
    assert!(
        names.iter().any(|n| line.contains(&n.to_lowercase())),
        "{what}: the error line should name {names:?}: {}",
        lines[0]
    );
}

#[tokio::test]
async fn missing_server_id_is_a_config_error() {
    let r = run(&run_args(&["--server.id"], &[]), &[]).await;
    assert_config_error(&r, &["server.id"], "missing --server.id");
}

#[tokio::test]
async fn unparsable_duration_is_a_config_error() {
    let r = run(&run_args(&[], &["--lease.ttl", "banana"]), &[]).await;
    assert_config_error(&r, &["lease.ttl"], "--lease.ttl banana");
    let r = run(
        &run_args(&[], &["--healthcheck.interval", "3 parsecs"]),
        &[],
    )
    .await;
    assert_config_error(
        &r,
        &["healthcheck.interval"],
        "--healthcheck.interval '3 parsecs'",
    );
}

#[tokio::test]
async fn zero_health_interval_is_a_config_error() {
    // A zero polling interval cannot work (and would panic a tokio interval).
    let r = run(&run_args(&[], &["--healthcheck.interval", "0s"]), &[]).await;
    assert_config_error(&r, &["healthcheck.interval"], "--healthcheck.interval 0s");
}

#[tokio::test]
async fn bad_url_is_a_config_error() {
    let r = run(&run_args(&[], &["--node.rpc", "not a url"]), &[]).await;
    assert_config_error(&r, &["node.rpc"], "--node.rpc 'not a url'");
}

#[tokio::test]
async fn lease_ttl_below_etcd_minimum_is_a_config_error() {
    let r = run(&run_args(&[], &["--lease.ttl", "1s"]), &[]).await;
    assert_config_error(&r, &["lease.ttl"], "--lease.ttl 1s");
}

#[tokio::test]
async fn bad_value_in_toml_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    std::fs::write(&file, "[lease]\nttl = \"banana\"\n").unwrap();
    let file = file.to_str().unwrap();
    let r = run(&run_args(&[], &["--config", file]), &[]).await;
    assert_config_error(&r, &["lease.ttl", "ttl"], "lease.ttl = \"banana\" in TOML");
}

#[tokio::test]
async fn bad_value_in_env_is_a_config_error() {
    let r = run(&run_args(&[], &[]), &[("OP_SIDECAR_LEASE_TTL", "banana")]).await;
    assert_config_error(
        &r,
        &["lease.ttl", "OP_SIDECAR_LEASE_TTL"],
        "OP_SIDECAR_LEASE_TTL=banana",
    );
}

#[tokio::test]
async fn missing_config_file_is_a_config_error() {
    let r = run(
        &run_args(&[], &["--config", "/nonexistent/op-sidecar.toml"]),
        &[],
    )
    .await;
    assert_config_error(
        &r,
        &["config", "/nonexistent/op-sidecar.toml"],
        "missing --config file",
    );
}

/// `server.id` as a flat dotted key or nested (`{"server": {"id": ..}}`).
fn setting<'a>(v: &'a Value, dotted: &str) -> &'a Value {
    if let Some(x) = v.get(dotted) {
        return x;
    }
    let mut cur = v;
    for part in dotted.split('.') {
        cur = cur
            .get(part)
            .unwrap_or_else(|| panic!("effective config has no {dotted}: {v}"));
    }
    cur
}

/// A duration shown as humantime ("5s", "5000ms") or as a number of seconds.
fn seconds(v: &Value) -> f64 {
    if let Some(n) = v.as_f64() {
        return n;
    }
    let s = v.as_str().unwrap_or_else(|| panic!("duration is {v}"));
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        other => panic!("duration {s:?} has unit {other:?}"),
    }
}

async fn effective(args: &[&str], env: &[(&str, &str)]) -> (String, f64) {
    let r = run(args, env).await;
    assert_eq!(
        r.code,
        Some(0),
        "op-sidecar {}: stderr:\n{}",
        args.join(" "),
        r.stderr
    );
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "`op-sidecar config` did not print JSON ({e}):\n{}",
            r.stdout
        )
    });
    let id = setting(&v, "server.id")
        .as_str()
        .unwrap_or_else(|| panic!("server.id is not a string: {v}"))
        .to_string();
    (id, seconds(setting(&v, "lease.ttl")))
}

#[tokio::test]
async fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    std::fs::write(
        &file,
        r#"
[server]
id = "from-file"

[node]
rpc = "http://127.0.0.1:9"

[execution]
rpc = "http://127.0.0.1:9"

[lease]
ttl = "5s"
"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let env = [
        ("OP_SIDECAR_SERVER_ID", "from-env"),
        ("OP_SIDECAR_LEASE_TTL", "4s"),
    ];

    assert_eq!(
        effective(&["config", "--config", file], &[]).await,
        ("from-file".to_string(), 5.0),
        "file beats default"
    );
    assert_eq!(
        effective(&["config", "--config", file], &env).await,
        ("from-env".to_string(), 4.0),
        "env beats file"
    );
    assert_eq!(
        effective(
            &[
                "config",
                "--config",
                file,
                "--server.id",
                "from-flag",
                "--lease.ttl",
                "6s"
            ],
            &env
        )
        .await,
        ("from-flag".to_string(), 6.0),
        "flag beats env"
    );
    // A bare integer is seconds.
    assert_eq!(
        effective(&["config", "--config", file, "--lease.ttl", "7"], &[]).await,
        ("from-file".to_string(), 7.0),
        "bare integer duration"
    );
    // Without a file the default applies (lease.ttl = 3s).
    assert_eq!(
        effective(
            &[
                "config",
                "--server.id",
                "x",
                "--node.rpc",
                "http://127.0.0.1:9",
                "--execution.rpc",
                "http://127.0.0.1:9"
            ],
            &[]
        )
        .await,
        ("x".to_string(), 3.0),
        "default lease.ttl"
    );
}

/// Migration from op-conductor: its flag and environment names work where the meaning is the
/// same, and its raft-only flags are accepted with one line saying what replaces each.
#[test]
fn op_conductor_names_are_accepted() {
    let bin = env!("CARGO_BIN_EXE_op-sidecar");
    let out = std::process::Command::new(bin)
        .args([
            "config",
            "--raft.server.id",
            "seq-a",
            "--execution.rpc",
            "http://127.0.0.1:8545",
            "--raft.bootstrap",
            "--consensus.port",
            "50050",
        ])
        .env("OP_CONDUCTOR_NODE_RPC", "http://127.0.0.1:9545")
        .env("OP_CONDUCTOR_HEALTHCHECK_INTERVAL", "2")
        .env("OP_CONDUCTOR_PAUSED", "true")
        .env_remove("OP_SIDECAR_NODE_RPC")
        .output()
        .expect("run op-sidecar config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(cfg["server.id"], "seq-a");
    assert_eq!(cfg["node.rpc"], "http://127.0.0.1:9545");
    assert_eq!(cfg["healthcheck.interval"], "2s");
    assert_eq!(cfg["paused"], true);
    // An OP_SIDECAR_* variable wins over the op-conductor one.
    let out = std::process::Command::new(bin)
        .args([
            "config",
            "--server.id",
            "a",
            "--execution.rpc",
            "http://127.0.0.1:8545",
        ])
        .env("OP_CONDUCTOR_NODE_RPC", "http://127.0.0.1:9545")
        .env("OP_SIDECAR_NODE_RPC", "http://127.0.0.1:7545")
        .output()
        .expect("run op-sidecar config");
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(cfg["node.rpc"], "http://127.0.0.1:7545");
}

#[test]
fn op_conductor_only_flags_are_reported_with_their_replacement() {
    use clap::Parser;
    let cli = op_sidecar::config::Cli::try_parse_from([
        "op-sidecar",
        "run",
        "--raft.bootstrap",
        "--raft.storage.dir",
        "/data/raft",
        "--rpc.enable-admin",
    ])
    .expect("op-conductor flags parse");
    let op_sidecar::config::Command::Run(args) = cli.command else {
        panic!("run")
    };
    let lines = args.conductor_only.replaced();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].contains("--raft.bootstrap") && lines[0].contains("membership"));
    assert!(lines[1].contains("--etcd.endpoints"));
}

// === TLS settings ===

/// One throwaway PKI for this test binary (openssl is slow enough to share it).
fn certs() -> &'static common::certs::TestCerts {
    static CERTS: std::sync::OnceLock<common::certs::TestCerts> = std::sync::OnceLock::new();
    CERTS.get_or_init(common::certs::TestCerts::generate)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn rpc_tls_certificate_without_key_and_the_reverse_are_config_errors() {
    let c = certs();
    let r = run(&run_args(&[], &["--rpc.tls.cert", p(&c.server_cert)]), &[]).await;
    assert_config_error(&r, &["rpc.tls.key"], "--rpc.tls.cert without --rpc.tls.key");
    let r = run(&run_args(&[], &["--rpc.tls.key", p(&c.server_key)]), &[]).await;
    assert_config_error(
        &r,
        &["rpc.tls.cert"],
        "--rpc.tls.key without --rpc.tls.cert",
    );
    let r = run(&run_args(&[], &["--tls.cert", p(&c.client_cert)]), &[]).await;
    assert_config_error(&r, &["tls.key"], "--tls.cert without --tls.key");
    let r = run(&run_args(&[], &["--rpc.tls.client-ca", p(&c.ca)]), &[]).await;
    assert_config_error(
        &r,
        &["rpc.tls.client-ca"],
        "--rpc.tls.client-ca without a certificate",
    );
}

#[tokio::test]
async fn missing_garbage_and_mismatched_tls_files_are_config_errors() {
    let c = certs();
    let cases: [(&str, &[&str], &str); 7] = [
        (
            "missing certificate file",
            &[
                "--rpc.tls.cert",
                "/nonexistent/rpc.pem",
                "--rpc.tls.key",
                p(&c.server_key),
            ],
            "rpc.tls.cert",
        ),
        (
            "garbage certificate",
            &[
                "--rpc.tls.cert",
                p(&c.garbage),
                "--rpc.tls.key",
                p(&c.server_key),
            ],
            "rpc.tls.cert",
        ),
        (
            "truncated certificate",
            &[
                "--rpc.tls.cert",
                p(&c.truncated),
                "--rpc.tls.key",
                p(&c.server_key),
            ],
            "rpc.tls.cert",
        ),
        (
            "garbage key",
            &[
                "--rpc.tls.cert",
                p(&c.server_cert),
                "--rpc.tls.key",
                p(&c.garbage),
            ],
            "rpc.tls.key",
        ),
        (
            "key of another certificate",
            &[
                "--rpc.tls.cert",
                p(&c.server_cert),
                "--rpc.tls.key",
                p(&c.client_key),
            ],
            "rpc.tls.key",
        ),
        ("garbage client CA", &["--tls.ca", p(&c.garbage)], "tls.ca"),
        (
            "garbage mTLS CA",
            &[
                "--rpc.tls.cert",
                p(&c.server_cert),
                "--rpc.tls.key",
                p(&c.server_key),
                "--rpc.tls.client-ca",
                p(&c.garbage),
            ],
            "rpc.tls.client-ca",
        ),
    ];
    for (what, extra, setting) in cases {
        let r = run(&run_args(&[], extra), &[]).await;
        assert_config_error(&r, &[setting], what);
    }
    // The reasons are specific, not a generic "invalid".
    let r = run(
        &run_args(
            &[],
            &[
                "--rpc.tls.cert",
                "/nonexistent/rpc.pem",
                "--rpc.tls.key",
                p(&c.server_key),
            ],
        ),
        &[],
    )
    .await;
    assert!(
        r.stderr.contains("cannot read /nonexistent/rpc.pem"),
        "{}",
        r.stderr
    );
    let r = run(
        &run_args(
            &[],
            &[
                "--rpc.tls.cert",
                p(&c.garbage),
                "--rpc.tls.key",
                p(&c.server_key),
            ],
        ),
        &[],
    )
    .await;
    assert!(r.stderr.contains("no certificate"), "{}", r.stderr);
    let r = run(
        &run_args(
            &[],
            &[
                "--rpc.tls.cert",
                p(&c.server_cert),
                "--rpc.tls.key",
                p(&c.client_key),
            ],
        ),
        &[],
    )
    .await;
    assert!(
        r.stderr
            .contains("private key does not match the certificate"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn tls_settings_come_from_the_file_and_switch_the_advertised_scheme() {
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[server]
id = "tls"
[node]
rpc = "https://127.0.0.1:9545"
[execution]
rpc = "https://127.0.0.1:8545"
[rpc.tls]
cert = "{}"
key = "{}"
client-ca = "{}"
[tls]
ca = "{}"
cert = "{}"
key = "{}"
"#,
            p(&c.server_cert),
            p(&c.server_key),
            p(&c.ca),
            p(&c.ca),
            p(&c.client_cert),
            p(&c.client_key),
        ),
    )
    .unwrap();
    let r = run(&["config", "--config", p(&file)], &[]).await;
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["rpc.advertise"], "https://127.0.0.1:8547");
    assert_eq!(v["node.rpc"], "https://127.0.0.1:9545");
    assert_eq!(v["rpc.tls.cert"], p(&c.server_cert));
    assert_eq!(v["rpc.tls.client-ca"], p(&c.ca));
    assert_eq!(v["tls.ca"], p(&c.ca));
    assert_eq!(v["tls.key"], p(&c.client_key));
}
