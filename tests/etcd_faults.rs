//! Faults of the coordination layer and of a lagging candidate: losing an etcd member, losing
//! etcd's quorum, and a candidate that cannot reach the recorded head. Each ends with the chain
//! invariants (no height with two blocks, no rewind).

mod common;

use std::time::Duration;

use common::{poll_until, wait_until, EtcdCluster, Sidecar, SidecarBuilder};

fn active(sim: &op_node_sim::Cluster) -> Vec<usize> {
    (0..sim.nodes().len())
        .filter(|i| sim.node(*i).is_active())
        .collect()
}

/// Waits until exactly one node sequences and stays the only one for two seconds.
async fn settle_single(sim: &op_node_sim::Cluster, timeout: Duration) -> usize {
    settle_single_except(sim, None, timeout).await
}

/// As [`settle_single`], with a node that must not be the one (e.g. the node of a killed
/// sidecar, which keeps sequencing until the new leader stops it).
async fn settle_single_except(
    sim: &op_node_sim::Cluster,
    not: Option<usize>,
    timeout: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single active sequencer within {timeout:?}; active {:?}",
            active(sim)
        );
        let a = active(sim);
        if a.len() == 1 && Some(a[0]) != not {
            let stable = !poll_until(Duration::from_secs(2), || async { active(sim) != a }).await;
            if stable {
                return a[0];
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_clean(sim: &op_node_sim::Cluster) {
    let report = sim.check();
    assert!(report.is_clean(), "chain invariants violated:\n{report}");
}

async fn start_sidecars(
    sim: &op_node_sim::Cluster,
    endpoints: &str,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Vec<Sidecar> {
    let mut out = Vec::new();
    for (i, node) in sim.nodes().iter().enumerate() {
        let mut b = SidecarBuilder::new(
            &format!("seq-{i}"),
            &node.node_url(),
            &node.geth_url(),
            endpoints,
            prefix,
        );
        for (k, v) in extra {
            b = b.flag(k, v);
        }
        out.push(b.start().await);
    }
    out
}

async fn sim3() -> op_node_sim::Cluster {
    op_node_sim::Cluster::start(op_node_sim::ClusterConfig {
        nodes: 3,
        block_time: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .expect("start the simulator")
}

/// With a 3-member etcd, losing one member keeps a single leader and failover still works;
/// losing quorum makes the leader step down by its local deadline (nobody sequences, nothing
/// forks), and the chain resumes by itself when quorum returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_loss_keeps_one_leader_and_quorum_loss_halts_without_fork() {
    let mut etcd = EtcdCluster::start(3).await;
    let sim = sim3().await;
    let prefix = format!("/op-sidecar/{}", common::unique("member-loss"));
    let mut sidecars = start_sidecars(&sim, &etcd.client_urls(), &prefix, &[]).await;
    settle_single(&sim, Duration::from_secs(30)).await;

    etcd.kill_member(0);
    let after_member_loss = settle_single(&sim, Duration::from_secs(30)).await;
    let h = sim.check().max_height;
    wait_until(
        Duration::from_secs(20),
        "chain advances with 2 of 3 etcd members",
        || async { sim.check().max_height >= h + 3 },
    )
    .await;
    assert_clean(&sim);

    // Failover still works on the remaining quorum.
    sidecars[after_member_loss].kill();
    settle_single_except(&sim, Some(after_member_loss), Duration::from_secs(30)).await;
    // The dead sidecar's node was stopped by the new leader before it started.
    assert!(!sim.node(after_member_loss).is_active());

    // Quorum lost: every lease deadline passes, so the leader stops its node.
    etcd.kill_member(1);
    wait_until(
        Duration::from_secs(15),
        "no node sequences without an etcd quorum",
        || async { active(&sim).is_empty() },
    )
    .await;
    let halted_at = sim.check().max_height;
    // And nobody starts while quorum is missing.
    assert!(
        !poll_until(Duration::from_secs(5), || async {
            !active(&sim).is_empty()
        })
        .await,
        "a node sequenced without an etcd quorum"
    );
    assert_eq!(sim.check().max_height, halted_at);

    etcd.restart_member(1).await;
    settle_single(&sim, Duration::from_secs(45)).await;
    wait_until(
        Duration::from_secs(30),
        "chain resumes after quorum returns",
        || async { sim.check().max_height >= halted_at + 3 },
    )
    .await;
    assert_clean(&sim);
    drop(sidecars);
}

/// The only candidate's node is stuck behind the recorded head: it must never start below it
/// (no rewind), must give way after the catch-up bound instead of wedging, and must take over
/// once its node has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_candidate_gives_way_and_takes_over_once_caught_up() {
    let etcd = EtcdCluster::start(1).await;
    let sim = sim3().await;
    let prefix = format!("/op-sidecar/{}", common::unique("lagging"));
    let mut sidecars = start_sidecars(
        &sim,
        &etcd.client_urls(),
        &prefix,
        &[("--handover.catchup-timeout", "2s")],
    )
    .await;
    let leader = settle_single(&sim, Duration::from_secs(30)).await;
    let lagging = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // The lagging node's head freezes; the chain moves on without it.
    sim.node(lagging).stall_head(true);
    let frozen = sim.node(lagging).head().number;
    wait_until(
        Duration::from_secs(20),
        "chain moves past the frozen node",
        || async { sim.check().max_height >= frozen + 3 },
    )
    .await;

    // Only the lagging node's sidecar is left to take over.
    sidecars[other].kill();
    sidecars[leader].kill();
    wait_until(
        Duration::from_secs(30),
        "the lagging candidate gives way",
        || async { sidecars[lagging].log().contains("giving way") },
    )
    .await;
    assert!(
        !sim.node(lagging).is_active(),
        "a node behind the recorded head must not sequence"
    );
    // It keeps trying rather than wedging, and still never starts while behind.
    wait_until(
        Duration::from_secs(30),
        "the candidate retries after giving way",
        || async { sidecars[lagging].log().matches("giving way").count() >= 2 },
    )
    .await;
    assert!(!sim.node(lagging).is_active());
    assert_clean(&sim);

    // Once its node catches up, it takes over from the recorded head.
    sim.node(lagging).stall_head(false);
    let resumed = settle_single(&sim, Duration::from_secs(45)).await;
    assert_eq!(resumed, lagging);
    let h = sim.check().max_height;
    wait_until(
        Duration::from_secs(20),
        "chain progresses under the caught-up leader",
        || async { sim.check().max_height >= h + 3 },
    )
    .await;
    assert_clean(&sim);
}

/// The first log line containing `needle`, as its leading RFC 3339 timestamp (these sort as text).
fn first_log_time(log: &str, needle: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// S1 without help: every node's admin URL is unreachable for the other sidecars (a fully
/// isolated host), so only the cut-off leader itself can stop its node. It must step down by
/// its local lease deadline, before etcd can let anyone else win, even though its etcd
/// requests hang in the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_stops_its_node_before_anyone_else_can_win() {
    let etcd = EtcdCluster::start(1).await;
    let sim = sim3().await;
    let prefix = format!("/op-sidecar/{}", common::unique("isolated"));
    let mut proxies = Vec::new();
    let mut sidecars = Vec::new();
    for (i, node) in sim.nodes().iter().enumerate() {
        let proxy = common::TcpProxy::start(&etcd.client_url(0)).await;
        let b = SidecarBuilder::new(
            &format!("seq-{i}"),
            &node.node_url(),
            &node.geth_url(),
            &proxy.url(),
            &prefix,
        )
        // Port 1 refuses connections: nobody can stop this node but its own sidecar.
        .flag("--node.advertise", "http://127.0.0.1:1");
        sidecars.push(b.start().await);
        proxies.push(proxy);
    }
    let leader = settle_single(&sim, Duration::from_secs(30)).await;
    proxies[leader].partition();
    let next = settle_single_except(&sim, Some(leader), Duration::from_secs(30)).await;
    assert!(!sim.node(leader).is_active());

    let stepped = first_log_time(&sidecars[leader].log(), "stepping down")
        .expect("the isolated leader logs its step-down");
    let won = sidecars[next]
        .log()
        .lines()
        .filter(|l| l.contains("won the leader key"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .max()
        .expect("the new leader logs its win");
    assert!(
        stepped < won,
        "the isolated leader stepped down at {stepped}, after {next} won at {won}"
    );
    assert_clean(&sim);
    proxies[leader].heal();
}
