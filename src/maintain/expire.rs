//! Which snapshots a pass expires. Only the oldest part of the current ancestry goes: a suffix in
//! which every snapshot is older than the cutoff, past the newest `retain_last`, and past the
//! newest snapshot that carries each of icefall's keys (offsets, dead letters). The ancestry that
//! stays is therefore unbroken, so the walks that read it back (offsets recovery, the ledger, the
//! commit-id lookup) still reach every kept snapshot. The drop and replay ledgers of what goes are
//! folded into one [`Ledger`], which the commit stores beside the kept history. Snapshots
//! outside the current ancestry (other refs) are never touched.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;

use crate::offsets::{self, Ledger, LedgerKind, OffsetsError, SnapshotView};

/// One snapshot as maintenance sees it.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub id: i64,
    pub parent: Option<i64>,
    pub timestamp_ms: i64,
    pub summary: &'a HashMap<String, String>,
}

/// What a pass may expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Snapshots committed before this instant (ms since the epoch) may expire.
    pub cutoff_ms: i64,
    /// The newest this many snapshots of the current ancestry always stay.
    pub retain_last: NonZeroUsize,
}

/// The decision of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Oldest last; empty when nothing may go.
    pub expire: Vec<i64>,
    /// The oldest snapshot that stays in the ancestry (its parent is expired), if any goes.
    pub new_root: Option<i64>,
    /// Per topic, the drop and replay ranges recorded by the expired snapshots (and their ledger
    /// files), to be stored with the commit that expires them.
    pub folded: Vec<(String, Ledger)>,
}

/// What `offsets::dead_letter_offsets_key` starts with.
const DLQ_OFFSETS_PREFIX: &str = "icefall.dlq-offsets.";

/// Every icefall key of a summary that resume needs the newest carrier of.
fn resume_key(key: &str) -> bool {
    key.starts_with(offsets::OFFSETS_PREFIX) || key.starts_with(DLQ_OFFSETS_PREFIX)
}

/// The topics whose ledgers a summary names.
fn ledger_topics(summary: &HashMap<String, String>) -> impl Iterator<Item = &str> {
    summary.keys().filter_map(|k| {
        [LedgerKind::Dropped, LedgerKind::Replayed]
            .into_iter()
            .find_map(|kind| {
                let prefix = kind.key("");
                let file_prefix = kind.file_key("");
                k.strip_prefix(file_prefix.as_str())
                    .or_else(|| k.strip_prefix(prefix.as_str()))
            })
    })
}

/// Plans one pass over the ancestry of `head`.
pub fn plan_expiry(
    snapshots: &[Snapshot<'_>],
    head: Option<i64>,
    policy: Policy,
) -> Result<Expiry, OffsetsError> {
    let by_id: HashMap<i64, &Snapshot<'_>> = snapshots.iter().map(|s| (s.id, s)).collect();
    // Newest first.
    let mut ancestry = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cur = head;
    while let Some(s) = cur.and_then(|id| by_id.get(&id)) {
        if !seen.insert(s.id) {
            break; // a cycle in corrupt metadata: keep everything from here on
        }
        ancestry.push(**s);
        cur = s.parent;
    }
    // Everything up to the newest carrier of each resume key stays.
    let mut need: BTreeSet<&str> = ancestry
        .iter()
        .flat_map(|s| {
            s.summary
                .keys()
                .map(String::as_str)
                .filter(|k| resume_key(k))
        })
        .collect();
    let mut keep = policy.retain_last.get().min(ancestry.len());
    for (i, s) in ancestry.iter().enumerate() {
        if need.is_empty() {
            break;
        }
        let before = need.len();
        need.retain(|k| !s.summary.contains_key(*k));
        if need.len() < before {
            keep = keep.max(i + 1);
        }
    }
    // The oldest run in which every snapshot is older than the cutoff.
    let mut first = ancestry.len();
    while first > keep && ancestry[first - 1].timestamp_ms < policy.cutoff_ms {
        first -= 1;
    }
    let gone = &ancestry[first..];
    if gone.is_empty() {
        return Ok(Expiry::default());
    }
    let lookup = |id: i64| {
        gone.iter().find(|s| s.id == id).map(|s| SnapshotView {
            id: s.id,
            parent: s.parent,
            summary: s.summary,
        })
    };
    let topics: BTreeSet<&str> = gone.iter().flat_map(|s| ledger_topics(s.summary)).collect();
    let mut folded = Vec::new();
    for topic in topics {
        let ledger = offsets::ledger(Some(gone[0].id), lookup, topic)?;
        folded.push((topic.to_owned(), ledger));
    }
    Ok(Expiry {
        expire: gone.iter().map(|s| s.id).collect(),
        new_root: first.checked_sub(1).map(|i| ancestry[i].id),
        folded,
    })
}

#[cfg(test)]
#[path = "expire_tests.rs"]
mod tests;
