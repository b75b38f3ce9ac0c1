//! A TCP proxy the test controls: forward, blackhole (partition), heal, reset.
//!
//! A partition behaves like a dead network, not a refused port: established connections stay
//! open but carry no bytes, and new connections are accepted and then left hanging. On heal
//! (or reset) every such connection is dropped so clients reconnect through the healed path.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    partitioned: bool,
    /// With `partitioned`: close connections at once instead of holding them (a refused port).
    refusing: bool,
    /// Bumped by heal/reset: connections from an older epoch that are blackholed close.
    epoch: u64,
    /// Reset bumps this: every connection older than it closes, healthy or not.
    reset: u64,
    shutdown: bool,
}

pub struct TcpProxy {
    addr: SocketAddr,
    upstream: String,
    state: watch::Sender<State>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream` (`host:port` or URL).
    pub async fn start(upstream: &str) -> Self {
        let upstream = strip_scheme(upstream);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy local addr");
        let (state, _) = watch::channel(State {
            partitioned: false,
            refusing: false,
            epoch: 0,
            reset: 0,
            shutdown: false,
        });
        let task = tokio::spawn(accept_loop(listener, upstream.clone(), state.clone()));
        Self {
            addr,
            upstream,
            state,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Blackhole: no bytes flow on existing connections; new ones are accepted but not forwarded.
    pub fn partition(&self) {
        self.state.send_modify(|s| s.partitioned = true);
    }

    /// Like a dead peer host: every connection is closed at once, new ones right after accept,
    /// so clients fail fast instead of waiting on silence.
    pub fn refuse(&self) {
        self.state.send_modify(|s| {
            s.partitioned = true;
            s.refusing = true;
            s.epoch += 1;
            s.reset += 1;
        });
    }

    /// Forward again; connections held during the partition are dropped so clients reconnect.
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            s.partitioned = false;
            s.refusing = false;
            s.epoch += 1;
        });
    }

    /// Drops every current connection (partitioned or not).
    pub fn reset_all(&self) {
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.reset += 1;
        });
    }

    pub fn is_partitioned(&self) -> bool {
        self.state.borrow().partitioned
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.send_modify(|s| s.shutdown = true);
        self.task.abort();
    }
}

fn strip_scheme(u: &str) -> String {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .unwrap_or(u);
    rest.trim_end_matches('/').to_string()
}

async fn accept_loop(listener: TcpListener, upstream: String, state: watch::Sender<State>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let rx = state.subscribe();
        if rx.borrow().shutdown {
            return;
        }
        tokio::spawn(handle(inbound, upstream.clone(), rx));
    }
}

/// Waits until a heal/reset/shutdown moves past `epoch`.
async fn until_epoch_moves(rx: &mut watch::Receiver<State>, epoch: u64) {
    let _ = rx.wait_for(|s| s.epoch != epoch || s.shutdown).await;
}

async fn handle(mut inbound: TcpStream, upstream: String, mut rx: watch::Receiver<State>) {
    let start = *rx.borrow_and_update();
    if start.refusing {
        return;
    }
    if start.partitioned {
        // Accepted but never forwarded; hold the socket open until the partition ends.
        until_epoch_moves(&mut rx, start.epoch).await;
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let interrupted = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
        s = rx.wait_for(|s| s.partitioned || s.reset != start.reset || s.shutdown) => s.map(|s| *s),
    };
    if let Ok(s) = interrupted {
        if s.partitioned && !s.shutdown && s.reset == start.reset {
            // Blackholed: both sockets stay open and silent until heal or reset.
            until_epoch_moves(&mut rx, s.epoch).await;
        }
    }
    // Dropping the streams closes both sides.
}
