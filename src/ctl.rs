//! `op-sidecar ctl`: the operator CLI. Talks to sidecars over JSON-RPC only (never to etcd or a
//! node), prints a table or JSON, and maps outcomes to exit codes scripts can rely on.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::rpc::auth::JwtSecret;
use bytes::Bytes;
use clap::Subcommand;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// The operation ran and succeeded.
pub const EXIT_OK: u8 = 0;
/// The sidecar answered and refused or failed the operation.
pub const EXIT_FAILED: u8 = 1;
/// Bad command line or an unusable `--jwt-secret`.
pub const EXIT_USAGE: u8 = 2;
/// The sidecar named by `--rpc` (or the member the command needs) could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// JSON-RPC URL of any sidecar of the cluster.
    #[arg(
        long = "rpc",
        env = "OP_SIDECAR_CTL_RPC",
        default_value = "http://127.0.0.1:8547",
        global = true
    )]
    pub rpc: String,
    /// File with the 32-byte hex JWT secret (as `--rpc.jwt-secret` on the sidecars); every call
    /// then carries `Authorization: Bearer <HS256 token>`. A missing file is an error.
    #[arg(
        long = "jwt-secret",
        env = "OP_SIDECAR_CTL_JWT_SECRET",
        value_name = "FILE"
    )]
    pub jwt_secret: Option<PathBuf>,
    /// CA bundle (PEM) trusted for https:// sidecars, instead of the built-in public roots
    /// (as the sidecars' --tls.ca).
    #[arg(
        long = "tls.ca",
        env = "OP_SIDECAR_CTL_TLS_CA",
        value_name = "FILE",
        global = true
    )]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for sidecars that require one (--rpc.tls.client-ca); needs --tls.key.
    #[arg(
        long = "tls.cert",
        env = "OP_SIDECAR_CTL_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        global = true
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls.cert.
    #[arg(
        long = "tls.key",
        env = "OP_SIDECAR_CTL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        global = true
    )]
    pub tls_key: Option<PathBuf>,
    /// Print JSON on stdout instead of a table or a sentence.
    #[arg(long = "json", env = "OP_SIDECAR_CTL_JSON", global = true)]
    pub json: bool,
    /// Time limit for each call (transfers use --transfer-timeout).
    #[arg(long = "timeout", env = "OP_SIDECAR_CTL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Time limit for a transfer: the sidecar answers once the new leader produces.
    #[arg(long = "transfer-timeout", env = "OP_SIDECAR_CTL_TRANSFER_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub transfer_timeout: Duration,
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// A table of every member: leader, voter, health, pause, unsafe head and lag.
    Status,
    /// Hand leadership to ID (must be healthy and caught up), or to the best candidate.
    Transfer { id: Option<String> },
    /// Pause a sidecar (no automatic action; a paused leader keeps leading).
    Pause(Target),
    /// Resume a paused sidecar.
    Resume(Target),
    /// Stop (freeze leadership) or start the election, cluster-wide.
    Election {
        #[arg(value_enum)]
        action: ElectionAction,
    },
    /// Turn conductor_overrideLeader on or off on member ID (on = its commits are NOT fenced).
    Override {
        #[arg(value_enum)]
        state: OnOff,
        id: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Member id; default: the sidecar named by --rpc.
    #[arg(conflicts_with = "all")]
    pub id: Option<String>,
    /// Every member of the cluster.
    #[arg(long = "all")]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ElectionAction {
    Stop,
    Start,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: {method} failed: {message} (code {code})")]
    Rpc {
        url: String,
        method: String,
        code: i64,
        message: String,
    },
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Unreachable { .. } => EXIT_UNREACHABLE,
            CtlError::Rpc { .. } | CtlError::Failed(_) => EXIT_FAILED,
        }
    }

    fn is_method_not_found(&self) -> bool {
        matches!(self, CtlError::Rpc { code: -32601, .. })
    }
}

// === JWT ===

/// Reads a secret file as the sidecars do (`--rpc.jwt-secret`): 32 bytes, hex, optional `0x`.
/// Never generates one: a fresh secret would only make every call fail.
pub fn read_secret(path: &std::path::Path) -> Result<JwtSecret, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::Usage(format!("--jwt-secret {}: {e}", path.display())))?;
    JwtSecret::from_hex(&text).map_err(|e| {
        CtlError::Usage(format!(
            "--jwt-secret {}: {e}, expected 32 hex-encoded bytes",
            path.display()
        ))
    })
}

// === client ===

struct Rpc {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    secret: Option<JwtSecret>,
    timeout: Duration,
}

impl Rpc {
    async fn call(&self, url: &str, method: &str, params: Value) -> Result<Value, CtlError> {
        self.call_within(url, method, params, self.timeout).await
    }

    async fn call_within(
        &self,
        url: &str,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, CtlError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut req = Request::post(url).header(header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            req = req.header(
                header::AUTHORIZATION,
                format!("Bearer {}", secret.token(None)),
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| CtlError::Usage(format!("bad URL {url}: {e}")))?;
        let unreachable = |reason: String| CtlError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let answer = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| unreachable(source_chain(&e)))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, CtlError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(limit, answer)
            .await
            .map_err(|_| unreachable(format!("no answer within {limit:?}")))??;
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                return Err(CtlError::Failed(format!(
                    "{url}: {method}: HTTP {status}: {}",
                    text.trim()
                )));
            }
        };
        if let Some(err) = v.get("error") {
            return Err(CtlError::Rpc {
                url: url.to_string(),
                method: method.to_string(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        if !status.is_success() {
            return Err(CtlError::Failed(format!("{url}: {method}: HTTP {status}")));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A member's advertised address as a URL (configured membership may omit the scheme).
fn member_url(addr: &str, like: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        // The scheme of the `--rpc` URL: a cluster serving TLS serves it on every member.
        let scheme = if like.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }
}

// === commands ===

/// Runs one ctl command; prints its result and returns the exit code.
pub async fn run(args: CtlArgs) -> u8 {
    let json_out = args.json;
    match execute(args).await {
        Ok(out) => {
            print_output(&out, json_out);
            EXIT_OK
        }
        Err(e) => {
            if json_out {
                println!(
                    "{}",
                    json!({"ok": false, "error": e.to_string(), "exit": e.exit_code()})
                );
            }
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// What a command produced: a JSON value and the text a person reads.
struct Output {
    json: Value,
    text: String,
}

fn print_output(out: &Output, json_out: bool) {
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&out.json).unwrap_or_default()
        );
    } else {
        print!("{}", out.text);
        let _ = std::io::stdout().flush();
    }
}

async fn execute(args: CtlArgs) -> Result<Output, CtlError> {
    let secret = args.jwt_secret.as_deref().map(read_secret).transpose()?;
    let tls = crate::tls::client_config(&crate::tls::ClientFiles {
        ca: args.tls_ca.clone(),
        identity: args.tls_cert.clone().zip(args.tls_key.clone()),
    })
    .map_err(|e| CtlError::Usage(format!("TLS: {e}")))?;
    let rpc = Rpc {
        http: Client::builder(TokioExecutor::new()).build(crate::rpc::client::connector(tls)),
        secret,
        timeout: args.timeout,
    };
    let url = args.rpc.clone();
    match args.cmd {
        CtlCommand::Status => status(&rpc, &url).await,
        CtlCommand::Transfer { id } => {
            transfer(&rpc, &url, id.as_deref(), args.transfer_timeout, args.json).await
        }
        CtlCommand::Pause(t) => pause(&rpc, &url, &t, true).await,
        CtlCommand::Resume(t) => pause(&rpc, &url, &t, false).await,
        CtlCommand::Election { action } => {
            let (method, word) = match action {
                ElectionAction::Stop => ("coordinator_stopElection", "stopped"),
                ElectionAction::Start => ("coordinator_startElection", "started"),
            };
            rpc.call(&url, method, json!([])).await?;
            Ok(Output {
                json: json!({"ok": true, "election_stopped": matches!(action, ElectionAction::Stop)}),
                text: format!("election {word}\n"),
            })
        }
        CtlCommand::Override { state, id } => {
            let on = matches!(state, OnOff::On);
            let target = member_addr(&rpc, &url, &id).await?;
            rpc.call(&target, "conductor_overrideLeader", json!([on]))
                .await?;
            let text = if on {
                format!("leader override ON at {id}: its conductor_leader answers true and its commits are NOT fenced\n")
            } else {
                format!("leader override off at {id}\n")
            };
            Ok(Output {
                json: json!({"ok": true, "id": id, "override": on}),
                text,
            })
        }
    }
}

/// `(id, url, voter)` of every configured (or live) member.
async fn members(rpc: &Rpc, url: &str) -> Result<Vec<(String, String, bool)>, CtlError> {
    let m = rpc
        .call(url, "conductor_clusterMembership", json!([]))
        .await?;
    let servers = m
        .get("servers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(servers
        .iter()
        .filter_map(|s| {
            let id = s.get("id")?.as_str()?.to_string();
            let addr = s.get("addr").and_then(Value::as_str).unwrap_or("");
            let voter = s.get("suffrage").and_then(Value::as_u64).unwrap_or(0) == 0;
            Some((id, member_url(addr, url), voter))
        })
        .collect())
}

async fn member_addr(rpc: &Rpc, url: &str, id: &str) -> Result<String, CtlError> {
    members(rpc, url)
        .await?
        .into_iter()
        .find(|(m, _, _)| m == id)
        .map(|(_, u, _)| u)
        .ok_or_else(|| CtlError::Failed(format!("no member {id} in the cluster")))
}

/// One member's own view: `sidecar_status`, or op-conductor's calls on an older sidecar.
async fn member_status(rpc: &Rpc, url: &str) -> Result<Value, CtlError> {
    match rpc.call(url, "sidecar_status", json!([])).await {
        Err(e) if e.is_method_not_found() => {
            let (healthy, paused, overridden) = tokio::join!(
                rpc.call(url, "conductor_sequencerHealthy", json!([])),
                rpc.call(url, "conductor_paused", json!([])),
                rpc.call(url, "conductor_leaderOverridden", json!([])),
            );
            Ok(json!({
                "healthy": healthy?,
                "paused": paused?,
                "leader_overridden": overridden?,
            }))
        }
        r => r,
    }
}

async fn status(rpc: &Rpc, url: &str) -> Result<Output, CtlError> {
    let (members, leader, stopped) = tokio::join!(
        members(rpc, url),
        rpc.call(url, "conductor_leaderWithID", json!([])),
        rpc.call(url, "coordinator_electionStopped", json!([])),
    );
    let members = members?;
    let leader_id = leader?
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let election_stopped = stopped?.as_bool().unwrap_or(false);
    let views =
        futures_util::future::join_all(members.iter().map(|(_, u, _)| member_status(rpc, u))).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let head_of = |v: &Value| v.pointer("/unsafe_head/number").and_then(Value::as_u64);
    // Lag is measured against the leader's head, or the highest head when there is none.
    let reference = members
        .iter()
        .zip(&views)
        .filter_map(|((id, _, _), v)| {
            let v = v.as_ref().ok()?;
            let n = head_of(v)?;
            Some((leader_id.as_deref() == Some(id.as_str()), n))
        })
        .fold(None::<(bool, u64)>, |acc, (is_leader, n)| match acc {
            Some((true, _)) => acc,
            _ if is_leader => Some((true, n)),
            Some((false, m)) => Some((false, m.max(n))),
            None => Some((false, n)),
        })
        .map(|(_, n)| n);
    let mut rows = Vec::new();
    for ((id, murl, voter), view) in members.iter().zip(views) {
        let is_leader = leader_id.as_deref() == Some(id.as_str());
        let row = match view {
            Ok(v) => {
                let head = head_of(&v);
                let age = v
                    .pointer("/unsafe_head/timestamp")
                    .and_then(Value::as_u64)
                    .map(|t| now.saturating_sub(t));
                json!({
                    "id": id, "rpc": murl, "up": true, "leader": is_leader, "voter": voter,
                    "healthy": v.get("healthy"), "paused": v.get("paused"),
                    "unsafe_head": head, "unsafe_head_age_secs": age,
                    "lag": match (reference, head) { (Some(r), Some(h)) => Some(r.saturating_sub(h)), _ => None },
                    "epoch": v.get("epoch"),
                    "election_stopped": v.get("election_stopped").cloned().unwrap_or(json!(election_stopped)),
                    "override": v.get("leader_overridden"),
                    "role": v.get("role"), "version": v.get("version"),
                })
            }
            Err(e) => json!({
                "id": id, "rpc": murl, "up": false, "leader": is_leader, "voter": voter,
                "error": e.to_string(),
            }),
        };
        rows.push(row);
    }
    let epoch = rows
        .iter()
        .find(|r| r["leader"] == json!(true))
        .and_then(|r| r.get("epoch").cloned())
        .unwrap_or(Value::Null);
    let text = render_table(&rows, leader_id.as_deref(), election_stopped);
    Ok(Output {
        json: json!({
            "leader": leader_id, "epoch": epoch, "election_stopped": election_stopped,
            "members": rows,
        }),
        text,
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_table(rows: &[Value], leader: Option<&str>, election_stopped: bool) -> String {
    let header = [
        "ID", "LEADER", "VOTER", "HEALTHY", "PAUSED", "UNSAFE", "AGE", "LAG", "EPOCH", "ELECTION",
        "OVERRIDE",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let id = cell(&r["id"]);
        if r["up"] != json!(true) {
            let mut line = vec![id, cell(&r["leader"]), cell(&r["voter"]), "DOWN".into()];
            line.resize(header.len(), "-".into());
            table.push(line);
            continue;
        }
        let age = match r["unsafe_head_age_secs"].as_u64() {
            Some(a) => format!("{a}s"),
            None => "-".into(),
        };
        let election = if r["election_stopped"] == json!(true) {
            "stopped"
        } else {
            "running"
        };
        table.push(vec![
            id,
            cell(&r["leader"]),
            cell(&r["voter"]),
            cell(&r["healthy"]),
            cell(&r["paused"]),
            cell(&r["unsafe_head"]),
            age,
            cell(&r["lag"]),
            cell(&r["epoch"]),
            election.into(),
            if r["override"] == json!(true) {
                "ON".into()
            } else {
                "off".into()
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| table.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows.iter().filter(|r| r["up"] != json!(true)) {
        out.push_str(&format!(
            "{} is down: {}\n",
            cell(&r["id"]),
            cell(&r["error"])
        ));
    }
    match leader {
        Some(l) => out.push_str(&format!("leader: {l}")),
        None => out.push_str("leader: NONE"),
    }
    if election_stopped {
        out.push_str("  (election stopped: leadership is frozen)");
    }
    out.push('\n');
    out
}

async fn leader(rpc: &Rpc, url: &str) -> Result<Option<(String, String)>, CtlError> {
    let l = rpc.call(url, "conductor_leaderWithID", json!([])).await?;
    let id = l.get("id").and_then(Value::as_str).unwrap_or("");
    if id.is_empty() || id.starts_with("N/A") {
        return Ok(None);
    }
    let addr = l.get("addr").and_then(Value::as_str).unwrap_or("");
    Ok(Some((id.to_string(), member_url(addr, url))))
}

async fn transfer(
    rpc: &Rpc,
    url: &str,
    id: Option<&str>,
    limit: Duration,
    json_out: bool,
) -> Result<Output, CtlError> {
    let before = leader(rpc, url).await?;
    let from = before
        .as_ref()
        .map_or("none".to_string(), |(l, _)| l.clone());
    if let (Some(target), Some((l, _))) = (id, &before) {
        if target == l {
            return Ok(Output {
                json: json!({"ok": true, "leader": l, "changed": false}),
                text: format!("{l} already leads\n"),
            });
        }
    }
    let call = async {
        match id {
            Some(target) => {
                rpc.call_within(
                    url,
                    "conductor_transferLeaderToServer",
                    json!([target, ""]),
                    limit,
                )
                .await
            }
            None => {
                // conductor_transferLeader is a no-op on a follower: ask the leader itself.
                let Some((_, leader_url)) = &before else {
                    return Err(CtlError::Failed(
                        "no leader to transfer from; name a target".into(),
                    ));
                };
                rpc.call_within(leader_url, "conductor_transferLeader", json!([]), limit)
                    .await
            }
        }
    };
    let to = id.unwrap_or("the best candidate").to_string();
    let started = tokio::time::Instant::now();
    // A person watches a line that updates; a log gets a line every 5 s.
    let tty = std::io::stderr().is_terminal() && !json_out;
    let mut tick = tokio::time::interval(if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tokio::pin!(call);
    let result = loop {
        tokio::select! {
            r = &mut call => break r,
            _ = tick.tick() => {
                let secs = started.elapsed().as_secs();
                if tty {
                    eprint!("\rtransferring leadership from {from} to {to}... {secs}s");
                } else {
                    eprintln!("transferring leadership from {from} to {to}... {secs}s");
                }
            }
        }
    };
    if std::io::stderr().is_terminal() && !json_out {
        eprintln!();
    }
    result?;
    let after = leader(rpc, url).await?;
    let new = after.map(|(l, _)| l);
    if let (Some(target), Some(now)) = (id, &new) {
        if target != now {
            return Err(CtlError::Failed(format!(
                "transfer returned but {now} leads, not {target}"
            )));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Output {
        json: json!({"ok": true, "from": before.as_ref().map(|(l, _)| l.clone()), "leader": new, "seconds": secs}),
        text: format!(
            "leadership transferred: {} -> {} in {secs:.1}s\n",
            from,
            new.as_deref().unwrap_or("none")
        ),
    })
}

async fn pause(rpc: &Rpc, url: &str, t: &Target, on: bool) -> Result<Output, CtlError> {
    let method = if on {
        "conductor_pause"
    } else {
        "conductor_resume"
    };
    let word = if on { "paused" } else { "resumed" };
    let targets: Vec<(String, String)> = if t.all {
        members(rpc, url)
            .await?
            .into_iter()
            .map(|(id, u, _)| (id, u))
            .collect()
    } else if let Some(id) = &t.id {
        vec![(id.clone(), member_addr(rpc, url, id).await?)]
    } else {
        vec![(url.to_string(), url.to_string())]
    };
    let results =
        futures_util::future::join_all(targets.iter().map(|(_, u)| rpc.call(u, method, json!([]))))
            .await;
    let mut text = String::new();
    let mut rows = Vec::new();
    let mut worst: Option<CtlError> = None;
    for ((id, _), r) in targets.iter().zip(results) {
        match r {
            Ok(_) => {
                text.push_str(&format!("{id}: {word}\n"));
                rows.push(json!({"id": id, "ok": true}));
            }
            Err(e) => {
                text.push_str(&format!("{id}: FAILED: {e}\n"));
                rows.push(json!({"id": id, "ok": false, "error": e.to_string()}));
                // A refusal outranks an unreachable member: it says the operation itself failed.
                if worst.as_ref().is_none_or(|w| w.exit_code() != EXIT_FAILED) {
                    worst = Some(e);
                }
            }
        }
    }
    match worst {
        None => Ok(Output {
            json: json!({"ok": true, "results": rows}),
            text,
        }),
        Some(e) if targets.len() == 1 => Err(e),
        Some(e) => Err(match e {
            CtlError::Unreachable { url, reason } => CtlError::Unreachable {
                url,
                reason: format!("{reason}; every member:\n{}", text.trim_end()),
            },
            _ => CtlError::Failed(format!("not every member {word}:\n{}", text.trim_end())),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_urls_get_a_scheme() {
        assert_eq!(
            member_url("10.0.0.1:8547", "http://b:1"),
            "http://10.0.0.1:8547"
        );
        assert_eq!(
            member_url("10.0.0.1:8547", "https://b:1"),
            "https://10.0.0.1:8547"
        );
        assert_eq!(member_url("https://a:1", "http://b:1"), "https://a:1");
    }

    #[test]
    fn a_down_member_is_a_row_not_an_error() {
        let rows = vec![
            json!({"id": "a", "up": true, "leader": true, "voter": true, "healthy": true,
                   "paused": false, "unsafe_head": 10, "unsafe_head_age_secs": 1, "lag": 0,
                   "epoch": 5, "election_stopped": false, "override": false}),
            json!({"id": "b", "up": false, "leader": false, "voter": true, "error": "refused"}),
        ];
        let t = render_table(&rows, Some("a"), false);
        assert!(t.contains("DOWN"), "{t}");
        assert!(t.contains("b is down: refused"), "{t}");
        assert!(t.contains("leader: a"), "{t}");
    }
}
