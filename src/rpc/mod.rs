//! The JSON-RPC endpoint: wire types, the error-to-code mapping, the HTTP server and its resource limits, the JWT policy for control methods, the method table, forwarding to the leader, and the outgoing client.

pub mod auth;
pub mod client;
pub mod error;
pub mod limits;
pub mod methods;
pub mod proxy;
pub mod server;
pub mod types;
