//! Command line, environment and TOML file settings resolved into one validated `Config`; knows nothing of what the settings drive.
//!
//! Every setting has one name used three ways: the flag `--server.id`, the env var
//! `OP_SIDECAR_SERVER_ID` and the TOML key `server.id` (`[server] id = ...`). Precedence is
//! flag > env > file > default. clap merges flag and env; the file and defaults are layered
//! here, and every value goes through the same parser whatever its origin, so an error names
//! the setting and the source it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::tls::{ClientFiles, ServerFiles};

/// Exit code for bad configuration (BSD `EX_USAGE`), as linkerd2-proxy does.
pub const EXIT_CONFIG: i32 = 64;

/// etcd cannot hold a lease shorter than ceil(1.5 x election timeout) = 2 s with its defaults;
/// shorter TTLs are silently raised, which would make our local validity deadline a lie.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(
    name = "op-sidecar",
    version = crate::status::LONG_VERSION,
    about = "High-availability sidecar for OP Stack sequencers, backed by etcd"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Run(Args),
    /// Print the effective configuration (after flags, env, file and defaults) as JSON and exit.
    Config(Args),
    /// Operator CLI: see and steer the cluster through any sidecar's JSON-RPC.
    Ctl(crate::ctl::CtlArgs),
}

/// Raw settings as given on the command line or in the environment. Values stay strings here so
/// that file values and flag values share one parser and one error message.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Args {
    /// TOML config file; keys are the flag names (`server.id = "a"` or `[server]` / `id = "a"`).
    #[arg(long = "config", env = "OP_SIDECAR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unique name of this sequencer in the cluster (op-conductor: `--raft.server.id`).
    #[arg(
        long = "server.id",
        alias = "raft.server.id",
        env = "OP_SIDECAR_SERVER_ID"
    )]
    pub server_id: Option<String>,
    /// Local op-node RPC URL (admin_*, optimism_*, opp2p_*).
    #[arg(long = "node.rpc", env = "OP_SIDECAR_NODE_RPC")]
    pub node_rpc: Option<String>,
    /// op-node URL other sidecars use to stop this node when they take over [default: node.rpc].
    #[arg(long = "node.advertise", env = "OP_SIDECAR_NODE_ADVERTISE")]
    pub node_advertise: Option<String>,
    /// Local op-geth RPC URL.
    #[arg(long = "execution.rpc", env = "OP_SIDECAR_EXECUTION_RPC")]
    pub execution_rpc: Option<String>,
    /// Comma-separated etcd client URLs [default: http://127.0.0.1:2379].
    #[arg(long = "etcd.endpoints", env = "OP_SIDECAR_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// Key prefix holding one chain's state [default: /op-sidecar/default].
    #[arg(long = "etcd.prefix", env = "OP_SIDECAR_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Timeout of one etcd request [default: 2s].
    #[arg(long = "etcd.timeout", env = "OP_SIDECAR_ETCD_TIMEOUT")]
    pub etcd_timeout: Option<String>,
    /// How often the leader compacts etcd's history (to the revision of its previous
    /// compaction); 0 turns it off, for an etcd that compacts itself [default: 5s].
    #[arg(
        long = "etcd.compaction-interval",
        env = "OP_SIDECAR_ETCD_COMPACTION_INTERVAL"
    )]
    pub etcd_compaction_interval: Option<String>,
    /// etcd's --quota-backend-bytes, for metrics and /readyz when etcd is older than 3.6 and does
    /// not report it [default: 2147483648, etcd's own default].
    #[arg(long = "etcd.quota-bytes", env = "OP_SIDECAR_ETCD_QUOTA_BYTES")]
    pub etcd_quota_bytes: Option<String>,
    /// CA bundle (PEM) that signed the etcd servers' certificates; required with https:// endpoints.
    #[arg(
        long = "etcd.tls.ca",
        env = "OP_SIDECAR_ETCD_TLS_CA",
        value_name = "FILE"
    )]
    pub etcd_tls_ca: Option<String>,
    /// Client certificate (PEM) for etcd's --client-cert-auth; needs etcd.tls.key.
    #[arg(
        long = "etcd.tls.cert",
        env = "OP_SIDECAR_ETCD_TLS_CERT",
        value_name = "FILE"
    )]
    pub etcd_tls_cert: Option<String>,
    /// Private key (PEM) of etcd.tls.cert.
    #[arg(
        long = "etcd.tls.key",
        env = "OP_SIDECAR_ETCD_TLS_KEY",
        value_name = "FILE"
    )]
    pub etcd_tls_key: Option<String>,
    /// etcd user (RBAC); the password comes from etcd.password-file or OP_SIDECAR_ETCD_PASSWORD.
    #[arg(long = "etcd.username", env = "OP_SIDECAR_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// File holding the etcd user's password (trailing newline ignored); never logged.
    #[arg(
        long = "etcd.password-file",
        env = "OP_SIDECAR_ETCD_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub etcd_password_file: Option<String>,
    /// JSON-RPC listen address [default: 127.0.0.1].
    #[arg(long = "rpc.addr", env = "OP_SIDECAR_RPC_ADDR")]
    pub rpc_addr: Option<String>,
    /// JSON-RPC listen port [default: 8547].
    #[arg(long = "rpc.port", env = "OP_SIDECAR_RPC_PORT")]
    pub rpc_port: Option<String>,
    /// URL other sidecars use to reach this one [default: http://<rpc.addr>:<rpc.port>].
    #[arg(long = "rpc.advertise", env = "OP_SIDECAR_RPC_ADVERTISE")]
    pub rpc_advertise: Option<String>,
    /// Largest accepted JSON-RPC request body in bytes [default: 33554432, a 10 MiB payload as hex JSON].
    #[arg(long = "rpc.max-body", env = "OP_SIDECAR_RPC_MAX_BODY")]
    pub rpc_max_body: Option<String>,
    /// Time limit for answering one JSON-RPC request [default: 10s].
    #[arg(long = "rpc.timeout", env = "OP_SIDECAR_RPC_TIMEOUT")]
    pub rpc_timeout: Option<String>,
    /// Time limit to receive a request's headers, then its whole body; also how long a connection may stay idle [default: 10s].
    #[arg(long = "rpc.read-timeout", env = "OP_SIDECAR_RPC_READ_TIMEOUT")]
    pub rpc_read_timeout: Option<String>,
    /// Most open JSON-RPC connections; past it the connection idle longest is closed [default: 1024].
    #[arg(long = "rpc.max-conns", env = "OP_SIDECAR_RPC_MAX_CONNS")]
    pub rpc_max_conns: Option<String>,
    /// Most open JSON-RPC connections from one IP address (raise it behind a proxy) [default: 128].
    #[arg(long = "rpc.max-conns-per-ip", env = "OP_SIDECAR_RPC_MAX_CONNS_PER_IP")]
    pub rpc_max_conns_per_ip: Option<String>,
    /// Most bytes buffered for request bodies and proxied answers across all connections, besides a reserve for op-node's calls [default: 67108864 or twice rpc.max-body, whichever is larger].
    #[arg(long = "rpc.max-buffered", env = "OP_SIDECAR_RPC_MAX_BUFFERED")]
    pub rpc_max_buffered: Option<String>,
    /// File with the 32-byte hex JWT secret control calls must be signed with; generated (mode 0600) if absent. Unset: no authentication.
    #[arg(
        long = "rpc.jwt-secret",
        env = "OP_SIDECAR_RPC_JWT_SECRET",
        value_name = "FILE"
    )]
    pub rpc_jwt_secret: Option<String>,
    /// Serve JSON-RPC over TLS with this certificate chain (PEM, leaf first); needs rpc.tls.key.
    #[arg(
        long = "rpc.tls.cert",
        env = "OP_SIDECAR_RPC_TLS_CERT",
        value_name = "FILE"
    )]
    pub rpc_tls_cert: Option<String>,
    /// Private key (PEM) of rpc.tls.cert.
    #[arg(
        long = "rpc.tls.key",
        env = "OP_SIDECAR_RPC_TLS_KEY",
        value_name = "FILE"
    )]
    pub rpc_tls_key: Option<String>,
    /// CA bundle (PEM): with it the RPC listener requires a client certificate signed by one of these CAs (mutual TLS).
    #[arg(
        long = "rpc.tls.client-ca",
        env = "OP_SIDECAR_RPC_TLS_CLIENT_CA",
        value_name = "FILE"
    )]
    pub rpc_tls_client_ca: Option<String>,
    /// Require a token for control methods when rpc.jwt-secret is set; false trusts the network (e.g. for op-conductor-ops) [default: true].
    #[arg(long = "rpc.auth-control", env = "OP_SIDECAR_RPC_AUTH_CONTROL", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub rpc_auth_control: Option<String>,
    /// CA bundle (PEM) trusted for https:// URLs of op-node, op-geth and other sidecars, instead of the built-in public roots.
    #[arg(long = "tls.ca", env = "OP_SIDECAR_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<String>,
    /// Client certificate (PEM) presented to https:// servers that require one (peers with rpc.tls.client-ca); needs tls.key.
    #[arg(long = "tls.cert", env = "OP_SIDECAR_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// Private key (PEM) of tls.cert.
    #[arg(long = "tls.key", env = "OP_SIDECAR_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Admin listener (/healthz, /readyz, /metrics) address [default: 127.0.0.1].
    #[arg(long = "admin.addr", env = "OP_SIDECAR_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// Admin listener port; 0 picks a free one [default: 7300].
    #[arg(long = "admin.port", env = "OP_SIDECAR_ADMIN_PORT")]
    pub admin_port: Option<String>,
    /// etcd lease TTL, whole seconds, at least 2s [default: 3s].
    #[arg(long = "lease.ttl", env = "OP_SIDECAR_LEASE_TTL")]
    pub lease_ttl: Option<String>,
    /// How often the local node is polled [default: 1s].
    #[arg(long = "healthcheck.interval", env = "OP_SIDECAR_HEALTHCHECK_INTERVAL")]
    pub health_interval: Option<String>,
    /// Largest allowed wall clock - unsafe_l2.timestamp [default: 5s].
    #[arg(
        long = "healthcheck.unsafe-interval",
        env = "OP_SIDECAR_HEALTHCHECK_UNSAFE_INTERVAL"
    )]
    pub health_unsafe_interval: Option<String>,
    /// Minimum connected p2p peers; 0 disables the check [default: 0].
    #[arg(
        long = "healthcheck.min-peer-count",
        env = "OP_SIDECAR_HEALTHCHECK_MIN_PEER_COUNT"
    )]
    pub health_min_peer_count: Option<String>,
    /// Consecutive failed checks before the node counts as unhealthy [default: 3].
    #[arg(long = "healthcheck.failures", env = "OP_SIDECAR_HEALTHCHECK_FAILURES")]
    pub health_failures: Option<String>,
    /// Consecutive good checks before an unhealthy node counts as healthy again [default: 2].
    #[arg(
        long = "healthcheck.successes",
        env = "OP_SIDECAR_HEALTHCHECK_SUCCESSES"
    )]
    pub health_successes: Option<String>,
    /// How long a new leader waits for its node to reach the recorded head before giving way [default: 10s].
    #[arg(
        long = "handover.catchup-timeout",
        env = "OP_SIDECAR_HANDOVER_CATCHUP_TIMEOUT"
    )]
    pub catchup_timeout: Option<String>,
    /// Start paused (op-conductor's `--paused`): take no automatic action until resumed. A
    /// paused sidecar still takes part in the election, but never starts or stops its node.
    #[arg(long = "paused", env = "OP_SIDECAR_PAUSED", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub paused: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long = "log.format", env = "OP_SIDECAR_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log level or tracing filter (`info`, `debug`, `info,op_sidecar=debug`); `RUST_LOG`, when
    /// set, takes precedence [default: info].
    #[arg(long = "log.level", env = "OP_SIDECAR_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// op-conductor flags with no meaning here (raft, its storage, its own proxy switches):
    /// accepted so a copied command line starts, each reported once with what replaces it.
    #[command(flatten)]
    pub conductor_only: ConductorOnly,
}

/// op-conductor's flags that op-sidecar does not need; see [`ConductorOnly::replaced`].
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConductorOnly {
    #[arg(long = "raft.bootstrap", hide = true, num_args = 0..=1, default_missing_value = "true")]
    raft_bootstrap: Option<String>,
    #[arg(long = "raft.storage.dir", hide = true)]
    raft_storage_dir: Option<String>,
    #[arg(long = "raft.snapshot-interval", hide = true)]
    raft_snapshot_interval: Option<String>,
    #[arg(long = "raft.snapshot-threshold", hide = true)]
    raft_snapshot_threshold: Option<String>,
    #[arg(long = "raft.trailing-logs", hide = true)]
    raft_trailing_logs: Option<String>,
    #[arg(long = "raft.heartbeat-timeout", hide = true)]
    raft_heartbeat_timeout: Option<String>,
    #[arg(long = "raft.lease-timeout", hide = true)]
    raft_lease_timeout: Option<String>,
    #[arg(long = "consensus.addr", hide = true)]
    consensus_addr: Option<String>,
    #[arg(long = "consensus.port", hide = true)]
    consensus_port: Option<String>,
    #[arg(long = "consensus.advertised", hide = true)]
    consensus_advertised: Option<String>,
    #[arg(long = "healthcheck.safe-enabled", hide = true, num_args = 0..=1, default_missing_value = "true")]
    healthcheck_safe_enabled: Option<String>,
    #[arg(long = "healthcheck.safe-interval", hide = true)]
    healthcheck_safe_interval: Option<String>,
    #[arg(long = "rpc.enable-admin", hide = true, num_args = 0..=1, default_missing_value = "true")]
    rpc_enable_admin: Option<String>,
    #[arg(long = "rpc.enable-proxy", hide = true, num_args = 0..=1, default_missing_value = "true")]
    rpc_enable_proxy: Option<String>,
}

impl ConductorOnly {
    /// One line per op-conductor-only flag given: what it was and what replaces it.
    pub fn replaced(&self) -> Vec<String> {
        let state =
            "op-sidecar keeps the cluster state in etcd: use --etcd.endpoints and --etcd.prefix";
        let raft_time = "leadership rests on an etcd lease: use --lease.ttl";
        let table: [(&str, &Option<String>, &str); 14] = [
            ("raft.bootstrap", &self.raft_bootstrap, "no bootstrap node is needed: the first sidecar on an empty store leads, and the membership is created by the first conductor_addServer* call (see README, Membership)"),
            ("raft.storage.dir", &self.raft_storage_dir, state),
            ("raft.snapshot-interval", &self.raft_snapshot_interval, state),
            ("raft.snapshot-threshold", &self.raft_snapshot_threshold, state),
            ("raft.trailing-logs", &self.raft_trailing_logs, state),
            ("raft.heartbeat-timeout", &self.raft_heartbeat_timeout, raft_time),
            ("raft.lease-timeout", &self.raft_lease_timeout, raft_time),
            ("consensus.addr", &self.consensus_addr, state),
            ("consensus.port", &self.consensus_port, state),
            ("consensus.advertised", &self.consensus_advertised, "other sidecars find this one through --rpc.advertise"),
            ("healthcheck.safe-enabled", &self.healthcheck_safe_enabled, "the safe-head lag check is not implemented; unsafe-head age and peers are checked"),
            ("healthcheck.safe-interval", &self.healthcheck_safe_interval, "the safe-head lag check is not implemented; unsafe-head age and peers are checked"),
            ("rpc.enable-admin", &self.rpc_enable_admin, "the admin methods (pause, resume, override, transfer, membership) are always served"),
            ("rpc.enable-proxy", &self.rpc_enable_proxy, "the read proxy for op-batcher and op-proposer is always on"),
        ];
        table
            .iter()
            .filter(|(_, v, _)| v.is_some())
            .map(|(flag, _, instead)| {
                format!("--{flag} is an op-conductor setting with no effect here: {instead}")
            })
            .collect()
    }
}

/// The op-conductor environment variable meaning the same as `setting`, if there is one; read
/// when neither the flag nor its `OP_SIDECAR_*` variable is set, so an op-conductor deployment's
/// environment can be reused.
pub fn conductor_env_name(setting: &str) -> Option<&'static str> {
    Some(match setting {
        "server.id" => "OP_CONDUCTOR_RAFT_SERVER_ID",
        "node.rpc" => "OP_CONDUCTOR_NODE_RPC",
        "execution.rpc" => "OP_CONDUCTOR_EXECUTION_RPC",
        "rpc.addr" => "OP_CONDUCTOR_RPC_ADDR",
        "rpc.port" => "OP_CONDUCTOR_RPC_PORT",
        "healthcheck.interval" => "OP_CONDUCTOR_HEALTHCHECK_INTERVAL",
        "healthcheck.unsafe-interval" => "OP_CONDUCTOR_HEALTHCHECK_UNSAFE_INTERVAL",
        "healthcheck.min-peer-count" => "OP_CONDUCTOR_HEALTHCHECK_MIN_PEER_COUNT",
        "paused" => "OP_CONDUCTOR_PAUSED",
        "log.format" => "OP_CONDUCTOR_LOG_FORMAT",
        "log.level" => "OP_CONDUCTOR_LOG_LEVEL",
        _ => return None,
    })
}

/// TLS to etcd: the CA that signed its servers and, for mutual TLS, our certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// etcd RBAC credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUser {
    pub name: String,
    pub password: Secret,
    /// Where the password came from, for messages (never the password itself).
    pub source: String,
}

/// A value that never reaches a log line, `Debug` output or `op-sidecar config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Env var holding the etcd password when no password file is given.
pub const ETCD_PASSWORD_ENV: &str = "OP_SIDECAR_ETCD_PASSWORD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Health check settings, grouped because health.rs needs exactly these.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub unsafe_interval: Duration,
    pub min_peer_count: u64,
    pub failures: u32,
    pub successes: u32,
}

/// The validated configuration. Constructed only through [`Config::from_args`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server_id: String,
    pub node_rpc: String,
    pub node_advertise: String,
    pub execution_rpc: String,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub etcd_timeout: Duration,
    /// Zero: the sidecar never compacts etcd.
    pub etcd_compaction_interval: Duration,
    pub etcd_quota_bytes: u64,
    pub etcd_tls: Option<EtcdTls>,
    pub etcd_user: Option<EtcdUser>,
    pub rpc_addr: IpAddr,
    pub rpc_port: u16,
    pub rpc_advertise: String,
    pub rpc_max_body: usize,
    pub rpc_timeout: Duration,
    pub rpc_read_timeout: Duration,
    pub rpc_max_conns: usize,
    pub rpc_max_conns_per_ip: usize,
    pub rpc_max_buffered: usize,
    pub rpc_jwt_secret: Option<PathBuf>,
    pub rpc_auth_control: bool,
    /// TLS on the JSON-RPC listener; `None` serves plain HTTP.
    pub rpc_tls: Option<ServerFiles>,
    /// How outbound https:// connections are checked and which certificate they present.
    pub tls: ClientFiles,
    pub admin_addr: IpAddr,
    pub admin_port: u16,
    pub lease_ttl: Duration,
    pub health: HealthConfig,
    pub catchup_timeout: Duration,
    pub paused: bool,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// A setting that could not be used; `Display` is the one line an operator sees.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid {setting} {value:?} (from {origin}): {reason}")]
    Invalid {
        setting: &'static str,
        value: String,
        origin: Origin,
        reason: String,
    },
    #[error("missing required setting {setting} (flag --{setting}, env {env}, or `{setting}` in the config file)")]
    Missing { setting: &'static str, env: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    /// One setting of a pair is given without the other (a certificate without its key).
    #[error("{given} is set but {setting} is not (flag --{setting}, env {env}, or `{setting}` in the config file)")]
    Incomplete {
        setting: &'static str,
        given: &'static str,
        env: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    FlagOrEnv,
    File,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::FlagOrEnv => "flag or env",
            Origin::File => "config file",
            Origin::Default => "default",
        })
    }
}

/// The env var for a setting: `OP_SIDECAR_` + name upper-cased, `.` and `-` as `_`.
pub fn env_name(setting: &str) -> String {
    format!(
        "OP_SIDECAR_{}",
        setting.to_uppercase().replace(['.', '-'], "_")
    )
}

/// Parses `500ms`, `2s`, `1m 30s` (humantime) or a bare integer meaning seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected e.g. 500ms, 2s or a whole number of seconds)"))
}

/// An etcd client URL: http:// or https://, with no credentials in it (they would be logged and
/// etcd-client ignores them).
fn parse_etcd_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "scheme {other} is not supported, use http:// or https://"
            ))
        }
        None => {
            return Err("missing scheme, expected http://host:port or https://host:port".into())
        }
    }
    let Some(auth) = uri.authority() else {
        return Err("missing host".into());
    };
    if auth.as_str().contains('@') {
        return Err(
            "credentials in the URL are not supported: use etcd.username and etcd.password-file"
                .into(),
        );
    }
    if auth.host().is_empty() {
        return Err("missing host".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// A refused endpoint list is echoed in the error: never with a password in it.
fn redact_url_credentials(e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid {
            setting,
            value,
            origin,
            reason,
        } => {
            let value = value
                .split(',')
                .map(|u| match (u.find("://"), u.find('@')) {
                    (Some(i), Some(j)) if j > i => format!("{}<redacted>{}", &u[..i + 3], &u[j..]),
                    _ => u.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            ConfigError::Invalid {
                setting,
                value,
                origin,
                reason,
            }
        }
        other => other,
    }
}

fn readable_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s.trim());
    std::fs::File::open(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    Ok(p)
}

fn etcd_tls_settings(
    r: &Resolver,
    args: &Args,
    endpoints: &[String],
) -> Result<Option<EtcdTls>, ConfigError> {
    let ca = r.optional("etcd.tls.ca", &args.etcd_tls_ca, readable_file)?;
    let cert = r.optional("etcd.tls.cert", &args.etcd_tls_cert, readable_file)?;
    let key = r.optional("etcd.tls.key", &args.etcd_tls_key, readable_file)?;
    let https = endpoints.iter().any(|e| e.starts_with("https://"));
    let invalid = |setting: &'static str, reason: &str| ConfigError::Invalid {
        setting,
        value: String::new(),
        origin: Origin::FlagOrEnv,
        reason: reason.to_string(),
    };
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("etcd.tls.key", "etcd.tls.cert needs its key")),
        (None, Some(_)) => {
            return Err(invalid(
                "etcd.tls.cert",
                "etcd.tls.key needs its certificate",
            ))
        }
    };
    match (https, ca) {
        (false, None) if identity.is_none() => Ok(None),
        (false, _) => Err(invalid(
            "etcd.endpoints",
            "TLS settings are given but the endpoints are http://; use https://",
        )),
        (true, None) => Err(invalid(
            "etcd.tls.ca",
            "https:// endpoints need the CA bundle that signed the etcd servers' certificates",
        )),
        (true, Some(ca)) => Ok(Some(EtcdTls { ca, identity })),
    }
}

/// The origin of a setting that is given (for errors about a pair of settings).
fn origin_of(r: &Resolver, setting: &'static str, cli: &Option<String>) -> Origin {
    r.raw(setting, cli).map_or(Origin::Default, |(_, o)| o)
}

/// A certificate, key or CA file: readable and holding what it should. Checked now so a bad
/// file is one config error at start rather than a failure at the first connection.
fn cert_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s.trim());
    crate::tls::certificates(&p).map_err(|e| e.to_string())?;
    Ok(p)
}

fn key_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s.trim());
    crate::tls::private_key(&p).map_err(|e| e.to_string())?;
    Ok(p)
}

fn ca_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s.trim());
    crate::tls::roots(&p).map_err(|e| e.to_string())?;
    Ok(p)
}

/// A certificate and its key: both or neither.
fn pair(
    r: &Resolver,
    (cert_name, cert_cli): (&'static str, &Option<String>),
    (key_name, key_cli): (&'static str, &Option<String>),
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    let cert = r.optional(cert_name, cert_cli, cert_file)?;
    let key = r.optional(key_name, key_cli, key_file)?;
    let missing = |setting: &'static str, given: &'static str| ConfigError::Incomplete {
        setting,
        given,
        env: env_name(setting),
    };
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(missing(key_name, cert_name)),
        (None, Some(_)) => Err(missing(cert_name, key_name)),
    }
}

fn rpc_tls_settings(r: &Resolver, args: &Args) -> Result<Option<ServerFiles>, ConfigError> {
    let identity = pair(
        r,
        ("rpc.tls.cert", &args.rpc_tls_cert),
        ("rpc.tls.key", &args.rpc_tls_key),
    )?;
    let client_ca = r.optional("rpc.tls.client-ca", &args.rpc_tls_client_ca, ca_file)?;
    let Some((cert, key)) = identity else {
        return match client_ca {
            None => Ok(None),
            Some(_) => Err(ConfigError::Incomplete {
                setting: "rpc.tls.cert",
                given: "rpc.tls.client-ca",
                env: env_name("rpc.tls.cert"),
            }),
        };
    };
    let files = ServerFiles {
        cert,
        key,
        client_ca,
    };
    // The files parse one by one; this also checks that the key belongs to the certificate.
    crate::tls::server_config(&files).map_err(|e| ConfigError::Invalid {
        setting: "rpc.tls.key",
        value: files.key.display().to_string(),
        origin: origin_of(r, "rpc.tls.key", &args.rpc_tls_key),
        reason: e.to_string(),
    })?;
    Ok(Some(files))
}

fn client_tls_settings(r: &Resolver, args: &Args) -> Result<ClientFiles, ConfigError> {
    let ca = r.optional("tls.ca", &args.tls_ca, ca_file)?;
    let identity = pair(r, ("tls.cert", &args.tls_cert), ("tls.key", &args.tls_key))?;
    let files = ClientFiles { ca, identity };
    crate::tls::client_config(&files).map_err(|e| ConfigError::Invalid {
        setting: "tls.key",
        value: files
            .identity
            .as_ref()
            .map(|(_, k)| k.display().to_string())
            .unwrap_or_default(),
        origin: origin_of(r, "tls.key", &args.tls_key),
        reason: e.to_string(),
    })?;
    Ok(files)
}

fn etcd_user_settings(r: &Resolver, args: &Args) -> Result<Option<EtcdUser>, ConfigError> {
    let name = r.optional("etcd.username", &args.etcd_username, |s| {
        let s = s.trim();
        if s.is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(s.to_string())
        }
    })?;
    let from_file = r.optional("etcd.password-file", &args.etcd_password_file, |s| {
        let p = PathBuf::from(s.trim());
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        // Files written with `echo` end with a newline that is not part of the password.
        let pw = text.trim_end_matches(['\n', '\r']).to_string();
        Ok((pw, format!("file {}", p.display())))
    })?;
    let password = from_file.or_else(|| {
        std::env::var(ETCD_PASSWORD_ENV)
            .ok()
            .map(|pw| (pw, format!("env {ETCD_PASSWORD_ENV}")))
    });
    match (name, password) {
        (None, None) => Ok(None),
        (Some(name), Some((pw, source))) => Ok(Some(EtcdUser {
            name,
            password: Secret::new(pw),
            source,
        })),
        (Some(_), None) => Err(ConfigError::Invalid {
            setting: "etcd.password-file",
            value: String::new(),
            origin: Origin::Default,
            reason: format!(
                "etcd.username is set: give the password in a file or in {ETCD_PASSWORD_ENV}"
            ),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            setting: "etcd.username",
            value: String::new(),
            origin: Origin::Default,
            reason: "a password is given (etcd.password-file or env) but no user name".into(),
        }),
    }
}

/// An op-node, op-geth or sidecar URL: http://, or https:// checked against tls.ca (or the
/// built-in roots).
fn parse_http_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "scheme {other} is not supported, use http:// or https://"
            ))
        }
        None => {
            return Err("missing scheme, expected http://host:port or https://host:port".into())
        }
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err("missing host".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Flattens a TOML table into `section.key` names so `[server] id = "a"` and `server.id = "a"` agree.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

fn toml_scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(toml_scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Setting names accepted in the config file: exactly the flag names.
const SETTINGS: &[&str] = &[
    "server.id",
    "node.rpc",
    "node.advertise",
    "execution.rpc",
    "etcd.endpoints",
    "etcd.prefix",
    "etcd.timeout",
    "etcd.compaction-interval",
    "etcd.quota-bytes",
    "etcd.tls.ca",
    "etcd.tls.cert",
    "etcd.tls.key",
    "etcd.username",
    "etcd.password-file",
    "rpc.addr",
    "rpc.port",
    "rpc.advertise",
    "rpc.max-body",
    "rpc.timeout",
    "rpc.read-timeout",
    "rpc.max-conns",
    "rpc.max-conns-per-ip",
    "rpc.max-buffered",
    "rpc.jwt-secret",
    "rpc.auth-control",
    "rpc.tls.cert",
    "rpc.tls.key",
    "rpc.tls.client-ca",
    "tls.ca",
    "tls.cert",
    "tls.key",
    "admin.addr",
    "admin.port",
    "lease.ttl",
    "healthcheck.interval",
    "healthcheck.unsafe-interval",
    "healthcheck.min-peer-count",
    "healthcheck.failures",
    "healthcheck.successes",
    "handover.catchup-timeout",
    "paused",
    "log.format",
    "log.level",
];

struct Resolver {
    file: BTreeMap<String, toml::Value>,
}

impl Resolver {
    fn raw(&self, setting: &'static str, cli: &Option<String>) -> Option<(String, Origin)> {
        if let Some(v) = cli {
            return Some((v.clone(), Origin::FlagOrEnv));
        }
        if let Some(v) = conductor_env_name(setting).and_then(|n| std::env::var(n).ok()) {
            return Some((v, Origin::FlagOrEnv));
        }
        self.file
            .get(setting)
            .map(|v| (toml_scalar(v), Origin::File))
    }

    fn get<T>(
        &self,
        setting: &'static str,
        cli: &Option<String>,
        default: Option<&str>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, origin) = match (self.raw(setting, cli), default) {
            (Some(found), _) => found,
            (None, Some(d)) => (d.to_string(), Origin::Default),
            (None, None) => {
                return Err(ConfigError::Missing {
                    setting,
                    env: env_name(setting),
                })
            }
        };
        parse(&value).map_err(|reason| ConfigError::Invalid {
            setting,
            value,
            origin,
            reason,
        })
    }

    fn optional<T>(
        &self,
        setting: &'static str,
        cli: &Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw(setting, cli) {
            None => Ok(None),
            Some((value, origin)) => {
                parse(&value)
                    .map(Some)
                    .map_err(|reason| ConfigError::Invalid {
                        setting,
                        value,
                        origin,
                        reason,
                    })
            }
        }
    }
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    s.trim().parse::<T>().map_err(|e| e.to_string())
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be greater than zero".into())
    } else {
        Ok(d)
    }
}

impl Config {
    /// Resolves flags/env (already merged by clap), the optional file, and defaults; validates.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            None => BTreeMap::new(),
            Some(path) => load_file(path)?,
        };
        let r = Resolver { file };

        let server_id = r.get("server.id", &args.server_id, None, |s| {
            let s = s.trim();
            if s.is_empty() {
                Err("must not be empty".into())
            } else if s.contains('/') || s.chars().any(char::is_whitespace) {
                Err("must not contain '/' or whitespace (it is part of etcd keys)".into())
            } else {
                Ok(s.to_string())
            }
        })?;
        let node_rpc = r.get("node.rpc", &args.node_rpc, None, parse_http_url)?;
        let node_advertise = r
            .optional("node.advertise", &args.node_advertise, parse_http_url)?
            .unwrap_or_else(|| node_rpc.clone());
        let execution_rpc = r.get("execution.rpc", &args.execution_rpc, None, parse_http_url)?;
        let etcd_endpoints = r
            .get(
                "etcd.endpoints",
                &args.etcd_endpoints,
                Some("http://127.0.0.1:2379"),
                |s| {
                    let list: Vec<String> = s
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(parse_etcd_url)
                        .collect::<Result<_, _>>()?;
                    if list.is_empty() {
                        return Err("at least one endpoint is required".into());
                    }
                    let https = list.iter().filter(|e| e.starts_with("https://")).count();
                    if https != 0 && https != list.len() {
                        return Err("mix of http:// and https:// endpoints; use one scheme".into());
                    }
                    Ok(list)
                },
            )
            .map_err(redact_url_credentials)?;
        let etcd_prefix = r.get(
            "etcd.prefix",
            &args.etcd_prefix,
            Some("/op-sidecar/default"),
            |s| {
                let p = s.trim().trim_end_matches('/');
                if p.is_empty() {
                    Err("must not be empty (it isolates one chain's keys)".into())
                } else {
                    Ok(p.to_string())
                }
            },
        )?;
        let etcd_timeout = r.get("etcd.timeout", &args.etcd_timeout, Some("2s"), |s| {
            parse_duration(s).and_then(positive)
        })?;
        // Compacting to the previous compaction's revision keeps one interval of history for
        // watchers; the backend then holds about two intervals of writes (see the README).
        let etcd_compaction_interval = r.get(
            "etcd.compaction-interval",
            &args.etcd_compaction_interval,
            Some("5s"),
            |s| {
                let d = parse_duration(s)?;
                if !d.is_zero() && d < Duration::from_secs(1) {
                    Err("must be 0 (off) or at least 1s".into())
                } else {
                    Ok(d)
                }
            },
        )?;
        let etcd_quota_bytes = r.get(
            "etcd.quota-bytes",
            &args.etcd_quota_bytes,
            Some("2147483648"),
            |s| {
                let n = parse_num::<u64>(s)?;
                if n == 0 {
                    Err("must be greater than zero".into())
                } else {
                    Ok(n)
                }
            },
        )?;
        let etcd_tls = etcd_tls_settings(&r, args, &etcd_endpoints)?;
        let etcd_user = etcd_user_settings(&r, args)?;
        let rpc_addr = r.get(
            "rpc.addr",
            &args.rpc_addr,
            Some("127.0.0.1"),
            parse_num::<IpAddr>,
        )?;
        let rpc_port = r.get("rpc.port", &args.rpc_port, Some("8547"), parse_num::<u16>)?;
        let rpc_tls = rpc_tls_settings(&r, args)?;
        let tls = client_tls_settings(&r, args)?;
        let scheme = if rpc_tls.is_some() { "https" } else { "http" };
        let rpc_advertise =
            match r.optional("rpc.advertise", &args.rpc_advertise, parse_http_url)? {
                Some(url) => url,
                None if rpc_addr.is_unspecified() => {
                    return Err(ConfigError::Invalid {
                        setting: "rpc.advertise",
                        value: String::new(),
                        origin: Origin::Default,
                        reason: format!(
                            "rpc.addr is {rpc_addr}; set the URL other sidecars should use"
                        ),
                    })
                }
                None if rpc_addr.is_ipv6() => format!("{scheme}://[{rpc_addr}]:{rpc_port}"),
                None => format!("{scheme}://{rpc_addr}:{rpc_port}"),
            };
        let rpc_max_body = r.get("rpc.max-body", &args.rpc_max_body, Some("33554432"), |s| {
            let n = parse_num::<usize>(s)?;
            if n < 1024 {
                Err("must be at least 1024 bytes".into())
            } else {
                Ok(n)
            }
        })?;
        let rpc_timeout = r.get("rpc.timeout", &args.rpc_timeout, Some("10s"), |s| {
            parse_duration(s).and_then(positive)
        })?;
        let rpc_read_timeout = r.get(
            "rpc.read-timeout",
            &args.rpc_read_timeout,
            Some("10s"),
            |s| parse_duration(s).and_then(positive),
        )?;
        let at_least_one_conn = |s: &str| {
            let n = parse_num::<usize>(s)?;
            if n == 0 {
                Err("must be at least 1".into())
            } else {
                Ok(n)
            }
        };
        let rpc_max_conns = r.get(
            "rpc.max-conns",
            &args.rpc_max_conns,
            Some("1024"),
            at_least_one_conn,
        )?;
        let rpc_max_conns_per_ip = r.get(
            "rpc.max-conns-per-ip",
            &args.rpc_max_conns_per_ip,
            Some("128"),
            at_least_one_conn,
        )?;
        // Room for two largest bodies at once besides the reserve (`rpc::limits`), so a raised
        // rpc.max-body does not leave room for only one.
        let default_buffered = rpc_max_body
            .saturating_mul(2)
            .clamp(64 << 20, u32::MAX as usize)
            .to_string();
        let rpc_max_buffered = r.get(
            "rpc.max-buffered",
            &args.rpc_max_buffered,
            Some(&default_buffered),
            |s| {
                let n = parse_num::<usize>(s)?;
                if n < rpc_max_body {
                    Err(format!(
                        "must be at least rpc.max-body ({rpc_max_body}), or a largest request could never be read"
                    ))
                } else if u32::try_from(n).is_err() {
                    Err(format!("must be at most {}", u32::MAX))
                } else {
                    Ok(n)
                }
            },
        )?;
        let rpc_jwt_secret = r.optional("rpc.jwt-secret", &args.rpc_jwt_secret, |s| {
            let p = PathBuf::from(s.trim());
            // A missing file is generated at start; a missing directory is a mistake.
            match p.parent() {
                Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
                    Err(format!("directory {} does not exist", d.display()))
                }
                _ => Ok(p),
            }
        })?;
        let rpc_auth_control = r.get(
            "rpc.auth-control",
            &args.rpc_auth_control,
            Some("true"),
            parse_bool,
        )?;
        let admin_addr = r.get(
            "admin.addr",
            &args.admin_addr,
            Some("127.0.0.1"),
            parse_num::<IpAddr>,
        )?;
        let admin_port = r.get(
            "admin.port",
            &args.admin_port,
            Some("7300"),
            parse_num::<u16>,
        )?;
        let lease_ttl = r.get("lease.ttl", &args.lease_ttl, Some("3s"), |s| {
            let d = parse_duration(s)?;
            if d < MIN_LEASE_TTL {
                Err(format!(
                    "must be at least {} (etcd silently raises shorter TTLs)",
                    humantime::format_duration(MIN_LEASE_TTL)
                ))
            } else if d.subsec_nanos() != 0 {
                Err("must be whole seconds (etcd leases have 1 s granularity)".into())
            } else {
                Ok(d)
            }
        })?;
        let interval = r.get(
            "healthcheck.interval",
            &args.health_interval,
            Some("1s"),
            |s| parse_duration(s).and_then(positive),
        )?;
        let unsafe_interval = r.get(
            "healthcheck.unsafe-interval",
            &args.health_unsafe_interval,
            Some("5s"),
            |s| {
                let d = parse_duration(s).and_then(positive)?;
                if d < Duration::from_secs(1) {
                    Err("must be at least 1s (block timestamps have 1 s resolution)".into())
                } else {
                    Ok(d)
                }
            },
        )?;
        let min_peer_count = r.get(
            "healthcheck.min-peer-count",
            &args.health_min_peer_count,
            Some("0"),
            parse_num::<u64>,
        )?;
        let at_least_one = |s: &str| {
            let n = parse_num::<u32>(s)?;
            if n == 0 {
                Err("must be at least 1".into())
            } else {
                Ok(n)
            }
        };
        let failures = r.get(
            "healthcheck.failures",
            &args.health_failures,
            Some("3"),
            at_least_one,
        )?;
        let successes = r.get(
            "healthcheck.successes",
            &args.health_successes,
            Some("2"),
            at_least_one,
        )?;
        let catchup_timeout = r.get(
            "handover.catchup-timeout",
            &args.catchup_timeout,
            Some("10s"),
            |s| parse_duration(s).and_then(positive),
        )?;
        let paused = r.get("paused", &args.paused, Some("false"), parse_bool)?;
        let log_format = r.get("log.format", &args.log_format, Some("text"), |s| {
            match s.trim() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            }
        })?;

        let log_level = r.get("log.level", &args.log_level, Some("info"), |s| {
            let s = s.trim();
            tracing_subscriber::EnvFilter::try_new(s)
                .map(|_| s.to_string())
                .map_err(|e| format!("not a level or tracing filter: {e}"))
        })?;

        if interval >= lease_ttl {
            return Err(ConfigError::Invalid {
                setting: "healthcheck.interval",
                value: humantime::format_duration(interval).to_string(),
                origin: Origin::FlagOrEnv,
                reason: format!(
                    "must be shorter than lease.ttl ({}) so a failing leader notices in time",
                    humantime::format_duration(lease_ttl)
                ),
            });
        }

        Ok(Config {
            server_id,
            node_rpc,
            node_advertise,
            execution_rpc,
            etcd_endpoints,
            etcd_prefix,
            etcd_timeout,
            etcd_compaction_interval,
            etcd_quota_bytes,
            etcd_tls,
            etcd_user,
            rpc_addr,
            rpc_port,
            rpc_advertise,
            rpc_max_body,
            rpc_timeout,
            rpc_read_timeout,
            rpc_max_conns,
            rpc_max_conns_per_ip,
            rpc_max_buffered,
            rpc_jwt_secret,
            rpc_auth_control,
            rpc_tls,
            tls,
            admin_addr,
            admin_port,
            lease_ttl,
            health: HealthConfig {
                interval,
                unsafe_interval,
                min_peer_count,
                failures,
                successes,
            },
            catchup_timeout,
            paused,
            log_format,
            log_level,
        })
    }

    /// The effective configuration keyed by setting name, for `op-sidecar config` and the startup log.
    pub fn to_json(&self) -> serde_json::Value {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        // Two parts: one json! of every setting exceeds the macro's recursion limit.
        let etcd = json!({
            "etcd.endpoints": self.etcd_endpoints,
            "etcd.prefix": self.etcd_prefix,
            "etcd.timeout": d(self.etcd_timeout),
            "etcd.compaction-interval": d(self.etcd_compaction_interval),
            "etcd.quota-bytes": self.etcd_quota_bytes,
            "etcd.tls.ca": self.etcd_tls.as_ref().map(|t| t.ca.display().to_string()),
            "etcd.tls.cert": self.etcd_tls.as_ref().and_then(|t| t.identity.as_ref()).map(|(c, _)| c.display().to_string()),
            "etcd.tls.key": self.etcd_tls.as_ref().and_then(|t| t.identity.as_ref()).map(|(_, k)| k.display().to_string()),
            "etcd.username": self.etcd_user.as_ref().map(|u| u.name.clone()),
            // Only where the password comes from, never the password.
            "etcd.password": self.etcd_user.as_ref().map(|u| format!("<redacted> (from {})", u.source)),
        });
        let mut all = json!({
            "server.id": self.server_id,
            "node.rpc": self.node_rpc,
            "node.advertise": self.node_advertise,
            "execution.rpc": self.execution_rpc,
            "rpc.addr": self.rpc_addr.to_string(),
            "rpc.port": self.rpc_port,
            "rpc.advertise": self.rpc_advertise,
            "rpc.max-body": self.rpc_max_body,
            "rpc.timeout": d(self.rpc_timeout),
            "rpc.read-timeout": d(self.rpc_read_timeout),
            "rpc.max-conns": self.rpc_max_conns,
            "rpc.max-conns-per-ip": self.rpc_max_conns_per_ip,
            "rpc.max-buffered": self.rpc_max_buffered,
            "rpc.jwt-secret": self.rpc_jwt_secret.as_ref().map(|p| p.display().to_string()),
            "rpc.auth-control": self.rpc_auth_control,
            "rpc.tls.cert": self.rpc_tls.as_ref().map(|t| t.cert.display().to_string()),
            "rpc.tls.key": self.rpc_tls.as_ref().map(|t| t.key.display().to_string()),
            "rpc.tls.client-ca": self.rpc_tls.as_ref().and_then(|t| t.client_ca.as_ref()).map(|p| p.display().to_string()),
            "tls.ca": self.tls.ca.as_ref().map(|p| p.display().to_string()),
            "tls.cert": self.tls.identity.as_ref().map(|(c, _)| c.display().to_string()),
            "tls.key": self.tls.identity.as_ref().map(|(_, k)| k.display().to_string()),
            "admin.addr": self.admin_addr.to_string(),
            "admin.port": self.admin_port,
            "lease.ttl": d(self.lease_ttl),
            "healthcheck.interval": d(self.health.interval),
            "healthcheck.unsafe-interval": d(self.health.unsafe_interval),
            "healthcheck.min-peer-count": self.health.min_peer_count,
            "healthcheck.failures": self.health.failures,
            "healthcheck.successes": self.health.successes,
            "handover.catchup-timeout": d(self.catchup_timeout),
            "paused": self.paused,
            "log.format": match self.log_format { LogFormat::Text => "text", LogFormat::Json => "json" },
            "log.level": self.log_level,
        });
        if let (Some(all), serde_json::Value::Object(etcd)) = (all.as_object_mut(), etcd) {
            all.extend(etcd);
        }
        all
    }
}

fn load_file(path: &PathBuf) -> Result<BTreeMap<String, toml::Value>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: shown.clone(),
            reason: e.message().to_string(),
        })?;
    let mut flat = BTreeMap::new();
    flatten("", &table, &mut flat);
    if let Some(unknown) = flat.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
        return Err(ConfigError::File {
            path: shown,
            reason: format!("unknown setting {unknown:?}"),
        });
    }
    Ok(flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Config, ConfigError> {
        let mut full = vec!["op-sidecar", "run"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).expect("clap parse");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        Config::from_args(&args)
    }

    const BASE: &[&str] = &[
        "--server.id",
        "a",
        "--node.rpc",
        "http://127.0.0.1:9545",
        "--execution.rpc",
        "http://127.0.0.1:8545",
    ];

    fn with(extra: &[&str]) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = BASE.to_vec();
        for e in extra {
            v.push(Box::leak(e.to_string().into_boxed_str()));
        }
        v
    }

    #[test]
    fn defaults_apply() {
        let c = parse(BASE).expect("valid");
        assert_eq!(c.rpc_port, 8547);
        assert_eq!(c.lease_ttl, Duration::from_secs(3));
        assert_eq!(c.rpc_advertise, "http://127.0.0.1:8547");
        assert_eq!(c.node_advertise, "http://127.0.0.1:9545");
        assert_eq!(c.health.min_peer_count, 0);
        assert!(!c.paused);
        assert_eq!(c.etcd_compaction_interval, Duration::from_secs(5));
        // A 10 MiB payload is ~21 MB as hex JSON.
        assert!(c.rpc_max_body >= 2 * 10 * 1024 * 1024 + 1024 * 1024);
        assert_eq!(c.rpc_read_timeout, Duration::from_secs(10));
        assert_eq!(c.rpc_max_conns, 1024);
        assert_eq!(c.rpc_max_conns_per_ip, 128);
        // Two largest bodies at once in the general pool (commits also have their reserve).
        assert_eq!(c.rpc_max_buffered, 64 * 1024 * 1024);
        assert!(c.rpc_max_buffered >= 2 * c.rpc_max_body);
    }

    #[test]
    fn compaction_interval_can_be_off_but_not_tiny() {
        let c = parse(&with(&["--etcd.compaction-interval", "0"])).expect("valid");
        assert!(c.etcd_compaction_interval.is_zero());
        let c = parse(&with(&["--etcd.compaction-interval", "5m"])).expect("valid");
        assert_eq!(c.etcd_compaction_interval, Duration::from_secs(300));
        let e = parse(&with(&["--etcd.compaction-interval", "100ms"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("etcd.compaction-interval"), "{e}");
    }

    #[test]
    fn rpc_limits_are_validated() {
        let c = parse(&with(&[
            "--rpc.read-timeout",
            "3s",
            "--rpc.max-conns",
            "10",
            "--rpc.max-conns-per-ip",
            "5",
            "--rpc.max-body",
            "2048",
            "--rpc.max-buffered",
            "4096",
        ]))
        .expect("valid");
        assert_eq!(c.rpc_read_timeout, Duration::from_secs(3));
        assert_eq!((c.rpc_max_conns, c.rpc_max_conns_per_ip), (10, 5));
        assert_eq!(c.rpc_max_buffered, 4096);
        let c = parse(&with(&["--rpc.max-body", "50000000"])).expect("valid");
        assert_eq!(c.rpc_max_buffered, 100_000_000);
        let e = parse(&with(&["--rpc.max-buffered", "1000"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rpc.max-buffered") && e.contains("rpc.max-body"),
            "{e}"
        );
        let e = parse(&with(&["--rpc.max-conns", "0"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rpc.max-conns"), "{e}");
        let e = parse(&with(&["--rpc.read-timeout", "0s"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rpc.read-timeout"), "{e}");
    }

    #[test]
    fn durations_accept_humantime_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("banana").is_err());
        let c = parse(&with(&[
            "--lease.ttl",
            "4",
            "--healthcheck.interval",
            "250ms",
        ]))
        .expect("valid");
        assert_eq!(c.lease_ttl, Duration::from_secs(4));
        assert_eq!(c.health.interval, Duration::from_millis(250));
    }

    #[test]
    fn errors_name_the_setting() {
        let e = parse(&with(&["--lease.ttl", "banana"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid lease.ttl \"banana\""), "{e}");
        let e = parse(&with(&["--lease.ttl", "1s"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lease.ttl") && e.contains("at least 2s"), "{e}");
        let e = parse(&with(&["--lease.ttl", "2500ms"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole seconds"), "{e}");
        let e = parse(&[
            "--server.id",
            "a",
            "--node.rpc",
            "localhost:9545",
            "--execution.rpc",
            "http://b:2",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("node.rpc"), "{e}");
        let e = parse(&["--node.rpc", "http://a:1", "--execution.rpc", "http://b:2"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.id") && e.contains("OP_SIDECAR_SERVER_ID"),
            "{e}"
        );
        let e = parse(&with(&["--rpc.addr", "0.0.0.0"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rpc.advertise"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn env_names_follow_the_flag() {
        assert_eq!(
            env_name("healthcheck.min-peer-count"),
            "OP_SIDECAR_HEALTHCHECK_MIN_PEER_COUNT"
        );
        assert_eq!(env_name("server.id"), "OP_SIDECAR_SERVER_ID");
    }

    #[test]
    fn file_is_below_flags_and_above_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "lease.ttl = \"5s\"\n[server]\nid = \"from-file\"\n[node]\nrpc = \"http://10.0.0.1:9545\"\n[execution]\nrpc = \"http://10.0.0.1:8545\"\n[healthcheck]\nmin-peer-count = 2\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf8");
        let c = parse(&["--config", p]).expect("valid");
        assert_eq!(c.server_id, "from-file");
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.health.min_peer_count, 2);
        let c = parse(&["--config", p, "--server.id", "from-flag"]).expect("valid");
        assert_eq!(c.server_id, "from-flag");
    }

    #[test]
    fn file_errors_are_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[lease]\nttl = \"forever\"\n").expect("write");
        let e = parse(&with(&["--config", path.to_str().expect("utf8")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lease.ttl") && e.contains("config file"), "{e}");
        std::fs::write(&path, "[lease]\nttll = 3\n").expect("write");
        let e = parse(&with(&["--config", path.to_str().expect("utf8")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown setting \"lease.ttll\""), "{e}");
        std::fs::write(&path, "not toml [").expect("write");
        let e = parse(&with(&["--config", path.to_str().expect("utf8")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config file"), "{e}");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sidecar/op-sidecar.toml");
        let c = parse(&["--config", path]).expect("sidecar/op-sidecar.toml must stay valid");
        assert_eq!(c.server_id, "sequencer-a");
        assert_eq!(c.etcd_endpoints.len(), 3);
        assert_eq!(c.health.min_peer_count, 2);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn paused_flag_forms() {
        assert!(parse(&with(&["--paused"])).expect("valid").paused);
        assert!(!parse(&with(&["--paused=false"])).expect("valid").paused);
    }

    #[test]
    fn etcd_security_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").expect("write");
        let pw = pw.display().to_string();
        let with = |extra: &[&str]| {
            let mut v = BASE.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        let c = with(&["--etcd.username", "u", "--etcd.password-file", &pw]).expect("valid");
        let user = c.etcd_user.clone().expect("user");
        assert_eq!(user.password.expose(), "s3cret");
        let shown = format!("{} {:?}", c.to_json(), c);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");

        let e = with(&["--etcd.username", "u"]).unwrap_err().to_string();
        assert!(e.contains("password"), "{e}");
        let e = with(&["--etcd.endpoints", "http://u:pw@127.0.0.1:2379"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("etcd.username"), "{e}");
        assert!(!e.contains("u:pw"), "{e}");
        let e = with(&["--etcd.endpoints", "https://127.0.0.1:2379"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("etcd.tls.ca"), "{e}");
        let e = with(&["--etcd.tls.ca", &pw]).unwrap_err().to_string();
        assert!(e.contains("https://"), "{e}");
        let c = with(&[
            "--etcd.endpoints",
            "https://127.0.0.1:2379",
            "--etcd.tls.ca",
            &pw,
        ])
        .expect("valid");
        assert!(c.etcd_tls.is_some());
    }

    #[test]
    fn https_urls_are_accepted_and_pairs_are_checked() {
        let c = parse(&[
            "--server.id",
            "a",
            "--node.rpc",
            "https://node.internal:9545",
            "--execution.rpc",
            "https://geth.internal:8545",
            "--rpc.advertise",
            "https://a.internal:8547",
        ])
        .expect("https:// URLs are valid");
        assert_eq!(c.node_advertise, "https://node.internal:9545");
        assert_eq!(c.tls, ClientFiles::default());
        assert!(c.rpc_tls.is_none());
        let e = parse(&[
            "--server.id",
            "a",
            "--node.rpc",
            "ftp://a:1",
            "--execution.rpc",
            "http://b:2",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("node.rpc") && e.contains("https://"), "{e}");
        let e = parse(&with(&["--tls.key", "/no/such.key"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key") && e.contains("cannot read"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").expect("write");
        let junk = junk.display().to_string();
        let e = parse(&with(&["--tls.ca", &junk])).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid tls.ca") && e.contains("no certificate"),
            "{e}"
        );
        let e = parse(&with(&["--rpc.tls.client-ca", &junk]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rpc.tls.client-ca"), "{e}");
    }

    #[test]
    fn jwt_settings() {
        let mut v = BASE.to_vec();
        v.extend_from_slice(&["--rpc.jwt-secret", "/tmp/x.hex"]);
        let c = parse(&v).expect("valid");
        assert!(c.rpc_auth_control);
        assert_eq!(c.rpc_jwt_secret, Some(PathBuf::from("/tmp/x.hex")));
        v.extend_from_slice(&["--rpc.auth-control=false"]);
        assert!(!parse(&v).expect("valid").rpc_auth_control);
        let mut v = BASE.to_vec();
        v.extend_from_slice(&["--rpc.jwt-secret", "/no/such/dir/x.hex"]);
        assert!(parse(&v).is_err());
    }
}
