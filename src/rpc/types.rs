//! JSON-RPC 2.0 wire types with raw ids, params and results, so forwarded bytes pass through unchanged; no transport here.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::ErrorObject;

/// A request as received. `id` and `params` stay raw: the proxy forwards them byte for byte
/// and a notification (no `id`) is told apart from `id: null`.
#[derive(Debug, Deserialize)]
pub struct Request<'a> {
    #[serde(borrow, default)]
    pub jsonrpc: Option<&'a RawValue>,
    #[serde(borrow)]
    pub method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
}

/// An outgoing request (to op-node, op-geth or another sidecar).
#[derive(Debug, Serialize)]
pub struct OutRequest<'a> {
    pub jsonrpc: &'static str,
    pub method: &'a str,
    pub params: &'a RawValue,
    pub id: &'a RawValue,
}

/// A response: exactly one of `result` / `error`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
    pub id: Box<RawValue>,
}

impl Response {
    pub fn ok(id: Box<RawValue>, result: Box<RawValue>) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            result: Some(result),
            error: None,
            id,
        }
    }

    pub fn err(id: Box<RawValue>, error: ErrorObject) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            result: None,
            error: Some(error),
            id,
        }
    }
}

/// The raw JSON `null`, used as the id of responses to unparsable requests and as an empty result.
pub fn raw_null() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

/// Serializes a value into a raw JSON value.
pub fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| raw_null())
}

/// Empty params `[]`.
pub fn raw_empty_params() -> Box<RawValue> {
    to_raw(&[(); 0])
}
