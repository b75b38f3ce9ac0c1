//! Malformed, invalid and oversized JSON-RPC requests against one real sidecar (with a real
//! etcd and one simulated node): each gets the right JSON-RPC error, and the sidecar keeps
//! answering afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{raw_post, rpc, Fixture, FixtureOpts};
use serde_json::{json, Value};

const MAX_BODY: usize = 1024;

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body}"))
}

/// Asserts a single error object with `code`; returns it.
fn assert_error(v: &Value, code: i64, what: &str) {
    assert_eq!(v["jsonrpc"], json!("2.0"), "{what}: {v}");
    assert_eq!(v["error"]["code"], json!(code), "{what}: {v}");
    assert!(
        v["error"]["message"].is_string(),
        "{what}: error without message: {v}"
    );
    assert!(
        v.get("result").is_none(),
        "{what}: both result and error: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_jsonrpc_errors_and_the_sidecar_keeps_serving() {
    let mut f = Fixture::start(
        1,
        FixtureOpts::default().flag("--rpc.max-body", &MAX_BODY.to_string()),
    )
    .await;
    f.wait_single_active(Duration::from_secs(30)).await;
    let url = f.sidecar(0).url();

    // Not JSON: parse error with id null.
    let (status, body) = raw_post(&url, "{this is not json").await;
    let v = parse(&body);
    assert_error(&v, -32700, &format!("not JSON (HTTP {status})"));
    assert_eq!(v["id"], Value::Null, "parse error id must be null: {v}");

    // Not UTF-8, even where only a member nobody reads holds it: parse error, nothing run.
    let mut bad = br#"{"jsonrpc":"2.0","id":1,"method":"coordinator_getMaster","x":""#.to_vec();
    bad.extend_from_slice(b"\xff\"}");
    let (status, body) = raw_post(&url, bad).await;
    let v = parse(&body);
    assert_error(&v, -32700, &format!("not UTF-8 (HTTP {status})"));
    assert_eq!(v["id"], Value::Null, "parse error id must be null: {v}");

    // Valid JSON, invalid requests.
    for (req, what) in [
        (json!({}), "empty object"),
        (
            json!({"jsonrpc": "1.0", "id": 1, "method": "coordinator_getMaster"}),
            "jsonrpc 1.0",
        ),
        (
            json!({"id": 1, "method": "coordinator_getMaster"}),
            "no jsonrpc field",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": 42}),
            "method not a string",
        ),
        (json!(17), "a bare number"),
    ] {
        let (_, body) = raw_post(&url, req.to_string()).await;
        assert_error(&parse(&body), -32600, what);
    }

    // Unknown method: -32601 and the id echoed (number and string ids).
    let (_, body) = raw_post(
        &url,
        r#"{"jsonrpc":"2.0","id":7,"method":"coordinator_noSuchThing","params":[]}"#,
    )
    .await;
    let v = parse(&body);
    assert_error(&v, -32601, "unknown method");
    assert_eq!(v["id"], json!(7));
    let (_, body) = raw_post(&url, r#"{"jsonrpc":"2.0","id":"abc","method":"nope_nope"}"#).await;
    let v = parse(&body);
    assert_error(&v, -32601, "unknown method, string id");
    assert_eq!(v["id"], json!("abc"));

    // Wrong params type for setMaster.
    for (params, what) in [
        (json!([12345]), "number instead of string"),
        (json!({"id": "seq-0"}), "object instead of array"),
        (json!([]), "missing id"),
    ] {
        let err = rpc(&url, "coordinator_setMaster", params)
            .await
            .unwrap_err();
        assert_eq!(err.code, -32602, "setMaster with {what}: {err}");
    }

    // A batch mixing valid and invalid calls: one answer per item, matched by id.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "coordinator_getMaster", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "coordinator_noSuchThing", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "coordinator_setMaster", "params": [1]},
        {"jsonrpc": "2.0", "id": 4, "method": "coordinator_version", "params": []},
        {"foo": "bar"}
    ]);
    let (_, body) = raw_post(&url, batch.to_string()).await;
    let v = parse(&body);
    let answers = v
        .as_array()
        .unwrap_or_else(|| panic!("batch answer must be an array: {v}"));
    assert_eq!(answers.len(), 5, "one answer per batch item: {v}");
    let by_id = |id: Value| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer with id {id} in {v}"))
    };
    assert_eq!(by_id(json!(1))["result"], json!("seq-0"), "batch getMaster");
    assert_error(by_id(json!(2)), -32601, "batch unknown method");
    assert_error(by_id(json!(3)), -32602, "batch bad params");
    assert!(by_id(json!(4))["result"].is_string(), "batch version: {v}");
    assert_error(by_id(Value::Null), -32600, "batch invalid item");

    // An empty batch is a single invalid-request error, not an array.
    let (_, body) = raw_post(&url, "[]").await;
    assert_error(&parse(&body), -32600, "empty batch");

    // Oversized body: HTTP 413 (with a -32600 body per the contract).
    let padding = "x".repeat(MAX_BODY * 2);
    let big =
        json!({"jsonrpc": "2.0", "id": 9, "method": "coordinator_getMaster", "params": [padding]});
    let (status, body) = raw_post(&url, big.to_string()).await;
    assert_eq!(status, 413, "oversized body: HTTP {status} {body}");
    if let Ok(v) = serde_json::from_str::<Value>(&body) {
        assert_error(&v, -32600, "oversized body");
    }

    // Still serving, state intact.
    assert_eq!(
        rpc(&url, "coordinator_getMaster", json!([])).await,
        Ok(json!("seq-0"))
    );
    assert!(rpc(&url, "coordinator_version", json!([]))
        .await
        .unwrap()
        .is_string());
    assert!(
        f.sidecar(0).is_running(),
        "the sidecar must survive bad input"
    );
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_sidecar_answers_and_proxies_to_the_leader() {
    let mut f = Fixture::start(3, FixtureOpts::default()).await;
    let leader = f.wait_single_active(Duration::from_secs(30)).await;
    let leader_id = Fixture::id(leader);

    // The same getMaster from every sidecar: state comes from etcd, not one process.
    for (who, view) in f.leader_views().await {
        assert_eq!(
            view.as_deref(),
            Some(leader_id.as_str()),
            "getMaster on {who}"
        );
    }
    for i in 0..3 {
        let url = f.sidecar(i).url();
        assert_eq!(
            rpc(&url, "coordinator_getActiveSequencer", json!([])).await,
            Ok(json!(leader_id)),
            "getActiveSequencer on {}",
            Fixture::id(i)
        );
        // Proxied reads reach the leader's node, whichever sidecar is asked.
        let status = rpc(&url, "optimism_syncStatus", json!([]))
            .await
            .unwrap_or_else(|e| panic!("optimism_syncStatus via {}: {e}", Fixture::id(i)));
        assert!(
            status["unsafe_l2"]["number"].is_u64(),
            "syncStatus: {status}"
        );
        let active = rpc(&url, "admin_sequencerActive", json!([])).await;
        assert_eq!(
            active,
            Ok(json!(true)),
            "admin_sequencerActive via {}",
            Fixture::id(i)
        );
        let block = rpc(&url, "eth_getBlockByNumber", json!(["latest", false]))
            .await
            .unwrap();
        assert!(block["hash"].is_string(), "eth_getBlockByNumber: {block}");
        // requestBuildingBlock is only OK for the leader, and only answered by the leader's sidecar.
        let r = rpc(
            &url,
            "coordinator_requestBuildingBlock",
            json!([Fixture::id(i)]),
        )
        .await;
        if i == leader {
            assert_eq!(r, Ok(Value::Null), "requestBuildingBlock on the leader");
        } else {
            assert_eq!(
                r.map_err(|e| e.code),
                Err(-32000),
                "requestBuildingBlock on a follower"
            );
        }
    }
    f.assert_invariants();
}
