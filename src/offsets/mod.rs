//! Checkpoints: the Kafka offsets stored in Iceberg snapshot summaries, and epoch bookkeeping.
//!
//! Owns the summary format (`icefall.offsets.<topic>` = JSON object of partition → next offset,
//! `icefall.epoch`, `icefall.commit-id`), deterministic commit ids, recovery (walk a snapshot's
//! ancestry to the newest one that carries offsets), and [`EpochTracker`], which decides when an
//! epoch may be committed. All of it is sans-IO: it sees snapshots as plain data and never awaits.
//! It knows nothing of catalogs, object stores or executors.

use std::collections::{BTreeMap, HashMap};

use crate::record::Offsets;

mod epochs;
mod fence;
mod ledger;

pub use epochs::{EpochTracker, ReadyEpoch};
pub use fence::{Moved, fence};
pub use ledger::Ranges;

pub const OFFSETS_PREFIX: &str = "icefall.offsets.";
pub const DROPPED_PREFIX: &str = "icefall.dropped.";
pub const REPLAYED_PREFIX: &str = "icefall.replayed.";
/// Largest ledger written into a summary; a larger one goes to a file the summary names (every
/// snapshot's summary is rewritten into every later table metadata file, so it must stay small).
pub const LEDGER_INLINE_MAX: usize = 16 * 1024;
pub const EPOCH_KEY: &str = "icefall.epoch";
pub const DLQ_OFFSETS_PREFIX: &str = "icefall.dlq-offsets.";
pub const COMMIT_ID_KEY: &str = "icefall.commit-id";

/// A summary that claims to be icefall's but cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("snapshot {snapshot}: {key} cannot be read: {reason}")]
    Malformed {
        snapshot: i64,
        key: String,
        reason: String,
    },
}

/// Dead letters an earlier run already wrote: met again after a restart, they are skipped, so a
/// crash between the dead-letter write and the table commit never writes one twice.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The dead-letter table's committed offsets: every dead letter below them is written.
    pub below: Offsets,
    /// The dead-letter topic's records past the table's offsets: exactly these are written.
    pub exact: ahash::AHashSet<(i32, i64)>,
}

impl SetAside {
    pub fn contains(&self, partition: i32, offset: i64) -> bool {
        self.below
            .get(&partition)
            .is_some_and(|&next| offset < next)
            || self.exact.contains(&(partition, offset))
    }
}

/// `icefall.dlq-offsets.<dead-letter topic>`: the topic's end offsets once this snapshot's
/// dead letters were produced (same encoding as the offsets).
pub fn dead_letter_offsets_key(dlq_topic: &str) -> String {
    format!("{DLQ_OFFSETS_PREFIX}{dlq_topic}")
}

#[cfg(test)]
#[test]
fn set_aside_holds_what_is_below_the_offsets_and_exactly_what_was_found() {
    let s = SetAside {
        below: [(0, 10)].into_iter().collect(),
        exact: [(1, 4), (0, 12)].into_iter().collect(),
    };
    assert!(s.contains(0, 9) && !s.contains(0, 10) && s.contains(0, 12));
    assert!(s.contains(1, 4) && !s.contains(1, 3) && !s.contains(2, 0));
}

pub fn offsets_key(topic: &str) -> String {
    format!("{OFFSETS_PREFIX}{topic}")
}

/// The epoch of `topic`'s offsets in a snapshot that carries several topics' (a maintenance
/// snapshot); a writer's own snapshot has one `icefall.epoch`.
pub fn topic_epoch_key(topic: &str) -> String {
    format!("{EPOCH_KEY}.{topic}")
}

/// Longest ancestry walked (a cycle in corrupt metadata ends there).
const MAX_ANCESTRY: usize = 1_000_000;

/// `head` and its parents, newest first, as far as `lookup` knows them.
pub fn ancestry<'a, F>(head: Option<i64>, lookup: F) -> impl Iterator<Item = SnapshotView<'a>>
where
    F: Fn(i64) -> Option<SnapshotView<'a>>,
{
    let mut cur = head;
    std::iter::from_fn(move || {
        let s = lookup(cur?)?;
        cur = s.parent;
        Some(s)
    })
    .take(MAX_ANCESTRY)
}

/// The value of `key` in the newest snapshot of `head`'s ancestry that has it.
pub fn newest<'a>(
    head: Option<i64>,
    lookup: impl Fn(i64) -> Option<SnapshotView<'a>>,
    key: &str,
) -> Option<&'a String> {
    ancestry(head, lookup).find_map(|s| s.summary.get(key))
}

/// What a snapshot that adds no records (maintenance) carries so that recovery reads it as it
/// would read its ancestry: each topic's newest offsets with their epoch, and each dead-letter
/// topic's newest ends.
pub fn carried<'a>(
    head: Option<i64>,
    lookup: impl Fn(i64) -> Option<SnapshotView<'a>>,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for s in ancestry(head, lookup) {
        for (k, v) in s.summary {
            if out.contains_key(k) {
                continue;
            }
            if let Some(topic) = k.strip_prefix(OFFSETS_PREFIX) {
                out.insert(k.clone(), v.clone());
                let epoch_key = topic_epoch_key(topic);
                if let Some(e) = s.summary.get(&epoch_key).or(s.summary.get(EPOCH_KEY)) {
                    out.insert(epoch_key, e.clone());
                }
            } else if k.starts_with(DLQ_OFFSETS_PREFIX) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The two ledgers a snapshot may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// Offsets dropped in the snapshot's epoch.
    Dropped,
    /// Offsets a `replay-dropped` snapshot appended.
    Replayed,
}

impl LedgerKind {
    /// `icefall.dropped.<topic>` / `icefall.replayed.<topic>`: `{"3":[[10,12]]}` inline.
    pub fn key(self, topic: &str) -> String {
        match self {
            Self::Dropped => format!("{DROPPED_PREFIX}{topic}"),
            Self::Replayed => format!("{REPLAYED_PREFIX}{topic}"),
        }
    }

    /// `icefall.dropped-file.<topic>` / `icefall.replayed-file.<topic>`: the location of a JSON
    /// file holding the same object, for ledgers over [`LEDGER_INLINE_MAX`].
    pub fn file_key(self, topic: &str) -> String {
        match self {
            Self::Dropped => format!("icefall.dropped-file.{topic}"),
            Self::Replayed => format!("icefall.replayed-file.{topic}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Dropped => "dropped",
            Self::Replayed => "replayed",
        }
    }
}

pub fn dropped_key(topic: &str) -> String {
    LedgerKind::Dropped.key(topic)
}

pub fn replayed_key(topic: &str) -> String {
    LedgerKind::Replayed.key(topic)
}

/// `{"0":123,"1":456}`: partitions as strings, as the summary format prescribes.
pub fn encode_offsets(offsets: &Offsets) -> String {
    let map: serde_json::Map<String, serde_json::Value> = offsets
        .iter()
        .map(|(p, o)| (p.to_string(), serde_json::Value::from(*o)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub fn decode_offsets(json: &str) -> Result<Offsets, String> {
    let map: BTreeMap<String, i64> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    map.into_iter()
        .map(|(p, o)| {
            let p: i32 = p
                .parse()
                .map_err(|_| format!("partition {p:?} is not a number"))?;
            if o < 0 {
                return Err(format!("partition {p} has negative offset {o}"));
            }
            Ok((p, o))
        })
        .collect()
}

/// The same epoch over the same offsets (and the same further summary entries) always gets the
/// same id, so a commit whose outcome was unknown can be recognised in the table.
pub fn commit_id(
    table: &str,
    topic: &str,
    epoch: u64,
    offsets: &Offsets,
    extra: &[(String, String)],
) -> String {
    let h =
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one((table, topic, epoch, offsets, extra));
    format!("{epoch:08}-{h:016x}")
}

/// What recovery needs to know of one snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotView<'a> {
    pub id: i64,
    pub parent: Option<i64>,
    pub summary: &'a HashMap<String, String>,
}

/// The newest checkpoint in a snapshot's ancestry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub snapshot: i64,
    pub offsets: Offsets,
    pub epoch: u64,
}

/// Walks from `head` through parents to the newest snapshot carrying this topic's offsets.
/// Snapshots made by other writers or maintenance (no offsets) are passed over.
pub fn recover<'a>(
    head: Option<i64>,
    lookup: impl Fn(i64) -> Option<SnapshotView<'a>>,
    topic: &str,
) -> Result<Option<Checkpoint>, OffsetsError> {
    let key = offsets_key(topic);
    for s in ancestry(head, lookup) {
        let id = s.id;
        if let Some(json) = s.summary.get(&key) {
            let offsets = decode_offsets(json).map_err(|reason| OffsetsError::Malformed {
                snapshot: id,
                key: key.clone(),
                reason,
            })?;
            let epoch = s
                .summary
                .get(&topic_epoch_key(topic))
                .or(s.summary.get(EPOCH_KEY))
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            return Ok(Some(Checkpoint {
                snapshot: id,
                offsets,
                epoch,
            }));
        }
    }
    Ok(None)
}

/// Every drop and every replay recorded in a table's history for one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub dropped: Ranges,
    pub replayed: Ranges,
    /// Ledgers kept in files (location), still to be read and added.
    pub files: Vec<(LedgerKind, String)>,
}

impl Ledger {
    pub fn add(&mut self, kind: LedgerKind, ranges: &Ranges) {
        match kind {
            LedgerKind::Dropped => self.dropped.union(ranges),
            LedgerKind::Replayed => self.replayed.union(ranges),
        }
    }

    /// Dropped and not yet replayed.
    pub fn outstanding(&self) -> Ranges {
        self.dropped.minus(&self.replayed)
    }
}

/// Walks `head`'s whole ancestry and unions every snapshot's dropped and replayed ranges.
pub fn ledger<'a>(
    head: Option<i64>,
    lookup: impl Fn(i64) -> Option<SnapshotView<'a>>,
    topic: &str,
) -> Result<Ledger, OffsetsError> {
    let kinds = [LedgerKind::Dropped, LedgerKind::Replayed];
    let mut out = Ledger::default();
    for s in ancestry(head, lookup) {
        let id = s.id;
        for kind in kinds {
            let key = kind.key(topic);
            if let Some(json) = s.summary.get(&key) {
                let r = Ranges::decode(json).map_err(|reason| OffsetsError::Malformed {
                    snapshot: id,
                    key,
                    reason,
                })?;
                out.add(kind, &r);
            }
            if let Some(location) = s.summary.get(&kind.file_key(topic)) {
                out.files.push((kind, location.clone()));
            }
        }
    }
    Ok(out)
}

/// Whether a snapshot with this commit id is in `head`'s ancestry (at most `depth` back).
pub fn contains_commit<'a>(
    head: Option<i64>,
    lookup: impl Fn(i64) -> Option<SnapshotView<'a>>,
    id: &str,
    depth: usize,
) -> bool {
    ancestry(head, lookup)
        .take(depth)
        .any(|s| s.summary.get(COMMIT_ID_KEY).is_some_and(|c| c == id))
}

/// `base` with `ours` laid over it: other writers' partitions are carried forward.
pub fn merge(base: &Offsets, ours: &Offsets) -> Offsets {
    let mut out = base.clone();
    out.extend(ours.iter().map(|(p, o)| (*p, *o)));
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::Progress;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn offsets_round_trip(m in proptest::collection::btree_map(0i32..10_000, 0i64..i64::MAX, 0..50)) {
            prop_assert_eq!(decode_offsets(&encode_offsets(&m)).unwrap(), m);
        }
    }

    #[test]
    fn summary_format_is_partition_strings_to_numbers() {
        let m = Offsets::from([(0, 10), (12, 7)]);
        assert_eq!(encode_offsets(&m), r#"{"0":10,"12":7}"#);
        assert!(decode_offsets(r#"{"x":1}"#).is_err());
        assert!(decode_offsets(r#"{"1":-4}"#).is_err());
        assert!(decode_offsets("[1]").is_err());
    }

    #[test]
    fn commit_ids_are_deterministic_and_distinct() {
        let a = Offsets::from([(0, 10)]);
        let b = Offsets::from([(0, 11)]);
        assert_eq!(
            commit_id("ns.t", "x", 3, &a, &[]),
            commit_id("ns.t", "x", 3, &a, &[])
        );
        assert_ne!(
            commit_id("ns.t", "x", 3, &a, &[]),
            commit_id("ns.t", "x", 3, &b, &[])
        );
        assert_ne!(
            commit_id("ns.t", "x", 3, &a, &[]),
            commit_id("ns.t", "x", 4, &a, &[])
        );
        assert!(commit_id("ns.t", "x", 3, &a, &[]).starts_with("00000003-"));
    }

    #[test]
    fn recovery_skips_foreign_snapshots_and_reads_the_newest_checkpoint() {
        let ours = HashMap::from([
            (offsets_key("events"), r#"{"0":5,"1":9}"#.to_string()),
            (EPOCH_KEY.to_string(), "7".to_string()),
            (COMMIT_ID_KEY.to_string(), "c7".to_string()),
        ]);
        let older = HashMap::from([(offsets_key("events"), r#"{"0":1}"#.to_string())]);
        let foreign = HashMap::from([("operation".to_string(), "replace".to_string())]);
        let snaps = [
            (1, None, &older),
            (2, Some(1), &ours),
            (3, Some(2), &foreign),
        ];
        let lookup = |id: i64| {
            snaps.iter().find(|s| s.0 == id).map(|s| SnapshotView {
                id: s.0,
                parent: s.1,
                summary: s.2,
            })
        };
        let cp = recover(Some(3), lookup, "events").unwrap().unwrap();
        assert_eq!((cp.snapshot, cp.epoch), (2, 7));
        // A maintenance snapshot carrying what it read recovers the same.
        let mut replace = carried(Some(3), lookup);
        replace.insert("operation".into(), "replace".into());
        let other = HashMap::from([
            (offsets_key("other"), r#"{"0":3}"#.to_string()),
            (EPOCH_KEY.to_string(), "2".to_string()),
        ]);
        let snaps2 = [(0, None, &other), (4, Some(3), &replace)];
        let lookup2 = |id: i64| match snaps2.iter().find(|s| s.0 == id) {
            Some(s) => Some(SnapshotView {
                id: s.0,
                parent: s.1,
                summary: s.2,
            }),
            None => lookup(id),
        };
        let again = recover(Some(4), lookup2, "events").unwrap().unwrap();
        assert_eq!((again.snapshot, again.epoch), (4, 7));
        assert_eq!(again.offsets, cp.offsets);
        assert!(!replace.contains_key(COMMIT_ID_KEY) && !replace.contains_key(EPOCH_KEY));
        assert_eq!(cp.offsets, Offsets::from([(0, 5), (1, 9)]));
        assert_eq!(recover(Some(3), lookup, "other").unwrap(), None);
        assert_eq!(recover(None, lookup, "events").unwrap(), None);
        assert!(contains_commit(Some(3), lookup, "c7", 10));
        assert!(!contains_commit(Some(3), lookup, "c8", 10));
        assert!(
            !contains_commit(Some(3), lookup, "c7", 1),
            "depth bounds the walk"
        );
    }

    #[test]
    fn merge_carries_other_partitions_forward() {
        let base = Offsets::from([(0, 5), (1, 9)]);
        assert_eq!(
            merge(&base, &Offsets::from([(1, 12), (2, 3)])),
            Offsets::from([(0, 5), (1, 12), (2, 3)])
        );
    }

    #[test]
    fn an_epoch_is_ready_once_every_core_ended_it_and_every_file_is_uploaded() {
        let report = |o: Offsets| {
            Arc::new(Progress {
                next_offsets: o,
                dropped: Ranges::new(),
            })
        };
        let mut t: EpochTracker<&str> = EpochTracker::new(2, Offsets::from([(0, 100), (1, 50)]));
        t.on_file_sent(1);
        t.on_epoch_done(1, &[report(Offsets::from([(0, 110)]))]);
        assert!(
            t.take_ready().is_none(),
            "one core and one file outstanding"
        );
        t.on_file_sent(2);
        t.on_file_uploaded(2, "b");
        t.on_epoch_done(1, &[report(Offsets::from([(1, 60)]))]);
        assert!(t.take_ready().is_none(), "epoch 1's file is not uploaded");
        t.on_file_uploaded(1, "a");
        let r = t.take_ready().unwrap();
        assert_eq!((r.epoch, r.files.clone(), r.is_noop), (1, vec!["a"], false));
        assert_eq!(r.offsets, Offsets::from([(0, 110), (1, 60)]));
        t.committed_as(r.offsets);
        t.on_epoch_done(2, &[report(Offsets::from([(0, 110)]))]);
        t.on_epoch_done(2, &[]);
        let r = t.take_ready().unwrap();
        assert_eq!(r.epoch, 2);
        assert!(!r.is_noop, "a file was written");
        t.committed_as(r.offsets);
        t.on_epoch_done(3, &[]);
        t.on_epoch_done(3, &[]);
        assert!(t.take_ready().unwrap().is_noop, "no file, no offset moved");
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn drops_are_counted_once_per_fetch_core_and_make_an_epoch_worth_committing() {
        let mut dropped = Ranges::new();
        dropped.push_range(1, 50, 59);
        let shared = Arc::new(Progress {
            next_offsets: Offsets::from([(1, 60)]),
            dropped,
        });
        let mut t: EpochTracker<&str> = EpochTracker::new(2, Offsets::from([(1, 60)]));
        // Both shard cores forward the same report.
        t.on_epoch_done(1, std::slice::from_ref(&shared));
        t.on_epoch_done(1, std::slice::from_ref(&shared));
        let r = t.take_ready().unwrap();
        assert!(!r.is_noop, "nothing written, but the drop must be recorded");
        assert_eq!(r.dropped.encode(), r#"{"1":[[50,59]]}"#);
    }

    #[test]
    fn the_ledger_unions_the_whole_history() {
        let a = HashMap::from([(dropped_key("t"), r#"{"0":[[1,3]]}"#.to_string())]);
        let b = HashMap::from([
            (dropped_key("t"), r#"{"0":[[7,7]],"2":[[4,4]]}"#.to_string()),
            (dropped_key("other"), r#"{"0":[[100,200]]}"#.to_string()),
        ]);
        let c = HashMap::from([
            (replayed_key("t"), r#"{"0":[[1,3]]}"#.to_string()),
            (
                LedgerKind::Dropped.file_key("t"),
                "file:///x.json".to_string(),
            ),
        ]);
        let snaps = [(1, None, &a), (2, Some(1), &b), (3, Some(2), &c)];
        let lookup = |id: i64| {
            snaps.iter().find(|s| s.0 == id).map(|s| SnapshotView {
                id: s.0,
                parent: s.1,
                summary: s.2,
            })
        };
        let l = ledger(Some(3), lookup, "t").unwrap();
        assert_eq!(l.dropped.encode(), r#"{"0":[[1,3],[7,7]],"2":[[4,4]]}"#);
        assert_eq!(l.outstanding().encode(), r#"{"0":[[7,7]],"2":[[4,4]]}"#);
        assert_eq!(
            l.files,
            vec![(LedgerKind::Dropped, "file:///x.json".to_string())]
        );
        let bad = HashMap::from([(dropped_key("t"), "[1]".to_string())]);
        let e = ledger(
            Some(1),
            |_| {
                Some(SnapshotView {
                    id: 1,
                    parent: None,
                    summary: &bad,
                })
            },
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("icefall.dropped.t"), "{e}");
    }
}
