//! JSON-RPC error objects and the one exhaustive mapping from every sidecar error to a code; no I/O.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// op-node reports every handler error as -32000 with the Go error text as message.
pub const SERVER_ERROR: i64 = -32000;
/// EIP-1474 "limit exceeded": the server is too busy or an answer too large; retry later or ask less.
pub const LIMIT_EXCEEDED: i64 = -32005;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl PartialEq for ErrorObject {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.data.as_ref().map(|d| d.get()) == other.data.as_ref().map(|d| d.get())
    }
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// Everything a locally served method can fail with. Adding a variant forces a choice of code in
/// `From<&RpcError> for ErrorObject`.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("parse error: {0}")]
    Parse(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the method {0} does not exist/is not available")]
    MethodNotFound(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An operation refused or failed for a reason the caller should read (op-node style -32000).
    #[error("{0}")]
    Server(String),
    /// etcd did not answer; the request changed nothing.
    #[error("etcd unavailable: {0}")]
    Etcd(String),
    /// An error returned by the upstream node or sidecar, passed through unchanged.
    #[error("upstream error {}: {}", .0.code, .0.message)]
    Upstream(ErrorObject),
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A listener limit (buffered bytes, permits, answer size) refused the call; nothing changed.
    #[error("{0}")]
    LimitExceeded(String),
    /// A control method without a valid token while a JWT secret is configured; nothing changed.
    #[error("{0}")]
    Unauthorized(#[from] super::auth::TokenError),
}

impl From<&RpcError> for ErrorObject {
    fn from(e: &RpcError) -> Self {
        match e {
            RpcError::Parse(_) => ErrorObject::new(PARSE_ERROR, e.to_string()),
            RpcError::InvalidRequest(_) => ErrorObject::new(INVALID_REQUEST, e.to_string()),
            RpcError::MethodNotFound(_) => ErrorObject::new(METHOD_NOT_FOUND, e.to_string()),
            RpcError::InvalidParams(_) => ErrorObject::new(INVALID_PARAMS, e.to_string()),
            RpcError::Internal(_) => ErrorObject::new(INTERNAL_ERROR, e.to_string()),
            RpcError::Server(msg) => ErrorObject::new(SERVER_ERROR, msg.clone()),
            RpcError::Etcd(_) => ErrorObject::new(SERVER_ERROR, e.to_string()),
            RpcError::Upstream(obj) => obj.clone(),
            RpcError::Timeout(_) => ErrorObject::new(SERVER_ERROR, e.to_string()),
            RpcError::LimitExceeded(msg) => ErrorObject::new(LIMIT_EXCEEDED, msg.clone()),
            RpcError::Unauthorized(_) => ErrorObject::new(super::auth::UNAUTHORIZED, e.to_string()),
        }
    }
}

impl PartialEq for RpcError {
    fn eq(&self, other: &Self) -> bool {
        ErrorObject::from(self) == ErrorObject::from(other)
    }
}
