//! op-sidecar: a high-availability sidecar for OP Stack sequencers, backed by etcd.
//!
//! - [`config`]: flags, env and TOML resolved into a validated [`config::Config`].
//! - [`election`]: etcd lease with a local validity deadline; the leader key by fenced Txns.
//! - [`state`]: the etcd key layout and records; [`cluster`]: one-round-trip reads of them.
//! - [`sequencer`]: typed op-node / op-geth client.
//! - [`health`]: polling and a pure, hysteresis-filtered verdict.
//! - [`app`]: wiring and the shutdown order; [`control`]: the control loop (the only caller of
//!   start/stop); [`role`]: its decisions as pure functions; [`term`]: the lease-deadline bound
//!   on every await made while holding or acquiring the lease; [`status`]: what it publishes.
//! - [`commit`]: fenced block commits (`conductor_commitUnsafePayload`); [`payload`]: the
//!   stored form of a block (scanner, binary packing, chunks).
//! - [`transfer`]: operator-requested leadership transfer.
//! - [`maintenance`]: etcd history compaction (leader) and etcd size/quota/alarm reporting.
//! - [`rpc`]: the JSON-RPC endpoint; [`admin`]: /healthz, /readyz, /metrics; [`metrics`].
//! - [`tls`]: rustls configurations for the RPC listener and outbound https:// from PEM files.
//! - [`ctl`]: `op-sidecar ctl`, the operator CLI (a JSON-RPC client of any sidecar).

pub mod admin;
pub mod app;
pub mod cluster;
pub mod commit;
pub mod config;
pub mod control;
pub mod ctl;
pub mod election;
pub mod health;
pub mod maintenance;
pub mod metrics;
pub mod payload;
pub mod role;
pub mod rpc;
pub mod sequencer;
pub mod state;
pub mod status;
pub mod term;
pub mod tls;
pub mod transfer;
