//! A TLS-terminating TCP proxy: https:// in front of a plain-HTTP server (the simulated op-node
//! and op-geth), as a TLS sidecar or load balancer in front of a real node would be. Aborted on
//! Drop.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::certs::TestCerts;

pub struct TlsTerminator {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsTerminator {
    /// Serves the server certificate of `certs` on a free loopback port and forwards every
    /// connection's plain bytes to `upstream` (`http://host:port`).
    pub async fn start(certs: &TestCerts, upstream: &str) -> Self {
        let config = op_sidecar::tls::server_config(&op_sidecar::tls::ServerFiles {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: None,
        })
        .expect("server TLS config from the test certificates");
        let acceptor = TlsAcceptor::from(Arc::clone(&config));
        let upstream = upstream
            .strip_prefix("http://")
            .expect("upstream is http://host:port")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
