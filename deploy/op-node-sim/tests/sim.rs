//! End-to-end tests of the simulator over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use op_node_sim::rpc::CallError;
use op_node_sim::{Cluster, ClusterConfig, NodeConfig};
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

fn cfg(nodes: usize) -> ClusterConfig {
    ClusterConfig {
        nodes,
        ..Default::default()
    }
}

const WRONG: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_semantics_and_error_strings() {
    let c = Cluster::start(cfg(2)).await.unwrap();
    let n = c.node(0);
    let url = n.node_url();

    assert_eq!(
        call(&url, "admin_sequencerActive", json!([]))
            .await
            .unwrap(),
        json!(false)
    );
    assert_eq!(
        call(&url, "admin_conductorEnabled", json!([]))
            .await
            .unwrap(),
        json!(false)
    );
    assert_eq!(
        rpc_err(&url, "admin_stopSequencer", json!([])).await,
        (-32000, "sequencer not running".to_string())
    );
    let head = n.head();
    assert_eq!(head.number, 0);
    assert_eq!(
        rpc_err(&url, "admin_startSequencer", json!([WRONG])).await,
        (
            -32000,
            format!(
                "block hash does not match: head {}:0, received {WRONG}",
                head.hash
            )
        )
    );
    assert_eq!(
        call(&url, "admin_startSequencer", json!([head.hash]))
            .await
            .unwrap(),
        Value::Null
    );
    assert!(n.is_active());
    assert_eq!(c.active_nodes(), vec!["seq-0".to_string()]);
    // "already running" is checked before the hash.
    assert_eq!(
        rpc_err(&url, "admin_startSequencer", json!([WRONG])).await,
        (-32000, "sequencer already running".to_string())
    );
    assert!(wait_until(3 * SEC, || n.head().number >= 1).await);
    let stopped = call(&url, "admin_stopSequencer", json!([])).await.unwrap();
    assert_eq!(stopped, json!(n.head().hash));
    let at_stop = n.head();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(n.head(), at_stop, "no blocks after stop");
    assert!(c.active_nodes().is_empty());

    // Unknown method, batch, shapes.
    assert_eq!(
        rpc_err(&url, "foo_bar", json!([])).await,
        (
            -32601,
            "the method foo_bar does not exist/is not available".to_string()
        )
    );
    let batch = post_raw(
        &url,
        json!([
            {"jsonrpc": "2.0", "id": 1, "method": "admin_sequencerActive", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "optimism_version", "params": []},
            {"jsonrpc": "2.0", "id": 3, "method": "nope", "params": []}
        ]),
    )
    .await;
    assert_eq!(batch[0]["result"], json!(false));
    assert_eq!(batch[1]["result"], json!("v0.0.0-sim"));
    assert_eq!(batch[2]["error"]["code"], json!(-32601));

    let ss = call(&url, "optimism_syncStatus", json!([])).await.unwrap();
    for k in [
        "current_l1",
        "current_l1_finalized",
        "head_l1",
        "safe_l1",
        "finalized_l1",
        "unsafe_l2",
        "safe_l2",
        "finalized_l2",
        "pending_safe_l2",
        "cross_unsafe_l2",
        "local_safe_l2",
    ] {
        assert!(ss[k]["hash"].is_string(), "{k}");
    }
    assert_eq!(ss["unsafe_l2"]["number"], json!(at_stop.number));
    assert_eq!(ss["unsafe_l2"]["hash"], json!(at_stop.hash));
    assert_eq!(ss["unsafe_l2"]["timestamp"], json!(at_stop.timestamp));
    assert!(ss["unsafe_l2"]["sequenceNumber"].is_u64());
    assert!(ss["unsafe_l2"]["l1origin"]["number"].is_u64());
    assert_eq!(ss["safe_l2"]["number"], json!(0));

    let out = call(&url, "optimism_outputAtBlock", json!(["0x1"]))
        .await
        .unwrap();
    assert!(out["outputRoot"].is_string());
    assert_eq!(out["blockRef"]["number"], json!(1));
    assert!(out["syncStatus"]["unsafe_l2"].is_object());
    let (code, msg) = rpc_err(&url, "optimism_outputAtBlock", json!(["0xffff"])).await;
    assert_eq!(code, -32000);
    assert!(msg.contains("not found"), "{msg}");
    let rc = call(&url, "optimism_rollupConfig", json!([]))
        .await
        .unwrap();
    assert_eq!(rc["block_time"], json!(1));
    assert!(rc["seq_window_size"].is_u64() && rc["l2_chain_id"].is_u64());
    let ps = call(&url, "opp2p_peerStats", json!([])).await.unwrap();
    assert_eq!(ps["connected"], json!(1));

    // op-geth.
    let geth = n.geth_url();
    let latest = call(&geth, "eth_getBlockByNumber", json!(["latest", false]))
        .await
        .unwrap();
    assert_eq!(latest["hash"], json!(at_stop.hash));
    assert_eq!(latest["number"], json!(format!("0x{:x}", at_stop.number)));
    assert_eq!(
        latest["timestamp"],
        json!(format!("0x{:x}", at_stop.timestamp))
    );
    assert_eq!(latest["transactions"], json!([]));
    let by_hash = call(&geth, "eth_getBlockByHash", json!([at_stop.hash, false]))
        .await
        .unwrap();
    assert_eq!(by_hash["hash"], json!(at_stop.hash));
    assert_eq!(
        call(&geth, "eth_getBlockByNumber", json!(["0x999", false]))
            .await
            .unwrap(),
        Value::Null
    );
    assert_eq!(
        call(&geth, "eth_blockNumber", json!([])).await.unwrap(),
        json!(format!("0x{:x}", at_stop.number))
    );
    assert!(call(&geth, "eth_chainId", json!([]))
        .await
        .unwrap()
        .is_string());
    assert_eq!(n.last_max_da_size(), None);
    assert_eq!(
        call(&geth, "miner_setMaxDASize", json!(["0x100", "0x2000"]))
            .await
            .unwrap(),
        json!(true)
    );
    assert_eq!(n.last_max_da_size(), Some((256, 8192)));

    // admin_postUnsafePayload on the other node, which is at the same head.
    let n1 = c.node(1);
    assert!(wait_until(SEC, || n1.head() == n.head()).await);
    let h1 = n1.head();
    let hash = "0x2222222222222222222222222222222222222222222222222222222222222222";
    let env = json!({"executionPayload": {
        "parentHash": h1.hash, "blockNumber": format!("0x{:x}", h1.number + 1),
        "timestamp": format!("0x{:x}", h1.timestamp + 1), "blockHash": hash,
        "transactions": [], "extraData": "0x"
    }});
    assert_eq!(
        call(&n1.node_url(), "admin_postUnsafePayload", json!([env]))
            .await
            .unwrap(),
        Value::Null
    );
    assert_eq!(n1.head().hash, hash);
    assert_eq!(n1.head().number, h1.number + 1);
    let mut bad = env.clone();
    bad["executionPayload"]["blockHash"] = json!("0x1234");
    let (code, msg) = rpc_err(&n1.node_url(), "admin_postUnsafePayload", json!([bad])).await;
    assert_eq!(code, -32000);
    assert!(
        msg.starts_with("payload has bad block hash: 0x1234"),
        "{msg}"
    );
    let ledger = c.ledger();
    assert!(ledger
        .published
        .iter()
        .any(|b| b.hash == hash && b.producer == "external"));
    assert!(c.check().is_clean(), "{}", c.check());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sequencer_gossips_to_followers() {
    let c = Cluster::start(cfg(3)).await.unwrap();
    let head = c.node(0).head();
    call(
        &c.node(0).node_url(),
        "admin_startSequencer",
        json!([head.hash]),
    )
    .await
    .unwrap();
    assert!(wait_until(5 * SEC, || c.node(0).head().number >= 3).await);
    assert!(
        wait_until(SEC, || {
            let h = c.node(0).head();
            c.nodes().iter().all(|n| n.head() == h)
        })
        .await,
        "followers did not receive gossip"
    );
    let h = c.node(0).head();
    let b = call(
        &c.node(2).geth_url(),
        "eth_getBlockByHash",
        json!([h.hash, false]),
    )
    .await
    .unwrap();
    assert_eq!(b["hash"], json!(h.hash));
    assert!(c.node(0).blocks_produced() >= 3);
    assert_eq!(c.node(1).blocks_produced(), 0);
    assert_eq!(c.node(2).blocks_produced(), 0);
    // Consecutive whole-second timestamps.
    let g1 = call(
        &c.node(1).geth_url(),
        "eth_getBlockByNumber",
        json!(["0x1", false]),
    )
    .await
    .unwrap();
    let g2 = call(
        &c.node(1).geth_url(),
        "eth_getBlockByNumber",
        json!(["0x2", false]),
    )
    .await
    .unwrap();
    assert_eq!(g2["parentHash"], g1["hash"]);
    let ts = |v: &Value| {
        u64::from_str_radix(
            v["timestamp"].as_str().unwrap().trim_start_matches("0x"),
            16,
        )
        .unwrap()
    };
    assert_eq!(ts(&g2), ts(&g1) + 1);
    let report = c.check();
    assert!(report.is_clean(), "{report}");
    assert!(report.max_height >= 3);
    assert!(c
        .ledger()
        .published
        .iter()
        .skip(1)
        .all(|b| b.producer == "seq-0"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sequencers_fork_is_reported() {
    let c = Cluster::start(cfg(2)).await.unwrap();
    // Partition them so both certainly seal the same heights.
    c.node(0).cut_gossip(true);
    c.node(1).cut_gossip(true);
    c.node(0).sequence_by_hand();
    c.node(1).sequence_by_hand();
    assert_eq!(c.active_nodes().len(), 2);
    assert!(
        wait_until(5 * SEC, || c.node(0).head().number >= 2
            && c.node(1).head().number >= 2)
        .await
    );
    let report = c.check();
    assert!(!report.is_clean());
    assert!(!report.heights_with_multiple_blocks.is_empty());
    assert_eq!(report.heights_with_multiple_blocks[0].0, 1);
    assert!(
        report.to_string().contains("INVARIANTS VIOLATED"),
        "{report}"
    );
    // Healing the partition makes one of them reorg onto the other: a rewind.
    c.node(0).cut_gossip(false);
    c.node(1).cut_gossip(false);
    assert!(wait_until(3 * SEC, || !c.ledger().rewinds.is_empty()).await);
    let r = &c.check().rewinds[0];
    assert!(r.node == "seq-0" || r.node == "seq-1");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_catch_up() {
    let c = Cluster::start(cfg(3)).await.unwrap();
    let (n0, n2) = (c.node(0), c.node(2));
    let url2 = n2.node_url();
    n0.sequence_by_hand();
    assert!(wait_until(3 * SEC, || n2.head().number >= 1).await);
    n2.crash();
    assert!(matches!(
        call(&url2, "admin_sequencerActive", json!([])).await,
        Err(CallError::Transport(_))
    ));
    assert!(matches!(
        call(&n2.geth_url(), "eth_blockNumber", json!([])).await,
        Err(CallError::Transport(_))
    ));
    let at_crash = n2.head();
    assert!(wait_until(4 * SEC, || n0.head().number >= at_crash.number + 2).await);
    assert_eq!(n2.head(), at_crash, "a crashed node receives nothing");
    n2.restart().await.unwrap();
    assert_eq!(n2.node_url(), url2);
    assert!(
        wait_until(SEC, || n2.head() == n0.head()).await,
        "restart catch-up"
    );
    assert_eq!(
        call(&url2, "admin_sequencerActive", json!([]))
            .await
            .unwrap(),
        json!(false)
    );

    // Crash the leader: nobody is active; restart comes back stopped; another node takes over.
    n0.crash();
    assert!(c.active_nodes().is_empty());
    n0.restart().await.unwrap();
    assert!(!n0.is_active());
    let n1 = c.node(1);
    let h = n1.head();
    call(&n1.node_url(), "admin_startSequencer", json!([h.hash]))
        .await
        .unwrap();
    assert!(wait_until(3 * SEC, || n0.head().number > h.number).await);
    assert!(wait_until(SEC, || n2.head() == n1.head() && n0.head() == n1.head()).await);
    let report = c.check();
    assert!(report.is_clean(), "{report}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_gate_and_commit_fence() {
    let fake = FakeConductor::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let c = Cluster::start(ClusterConfig {
        nodes: 3,
        payload_bytes: 2000,
        node_configs: vec![
            NodeConfig {
                conductor_rpc: Some(fake.url.clone()),
                coordinator: None,
            },
            NodeConfig {
                conductor_rpc: Some(dead.clone()),
                coordinator: None,
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let (n0, n1) = (c.node(0), c.node(1));

    // Node 1: the conductor is unreachable.
    assert_eq!(
        call(&n1.node_url(), "admin_conductorEnabled", json!([]))
            .await
            .unwrap(),
        json!(true)
    );
    let (code, msg) = rpc_err(
        &n1.node_url(),
        "admin_startSequencer",
        json!([n1.head().hash]),
    )
    .await;
    assert_eq!(code, -32000);
    assert!(msg.starts_with("sequencer leader check failed: "), "{msg}");
    // Override skips the leader check and, as op-node's conductor client does, the commits:
    // the node publishes unfenced.
    call(&n1.node_url(), "admin_overrideLeader", json!([]))
        .await
        .unwrap();
    call(
        &n1.node_url(),
        "admin_startSequencer",
        json!([n1.head().hash]),
    )
    .await
    .unwrap();
    assert!(
        wait_until(3 * SEC, || n1.blocks_produced() >= 1).await,
        "an overridden node publishes without its conductor"
    );
    call(&n1.node_url(), "admin_stopSequencer", json!([]))
        .await
        .unwrap();
    let by_n1 = n1.blocks_produced();
    let h1 = n1.head();
    assert!(wait_until(SEC, || c.nodes().iter().all(|n| n.head() == h1)).await);
    let before = c.ledger().published.len();
    assert_eq!(before, 1 + by_n1 as usize, "genesis and n1's blocks");

    // Node 0: not leader.
    assert_eq!(
        rpc_err(
            &n0.node_url(),
            "admin_startSequencer",
            json!([n0.head().hash])
        )
        .await,
        (-32000, "sequencer is not the leader, aborting".to_string())
    );
    assert!(fake.state.lock().leader_calls >= 1);
    // Leader, but every commit fails: nothing inserted, published or gossiped.
    fake.state.lock().leader = true;
    call(
        &n0.node_url(),
        "admin_startSequencer",
        json!([n0.head().hash]),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        fake.state.lock().commit_calls >= 2,
        "commits were attempted"
    );
    assert_eq!(
        c.ledger().published.len(),
        before,
        "nothing new: {:?}",
        c.ledger()
    );
    assert!(c.nodes().iter().all(|n| n.head() == h1));
    assert_eq!(n0.blocks_produced(), 0);
    assert!(n0.is_active(), "keeps retrying while active");

    // Commits start succeeding for n0.
    fake.state.lock().commit_ok = true;
    assert!(wait_until(4 * SEC, || n0.head().number >= h1.number + 2).await);
    assert!(wait_until(SEC, || c.node(2).head() == n0.head()).await);
    let committed: Vec<Value> = fake.state.lock().committed.clone();
    let published = c.ledger().published;
    for b in published.iter().skip(before) {
        assert_eq!(b.producer, "seq-0");
        assert!(
            committed
                .iter()
                .any(|e| e["executionPayload"]["blockHash"] == json!(b.hash)),
            "block {} published without commit",
            b.number
        );
    }
    let env = &committed[0];
    assert!(env["executionPayload"]["parentHash"].is_string());
    assert!(env["executionPayload"]["blockNumber"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    let tx_bytes: usize = env["executionPayload"]["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t.as_str().unwrap().len() - 2) / 2)
        .sum();
    assert_eq!(tx_bytes, 2000);
    assert_eq!(n1.blocks_produced(), by_n1);
    let report = c.check();
    assert!(report.is_clean(), "{report}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_gates_each_block() {
    let fake = FakeConductor::start().await;
    let c = Cluster::start(ClusterConfig {
        nodes: 2,
        node_configs: vec![NodeConfig {
            conductor_rpc: None,
            coordinator: Some((fake.url.clone(), "seq-0".into())),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    c.node(0).sequence_by_hand();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.state.lock().coordinator_calls >= 1);
    assert_eq!(c.node(0).head().number, 0, "refused slots produce nothing");
    fake.state.lock().coordinator_allows = true;
    assert!(wait_until(3 * SEC, || c.node(1).head().number >= 1).await);
    assert!(c.check().is_clean());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_lag_and_cut_gossip() {
    let c = Cluster::start(cfg(3)).await.unwrap();
    let (n0, n1, n2) = (c.node(0), c.node(1), c.node(2));
    n1.stall_head(true);
    n2.set_lag(Duration::from_millis(1600));
    n0.sequence_by_hand();
    assert!(wait_until(5 * SEC, || n0.head().number >= 3).await);
    assert_eq!(n1.head().number, 0, "stalled head does not move");
    assert!(n2.head().number < n0.head().number, "lagged node is behind");
    assert!(n2.head().number >= 1, "lagged node still receives");
    n1.stall_head(false);
    assert!(
        wait_until(SEC, || n1.head() == n0.head()).await,
        "unstall syncs"
    );

    n2.set_lag(Duration::ZERO);
    assert!(wait_until(3 * SEC, || n2.head() == n0.head()).await);
    n2.cut_gossip(true);
    assert_eq!(
        call(&n2.node_url(), "opp2p_peerStats", json!([]))
            .await
            .unwrap()["connected"],
        json!(0)
    );
    assert_eq!(
        call(&n0.node_url(), "opp2p_peerStats", json!([]))
            .await
            .unwrap()["connected"],
        json!(1)
    );
    let at_cut = n2.head();
    assert!(wait_until(3 * SEC, || n0.head().number >= at_cut.number + 2).await);
    assert_eq!(n2.head(), at_cut, "cut node receives nothing");
    n2.cut_gossip(false);
    assert!(
        wait_until(2 * SEC, || n2.head() == n0.head()).await,
        "gap sync after restore"
    );

    n2.set_peer_count(Some(7));
    assert_eq!(
        call(&n2.node_url(), "opp2p_peerStats", json!([]))
            .await
            .unwrap()["connected"],
        json!(7)
    );
    let report = c.check();
    assert!(report.is_clean(), "{report}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_and_freeze() {
    let c = Cluster::start(cfg(2)).await.unwrap();
    let (n0, n1) = (c.node(0), c.node(1));
    n0.sequence_by_hand();
    assert!(wait_until(3 * SEC, || n1.head().number >= 1).await);

    // hang: RPC stalls, production continues.
    n0.hang(true);
    let h = n0.head().number;
    let r = call_timeout(
        &n0.node_url(),
        "optimism_syncStatus",
        json!([]),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(r, Err(CallError::Timeout));
    assert!(
        wait_until(3 * SEC, || n1.head().number > h).await,
        "hung node still produces"
    );
    n0.hang(false);
    assert!(call(&n0.node_url(), "optimism_syncStatus", json!([]))
        .await
        .is_ok());

    // freeze: RPC stalls and production stops; another node takes over; on thaw the old
    // leader continues on its stale head -> a fork the checker reports.
    n0.freeze(true);
    let pending = tokio::spawn({
        let url = n0.node_url();
        async move { call_timeout(&url, "admin_sequencerActive", json!([]), 10 * SEC).await }
    });
    let frozen_head = n0.head();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(n0.head(), frozen_head);
    assert!(!pending.is_finished());
    let h1 = n1.head();
    assert_eq!(h1, frozen_head);
    call(&n1.node_url(), "admin_startSequencer", json!([h1.hash]))
        .await
        .unwrap();
    assert!(wait_until(3 * SEC, || n1.head().number > h1.number).await);
    assert!(c.check().is_clean(), "{}", c.check());
    n0.freeze(false);
    assert_eq!(
        pending.await.unwrap().unwrap(),
        json!(true),
        "request resumes after thaw"
    );
    assert!(
        wait_until(3 * SEC, || !c
            .check()
            .heights_with_multiple_blocks
            .is_empty())
        .await
    );
    assert!(!c.check().is_clean());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_rpc() {
    let c = Cluster::start(cfg(2)).await.unwrap();
    let port = c.serve_control(0).await.unwrap();
    let url = format!("http://127.0.0.1:{port}");
    call(&url, "sim_crash", json!([1])).await.unwrap();
    assert!(c.node(1).is_crashed());
    let st = call(&url, "sim_status", json!([])).await.unwrap();
    assert_eq!(st[1]["name"], json!("seq-1"));
    assert_eq!(st[1]["crashed"], json!(true));
    assert_eq!(st[0]["head"]["number"], json!(0));
    call(&url, "sim_restart", json!([1])).await.unwrap();
    assert!(!c.node(1).is_crashed());
    call(&url, "sim_lag", json!([1, 250])).await.unwrap();
    call(&url, "sim_freeze", json!([1, true])).await.unwrap();
    call(&url, "sim_freeze", json!([1, false])).await.unwrap();
    call(&url, "sim_peerCount", json!([1, 4])).await.unwrap();
    call(&url, "sim_peerCount", json!([1, null])).await.unwrap();
    call(&url, "sim_sequenceByHand", json!([0])).await.unwrap();
    assert_eq!(c.active_nodes(), vec!["seq-0".to_string()]);
    let chk = call(&url, "sim_check", json!([])).await.unwrap();
    assert_eq!(chk["clean"], json!(true));
    let ledger = call(&url, "sim_ledger", json!([])).await.unwrap();
    assert_eq!(ledger["published"][0]["number"], json!(0));
    assert_eq!(rpc_err(&url, "sim_crash", json!([9])).await.0, -32602);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_zero_hash_on_stop_and_hash_mismatch_on_start() {
    let c = Cluster::start(cfg(2)).await.unwrap();
    let port = c.serve_control(0).await.unwrap();
    let ctl = format!("http://127.0.0.1:{port}");
    let n = c.node(0);
    let url = n.node_url();

    // Armed on node 0 over the control RPC; node 1 is untouched.
    call(&ctl, "sim_hashMismatchOnNextStart", json!([0]))
        .await
        .unwrap();
    assert!(n.status().hash_mismatch_on_next_start);
    assert!(!c.node(1).status().hash_mismatch_on_next_start);
    let head = n.head();
    assert_eq!(
        rpc_err(&url, "admin_startSequencer", json!([head.hash])).await,
        (
            -32000,
            format!(
                "block hash does not match: head {}:{}, received {}",
                head.hash, head.number, head.hash
            )
        )
    );
    assert!(
        !n.is_active(),
        "a refused start must not start the sequencer"
    );
    assert!(!n.status().hash_mismatch_on_next_start, "fired once");
    // One-shot: the retry with the same hash starts.
    assert_eq!(
        call(&url, "admin_startSequencer", json!([head.hash]))
            .await
            .unwrap(),
        Value::Null
    );
    assert!(n.is_active());
    assert!(wait_until(3 * SEC, || n.head().number >= 1).await);

    call(&ctl, "sim_zeroHashOnNextStop", json!([0]))
        .await
        .unwrap();
    let stopped = call(&url, "admin_stopSequencer", json!([])).await.unwrap();
    assert_eq!(
        stopped,
        json!(format!("0x{}", "0".repeat(64))),
        "armed stop returns the zero hash"
    );
    assert!(!n.is_active(), "the node still stops");
    assert!(!n.status().zero_hash_on_next_stop, "fired once");
    let at_stop = n.head();
    assert!(at_stop.number >= 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(n.head(), at_stop, "no blocks after stop");

    // Both faults were consumed: normal behaviour again.
    call(&url, "admin_startSequencer", json!([at_stop.hash]))
        .await
        .unwrap();
    let stopped = call(&url, "admin_stopSequencer", json!([])).await.unwrap();
    assert_eq!(stopped, json!(n.head().hash));
    assert_ne!(stopped, json!(format!("0x{}", "0".repeat(64))));

    // A failed stop ("not running") does not consume an armed zero hash.
    n.zero_hash_on_next_stop();
    assert_eq!(
        rpc_err(&url, "admin_stopSequencer", json!([])).await,
        (-32000, "sequencer not running".to_string())
    );
    let head = n.head();
    call(&url, "admin_startSequencer", json!([head.hash]))
        .await
        .unwrap();
    assert_eq!(
        call(&url, "admin_stopSequencer", json!([])).await.unwrap(),
        json!(format!("0x{}", "0".repeat(64)))
    );

    assert_eq!(
        rpc_err(&ctl, "sim_zeroHashOnNextStop", json!([9])).await.0,
        -32602
    );
    assert!(c.check().is_clean(), "{}", c.check());
    c.shutdown().await;
}
