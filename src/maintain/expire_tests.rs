use std::collections::HashMap;
use std::num::NonZeroUsize;

use proptest::prelude::*;

use super::*;
use crate::offsets::{Ranges, SnapshotView};

/// A chain 1 → 2 → … → n (n is the head), snapshot i committed at i seconds, each summary given.
fn chain(summaries: &[HashMap<String, String>]) -> Vec<(i64, Option<i64>, i64, usize)> {
    (0..summaries.len())
        .map(|i| {
            let id = i as i64 + 1;
            (id, (i > 0).then_some(id - 1), id * 1000, i)
        })
        .collect()
}

fn snaps<'a>(
    c: &[(i64, Option<i64>, i64, usize)],
    summaries: &'a [HashMap<String, String>],
) -> Vec<Snapshot<'a>> {
    c.iter()
        .map(|&(id, parent, timestamp_ms, i)| Snapshot {
            id,
            parent,
            timestamp_ms,
            summary: &summaries[i],
        })
        .collect()
}

fn offsets_summary(dropped: Option<(i32, i64)>) -> HashMap<String, String> {
    let mut m = HashMap::from([("icefall.offsets.events".to_owned(), "{\"0\":1}".to_owned())]);
    if let Some((p, o)) = dropped {
        let mut r = Ranges::new();
        r.push(p, o);
        m.insert(LedgerKind::Dropped.key("events"), r.encode());
    }
    m
}

fn policy(cutoff_s: i64, retain_last: usize) -> Policy {
    Policy {
        cutoff_ms: cutoff_s * 1000,
        retain_last: NonZeroUsize::new(retain_last).unwrap(),
    }
}

#[test]
fn the_oldest_past_the_cutoff_go_and_their_drops_are_folded() {
    let summaries: Vec<_> = (0..10)
        .map(|i| offsets_summary((i % 3 == 0).then_some((0, i as i64))))
        .collect();
    let c = chain(&summaries);
    let s = snaps(&c, &summaries);
    // Snapshots 1..=5 are older than 6 s; the newest 2 (9, 10) always stay.
    let e = plan_expiry(&s, Some(10), policy(6, 2)).unwrap();
    assert_eq!(e.expire, vec![5, 4, 3, 2, 1]);
    assert_eq!(e.new_root, Some(6));
    let (topic, ledger) = &e.folded[0];
    assert_eq!(topic, "events");
    // Drops recorded at snapshots 1 and 4 (offsets 0 and 3); 7's stays in the history.
    assert!(ledger.dropped.contains(0, 0) && ledger.dropped.contains(0, 3));
    assert!(!ledger.dropped.contains(0, 6));
}

#[test]
fn retain_last_and_the_newest_checkpoint_stay_whatever_their_age() {
    let mut summaries: Vec<_> = (0..6).map(|_| offsets_summary(None)).collect();
    // Another engine wrote the newest three: the checkpoint is snapshot 3.
    for s in &mut summaries[3..] {
        s.clear();
    }
    let c = chain(&summaries);
    let s = snaps(&c, &summaries);
    let e = plan_expiry(&s, Some(6), policy(100, 1)).unwrap();
    assert_eq!(
        e.expire,
        vec![2, 1],
        "3 carries the offsets a restart needs"
    );
    let e = plan_expiry(&s, Some(6), policy(0, 1)).unwrap();
    assert!(e.expire.is_empty(), "nothing is older than the cutoff");
}

#[test]
fn young_snapshots_behind_old_ones_keep_the_ancestry_unbroken() {
    let summaries: Vec<_> = (0..5).map(|_| offsets_summary(None)).collect();
    let mut c = chain(&summaries);
    // Snapshot 2's writer had a clock ahead: it looks younger than the cutoff.
    c[1].2 = 99_000;
    let s = snaps(&c, &summaries);
    let e = plan_expiry(&s, Some(5), policy(10, 1)).unwrap();
    assert_eq!(e.expire, vec![1], "2 is young, so 3 and 4 stay too");
}

fn view<'a>(s: &[Snapshot<'a>], id: i64) -> Option<SnapshotView<'a>> {
    s.iter().find(|x| x.id == id).map(|x| SnapshotView {
        id: x.id,
        parent: x.parent,
        summary: x.summary,
    })
}

proptest! {
    /// Whatever the ages and keys: what goes is an ancestry suffix past retain_last and past every
    /// resume key's newest carrier, every expired snapshot is older than the cutoff, and the
    /// ledger of the kept history together with the fold is the ledger of the whole history.
    #[test]
    fn expiry_never_loses_what_resume_or_replay_reads(
        spec in proptest::collection::vec((0i64..50, any::<bool>(), proptest::option::of(0i64..100)), 1..40),
        cutoff in 0i64..60,
        retain in 1usize..5,
    ) {
        let summaries: Vec<HashMap<String, String>> = spec
            .iter()
            .map(|(_, has_offsets, drop)| {
                let mut m = if *has_offsets { offsets_summary(None) } else { HashMap::new() };
                if let Some(o) = drop {
                    let mut r = Ranges::new();
                    r.push(0, *o);
                    m.insert(LedgerKind::Dropped.key("events"), r.encode());
                }
                m
            })
            .collect();
        let mut c = chain(&summaries);
        for (i, (age, _, _)) in spec.iter().enumerate() {
            c[i].2 = age * 1000;
        }
        let s = snaps(&c, &summaries);
        let head = s.len() as i64;
        let e = plan_expiry(&s, Some(head), policy(cutoff, retain)).unwrap();
        let gone: BTreeSet<i64> = e.expire.iter().copied().collect();
        // A suffix: ids 1..=k for some k, not reaching the newest `retain`.
        let k = gone.len() as i64;
        prop_assert!(gone.iter().all(|id| *id <= k));
        prop_assert!(k <= head - retain.min(head as usize) as i64);
        for id in &gone {
            prop_assert!(s[(*id - 1) as usize].timestamp_ms < cutoff * 1000);
        }
        // The newest offsets carrier stays.
        if let Some(newest) = s.iter().rev().find(|x| x.summary.contains_key("icefall.offsets.events")) {
            prop_assert!(!gone.contains(&newest.id));
        }
        // Kept ledger ∪ fold == whole ledger.
        let kept: Vec<Snapshot<'_>> = s.iter().copied().filter(|x| !gone.contains(&x.id)).collect();
        let mut after = offsets::ledger(Some(head), |id| view(&kept, id), "events").unwrap();
        for (_, l) in &e.folded {
            after.dropped.union(&l.dropped);
        }
        let whole = offsets::ledger(Some(head), |id| view(&s, id), "events").unwrap();
        prop_assert_eq!(after.dropped, whole.dropped);
    }
}
