//! What expiring snapshots leaves unreachable, the way Iceberg's reachable-file cleanup decides:
//! a manifest list, manifest or data file is deleted only when no kept snapshot reaches it. A
//! data file counts as reached by a kept snapshot when a manifest of that snapshot lists it as
//! live (ADDED or EXISTING). An entry marked DELETED reads nothing, so it does not keep the file.

use std::collections::{BTreeSet, HashMap};

/// One snapshot's files: its manifest list and the manifests it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFiles {
    pub manifest_list: String,
    pub manifests: Vec<String>,
}

/// Each manifest's entries, (data file path, live), by manifest path: a manifest is read once
/// however many snapshots name it (a fast append's list names every earlier manifest).
pub type Manifests = HashMap<String, Vec<(String, bool)>>;

/// The files to delete, each kind sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unreachable {
    pub manifest_lists: Vec<String>,
    pub manifests: Vec<String>,
    pub data_files: Vec<String>,
}

impl Unreachable {
    pub fn len(&self) -> usize {
        self.manifest_lists.len() + self.manifests.len() + self.data_files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `expired` reaches and `kept` does not; `entries` lists every named manifest's entries.
pub fn unreachable(
    kept: &[SnapshotFiles],
    expired: &[SnapshotFiles],
    entries: &Manifests,
) -> Unreachable {
    let listed = |m: &str| entries.get(m).map_or(&[][..], Vec::as_slice);
    let lists: BTreeSet<&str> = kept.iter().map(|s| s.manifest_list.as_str()).collect();
    let manifests: BTreeSet<&str> = kept
        .iter()
        .flat_map(|s| s.manifests.iter().map(String::as_str))
        .collect();
    let live: BTreeSet<&str> = manifests
        .iter()
        .flat_map(|m| listed(m).iter().filter(|e| e.1).map(|e| e.0.as_str()))
        .collect();
    let mut out = Unreachable::default();
    let (mut gone_lists, mut gone_manifests, mut gone_files) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for s in expired {
        if !lists.contains(s.manifest_list.as_str()) {
            gone_lists.insert(s.manifest_list.as_str());
        }
        // A manifest a kept snapshot reads stays, with all it lists.
        for m in s
            .manifests
            .iter()
            .filter(|m| !manifests.contains(m.as_str()))
        {
            gone_manifests.insert(m.as_str());
            gone_files.extend(
                listed(m)
                    .iter()
                    .map(|e| e.0.as_str())
                    .filter(|f| !live.contains(f)),
            );
        }
    }
    out.manifest_lists = gone_lists.into_iter().map(str::to_owned).collect();
    out.manifests = gone_manifests.into_iter().map(str::to_owned).collect();
    out.data_files = gone_files.into_iter().map(str::to_owned).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A snapshot naming `manifests`, whose entries go into `all`.
    fn snap(
        all: &mut Manifests,
        list: &str,
        manifests: &[(&str, &[(&str, bool)])],
    ) -> SnapshotFiles {
        for (m, es) in manifests {
            let es = es.iter().map(|(f, l)| ((*f).to_owned(), *l)).collect();
            all.insert((*m).to_owned(), es);
        }
        SnapshotFiles {
            manifest_list: list.into(),
            manifests: manifests.iter().map(|(m, _)| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn files_only_expired_snapshots_reach_go() {
        // Fast appends: each snapshot adds a manifest and keeps its parent's.
        let all = &mut Manifests::new();
        let s1 = snap(all, "l1", &[("m1", &[("a", true)])]);
        let s2 = snap(all, "l2", &[("m1", &[("a", true)]), ("m2", &[("b", true)])]);
        // A compaction replaced a and b by c: the old manifests' files are marked DELETED.
        let s3 = snap(
            all,
            "l3",
            &[("m3", &[("a", false), ("b", false), ("c", true)])],
        );
        let u = unreachable(std::slice::from_ref(&s3), &[s1.clone(), s2.clone()], all);
        assert_eq!(u.manifest_lists, vec!["l1", "l2"]);
        assert_eq!(u.manifests, vec!["m1", "m2"]);
        assert_eq!(u.data_files, vec!["a", "b"]);
        // Keeping s2 keeps what it reads.
        let u = unreachable(&[s2, s3], &[s1], all);
        assert_eq!(u.manifest_lists, vec!["l1"]);
        assert!(u.manifests.is_empty() && u.data_files.is_empty());
    }

    proptest! {
        /// Never deletes what a kept snapshot reads; deletes every file that only expired
        /// snapshots list.
        #[test]
        fn kept_reads_stay_and_the_rest_goes(
            snaps in proptest::collection::vec(
                proptest::collection::vec((0u8..8, proptest::collection::vec((0u8..12, any::<bool>()), 0..5)), 0..4),
                1..8,
            ),
            split in 0usize..8,
        ) {
            // A manifest's content is fixed by its name, as in a real table: the first listing wins.
            let mut entries = Manifests::new();
            for (m, es) in snaps.iter().flatten() {
                entries
                    .entry(format!("m{m}"))
                    .or_insert_with(|| es.iter().map(|(f, l)| (format!("f{f}"), *l)).collect());
            }
            let all: Vec<SnapshotFiles> = snaps
                .iter()
                .enumerate()
                .map(|(i, ms)| SnapshotFiles {
                    manifest_list: format!("l{i}"),
                    manifests: ms.iter().map(|(m, _)| format!("m{m}")).collect(),
                })
                .collect();
            let split = split.min(all.len());
            let (expired, kept) = all.split_at(split);
            let u = unreachable(kept, expired, &entries);
            for s in kept {
                prop_assert!(!u.manifest_lists.contains(&s.manifest_list));
                for m in &s.manifests {
                    prop_assert!(!u.manifests.contains(m));
                    for (f, live) in &entries[m] {
                        prop_assert!(!*live || !u.data_files.contains(f));
                    }
                }
            }
            let kept_manifests: BTreeSet<&String> = kept.iter().flat_map(|s| &s.manifests).collect();
            let kept_live: BTreeSet<&String> = kept_manifests
                .iter()
                .flat_map(|m| entries[*m].iter().filter(|e| e.1).map(|e| &e.0))
                .collect();
            for s in expired {
                for m in s.manifests.iter().filter(|m| !kept_manifests.contains(m)) {
                    for (f, _) in &entries[m] {
                        prop_assert!(kept_live.contains(f) || u.data_files.contains(f), "{f} left behind");
                    }
                }
            }
        }
    }
}
