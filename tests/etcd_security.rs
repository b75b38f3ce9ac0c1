//! etcd over mutual TLS and with RBAC, against a real etcd started by the test with certificates
//! made by `openssl`: a cluster leads and the chain progresses, and a wrong CA, an untrusted
//! client certificate, a wrong password or a user without permission on the prefix stop the
//! sidecar at start with exit code 64 and one line naming the cause.
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::etcd::EtcdTls;
use common::{Fixture, FixtureOpts, SidecarBuilder};

const SETTLE: Duration = Duration::from_secs(45);
const EXIT_CONFIG: i32 = 64;

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Starts a sidecar for node 0 of `f` with `flags` and expects it to exit 64 with `expect` in
/// its log (and no password in it).
async fn assert_refused(f: &Fixture, endpoints: &str, flags: &[(&str, String)], expect: &str) {
    let node = f.sim.node(0);
    let mut b = SidecarBuilder::new(
        "refused",
        &node.node_url(),
        &node.geth_url(),
        endpoints,
        &f.prefix,
    )
    .wait_ready(false);
    for (k, v) in flags {
        b = b.flag(k, v);
    }
    let mut sc = b.start().await;
    let status = sc.wait_exit(Duration::from_secs(30)).await;
    let log = sc.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(EXIT_CONFIG),
        "expected exit {EXIT_CONFIG} ({expect}); log:\n{log}"
    );
    assert!(log.contains(expect), "expected {expect:?} in:\n{log}");
    assert!(
        !log.contains("sidecar-pw"),
        "the password was logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_lead_over_mutual_tls_and_bad_certificates_are_refused() {
    let tls = Arc::new(EtcdTls::generate());
    let opts = FixtureOpts {
        etcd_tls: Some(tls.clone()),
        ..FixtureOpts::default()
    };
    let mut f = Fixture::start(2, opts).await;
    assert!(f.etcd.client_url().starts_with("https://"));
    f.wait_leader_producing(SETTLE).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();

    let url = f.etcd.client_url();
    // The server's certificate is not signed by the CA we trust.
    assert_refused(
        &f,
        &url,
        &[
            ("--etcd.tls.ca", path(&tls.other_ca)),
            ("--etcd.tls.cert", path(&tls.client_cert)),
            ("--etcd.tls.key", path(&tls.client_key)),
        ],
        "etcd server certificate not trusted",
    )
    .await;
    // Our client certificate is signed by a CA etcd does not trust.
    assert_refused(
        &f,
        &url,
        &[
            ("--etcd.tls.ca", path(&tls.ca)),
            ("--etcd.tls.cert", path(&tls.other_client_cert)),
            ("--etcd.tls.key", path(&tls.other_client_key)),
        ],
        "etcd refused our client certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_user_restricted_to_its_prefix_leads_and_bad_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("etcd-password");
    std::fs::write(&pw, "sidecar-pw\n").unwrap();
    let wrong_pw = dir.path().join("wrong-password");
    std::fs::write(&wrong_pw, "not-the-password").unwrap();
    let opts = FixtureOpts::default()
        .flag("--etcd.username", "sidecar")
        .flag("--etcd.password-file", &path(&pw));
    let mut f = Fixture::start_without_sidecars(2, opts).await;
    let prefix = format!("{}/", f.prefix);
    for args in [
        &["user", "add", "root:root-pw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "sidecar:sidecar-pw"],
        &["role", "add", "sidecar"],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "sidecar",
            "readwrite",
            &prefix,
        ],
        &["user", "grant-role", "sidecar", "sidecar"],
        &["user", "add", "stranger:stranger-pw"],
        &["role", "add", "elsewhere"],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "elsewhere",
            "readwrite",
            "/other-chain/",
        ],
        &["user", "grant-role", "stranger", "elsewhere"],
        &["auth", "enable"],
    ] {
        f.etcd.ctl(args);
    }
    f.etcd.set_ctl_user("root:root-pw");

    f.start_sidecars().await;
    f.wait_leader_producing(SETTLE).await;
    f.assert_chain_progresses().await;
    f.assert_invariants();

    let url = f.etcd.client_url();
    assert_refused(
        &f,
        &url,
        &[
            ("--etcd.username", "sidecar".into()),
            ("--etcd.password-file", path(&wrong_pw)),
        ],
        "etcd refused the credentials of user \"sidecar\"",
    )
    .await;
    let stranger_pw = dir.path().join("stranger-password");
    std::fs::write(&stranger_pw, "stranger-pw").unwrap();
    assert_refused(
        &f,
        &url,
        &[
            ("--etcd.username", "stranger".into()),
            ("--etcd.password-file", path(&stranger_pw)),
        ],
        "etcd user \"stranger\" lacks permission",
    )
    .await;
}
