//! Self-tests of the test harness: a fault that the harness fails to inject would make the
//! failover tests prove nothing, so the proxy's blackhole and the etcd helpers are checked here.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{etcdctl, etcdctl_try, Etcd, EtcdCluster, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on 127.0.0.1:0.
async fn echo_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Writes `msg` and reads the echo within `wait`; `None` if nothing came back in time.
async fn echo(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.write_all(msg).await.ok()?;
    let mut buf = vec![0u8; msg.len()];
    match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// True if the peer closed the connection (EOF or reset) within `wait`.
async fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(wait, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_partition_blackholes_and_heal_restores() {
    let upstream = echo_server().await;
    let proxy = TcpProxy::start(&upstream).await;
    let short = Duration::from_millis(500);
    let long = Duration::from_secs(5);

    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        echo(&mut a, b"hello", long).await.as_deref(),
        Some(&b"hello"[..])
    );

    proxy.partition();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Established connection: open, silent.
    assert_eq!(
        echo(&mut a, b"lost", short).await,
        None,
        "bytes crossed a partition"
    );
    // New connection: accepted, silent, not closed.
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        echo(&mut b, b"lost", short).await,
        None,
        "a new connection was forwarded"
    );
    assert!(
        !closed(&mut b, short).await,
        "a partition must not close connections"
    );

    proxy.heal();
    // Connections from the partition are dropped so clients reconnect.
    assert!(closed(&mut a, long).await, "connection held across heal");
    assert!(
        closed(&mut b, long).await,
        "connection accepted during partition kept"
    );
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        echo(&mut c, b"again", long).await.as_deref(),
        Some(&b"again"[..])
    );

    proxy.reset_all();
    assert!(
        closed(&mut c, long).await,
        "reset_all must drop live connections"
    );
    let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        echo(&mut d, b"after", long).await.as_deref(),
        Some(&b"after"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keeps_data_across_stop_and_start_again() {
    let mut etcd = Etcd::start().await;
    let url = etcd.client_url();
    etcdctl(&url, &["put", "/h/k", "v1"]);
    etcd.stop();
    assert!(
        etcdctl_try(&url, &["get", "/h/k"]).is_err(),
        "stopped etcd still answers"
    );
    etcd.start_again().await;
    assert_eq!(etcd.get("/h/k").as_deref(), Some("v1"));
    assert_eq!(
        etcd.get_prefix("/h/"),
        vec![("/h/k".to_string(), "v1".to_string())]
    );
    etcd.kill();
    etcd.start_again().await;
    assert_eq!(etcd.get("/h/k").as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_survives_losing_one_member() {
    let mut cluster = EtcdCluster::start(3).await;
    let all = cluster.client_urls();
    assert_eq!(all.split(',').count(), 3);
    etcdctl(&all, &["put", "/c/k", "v1"]);

    cluster.kill_member(0);
    let rest = format!("{},{}", cluster.client_url(1), cluster.client_url(2));
    // If member 0 was etcd's leader, the other two first elect a new one; on a loaded machine
    // that can outlast one etcdctl attempt.
    common::wait_until(
        Duration::from_secs(30),
        "a write succeeds on the two remaining members",
        || async { etcdctl_try(&rest, &["put", "/c/k", "v2"]).is_ok() },
    )
    .await;
    assert!(!cluster.is_healthy(0));

    cluster.restart_member(0).await;
    let out = etcdctl(
        &cluster.client_url(0),
        &["get", "/c/k", "--print-value-only"],
    );
    assert_eq!(out.trim(), "v2");
}
