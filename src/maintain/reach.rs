//! What expiring snapshots leaves unreachable, the way Iceberg's reachable-file cleanup decides:
//! a manifest list, manifest or data file is deleted only when no kept snapshot reaches it. A
//! data file counts as reached by a kept snapshot when a manifest of that snapshot lists it as
//! live (ADDED or EXISTING). An entry marked DELETED reads nothing, so it does not keep the file.

use std::collections::BTreeSet;

/// One snapshot's files, as its manifest list and manifests name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFiles {
    pub manifest_list: String,
    /// Each manifest's path and its entries: (data file path, live).
    pub manifests: Vec<(String, Vec<(String, bool)>)>,
}

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

/// What `expired` reaches and `kept` does not.
pub fn unreachable(kept: &[SnapshotFiles], expired: &[SnapshotFiles]) -> Unreachable {
    let mut lists = BTreeSet::new();
    let mut manifests = BTreeSet::new();
    let mut live = BTreeSet::new();
    for s in kept {
        lists.insert(s.manifest_list.as_str());
        for (path, entries) in &s.manifests {
            manifests.insert(path.as_str());
            live.extend(entries.iter().filter(|e| e.1).map(|e| e.0.as_str()));
        }
    }
    let mut out = BTreeSet::new();
    let mut gone_manifests = BTreeSet::new();
    let mut gone_lists = BTreeSet::new();
    for s in expired {
        if !lists.contains(s.manifest_list.as_str()) {
            gone_lists.insert(s.manifest_list.clone());
        }
        for (path, entries) in &s.manifests {
            if manifests.contains(path.as_str()) {
                continue; // a kept snapshot reads this manifest, with all it lists
            }
            gone_manifests.insert(path.clone());
            for (file, _) in entries {
                if !live.contains(file.as_str()) {
                    out.insert(file.clone());
                }
            }
        }
    }
    Unreachable {
        manifest_lists: gone_lists.into_iter().collect(),
        manifests: gone_manifests.into_iter().collect(),
        data_files: out.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snap(list: &str, manifests: &[(&str, &[(&str, bool)])]) -> SnapshotFiles {
        SnapshotFiles {
            manifest_list: list.into(),
            manifests: manifests
                .iter()
                .map(|(m, es)| {
                    let es = es.iter().map(|(f, l)| ((*f).to_owned(), *l)).collect();
                    ((*m).to_owned(), es)
                })
                .collect(),
        }
    }

    #[test]
    fn files_only_expired_snapshots_reach_go() {
        // Fast appends: each snapshot adds a manifest and keeps its parent's.
        let s1 = snap("l1", &[("m1", &[("a", true)])]);
        let s2 = snap("l2", &[("m1", &[("a", true)]), ("m2", &[("b", true)])]);
        // A compaction replaced a and b by c: the old manifests' files are marked DELETED.
        let s3 = snap("l3", &[("m3", &[("a", false), ("b", false), ("c", true)])]);
        let u = unreachable(std::slice::from_ref(&s3), &[s1.clone(), s2.clone()]);
        assert_eq!(u.manifest_lists, vec!["l1", "l2"]);
        assert_eq!(u.manifests, vec!["m1", "m2"]);
        assert_eq!(u.data_files, vec!["a", "b"]);
        // Keeping s2 keeps what it reads.
        let u = unreachable(&[s2, s3], &[s1]);
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
            let all: Vec<SnapshotFiles> = snaps
                .iter()
                .enumerate()
                .map(|(i, ms)| SnapshotFiles {
                    manifest_list: format!("l{i}"),
                    // A manifest's content is fixed by its name, as in a real table.
                    manifests: ms
                        .iter()
                        .map(|(m, _)| {
                            let es = snaps
                                .iter()
                                .flatten()
                                .find(|(n, _)| n == m)
                                .map(|(_, es)| es.iter().map(|(f, l)| (format!("f{f}"), *l)).collect())
                                .unwrap_or_default();
                            (format!("m{m}"), es)
                        })
                        .collect(),
                })
                .collect();
            let split = split.min(all.len());
            let (expired, kept) = all.split_at(split);
            let u = unreachable(kept, expired);
            for s in kept {
                prop_assert!(!u.manifest_lists.contains(&s.manifest_list));
                for (m, es) in &s.manifests {
                    prop_assert!(!u.manifests.contains(m));
                    for (f, live) in es {
                        prop_assert!(!*live || !u.data_files.contains(f));
                    }
                }
            }
            let kept_live: BTreeSet<&String> = kept
                .iter()
                .flat_map(|s| &s.manifests)
                .flat_map(|(_, es)| es.iter().filter(|e| e.1).map(|e| &e.0))
                .collect();
            let kept_manifests: BTreeSet<&String> =
                kept.iter().flat_map(|s| s.manifests.iter().map(|m| &m.0)).collect();
            for s in expired {
                for (m, es) in &s.manifests {
                    if kept_manifests.contains(m) {
                        continue;
                    }
                    for (f, _) in es {
                        prop_assert!(kept_live.contains(f) || u.data_files.contains(f), "{f} left behind");
                    }
                }
            }
        }
    }
}
