//! Conductor mode: three real sidecars on a real etcd, each the `--conductor.rpc` of its own
//! simulated op-node. op-node asks `conductor_leader` inside `admin_startSequencer` and commits
//! every sealed block through `conductor_commitUnsafePayload` before inserting or gossiping it;
//! a refused commit means the block is never published. So here the fence, not the stop, is what
//! keeps a stale leader harmless, and these tests check exactly that: what a node publishes, what
//! etcd committed, and that every run ends with one chain (no height with two blocks, no rewind).
//!
//! Timeouts are generous upper bounds for a loaded 2-core machine, never performance claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{etcd, rpc, rpc_timeout, wait_until, Fixture, FixtureOpts, RpcError};
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_secs(30);
const FAILOVER: Duration = Duration::from_secs(30);
/// transferLeaderToServer returns only once the target leads, so give it a long client timeout.
const TRANSFER: Duration = Duration::from_secs(30);
/// Longer than op-node's commit attempt (2 x 1 s timeout + 50 ms): after this, no commit that
/// started before is still in flight.
const COMMIT_SETTLES: Duration = Duration::from_secs(3);

/// Conductor mode with the leader's etcd compaction off, for scenarios that read etcd's history
/// afterwards (every version of `<prefix>/head`, the first leader key ever put).
fn conductor_keeping_history() -> FixtureOpts {
    FixtureOpts::conductor().flag("--etcd.compaction-interval", "0")
}

// === helpers ===

/// Like [`wait_until`] but polls every 5 ms, for scenario set-ups that must act between two
/// blocks (one block time apart).
async fn wait_fast(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn quantity(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a hex quantity"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("{s} is not a hex quantity: {e}"))
}

fn hex_decode(s: &str) -> Vec<u8> {
    let s = s.trim_start_matches("0x");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A block hash no simulated node will ever make (those are random).
fn fake_hash(tag: &str, number: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut word = 0xcbf2_9ce4_8422_2325u64;
    for b in tag.bytes() {
        word = (word ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("0x{word:016x}{number:016x}{nanos:016x}{:016x}", 0xfeed_u64)
}

/// The envelope of a block extending `stored` (the committed head's envelope), sealed by
/// `producer`: one height up, `stored` as parent, a fresh hash, the next timestamp and slot.
/// The simulator reads the slot and producer name from extraData (8-byte slot, then the name).
fn next_envelope(stored: &Value, producer: &str, block_ms: u64) -> Value {
    let p = &stored["executionPayload"];
    let number = quantity(&p["blockNumber"]) + 1;
    let extra = hex_decode(p["extraData"].as_str().expect("extraData"));
    let slot = u64::from_be_bytes(extra[..8].try_into().expect("8-byte slot"));
    let mut extra = (slot + block_ms).to_be_bytes().to_vec();
    extra.extend_from_slice(producer.as_bytes());
    let mut env = stored.clone();
    let q = &mut env["executionPayload"];
    q["parentHash"] = p["blockHash"].clone();
    q["blockNumber"] = json!(format!("0x{number:x}"));
    q["timestamp"] = json!(format!("0x{:x}", quantity(&p["timestamp"]) + 1));
    q["blockHash"] = json!(fake_hash(producer, number));
    q["extraData"] = json!(hex_encode(&extra));
    env
}

/// Settings for scenarios with multi-MB blocks. The tests run debug builds of the sidecar and
/// the simulator, which take seconds to seal, send and store 20 MB of hex JSON on a loaded
/// machine (a release sidecar commits a 10 MiB block in a fraction of a second, see
/// BENCHMARKS.md). So the simulated op-node waits longer per commit attempt (as
/// `--conductor.rpc-timeout` allows), and a head counts as stale only after 30 s, so that
/// slow blocks do not move leadership by themselves.
fn large_blocks(mut opts: FixtureOpts) -> FixtureOpts {
    opts.conductor_timeout = Duration::from_secs(20);
    opts.flag("--rpc.timeout", "30s")
        .flag("--healthcheck.unsafe-interval", "30s")
}

fn block_hash(env: &Value) -> String {
    env["executionPayload"]["blockHash"]
        .as_str()
        .expect("blockHash")
        .to_string()
}

/// The committed head record, which must exist.
async fn committed_head(f: &Fixture) -> Value {
    f.head_and_payload()
        .await
        .0
        .expect("<prefix>/head must be written in conductor mode")
}

/// Hash of block `number` on node `i`'s op-geth.
async fn hash_at(f: &Fixture, i: usize, number: u64) -> Option<String> {
    let block = rpc(
        &f.node(i).geth_url(),
        "eth_getBlockByNumber",
        json!([format!("0x{number:x}"), false]),
    )
    .await
    .expect("eth_getBlockByNumber on a simulated op-geth");
    block["hash"].as_str().map(str::to_lowercase)
}

/// Waits until node `i`'s sidecar has no member record any more (its lease expired).
async fn wait_member_gone(f: &Fixture, i: usize) {
    wait_until(
        Duration::from_secs(15),
        &format!("members/{} to expire with its lease", Fixture::id(i)),
        || async { f.member(i).is_none() },
    )
    .await;
}

/// Every block node `i` sealed is at or below `height`.
fn assert_published_nothing_above(f: &Fixture, i: usize, height: u64) {
    let above: Vec<u64> = f
        .published_by(i)
        .iter()
        .map(|b| b.number)
        .filter(|&n| n > height)
        .collect();
    assert!(
        above.is_empty(),
        "{} published blocks {above:?} above height {height}, after its leadership ended",
        Fixture::id(i)
    );
}

// === steady state and bootstrap ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_block_was_committed_to_etcd_first() {
    let mut f = Fixture::start(3, conductor_keeping_history()).await;
    let leader = f.wait_single_active(SETTLE).await;
    assert_eq!(f.wait_leader_producing(SETTLE).await, leader);
    let leader_id = Fixture::id(leader);

    // The head key tracks the chain head as it moves: op-node commits before it inserts, so
    // the committed head is never below the leader's head and at most the block in flight above.
    for _ in 0..3 {
        let before = f.node(leader).head().number;
        let (head, payload) = f.head_and_payload().await;
        let after = f.node(leader).head().number;
        let head = head.expect("<prefix>/head");
        let payload = payload.expect("<prefix>/payload holds the last committed envelope");
        let n = head["number"].as_u64().expect("head.number");
        assert!(
            before <= n && n <= after + 1,
            "committed head {n} vs the leader's head {before}..{after}: {head}"
        );
        assert_eq!(head["id"], json!(leader_id), "head record {head}");
        let p = &payload["executionPayload"];
        assert_eq!(p["blockHash"], head["hash"], "payload and head disagree");
        assert_eq!(
            p["parentHash"], head["parentHash"],
            "payload and head disagree"
        );
        assert_eq!(quantity(&p["blockNumber"]), n, "payload and head disagree");
        // The committed block is the one the chain gets at that height.
        wait_until(
            Duration::from_secs(15),
            "the leader's head to pass the committed head",
            || async { f.node(leader).head().number > n },
        )
        .await;
        assert_eq!(
            hash_at(&f, leader, n).await.as_deref(),
            head["hash"].as_str(),
            "the leader inserted a different block at {n} than it committed"
        );
    }

    // Every block anyone published is in etcd's history of <prefix>/head, and that history is
    // one gapless chain from block 1.
    let ledger = f.sim.ledger();
    let history = f.head_history().await;
    assert!(!history.is_empty(), "no head history");
    assert_eq!(
        history[0]["number"],
        json!(1),
        "first commit {}",
        history[0]
    );
    for w in history.windows(2) {
        assert_eq!(
            w[1]["number"].as_u64(),
            w[0]["number"].as_u64().map(|n| n + 1),
            "head history skips or repeats a height: {} then {}",
            w[0],
            w[1]
        );
        assert_eq!(
            w[1]["parentHash"], w[0]["hash"],
            "head history is not a chain"
        );
    }
    let committed: HashMap<u64, String> = history
        .iter()
        .map(|h| {
            (
                h["number"].as_u64().expect("number"),
                h["hash"].as_str().expect("hash").to_string(),
            )
        })
        .collect();
    let published: Vec<_> = ledger.published.iter().filter(|b| b.number > 0).collect();
    assert!(
        published.len() >= 5,
        "too few blocks to judge: {published:?}"
    );
    for b in published {
        assert_eq!(
            committed.get(&b.number),
            Some(&b.hash),
            "block {} ({}) by {} was published but never committed",
            b.number,
            b.hash,
            b.producer
        );
    }
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_store_bootstraps_from_the_nodes_own_head() {
    let mut f = Fixture::start_without_sidecars(3, conductor_keeping_history()).await;
    for key in ["head", "payload", "stopped"] {
        assert!(
            f.etcd_json(key).is_none(),
            "<prefix>/{key} before any sidecar"
        );
    }
    f.start_sidecars().await;

    let leader = f.wait_single_active(SETTLE).await;
    assert_eq!(f.wait_leader_producing(SETTLE).await, leader);
    assert!(
        f.sidecar(leader)
            .log()
            .contains("no recorded head: bootstrapping from the local unsafe head"),
        "the first leader must bootstrap from its node's own head"
    );
    // The first committed block sits on genesis: nothing was skipped or invented.
    let genesis = hash_at(&f, leader, 0).await.expect("genesis");
    let history = f.head_history().await;
    assert_eq!(
        history[0]["number"],
        json!(1),
        "first commit {}",
        history[0]
    );
    assert_eq!(
        history[0]["parentHash"].as_str(),
        Some(genesis.as_str()),
        "first commit {}",
        history[0]
    );
    let keys = f.etcd.get_prefix(&format!("{}/", f.key("leader")));
    assert_eq!(keys.len(), 1, "exactly one leader key expected: {keys:?}");
    assert_eq!(keys[0].1, Fixture::id(leader));
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// How the sidecars come up in the adoption scenarios.
#[derive(Clone, Copy, Debug)]
enum Enable {
    /// The running node's sidecar alone; the others once it leads.
    RunningNodeFirst,
    /// All three spawned at once.
    Together,
}

/// Enabling the sidecars on a chain whose sequencer already runs (op-conductor #17899 stopped
/// it). Node 2 is started by hand before any sidecar exists; in conductor mode its commits fail
/// until its sidecar leads, so it publishes nothing meanwhile. Then the sidecars come up as
/// `enable` says. The running sequencer must be adopted: its sidecar is the first leader and the
/// node is never stopped, not even for a moment.
async fn adoption_scenario(enable: Enable) {
    let mut f = Fixture::start_without_sidecars(3, conductor_keeping_history()).await;
    let running = 2;
    f.node(running).sequence_by_hand();
    tokio::time::sleep(COMMIT_SETTLES).await;
    assert!(f.node(running).is_active());
    assert_eq!(
        f.sim.check().max_height,
        0,
        "a node whose conductor is not leader published a block"
    );

    // Watch the running node while the sidecars come up.
    let node = f.node(running).clone();
    let was_stopped = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn({
        let (was_stopped, done) = (was_stopped.clone(), done.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                if !node.is_active() {
                    was_stopped.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    match enable {
        Enable::RunningNodeFirst => f.start_sidecars_after_leader(running).await,
        Enable::Together => f.start_sidecars_together().await,
    }
    let leader = f.wait_single_active(SETTLE).await;
    done.store(true, Ordering::SeqCst);
    monitor.await.unwrap();

    let first = etcd::first_put(
        &f.etcd.client_url(),
        &format!("{}/", f.key("leader")),
        Duration::from_secs(10),
    )
    .await
    .map(|(_, id)| id);
    let inspection = f
        .sidecar(running)
        .log()
        .lines()
        .filter(|l| l.contains("inspection: node is sequencing but this sidecar is not leader"))
        .map(str::to_string)
        .collect::<Vec<_>>();
    let stopped = was_stopped.load(Ordering::SeqCst);
    assert_eq!(
        first.as_deref(),
        Some(Fixture::id(running).as_str()),
        "sidecars enabled {enable:?}: the first leader must be the sidecar of the node that was \
         already sequencing (adoption); running node stopped: {stopped}; its sidecar logged \
         {inspection:?}"
    );
    assert!(
        !stopped,
        "the running sequencer was stopped on its way to being adopted: {inspection:?}"
    );
    assert_eq!(leader, running);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequencer_already_running_is_adopted_by_its_own_sidecar() {
    adoption_scenario(Enable::RunningNodeFirst).await;
}

/// Fails today (reported as a sidecar bug): the sidecars have no preference for
/// the one whose node is already sequencing, so whichever wins the empty store first (usually
/// `seq-0`) bootstraps and the running node's own sidecar then stops it by inspection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn sequencer_already_running_is_adopted_when_all_sidecars_start_together() {
    adoption_scenario(Enable::Together).await;
}

// === stale leaders are fenced ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_sidecar_cannot_publish_and_its_node_is_stopped_on_resume() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let old = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let height_at_pause = f.node(old).head().number;
    let produced_at_pause = f.node(old).blocks_produced();

    // SIGSTOP well past the 2 s lease TTL. Its node stays active (nobody can stop it: in
    // conductor mode the fence replaces the stop), but every commit it sends now hangs.
    let paused_at = tokio::time::Instant::now();
    f.sidecar(old).pause();
    let new = f.wait_new_leader_producing(old, FAILOVER).await;
    let min_pause = Duration::from_secs(6);
    let elapsed = paused_at.elapsed();
    if elapsed < min_pause {
        tokio::time::sleep(min_pause - elapsed).await;
    }
    // At most one block whose commit answer was already on the wire when the process froze.
    let produced = f.node(old).blocks_produced();
    assert!(
        produced <= produced_at_pause + 1,
        "the paused leader's node sealed {} blocks after the pause",
        produced - produced_at_pause
    );

    f.sidecar(old).resume();
    // The resumed sidecar finds its lease gone, refuses its node's commits and stops it.
    wait_until(
        Duration::from_secs(15),
        "the resumed sidecar to stop its node",
        || async { !f.node(old).is_active() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        f.node(old).blocks_produced(),
        produced,
        "the old leader's node published after its sidecar resumed"
    );
    let after = f.wait_single_active(SETTLE).await;
    assert_eq!(
        after, new,
        "the resumed sidecar must not take leadership back"
    );
    assert_published_nothing_above(&f, old, height_at_pause + 1);
    f.assert_chain_progresses().await;
    assert_eq!(f.node(old).blocks_produced(), produced);
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_off_from_etcd_cannot_publish_and_rejoins_as_follower() {
    let mut f = Fixture::start(3, FixtureOpts::conductor().with_proxy()).await;
    let old = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let height_at_cut = f.node(old).head().number;
    let produced_at_cut = f.node(old).blocks_produced();

    // Blackhole its etcd traffic: its commits can no longer reach etcd, and on its local
    // lease deadline it steps down and stops its own node.
    f.proxy(old).partition();
    let new = f.wait_new_leader_producing(old, FAILOVER).await;
    wait_until(
        Duration::from_secs(15),
        "the partitioned leader to stop its node",
        || async { !f.node(old).is_active() },
    )
    .await;
    let produced = f.node(old).blocks_produced();
    assert!(
        produced <= produced_at_cut + 1,
        "the partitioned leader's node sealed {} blocks after the cut",
        produced - produced_at_cut
    );
    f.assert_chain_progresses().await;
    f.assert_invariants();

    f.proxy(old).heal();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = f.wait_single_active(SETTLE).await;
    assert_eq!(after, new, "healing the partition must not move leadership");
    let views = f.leader_views().await;
    assert!(
        views
            .iter()
            .all(|(_, v)| v.as_deref() == Some(Fixture::id(new).as_str())),
        "every sidecar, the healed one included, must name the one leader: {views:?}"
    );
    assert_eq!(f.node(old).blocks_produced(), produced);
    assert_published_nothing_above(&f, old, height_at_cut + 1);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

// === a new leader behind the committed head ===

/// Set-up shared by the "behind" scenarios: a conductor-mode cluster with leader `l`, the third
/// sidecar `d` killed (so candidate `c` is the only one), and `c`'s gossip cut right after its
/// node holds the leader's head. Returns the fixture, `l`, `c`, `d` and `c`'s head at the cut.
async fn candidate_cut_off_at_the_leaders_head(
    opts: FixtureOpts,
) -> (Fixture, usize, usize, usize, op_node_sim::BlockRef) {
    let mut f = Fixture::start(3, opts).await;
    let l = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let (c, d) = ((l + 1) % 3, (l + 2) % 3);
    f.sidecar(d).kill();
    wait_member_gone(&f, d).await;

    wait_fast(
        Duration::from_secs(10),
        "the candidate to hold the leader's head",
        || f.node(c).head() == f.node(l).head(),
    )
    .await;
    f.node(c).cut_gossip(true);
    let behind = f.node(c).head();
    (f, l, c, d, behind)
}

/// The only candidate misses exactly the last committed block: it must post the stored
/// payload to its node and lead at once, not sit out the catch-up timeout (set to 60 s here,
/// so a candidate that merely waited would miss the 30 s bound by far).
///
/// Set-up: the third sidecar is killed, so the chosen candidate is the only one. The
/// candidate's gossip is cut right after it received the leader's latest block, and the
/// leader's head is stalled right after it committed and inserted exactly one more. Its head
/// goes stale, its sidecar hands over to the candidate, whose node lacks that one block and,
/// with gossip cut, cannot get it any other way than from the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_one_block_behind_is_repaired_with_the_stored_payload() {
    let opts = FixtureOpts::conductor().flag("--handover.catchup-timeout", "60s");
    let (mut f, l, c, d, behind) = candidate_cut_off_at_the_leaders_head(opts).await;
    wait_fast(
        Duration::from_secs(10),
        "the leader to seal one more block",
        || f.node(l).head().number > behind.number,
    )
    .await;
    f.node(l).stall_head(true);
    let stored = f.node(l).head();
    assert_eq!(
        stored.number,
        behind.number + 1,
        "set-up: the leader must be exactly one block past the candidate"
    );
    tokio::time::sleep(COMMIT_SETTLES).await;
    let head = committed_head(&f).await;
    assert_eq!(
        (head["number"].as_u64(), head["hash"].as_str()),
        (Some(stored.number), Some(stored.hash.as_str())),
        "set-up: the committed head must be the leader's last block"
    );
    assert_eq!(
        f.node(c).head(),
        behind,
        "set-up: the candidate must still be one behind"
    );

    let new = f.wait_new_leader_producing(l, FAILOVER).await;
    assert_eq!(new, c, "the only candidate must lead");
    let log = f.sidecar(c).log();
    assert!(
        log.contains("node is one block behind the committed head; posting the stored payload"),
        "the candidate's sidecar must repair its node with the stored payload"
    );
    assert!(
        !log.contains("giving way") && !log.contains("did not reach recorded head"),
        "the repaired candidate must not give way"
    );
    assert_eq!(
        hash_at(&f, c, stored.number).await.as_deref(),
        Some(stored.hash.as_str()),
        "the new leader must build on the committed block"
    );

    f.node(c).cut_gossip(false);
    f.node(l).stall_head(false);
    f.sidecar(d).restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.wait_single_active(SETTLE).await, c);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// [`new_leader_one_block_behind_is_repaired_with_the_stored_payload`] with a large missed
/// block, set up so that nobody but etcd has it: the leader's node seals it, its commit
/// succeeds but the answer is lost (so the node neither inserts nor gossips it), and the node
/// is stalled before its own sidecar can hand the block back. Then the leader's sidecar dies;
/// the only candidate, one block behind the committed head, must post the stored payload to
/// its node and lead (the catch-up timeout is 60 s, so merely waiting would miss the bound).
async fn large_block_repair_scenario(payload_bytes: usize) {
    let opts = large_blocks(FixtureOpts::conductor()).flag("--handover.catchup-timeout", "60s");
    let mut f = Fixture::start(3, opts).await;
    let l = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let (c, d) = ((l + 1) % 3, (l + 2) % 3);
    f.sidecar(d).kill();
    wait_member_gone(&f, d).await;

    f.node(l).next_block_payload_bytes(payload_bytes);
    f.node(l).lose_next_commit_ack();
    wait_fast(
        Duration::from_secs(60),
        "the big block to be committed (its answer lost)",
        || !f.node(l).status().lose_next_commit_ack,
    )
    .await;
    f.node(l).stall_head(true);
    tokio::time::sleep(COMMIT_SETTLES).await;
    let head = committed_head(&f).await;
    let number = head["number"].as_u64().expect("head.number");
    let stored = f.stored_payload_bytes().await;
    assert!(
        stored.is_some_and(|n| n >= payload_bytes),
        "the committed head must be the big block, with its payload stored (head {head}, \
         {stored:?} bytes stored)"
    );
    for i in [l, c] {
        assert_eq!(
            f.node(i).head().number + 1,
            number,
            "set-up: {} must be one block behind the committed head {head}",
            Fixture::id(i)
        );
    }

    f.sidecar(l).kill();
    let new = f.wait_new_leader_producing(l, FAILOVER).await;
    assert_eq!(new, c, "the only candidate must lead");
    let log = f.sidecar(c).log();
    let posted = format!(
        "posting the stored payload number={number} hash={}",
        head["hash"].as_str().unwrap_or_default()
    );
    assert!(
        log.contains(&posted),
        "the candidate's sidecar must repair its node with the stored payload ({posted})"
    );
    assert!(
        !log.contains("giving way") && !log.contains("did not reach recorded head"),
        "the repaired candidate must not give way"
    );
    assert_eq!(
        hash_at(&f, c, number).await.as_deref(),
        head["hash"].as_str(),
        "the new leader must build on the committed block"
    );

    // The old leader's node still sequences (fenced off: nothing it seals is published); its
    // restarted sidecar stops it.
    f.node(l).stall_head(false);
    f.sidecar(d).restart().await;
    f.sidecar(l).restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.wait_single_active(SETTLE).await, c);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// A 1.6 MB block (a 3.3 MB envelope). Before chunked storage this failed: envelopes over
/// 1.4 MB were fenced but not stored, so the candidate could not be repaired (it waited for
/// its node, gave way, and so did every candidate: the chain halted for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_one_block_behind_a_1_6_mb_block_is_repaired() {
    large_block_repair_scenario(1_600_000).await;
}

/// A 10 MiB block, the largest op-node gossips (a 21 MB envelope). Before: refused at once
/// (`--rpc.max-body` was 10 MiB), so the chain halted at the first such block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_one_block_behind_a_10_mib_block_is_repaired() {
    large_block_repair_scenario(10 * 1024 * 1024).await;
}

/// A commit that reached etcd but whose answer op-node never got (both attempts timed out):
/// op-node backs off and re-seals the same height, and the fence refuses every re-seal (a
/// committed head is never replaced). The leader's sidecar must hand its own node the committed
/// block, read back from etcd, after which the chain continues on it with the same leader.
/// Before chunked storage a block over 1.4 MB was not stored, so the leader re-sealed forever,
/// no successor could be repaired either, and the chain halted for good.
async fn lost_commit_ack_scenario(payload_bytes: usize) {
    let mut f = Fixture::start(3, large_blocks(FixtureOpts::conductor())).await;
    let l = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    // The next block the leader's node starts sealing is the big one, and its answer is lost.
    let armed_at = f.node(l).head().number;
    f.node(l).next_block_payload_bytes(payload_bytes);
    f.node(l).lose_next_commit_ack();
    // Read the committed head at once: the node backs off for 1 s before it seals again.
    wait_fast(
        Duration::from_secs(60),
        "the commit whose answer is lost to happen",
        || !f.node(l).status().lose_next_commit_ack,
    )
    .await;
    let lost = committed_head(&f).await;
    let lost_number = lost["number"].as_u64().expect("head.number");
    let stored = f.stored_payload_bytes().await;
    assert!(
        stored.is_some_and(|n| n >= payload_bytes),
        "the lost block must be the big one, committed with its payload stored (committed head \
         {lost}, {stored:?} bytes stored)"
    );
    assert!(
        lost_number > armed_at,
        "the lost block must be a new one (armed at {armed_at}): {lost}"
    );
    wait_until(
        Duration::from_secs(60),
        "the leader's node to get the committed block and move past it",
        || async { f.node(l).head().number > lost_number + 1 },
    )
    .await;
    assert_eq!(
        hash_at(&f, l, lost_number).await.as_deref(),
        lost["hash"].as_str(),
        "the chain must continue on the committed block, not a re-seal"
    );
    let posted = format!(
        "posting the stored payload number={lost_number} hash={}",
        lost["hash"].as_str().unwrap_or_default()
    );
    assert!(
        f.sidecar(l).log().contains(&posted),
        "the leader's sidecar must hand its node the committed block ({posted})"
    );
    assert_eq!(
        f.wait_leader_producing(SETTLE).await,
        l,
        "no failover is needed for a lost acknowledgement"
    );
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_commit_ack_for_a_1_6_mb_block_is_repaired_from_etcd() {
    lost_commit_ack_scenario(1_600_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_commit_ack_for_a_10_mib_block_is_repaired_from_etcd() {
    lost_commit_ack_scenario(10 * 1024 * 1024).await;
}

/// The only candidate misses three blocks: it wins the lease, waits for its node within the
/// catch-up timeout (5 s here), cannot get there (gossip cut), and gives way instead of wedging
/// (op-conductor #22094). Once a candidate that holds the committed head is back, it leads and
/// the chain resumes on top of the committed head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_three_blocks_behind_gives_way_and_the_chain_resumes() {
    let opts = FixtureOpts::conductor().flag("--handover.catchup-timeout", "5s");
    let (mut f, l, c, d, behind) = candidate_cut_off_at_the_leaders_head(opts).await;
    wait_until(
        Duration::from_secs(15),
        "the leader to seal three more blocks",
        || async { f.node(l).head().number >= behind.number + 3 },
    )
    .await;
    // The leader's sidecar dies. Its node keeps sequencing but every commit now fails, so the
    // committed head is final until a new leader commits.
    f.sidecar(l).kill();
    tokio::time::sleep(COMMIT_SETTLES).await;
    let head = committed_head(&f).await;
    let committed = head["number"].as_u64().expect("head.number");
    assert!(
        committed >= behind.number + 3,
        "set-up: committed {committed}, candidate at {}",
        behind.number
    );
    let produced_c = f.node(c).blocks_produced();

    wait_until(
        Duration::from_secs(30),
        "the candidate to give way",
        || async { f.sidecars[c].log().contains("handover failed; giving way") },
    )
    .await;
    let log = f.sidecar(c).log();
    assert!(
        log.contains("waiting for the node to reach the recorded head"),
        "the candidate must have waited for its node"
    );
    assert!(
        !log.contains("posting the stored payload"),
        "a three-block gap is not repaired with the one stored payload"
    );
    assert!(
        !f.node(c).is_active(),
        "a lagging candidate must not sequence"
    );
    assert_eq!(f.node(c).blocks_produced(), produced_c);
    assert!(
        f.chain_height() <= committed,
        "nothing may be published above the committed head {committed} while no one can lead \
         (chain at {})",
        f.chain_height()
    );

    // A candidate that holds the committed head returns: no wedge, the chain resumes.
    f.sidecar(d).restart().await;
    let new = f
        .wait_leader_producing_where(
            Duration::from_secs(45),
            "the caught-up candidate to lead and produce",
            |i| i == d,
        )
        .await;
    assert_eq!(new, d);
    assert_eq!(
        hash_at(&f, d, committed).await.as_deref(),
        head["hash"].as_str(),
        "the chain must resume on the committed head"
    );

    // The old leader's sidecar returns and stops its node (inspection); the candidate syncs.
    f.sidecar(l).restart().await;
    wait_until(
        Duration::from_secs(15),
        "the old leader's node to be stopped",
        || async { !f.node(l).is_active() },
    )
    .await;
    f.node(c).cut_gossip(false);
    f.node(c).stall_head(true);
    f.node(c).stall_head(false); // a stall release syncs from peers
    assert_eq!(f.wait_single_active(SETTLE).await, d);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

// === operator API ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_to_server_moves_to_healthy_target_and_refuses_unhealthy_one() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let old = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let target = (old + 1) % 3;
    let bystander = (old + 2) % 3;
    let target_id = Fixture::id(target);

    // To a named healthy server, asked on a sidecar that is neither source nor target.
    let url = f.sidecar(bystander).url();
    let addr = f.sidecar(target).url();
    let r = rpc_timeout(
        &url,
        "conductor_transferLeaderToServer",
        json!([target_id, addr]),
        TRANSFER,
    )
    .await;
    assert_eq!(
        r,
        Ok(Value::Null),
        "transferLeaderToServer to a healthy follower"
    );
    // It returned once the target leads.
    assert_eq!(f.leader_id().await.as_deref(), Some(target_id.as_str()));
    assert!(
        f.node(target).is_active(),
        "target must sequence when the call returns"
    );
    assert_eq!(
        rpc(&addr, "conductor_leader", json!([])).await,
        Ok(json!(true)),
        "the target's sidecar must answer conductor_leader true"
    );
    assert_eq!(f.wait_leader_producing(SETTLE).await, target);
    assert_eq!(f.wait_single_active(SETTLE).await, target);
    wait_until(
        Duration::from_secs(10),
        "the completed transfer record to be cleared",
        || async { f.etcd_json("control/transfer").is_none() },
    )
    .await;

    // To an unhealthy server: an error, and nothing changes.
    let sick = old;
    f.node(sick).stall_head(true);
    wait_until(
        Duration::from_secs(20),
        "the stalled follower to be reported unhealthy",
        || async { f.member(sick).is_some_and(|m| m["healthy"] == json!(false)) },
    )
    .await;
    let sick_addr = f.sidecar(sick).url();
    let err = rpc_timeout(
        &url,
        "conductor_transferLeaderToServer",
        json!([Fixture::id(sick), sick_addr]),
        TRANSFER,
    )
    .await
    .expect_err("a transfer to an unhealthy server must fail");
    assert_eq!(err.code, -32000, "{err}");
    assert!(err.message.contains("not healthy"), "{err}");
    assert!(
        f.etcd_json("control/transfer").is_none(),
        "a refused transfer left a record"
    );
    assert_eq!(f.leader_id().await.as_deref(), Some(target_id.as_str()));
    assert!(!f.node(sick).is_active());
    assert_eq!(f.wait_single_active(SETTLE).await, target);

    // transferLeader without a target, asked on a follower, does nothing (op-conductor
    // swallows raft's not-leader error); asked on the leader, it picks a healthy, caught-up
    // follower.
    f.node(sick).stall_head(false);
    let r = rpc_timeout(&url, "conductor_transferLeader", json!([]), TRANSFER).await;
    assert_eq!(r, Ok(Value::Null), "conductor_transferLeader on a follower");
    assert_eq!(f.leader_id().await.as_deref(), Some(target_id.as_str()));
    let leader_url = f.sidecar(target).url();
    let r = rpc_timeout(&leader_url, "conductor_transferLeader", json!([]), TRANSFER).await;
    assert_eq!(r, Ok(Value::Null), "conductor_transferLeader");
    let picked = f.leader_id().await.expect("a leader after transferLeader");
    let picked = Fixture::index_of(&picked);
    assert_ne!(picked, target, "transferLeader must move leadership");
    assert!(f.node(picked).is_active());
    assert_eq!(f.wait_leader_producing(SETTLE).await, picked);
    assert_eq!(f.wait_single_active(SETTLE).await, picked);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// Two different blocks for the same next height, committed concurrently through the leader's
/// sidecar: exactly one goes through. A commit through a follower's sidecar fails.
///
/// So as not to race the real leader for that height, the leader's node is stalled first (its
/// head frozen, no production) with a 60 s unsafe interval so no one hands over meanwhile, and
/// any block it committed but did not insert (a commit in flight at the stall) is posted to the
/// followers, as a new leader's repair would. After the race the winner is posted to the
/// followers' nodes and the stall released: the leader syncs onto the winner and keeps
/// producing on top of it, so the chain stays one clean chain that includes the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_for_one_height_let_exactly_one_through() {
    let opts = FixtureOpts::conductor().flag("--healthcheck.unsafe-interval", "60s");
    let mut f = Fixture::start(3, opts).await;
    let l = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let followers = [(l + 1) % 3, (l + 2) % 3];

    f.node(l).stall_head(true);
    tokio::time::sleep(COMMIT_SETTLES).await;
    let (head, stored) = f.head_and_payload().await;
    let (head, stored) = (head.expect("head"), stored.expect("payload"));
    let n = head["number"].as_u64().expect("head.number");
    for &i in &followers {
        let r = rpc(
            &f.node(i).node_url(),
            "admin_postUnsafePayload",
            json!([stored]),
        )
        .await;
        assert_eq!(
            r,
            Ok(Value::Null),
            "admin_postUnsafePayload on {}",
            Fixture::id(i)
        );
        wait_until(
            Duration::from_secs(10),
            "followers to hold the committed head",
            || async { f.node(i).head().number == n },
        )
        .await;
    }

    let a = next_envelope(&stored, "race-a", 1000);
    let b = next_envelope(&stored, "race-b", 1000);
    assert_ne!(block_hash(&a), block_hash(&b));

    // A follower's sidecar refuses any commit, even a valid next block.
    let err = rpc(
        &f.sidecar(followers[0]).url(),
        "conductor_commitUnsafePayload",
        json!([a]),
    )
    .await
    .expect_err("a follower must refuse commits");
    assert_eq!(err.code, -32000, "{err}");
    assert!(err.message.contains("not the leader"), "{err}");
    assert_eq!(
        committed_head(&f).await,
        head,
        "a refused commit changed the head"
    );

    // The race.
    let url = f.sidecar(l).url();
    let (ra, rb) = tokio::join!(
        rpc(&url, "conductor_commitUnsafePayload", json!([a])),
        rpc(&url, "conductor_commitUnsafePayload", json!([b])),
    );
    let (winner, loser, lost): (&Value, &Value, RpcError) = match (ra, rb) {
        (Ok(Value::Null), Err(e)) => (&a, &b, e),
        (Err(e), Ok(Value::Null)) => (&b, &a, e),
        other => panic!("exactly one of two racing commits must succeed, got {other:?}"),
    };
    assert_eq!(lost.code, -32000, "{lost}");
    assert!(lost.message.contains("does not extend"), "{lost}");
    let (now, payload) = f.head_and_payload().await;
    let now = now.expect("head");
    assert_eq!(now["number"], json!(n + 1), "{now}");
    assert_eq!(
        now["hash"].as_str(),
        Some(block_hash(winner).as_str()),
        "{now}"
    );
    assert_eq!(now["parentHash"], head["hash"], "{now}");
    assert_eq!(payload.as_ref().map(block_hash), Some(block_hash(winner)));
    // Re-committing the head is idempotent; the loser stays refused.
    let url = f.sidecar(l).url();
    assert_eq!(
        rpc(&url, "conductor_commitUnsafePayload", json!([winner])).await,
        Ok(Value::Null),
        "re-committing the current head must succeed"
    );
    let err = rpc(&url, "conductor_commitUnsafePayload", json!([loser]))
        .await
        .expect_err("the losing block must stay refused");
    assert_eq!(err.code, -32000, "{err}");
    assert_eq!(committed_head(&f).await["hash"], now["hash"]);

    // Resume the chain on the winner.
    for &i in &followers {
        let r = rpc(
            &f.node(i).node_url(),
            "admin_postUnsafePayload",
            json!([winner]),
        )
        .await;
        assert_eq!(r, Ok(Value::Null));
    }
    for &i in &followers {
        wait_until(
            Duration::from_secs(10),
            "followers to take the winner",
            || async { f.node(i).head().number == n + 1 },
        )
        .await;
    }
    f.node(l).stall_head(false);
    assert_eq!(f.wait_leader_producing(SETTLE).await, l);
    assert_eq!(f.wait_single_active(SETTLE).await, l);
    f.assert_chain_progresses().await;
    let ledger = f.sim.ledger();
    let hashes: Vec<&str> = ledger.published.iter().map(|b| b.hash.as_str()).collect();
    assert!(
        hashes.contains(&block_hash(winner).as_str()),
        "winner not on the chain"
    );
    assert!(
        !hashes.contains(&block_hash(loser).as_str()),
        "loser published"
    );
    f.assert_invariants();
}

/// A misconfiguration the fence must survive: op-node's default `--conductor.rpc` is
/// `http://127.0.0.1:8547`, so two op-nodes on one host that both keep it share one sidecar and
/// both pass its leader check. Here a follower whose own sidecar is gone is pointed at the
/// leader's sidecar and started by hand: both nodes now seal a block on the same head in the
/// same slot and commit it through the same sidecar, every slot. The fence must let exactly one
/// block per height through (the loser backs off and re-seals on the winner), so the chain
/// stays one chain; both nodes may contribute blocks to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_sharing_the_leaders_conductor_cannot_fork_the_chain() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let l = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let d = (l + 1) % 3;
    f.sidecar(d).kill();
    wait_member_gone(&f, d).await;
    let from = f.chain_height();

    let shared = f.sidecar(l).url();
    f.node(d).set_conductor(Some(shared));
    f.node(d).sequence_by_hand();
    wait_until(
        Duration::from_secs(30),
        "eight more blocks with two nodes committing through one sidecar",
        || async { f.chain_height() >= from + 8 },
    )
    .await;
    let report = f.sim.check();
    assert!(
        report.is_clean(),
        "two nodes committing through one sidecar forked the chain:\n{report}"
    );

    // Undo the misconfiguration; the cluster returns to one sequencer.
    let r = rpc(&f.node(d).node_url(), "admin_stopSequencer", json!([])).await;
    assert!(
        r.is_ok(),
        "admin_stopSequencer on the misconfigured node: {r:?}"
    );
    let own = f.sidecar(d).url();
    f.node(d).set_conductor(Some(own));
    f.sidecar(d).restart().await;
    assert_eq!(f.wait_single_active(SETTLE).await, l);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_api_answers_on_every_sidecar() {
    let mut f = Fixture::start(3, FixtureOpts::conductor()).await;
    let l = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let follower = (l + 1) % 3;
    let fu = f.sidecar(follower).url();
    let urls: Vec<String> = (0..3).map(|i| f.sidecar(i).url()).collect();

    for (i, url) in urls.iter().enumerate() {
        let who = Fixture::id(i);
        assert_eq!(
            rpc(url, "conductor_leaderWithID", json!([])).await,
            Ok(json!({"id": Fixture::id(l), "addr": urls[l], "suffrage": 0})),
            "conductor_leaderWithID on {who}"
        );
        assert_eq!(
            rpc(url, "conductor_leader", json!([])).await,
            Ok(json!(i == l)),
            "conductor_leader on {who}"
        );
        let m = rpc(url, "conductor_clusterMembership", json!([]))
            .await
            .unwrap_or_else(|e| panic!("conductor_clusterMembership on {who}: {e}"));
        let mut servers: Vec<(String, String)> = m["servers"]
            .as_array()
            .unwrap_or_else(|| panic!("membership {m}"))
            .iter()
            .map(|s| {
                assert_eq!(s["suffrage"], json!(0), "{s}");
                (
                    s["id"].as_str().unwrap_or_default().to_string(),
                    s["addr"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        servers.sort();
        let want: Vec<(String, String)> =
            (0..3).map(|j| (Fixture::id(j), urls[j].clone())).collect();
        assert_eq!(servers, want, "conductor_clusterMembership on {who}: {m}");
        assert!(m["version"].is_u64(), "membership version {m}");
        for (method, want) in [
            ("conductor_active", true),
            ("conductor_paused", false),
            ("conductor_stopped", false),
            ("conductor_sequencerHealthy", true),
            ("conductor_leaderOverridden", false),
        ] {
            assert_eq!(
                rpc(url, method, json!([])).await,
                Ok(json!(want)),
                "{method} on {who}"
            );
        }
    }

    // Pause and resume a follower.
    assert_eq!(
        rpc(&fu, "conductor_pause", json!([])).await,
        Ok(Value::Null)
    );
    assert_eq!(
        rpc(&fu, "conductor_paused", json!([])).await,
        Ok(json!(true))
    );
    assert_eq!(
        rpc(&fu, "conductor_active", json!([])).await,
        Ok(json!(false))
    );
    assert_eq!(
        rpc(&fu, "conductor_pause", json!([])).await,
        Ok(Value::Null),
        "idempotent"
    );
    wait_until(
        Duration::from_secs(10),
        "the member record to show paused",
        || async {
            f.member(follower)
                .is_some_and(|m| m["paused"] == json!(true))
        },
    )
    .await;
    assert_eq!(
        rpc(&fu, "conductor_resume", json!([])).await,
        Ok(Value::Null)
    );
    assert_eq!(
        rpc(&fu, "conductor_paused", json!([])).await,
        Ok(json!(false))
    );
    assert_eq!(
        rpc(&fu, "conductor_active", json!([])).await,
        Ok(json!(true))
    );

    // overrideLeader round trip on a follower.
    assert_eq!(
        rpc(&fu, "conductor_overrideLeader", json!([true])).await,
        Ok(Value::Null)
    );
    assert_eq!(
        rpc(&fu, "conductor_leaderOverridden", json!([])).await,
        Ok(json!(true))
    );
    assert_eq!(
        rpc(&fu, "conductor_leader", json!([])).await,
        Ok(json!(true))
    );
    assert_eq!(
        rpc(&fu, "conductor_overrideLeader", json!([false])).await,
        Ok(Value::Null)
    );
    assert_eq!(
        rpc(&fu, "conductor_leaderOverridden", json!([])).await,
        Ok(json!(false))
    );
    assert_eq!(
        rpc(&fu, "conductor_leader", json!([])).await,
        Ok(json!(false))
    );

    // miner_setMaxDASize: applied to this node's op-geth and fanned out to every other one.
    assert_eq!(
        rpc(&fu, "miner_setMaxDASize", json!(["0x3e8", "0x7d0"])).await,
        Ok(json!(true))
    );
    for i in 0..3 {
        assert_eq!(
            f.node(i).last_max_da_size(),
            Some((1000, 2000)),
            "miner_setMaxDASize on {}'s op-geth",
            Fixture::id(i)
        );
    }

    // Read methods asked of a follower are answered by the leader's node.
    assert_eq!(
        rpc(&fu, "admin_sequencerActive", json!([])).await,
        Ok(json!(true)),
        "admin_sequencerActive from a follower's sidecar"
    );
    let status = rpc(&fu, "optimism_syncStatus", json!([]))
        .await
        .expect("optimism_syncStatus from a follower's sidecar");
    assert!(
        status["unsafe_l2"]["number"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{status}"
    );
    let latest = rpc(&fu, "eth_getBlockByNumber", json!(["latest", false]))
        .await
        .expect("eth_getBlockByNumber from a follower's sidecar");
    assert!(latest["hash"].is_string(), "{latest}");

    // Nothing of this moved leadership.
    assert_eq!(f.wait_single_active(SETTLE).await, l);
    f.assert_chain_progresses().await;
    f.assert_invariants();
}

async fn mode_of(sidecar_url: &str) -> String {
    let st = rpc(sidecar_url, "sidecar_status", json!([]))
        .await
        .expect("sidecar_status");
    st["mode"].as_str().unwrap_or_default().to_string()
}

/// op-node restarted under a leading sidecar with `--conductor.enabled` switched on, then off
/// again. op-node comes back stopped and the leader starts it again; that start is where the
/// sidecar must learn the new setting. It decides the step-down order: a leader that believed
/// its node fenced when it is not would resign before stopping it. Before the fix the mode was
/// only asked at a handover, so it stayed `driven`, then `conductor`, for the whole term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_another_conductor_setting_is_led_in_that_mode() {
    let mut f = Fixture::start(1, FixtureOpts::default()).await;
    f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let url = f.sidecar(0).url();
    assert_eq!(mode_of(&url).await, "driven");

    for (conductor, mode) in [(Some(url.clone()), "conductor"), (None, "driven")] {
        f.node(0).crash();
        f.node(0).set_conductor(conductor);
        f.node(0).restart().await.unwrap();
        wait_until(
            SETTLE,
            &format!("the leader to restart its node in {mode} mode"),
            || async { f.node(0).is_active() && mode_of(&url).await == mode },
        )
        .await;
        // In conductor mode its blocks now go through the fence (op-node publishes none the
        // sidecar refused).
        f.assert_chain_progresses().await;
    }
    f.assert_invariants();
}
