//! Consumer groups against Tansu's coordinator: icefall's members (the sans-IO
//! `kafka::group::Membership` over `kafka::coordinator`) join one group, the leader spreads a
//! 12-partition topic, a member joining later makes the others give up and rejoin, and every
//! generation's assignment is complete and disjoint; the group's committed offsets are read back.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use icefall::kafka::Client;
use icefall::kafka::coordinator::Coordinator;
use icefall::kafka::group::{Action, GroupConfig, Membership};

use common::{Broker, client_config};

const PARTITIONS: i32 = 12;

fn cfg(group: &str) -> GroupConfig {
    GroupConfig {
        group: group.into(),
        topic: "events".into(),
        instance_id: None,
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        heartbeat_interval: Duration::from_millis(200),
        retry_backoff: Duration::from_millis(100),
    }
}

/// One member on its own thread: joins, reports each generation's partitions, revokes when
/// asked, commits its partitions' offsets (their numbers as offsets) once stable, leaves at stop.
fn member(
    addr: String,
    name: &'static str,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<(&'static str, i32, Vec<i32>)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        common::block_on(async move {
            let mut client = Client::connect(client_config(&addr)).await.expect("client");
            let mut coord = Coordinator::find(&mut client, "g1")
                .await
                .expect("coordinator");
            let mut m = Membership::new(cfg("g1"), (0..PARTITIONS).collect(), Instant::now());
            while !stop.load(Ordering::Relaxed) {
                let action = m.poll(Instant::now());
                match coord.perform(&mut m, action, Duration::from_secs(10)).await {
                    Ok(Some(Action::Assigned {
                        generation,
                        partitions,
                    })) => {
                        let offsets = partitions
                            .iter()
                            .map(|p| (*p, 100 + i64::from(*p)))
                            .collect();
                        coord
                            .commit_offsets(&m, None, "events", &offsets)
                            .await
                            .expect("offset commit");
                        tx.send((name, generation, partitions)).expect("report");
                    }
                    Ok(Some(Action::Revoke { .. })) => m.revoked(Instant::now()),
                    Ok(Some(Action::WaitUntil(at))) => {
                        let d = at
                            .saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(50));
                        tokio::time::sleep(d).await;
                    }
                    Ok(Some(Action::Fatal(e))) => panic!("{name}: {e}"),
                    Ok(_) => {}
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            coord.leave(&m, None).await.expect("leave");
        })
    })
}

/// Waits until the newest generation's reports from `names` cover every partition once.
fn settled(
    rx: &mpsc::Receiver<(&'static str, i32, Vec<i32>)>,
    names: &[&str],
    seen: &mut BTreeMap<&'static str, (i32, Vec<i32>)>,
) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, generation, parts) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no settled assignment: {seen:?}"));
        eprintln!("{name}: generation {generation}: {parts:?}");
        seen.insert(name, (generation, parts));
        let newest = seen.values().map(|(g, _)| *g).max().unwrap_or(-1);
        let current: Vec<_> = names
            .iter()
            .filter_map(|n| seen.get(n))
            .filter(|(g, _)| *g == newest)
            .collect();
        if current.len() == names.len() {
            let mut all: Vec<i32> = current.iter().flat_map(|(_, p)| p.clone()).collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..PARTITIONS).collect::<Vec<_>>(),
                "generation {newest}: {seen:?}"
            );
            let (lo, hi) = (
                current.iter().map(|(_, p)| p.len()).min().unwrap_or(0),
                current.iter().map(|(_, p)| p.len()).max().unwrap_or(0),
            );
            assert!(hi - lo <= 1, "balanced: {seen:?}");
            return newest;
        }
    }
}

#[test]
fn members_join_rebalance_and_commit_offsets_through_tansus_coordinator() {
    let broker = Broker::start();
    broker.create_topic("events", PARTITIONS as u32);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let mut seen = BTreeMap::new();
    let a = member(broker.addr.clone(), "a", stop.clone(), tx.clone());
    let g1 = settled(&rx, &["a"], &mut seen);
    assert_eq!(seen["a"].1.len(), PARTITIONS as usize);
    let b = member(broker.addr.clone(), "b", stop.clone(), tx.clone());
    let g2 = settled(&rx, &["a", "b"], &mut seen);
    assert!(g2 > g1, "a new generation: {g1} then {g2}");
    // Sticky: a keeps half of what it had, b gets the rest.
    assert_eq!(seen["a"].1.len(), 6);
    stop.store(true, Ordering::Relaxed);
    a.join().expect("a");
    b.join().expect("b");

    // The group's offsets, read by an independent client.
    let py = common::python_with("confluent_kafka");
    let script = format!(
        "from confluent_kafka import TopicPartition\nfrom confluent_kafka.admin import AdminClient\nfrom confluent_kafka import ConsumerGroupTopicPartitions\nadmin = AdminClient({{'bootstrap.servers': '{}'}})\nf = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions('g1', [TopicPartition('events', p) for p in range({PARTITIONS})])])\nfor tp in f['g1'].result().topic_partitions:\n    print(tp.partition, tp.offset)\n",
        broker.addr
    );
    let out = common::python_stdout(&py, &["-c", &script]);
    let got: BTreeMap<i32, i64> = out
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    let want: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 100 + i64::from(p))).collect();
    assert_eq!(got, want, "{out}");
}
