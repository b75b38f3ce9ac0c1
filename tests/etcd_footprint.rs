//! Conductor mode against an etcd with a small `--quota-backend-bytes`: what the sidecars write
//! per block must not grow etcd without bound (the leader compacts history, a block's payload
//! is stored once and the previous one deleted), and a NOSPACE alarm raised by something else
//! halts the chain only until an operator clears it, without a restart and without losing or
//! rewriting a committed block.
//!
//! Three real sidecars, a real etcd, the simulated op-nodes sealing blocks of a few hundred KB
//! to 1 MB. Timeouts are generous bounds for a loaded 2-core machine, never performance claims
//! (the soak benchmark in `tests/bench.rs` records etcd's size over a long run).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{etcd, http_get, metric, wait_until, Fixture, FixtureOpts};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);
/// A small etcd quota, so that a few minutes of blocks are several times the quota.
const QUOTA: u64 = 16 * 1024 * 1024;
/// Payload sizes picked at random per block (bytes of transactions).
const MIX: [usize; 3] = [400_000, 800_000, 1_200_000];
/// The leader compacts this often here (the default is 5 s; with 1 s blocks of up to 1.2 MB
/// and this 16 MiB quota, two intervals of history must stay well below the quota).
const COMPACTION: &str = "2s";

fn opts() -> FixtureOpts {
    let mut o = FixtureOpts::conductor()
        .etcd_arg("--quota-backend-bytes", &QUOTA.to_string())
        .flag("--etcd.compaction-interval", COMPACTION)
        .flag("--etcd.quota-bytes", &QUOTA.to_string());
    o.payload_bytes = MIX.to_vec();
    o
}

/// Payload bytes committed so far, summed over every sidecar (leadership may move).
async fn committed_bytes(f: &mut Fixture) -> f64 {
    let mut sum = 0.0;
    for i in 0..f.n() {
        if !f.sidecar(i).is_running() {
            continue;
        }
        let (_, text) = http_get(&format!("{}/metrics", f.sidecar(i).admin_url())).await;
        sum += metric(&text, "op_sidecar_commit_stored_bytes_total").unwrap_or(0.0);
    }
    sum
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Blocks of 0.4 to 1.2 MB every second until three times etcd's 16 MiB quota has been
/// committed: etcd's backend stays well below its quota, raises no alarm, holds the payload of
/// one block (two while a commit is in flight), and the chain has one block per height and no
/// rewind. Before the leader compacted etcd (and before a block's payload was stored once, in
/// binary, and the previous one deleted) this hit NOSPACE after about 16 MiB and the chain
/// halted for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_the_quota_of_blocks_leave_etcd_below_its_quota() {
    let mut f = Fixture::start(3, opts()).await;
    f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let url = f.etcd.client_url();

    let goal = 3.0 * QUOTA as f64;
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut max_db, mut max_in_use) = (0i64, 0i64);
    loop {
        let written = committed_bytes(&mut f).await;
        let (db, in_use, alarms) = etcd::storage(&url).await;
        max_db = max_db.max(db);
        max_in_use = max_in_use.max(in_use);
        samples.push(format!(
            "{:>4}s: committed {:>7} MB, etcd db {}, in use {}, height {}",
            started.elapsed().as_secs(),
            format!("{:.1}", written / 1e6),
            mb(db),
            mb(in_use),
            f.chain_height()
        ));
        assert!(
            alarms.is_empty(),
            "etcd raised {alarms:?} after {:.1} MB of blocks:\n{}",
            written / 1e6,
            samples.join("\n")
        );
        if written >= goal {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {:.1} MB of the {:.1} MB goal committed in 300 s:\n{}",
            written / 1e6,
            goal / 1e6,
            samples.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    eprintln!("etcd over the soak:\n{}", samples.join("\n"));

    let (db, _, alarms) = etcd::storage(&url).await;
    assert!(alarms.is_empty(), "etcd alarms at the end: {alarms:?}");
    assert!(
        (max_db as u64) < QUOTA * 3 / 4,
        "etcd's backend reached {} of its {} quota:\n{}",
        mb(max_db),
        mb(QUOTA as i64),
        samples.join("\n")
    );
    let stored = etcd::payload_blocks(&url, &f.prefix).await;
    assert!(
        !stored.is_empty() && stored.len() <= 2,
        "etcd must hold the committed head's payload (and at most one in flight): {stored:?}"
    );

    // What an operator sees: the leader's /readyz and /metrics report etcd's storage.
    let leader = f.wait_single_active(SETTLE).await;
    let admin = f.sidecar(leader).admin_url();
    let (code, body) = http_get(&format!("{admin}/readyz")).await;
    assert_eq!(code, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    let etcd_view = &ready["etcd"];
    assert_eq!(etcd_view["quota_bytes"], QUOTA, "{ready}");
    assert_eq!(etcd_view["alarms"], serde_json::json!([]), "{ready}");
    assert!(
        etcd_view["db_size_bytes"].as_i64().is_some_and(|n| n > 0),
        "{ready}"
    );
    assert!(
        etcd_view["compacted_revision"]
            .as_i64()
            .is_some_and(|r| r > 0),
        "the leader must have compacted: {ready}"
    );
    let (_, text) = http_get(&format!("{admin}/metrics")).await;
    for (name, ok) in [
        ("op_sidecar_etcd_alarm{alarm=\"NOSPACE\"}", Some(0.0)),
        ("op_sidecar_etcd_quota_bytes", Some(QUOTA as f64)),
    ] {
        assert_eq!(metric(&text, name), ok, "{name} in:\n{text}");
    }
    assert!(
        metric(&text, "op_sidecar_etcd_db_size_bytes").is_some_and(|v| v > 0.0),
        "{text}"
    );
    for stage in ["receive", "decode", "etcd", "total"] {
        let name = format!("op_sidecar_commit_stage_seconds_count{{stage=\"{stage}\"}}");
        assert!(
            metric(&text, &name).is_some_and(|v| v > 0.0),
            "{name} in:\n{text}"
        );
    }
    eprintln!("final etcd db size {}", mb(db));

    f.assert_chain_progresses().await;
    f.assert_invariants();
}

/// Fills etcd's quota with keys of its own until etcd raises NOSPACE; returns how many.
async fn fill_until_nospace(endpoint: &str) -> usize {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let value = vec![0x5au8; 1024 * 1024];
    for i in 0..1000 {
        if let Err(e) = c.put(format!("/filler/{i:05}"), value.clone(), None).await {
            assert!(
                e.to_string().contains("database space exceeded"),
                "filling etcd failed otherwise: {e}"
            );
            return i;
        }
    }
    panic!("etcd took 1000 MiB without raising NOSPACE");
}

/// What an operator does about NOSPACE (etcd's documented procedure): remove what filled the
/// space, compact to the current revision, defragment, disarm the alarm.
async fn clear_nospace(endpoint: &str) {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType, CompactionOptions, DeleteOptions};
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let rev = c
        .delete("/filler/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    match c
        .compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
    {
        Ok(_) => {}
        // The leader's own compaction may have got there first.
        Err(e) if e.to_string().contains("compacted") => {}
        Err(e) => panic!("compact: {e}"),
    }
    c.defragment().await.unwrap();
    // `etcdctl alarm disarm`: deactivate every raised alarm on the member that raised it.
    let raised = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    for a in raised.alarms() {
        let mut opts = AlarmOptions::new();
        opts.with_member(a.member_id());
        c.alarm(AlarmAction::Deactivate, a.alarm(), Some(opts))
            .await
            .unwrap();
    }
}

/// Something other than the sidecars fills etcd: NOSPACE refuses every commit, so the chain
/// halts (nothing is published that was not committed), every sidecar reports the alarm in
/// its metrics and /readyz, and the leader logs it once with the fix. The operator clears it
/// (compact, defragment, disarm) and the chain resumes on top of the last committed block,
/// without restarting anything and without a fork or a rewind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_resumes_by_itself_after_an_operator_clears_nospace() {
    let mut o = opts();
    o.payload_bytes = vec![100_000];
    let mut f = Fixture::start(3, o).await;
    let leader = f.wait_single_active(SETTLE).await;
    f.wait_leader_producing(SETTLE).await;
    let url = f.etcd.client_url();

    let filled = fill_until_nospace(&url).await;
    eprintln!("NOSPACE after {filled} MiB of filler");
    let admin = f.sidecar(leader).admin_url();
    wait_until(
        Duration::from_secs(20),
        "the leader to report the NOSPACE alarm",
        || async {
            let (_, text) = http_get(&format!("{admin}/metrics")).await;
            metric(&text, "op_sidecar_etcd_alarm{alarm=\"NOSPACE\"}") == Some(1.0)
        },
    )
    .await;
    let (_, body) = http_get(&format!("{admin}/readyz")).await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ready["etcd"]["alarms"],
        serde_json::json!(["NOSPACE"]),
        "{ready}"
    );

    // Halted: the committed head and the chain stop moving.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (head, _) = f.head_and_payload().await;
    let halted_at = head.expect("a committed head")["number"].as_u64().unwrap();
    let height = f.chain_height();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        f.chain_height(),
        height,
        "blocks were published while etcd refused every commit"
    );
    assert!(
        height <= halted_at,
        "height {height}, committed {halted_at}"
    );
    let log = f.sidecar(leader).log();
    assert_eq!(
        log.matches("etcd raised its NOSPACE alarm").count(),
        1,
        "the alarm must be logged once, with the fix"
    );
    assert!(
        log.contains("etcdctl alarm disarm"),
        "the log must say how to fix it"
    );

    clear_nospace(&url).await;
    f.assert_chain_passes(halted_at + 3).await;
    let (head, payload) = f.head_and_payload().await;
    let head = head.unwrap();
    assert!(
        payload.is_some(),
        "the committed head must have its payload stored: {head}"
    );
    wait_until(
        Duration::from_secs(20),
        "the leader to report the alarm cleared",
        || async {
            let (_, text) = http_get(&format!("{admin}/metrics")).await;
            metric(&text, "op_sidecar_etcd_alarm{alarm=\"NOSPACE\"}") == Some(0.0)
        },
    )
    .await;
    assert!(
        f.sidecar(leader).log().contains("NOSPACE alarm is cleared"),
        "the leader must log that the alarm cleared"
    );
    f.assert_chain_progresses().await;
    f.assert_invariants();
}
