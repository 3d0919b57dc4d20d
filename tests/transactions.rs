//! Topics Tansu cannot serve, from the protocol-level test broker (`common/wire_broker.rs`):
//! transactions of three producers interleaved with markers at the tail, a compaction gap,
//! cut-short trailing batches, every codec, duplicate header keys and null header values, two
//! nodes, and a leader that moves mid-run. `--stop-at-end` must end, and the table must hold
//! exactly the committed records (every record with `read_uncommitted`), each once. The same
//! broker shows what the fetch loop asks and when: the next request leaves before an answer is
//! routed.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::wire_broker::{AbortedTxn, Log, Prepared, WireBroker};
use common::*;
use icefall::kafka::Codec;
use icefall::kafka::encode::{BatchSpec, OutRecord, encode_batch, encode_marker};

type H = (&'static [u8], Option<&'static [u8]>);
const HEADERS: &[H] = &[
    (b"dup", Some(b"first")),
    (b"dup", Some(b"second")),
    (b"nul", None),
];

/// A value names its partition and offset, so the table shows which records landed.
fn value(p: i32, o: i64) -> Vec<u8> {
    format!("p{p}-o{o}").into_bytes()
}

struct Builder {
    p: i32,
    log: Log,
}

impl Builder {
    fn new(p: i32, leader: i32) -> Self {
        Self {
            p,
            log: Log {
                leader,
                ..Log::default()
            },
        }
    }

    fn push(&mut self, spec: BatchSpec, offsets: &[i64], headers: &'static [H]) {
        let values: Vec<Vec<u8>> = offsets.iter().map(|&o| value(self.p, o)).collect();
        let recs: Vec<OutRecord<'_>> = offsets
            .iter()
            .zip(&values)
            .map(|(&o, v)| OutRecord {
                offset: o,
                timestamp_ms: 1_700_000_000_000 + o,
                key: Some(b"k"),
                value: Some(v),
                headers,
            })
            .collect();
        let mut bytes = Vec::new();
        encode_batch(&spec, &recs, &mut bytes).unwrap();
        let last = spec.last_offset.unwrap_or(*offsets.last().unwrap());
        self.log.batches.push(Prepared {
            base_offset: offsets[0],
            last_offset: last,
            bytes: bytes.into(),
        });
    }

    fn txn(&mut self, pid: i64, codec: Codec, offsets: &[i64]) {
        let spec = BatchSpec {
            codec,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: true,
            ..BatchSpec::default()
        };
        self.push(spec, offsets, &[]);
    }

    fn marker(&mut self, pid: i64, offset: i64, commit: bool) {
        let mut bytes = Vec::new();
        encode_marker(pid, offset, commit, 0, &mut bytes).unwrap();
        self.log.batches.push(Prepared {
            base_offset: offset,
            last_offset: offset,
            bytes: bytes.into(),
        });
    }
}

/// Per partition, the offsets an isolation level keeps.
type Kept = BTreeMap<i32, Vec<i64>>;

/// The logs, and per partition the offsets read_committed keeps and read_uncommitted keeps.
fn logs() -> (BTreeMap<i32, Log>, Kept, Kept) {
    // p0 on node 0: producers 1 and 3 commit, 2 aborts; 3 aborts once, then commits; a COMMIT
    // marker is the tail.
    let mut p0 = Builder::new(0, 0);
    p0.txn(1, Codec::Gzip, &[0, 1]);
    p0.txn(2, Codec::Snappy, &[2, 3]);
    p0.txn(3, Codec::Lz4, &[4]);
    p0.txn(1, Codec::Zstd, &[5]);
    p0.marker(2, 6, false);
    p0.txn(3, Codec::None, &[7]);
    p0.marker(1, 8, true);
    p0.marker(3, 9, false);
    p0.txn(3, Codec::Zstd, &[10, 11]);
    p0.push(BatchSpec::default(), &[12], HEADERS);
    p0.marker(3, 13, true);
    p0.log.aborted = vec![
        AbortedTxn {
            producer_id: 2,
            first_offset: 2,
            last_offset: 6,
        },
        AbortedTxn {
            producer_id: 3,
            first_offset: 4,
            last_offset: 9,
        },
    ];
    // p1 on node 1: a compacted batch (offsets 2, 3, 5, 6 gone, the batch ends at 6), then
    // batches of every codec with duplicate header keys and null header values.
    let mut p1 = Builder::new(1, 1);
    p1.push(
        BatchSpec {
            codec: Codec::Zstd,
            last_offset: Some(6),
            ..BatchSpec::default()
        },
        &[0, 1, 4],
        HEADERS,
    );
    let mut next = 7;
    // Every codec, four times: p1 is still being read on node 1 after p2 has moved there.
    for codec in Codec::ALL.repeat(4) {
        let offsets: Vec<i64> = (next..next + 6).collect();
        p1.push(
            BatchSpec {
                codec,
                ..BatchSpec::default()
            },
            &offsets,
            HEADERS,
        );
        next += 6;
    }
    // p2 starts on node 0 and moves to node 1 mid-run.
    let mut p2 = Builder::new(2, 0);
    for b in 0..12 {
        let offsets: Vec<i64> = (b * 5..b * 5 + 5).collect();
        p2.push(BatchSpec::default(), &offsets, &[]);
    }
    let committed = BTreeMap::from([
        (0, vec![0, 1, 5, 10, 11, 12]),
        (1, [0, 1, 4].into_iter().chain(7..127).collect()),
        (2, (0..60).collect()),
    ]);
    let mut all = committed.clone();
    all.insert(0, vec![0, 1, 2, 3, 4, 5, 7, 10, 11, 12]);
    let logs = BTreeMap::from([(0, p0.log), (1, p1.log), (2, p2.log)]);
    (logs, committed, all)
}

type Landed = BTreeMap<i32, Vec<(i64, Vec<u8>, Vec<(String, Option<Vec<u8>>)>)>>;

fn run(isolation: &str) -> (WireBroker, Landed) {
    run_on(isolation, false)
}

/// `sessions`: the broker serves incremental fetch sessions, and evicts them once mid-run.
fn run_on(isolation: &str, sessions: bool) -> (WireBroker, Landed) {
    let (logs, _, _) = logs();
    let broker = WireBroker::start(2, "txn", logs);
    {
        let mut s = broker.state.lock().unwrap();
        // p2 moves from node 0 to node 1 after node 0 has answered three fetches for it.
        s.move_after = Some((3, 2, 1));
        s.hold_until_moved = Some(1);
        s.sessions = sessions;
        s.evict_sessions_after = sessions.then_some(6);
        s.thin_answers = sessions;
    }
    let wh = tempfile::tempdir().unwrap();
    let addr = broker.bootstrap();
    let whs = wh.path().to_str().unwrap();
    let mut args = base_args(&addr, "txn", whs);
    // Small per-partition limits: most answers end in a cut-short batch.
    args.extend([
        "--stop-at-end",
        "--isolation",
        isolation,
        "--fetch-max-bytes",
        "200B",
        "--kafka-timeout",
        "10s",
    ]);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "icefall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_partition: Landed = BTreeMap::new();
    for (_, rows) in read_warehouse(wh.path()) {
        for r in rows {
            by_partition.entry(r.partition).or_default().push((
                r.offset,
                r.value.unwrap(),
                r.headers,
            ));
        }
    }
    for rows in by_partition.values_mut() {
        rows.sort();
    }
    (broker, by_partition)
}

/// The headers a prepared record carries, as the table must hold them.
fn headers_of(p: i32, o: i64) -> Vec<(String, Option<Vec<u8>>)> {
    let with = (p == 0 && o == 12) || p == 1;
    let hs: &[H] = if with { HEADERS } else { &[] };
    hs.iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.to_vec()).unwrap(),
                v.map(<[u8]>::to_vec),
            )
        })
        .collect()
}

fn assert_exactly(got: &Landed, want: &BTreeMap<i32, Vec<i64>>) {
    for (p, offsets) in want {
        let rows = got.get(p).cloned().unwrap_or_default();
        let got_offsets: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(
            &got_offsets, offsets,
            "partition {p}: offsets in the table, each once"
        );
        for (o, v, h) in rows {
            assert_eq!(v, value(*p, o), "p{p} o{o}: value");
            assert_eq!(
                h,
                headers_of(*p, o),
                "p{p} o{o}: headers byte-equal and in order"
            );
        }
    }
}

#[test]
fn read_committed_lands_exactly_the_committed_records_across_a_leader_move() {
    let (_, committed, _) = logs();
    let (broker, got) = run("read_committed");
    assert_exactly(&got, &committed);
    let s = broker.state.lock().unwrap();
    assert_eq!(s.logs[&2].leader, 1, "the leader of p2 moved mid-run");
    // One request per leader per round: a fetch never names a partition twice, requests to node
    // 0 carried p0 and p2 together, and after the move node 1 carried p1 and p2 together.
    for (node, ps) in &s.fetches {
        let unique: BTreeSet<_> = ps.iter().collect();
        assert_eq!(unique.len(), ps.len(), "node {node}: {ps:?}");
    }
    assert!(
        s.fetches
            .iter()
            .any(|(n, ps)| *n == 0 && ps.contains(&0) && ps.contains(&2))
    );
    assert!(
        s.fetches
            .iter()
            .any(|(n, ps)| *n == 1 && ps.contains(&1) && ps.contains(&2))
    );
    // Planning and the fetch core each keep one connection per broker.
    for (node, n) in &s.connections {
        assert!(*n <= 2, "node {node}: {n} connections");
    }
}

/// A broker that offers fetch sessions (KIP-227) gets them: after the first, full request of a
/// session, a request names only the partitions whose position moved; a partition that moves
/// to another leader leaves the old one's session; an evicted session is replaced by a full
/// request; and the table holds exactly the committed records.
#[test]
fn incremental_fetch_sessions_land_exactly_the_committed_records() {
    let (_, committed, _) = logs();
    let (broker, got) = run_on("read_committed", true);
    assert_exactly(&got, &committed);
    let s = broker.state.lock().unwrap();
    let f = &s.session_fetches;
    assert!(
        f.iter().any(|x| x.epoch > 0),
        "incremental requests were sent: {f:?}"
    );
    assert!(
        f.iter().any(|x| x.epoch > 0 && x.named.len() < x.held),
        "an incremental request left out a partition the session holds: {f:?}"
    );
    // p2 moved to node 1: once node 1 names it, node 0 never does again (its session forgot
    // it, or was replaced by one without it).
    let moved = f
        .iter()
        .position(|x| x.node == 1 && x.named.contains(&2))
        .expect("node 1 fetched p2");
    assert!(
        f[moved..]
            .iter()
            .all(|x| x.node != 0 || !x.named.contains(&2)),
        "node 0 named p2 after it moved: {f:?}"
    );
    let made = |n: i32| f.iter().filter(|x| x.node == n && x.epoch == 0).count();
    assert!(
        made(0) >= 2 || made(1) >= 2,
        "the evicted session was replaced by a full request: {f:?}"
    );
}

#[test]
fn read_uncommitted_lands_the_aborted_records_too() {
    let (_, _, all) = logs();
    let (_, got) = run("read_uncommitted");
    assert_exactly(&got, &all);
}

/// A batch whose bytes do not hold up: exit 3, one line naming topic, partition and offset.
#[test]
fn a_bad_batch_stops_the_run_naming_topic_partition_and_offset() {
    let good = |p: i32| {
        let mut b = Builder::new(p, 0);
        b.push(BatchSpec::default(), &[0, 1, 2], &[]);
        b.push(BatchSpec::default(), &[3, 4], &[]);
        b.log
    };
    // The CRC of the second batch no longer matches; an unknown codec (CRC made right); a record
    // length that runs past its batch (CRC made right).
    type Spoil = fn(&mut Vec<u8>);
    let cases: [(&str, Spoil); 3] = [
        ("CRC-32C mismatch", |b| *b.last_mut().unwrap() ^= 0x55),
        ("unknown compression codec 6", |b| {
            b[21..23].copy_from_slice(&6i16.to_be_bytes());
            fix_crc(b);
        }),
        ("length runs past the batch", |b| {
            b[61] = 0x7e;
            fix_crc(b);
        }),
    ];
    for (needle, spoil) in cases {
        let mut log = good(1);
        let mut bytes = log.batches[1].bytes.to_vec();
        spoil(&mut bytes);
        log.batches[1].bytes = bytes.into();
        let broker = WireBroker::start(1, "bad", BTreeMap::from([(0, good(0)), (1, log)]));
        let wh = tempfile::tempdir().unwrap();
        let addr = broker.bootstrap();
        let mut args = base_args(&addr, "bad", wh.path().to_str().unwrap());
        args.extend(["--stop-at-end", "--kafka-timeout", "5s"]);
        let out = icefall(&args);
        assert_clean_failure(&out, 3, &["bad/1", "offset 3", needle]);
    }
}

fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// While a slow shard core holds the fetch core back, the next request to the broker has already
/// left: it is sent when an answer arrives, before that answer waits for room in the ring. The
/// shard core sleeps on its first batch far longer than the test, so the fetch core ends up
/// blocked routing some answer, with the partition's position already moved past it. A fetch
/// loop that asked only after routing would then have asked the broker up to the answer it is
/// routing (one offset short of the position); one that asks ahead has asked from the position.
/// Read once nothing moves any more, from the broker and `/metrics`; no clock decides it.
#[test]
fn the_next_fetch_leaves_while_an_answer_waits_for_a_full_ring() {
    let mut p0 = Builder::new(0, 0);
    for o in 0..8 {
        p0.push(BatchSpec::default(), &[o], &[]);
    }
    let broker = WireBroker::start(1, "ahead", BTreeMap::from([(0, p0.log)]));
    let wh = tempfile::tempdir().unwrap();
    let addr = broker.bootstrap();
    let mut args = base_args(&addr, "ahead", wh.path().to_str().unwrap());
    // One batch per answer, one batch in the ring.
    args.extend([
        "--stop-at-end",
        "--fetch-max-bytes",
        "1B",
        "--ring-batches",
        "1",
        "--debug-slow-shard",
        "0:120s",
    ]);
    let (mut child, log) = spawn_icefall_logged(&args);
    let http = logged_http_addr(&log);
    let read = || {
        let (_, metrics) = http_get(&http, "/metrics");
        let position = metric_sum(&metrics, "icefall_position") as i64;
        let asked = broker
            .state
            .lock()
            .unwrap()
            .fetch_offsets
            .iter()
            .map(|f| f.1)
            .max();
        (position, asked)
    };
    // Settled: the same reading for a second, past the first two batches.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut last, mut since) = (read(), std::time::Instant::now());
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = read();
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if last.0 >= 2 && since.elapsed() >= std::time::Duration::from_secs(1) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (position, asked) = last;
    assert!(
        (2..8).contains(&position),
        "blocked mid-partition, at {position}"
    );
    assert!(
        asked >= Some(position),
        "blocked routing the answer that ends at {position}, the broker was last asked from \
         {asked:?}: the next request should already have left"
    );
}
