//! Wiring and lifecycle: builds the clients, tasks and servers, starts the control loop (`control`) and owns the shutdown order; makes no leadership decision itself.
//!
//! On shutdown: the control loop stops the sequencer if leading and resigns; then the lease is
//! revoked and HTTP drained, in that order.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_client::WatchOptions;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::commit::Committer;
use crate::config::Config;
use crate::election::{self, Election, EtcdPool};
use crate::health::{self, Health};
use crate::maintenance::{self, EtcdStorage};
use crate::metrics::Metrics;
use crate::rpc::auth::JwtSecret;
use crate::rpc::client::HttpClient;
use crate::sequencer::NodeClient;
use crate::state::Keys;
use crate::status::{Heartbeat, Shared, Status};

/// Binds the configured listeners and runs until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rpc = TcpListener::bind((config.rpc_addr, config.rpc_port))
        .await
        .with_context(|| {
            format!(
                "binding rpc.addr/rpc.port {}:{}",
                config.rpc_addr, config.rpc_port
            )
        })?;
    let admin = TcpListener::bind((config.admin_addr, config.admin_port))
        .await
        .with_context(|| {
            format!(
                "binding admin.addr/admin.port {}:{}",
                config.admin_addr, config.admin_port
            )
        })?;
    run_with_listeners(config, rpc, admin, shutdown).await
}

/// Runs the sidecar on given listeners (tests bind port 0) until `shutdown` completes, then
/// stops the sequencer if leading, records where it stopped, resigns, revokes the lease and
/// drains HTTP, in that order.
pub async fn run_with_listeners(
    config: Config,
    rpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tracing::info!(rpc = %rpc.local_addr()?, rpc_tls = config.rpc_tls.is_some(), rpc_mtls = config.rpc_tls.as_ref().is_some_and(|t| t.client_ca.is_some()), admin = %admin.local_addr()?, id = %config.server_id, prefix = %config.etcd_prefix, "op-sidecar starting");
    let pool = Arc::new(
        EtcdPool::connect(
            &config.etcd_endpoints,
            config.etcd_tls.as_ref(),
            config.etcd_user.as_ref(),
        )
        .await?,
    );
    // A wrong CA, certificate, password or role is fatal at start (exit 64); an etcd that is
    // merely down is retried by the tasks as always.
    if config.etcd_tls.is_some() || config.etcd_user.is_some() {
        match pool
            .check_access(
                &config.etcd_prefix,
                config.etcd_timeout,
                config.etcd_user.as_ref(),
                config
                    .etcd_tls
                    .as_ref()
                    .is_some_and(|t| t.identity.is_some()),
            )
            .await
        {
            Ok(()) => {
                tracing::info!(tls = config.etcd_tls.is_some(), user = ?config.etcd_user.as_ref().map(|u| &u.name), "etcd access checked")
            }
            Err(e) if e.is_config() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "etcd access not checked at start; retrying in the background")
            }
        }
    }
    let secret = match &config.rpc_jwt_secret {
        Some(path) => Some(Arc::new(JwtSecret::load_or_generate(path)?)),
        None => None,
    };
    if secret.is_some() && !config.rpc_auth_control {
        tracing::warn!("rpc.auth-control=false: control methods are served without a token; only a trusted network must reach the RPC port");
    }
    let keys = Keys::new(&config.etcd_prefix);
    let election = Election::new(
        pool.clone(),
        keys.clone(),
        config.server_id.clone(),
        config.etcd_timeout,
    );
    // Built again from the files the config check read: a file replaced since then is still
    // caught before anything is served.
    let client_tls = crate::tls::client_config(&config.tls)?;
    let server_tls = match &config.rpc_tls {
        Some(files) => Some(crate::tls::server_config(files)?),
        None => None,
    };
    let http = match secret {
        Some(s) => HttpClient::new(client_tls).with_peer_auth(s, &config.server_id),
        None => HttpClient::new(client_tls),
    };
    let node = NodeClient::new(
        http.clone(),
        config.node_rpc.clone(),
        config.execution_rpc.clone(),
        Duration::from_secs(2),
    );
    let health_node = NodeClient::new(
        http.clone(),
        config.node_rpc.clone(),
        config.execution_rpc.clone(),
        health::poll_timeout(config.health.interval),
    );

    let (lease_tx, lease_rx) = watch::channel(None);
    let (health_tx, health_rx) = watch::channel(Health::initial());
    let (status_tx, status_rx) = watch::channel(Status::initial(config.paused));
    let (etcd_tx, etcd_rx) = watch::channel(EtcdStorage::initial(config.etcd_quota_bytes));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let metrics = Arc::new(Metrics::new());
    let wake = Arc::new(Notify::new());

    let background = CancellationToken::new();
    let control = CancellationToken::new();
    let drain = CancellationToken::new();

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(health::run(
        health_node,
        config.health.clone(),
        health_tx,
        background.clone(),
    ));
    let control_beat = Arc::new(Heartbeat::default());
    let lease_beat = Arc::new(Heartbeat::default());
    tasks.spawn(election::run_lease(
        pool.clone(),
        config.lease_ttl,
        config.etcd_timeout,
        lease_tx,
        lease_beat.clone(),
        election::Owner {
            beat: control_beat.clone(),
            bound: crate::status::control_bound(&config),
        },
        background.clone(),
    ));
    tasks.spawn(watch_changes(
        election.clone(),
        wake.clone(),
        background.clone(),
    ));

    let shared = Arc::new(Shared {
        config: config.clone(),
        election: election.clone(),
        node: node.clone(),
        http,
        status: status_rx,
        lease: lease_rx.clone(),
        health: health_rx,
        etcd: etcd_rx,
        commands: cmd_tx,
        metrics: metrics.clone(),
        committer: Committer::new(),
        leader_override: AtomicBool::new(false),
        override_cleared: AtomicBool::new(false),
        control_beat,
        lease_beat,
    });
    tasks.spawn(maintenance::run(
        shared.clone(),
        etcd_tx,
        background.clone(),
    ));
    let rpc_task = tokio::spawn(crate::rpc::server::serve(
        rpc,
        shared.clone(),
        server_tls,
        drain.clone().cancelled_owned(),
    ));
    let admin_task = tokio::spawn(crate::admin::serve(
        admin,
        shared.clone(),
        drain.clone().cancelled_owned(),
    ));

    let controller =
        crate::control::Controller::new(shared.clone(), status_tx, cmd_rx, wake, control.clone());
    let control_task = tokio::spawn(controller.run());

    shutdown.await;
    tracing::info!("shutdown requested: stopping the sequencer if leading, then resigning");
    control.cancel();
    if let Err(e) = control_task.await {
        tracing::error!(error = %e, "control loop panicked");
    }
    background.cancel();
    while tasks.join_next().await.is_some() {}
    let lease = *lease_rx.borrow();
    if let Some(lease) = lease {
        match election.revoke(lease.id).await {
            Ok(()) => tracing::info!(lease = format_args!("{:x}", lease.id), "lease revoked"),
            Err(e) => {
                tracing::warn!(error = %e, "could not revoke the lease; it expires by itself")
            }
        }
    }
    drain.cancel();
    let _ = rpc_task.await;
    let _ = admin_task.await;
    tracing::info!("op-sidecar stopped");
    Ok(())
}

/// Wakes the control loop as soon as the leader key or a control key changes. Only a latency
/// optimisation: the loop also ticks, and every decision re-reads etcd.
///
/// The watch covers `control/` through `leader/` (and `head` between them), not the whole
/// prefix: etcd sends every event with its value, and `payload/` carries each block's
/// megabytes. It starts at the current revision, so compaction never cancels it; if etcd
/// cancels it anyway it is opened again.
async fn watch_changes(election: Election, wake: Arc<Notify>, cancel: CancellationToken) {
    let keys = election.keys().clone();
    let (leader_dir, control_dir) = (keys.leader_dir(), keys.control_dir());
    // '0' follows '/': the first key after every `leader/...` key.
    let end = format!("{}0", leader_dir.trim_end_matches('/'));
    loop {
        let (member, client) = election.pool().pick();
        let mut watch_client = client.watch_client();
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = watch_client.watch(control_dir.clone(), Some(WatchOptions::new().with_range(end.clone()))) => r,
        };
        if opened.is_err() {
            election.pool().failed(member);
        }
        if let Ok(mut stream) = opened {
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(resp)) => {
                        let relevant = resp.events().iter().any(|ev| {
                            ev.kv().is_some_and(|kv| {
                                kv.key().starts_with(leader_dir.as_bytes())
                                    || kv.key().starts_with(control_dir.as_bytes())
                            })
                        });
                        if relevant {
                            wake.notify_one();
                        }
                        if resp.canceled() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
