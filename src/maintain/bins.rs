//! Which manifests to merge and which data files to compact: both pack small items, in the
//! order given (oldest first), into bins of at most a target size, the way Iceberg's bin packing
//! does. Plain sizes in, lists of indexes out.

/// One candidate: its size and the group it may be packed with (a partition spec, a file
/// schema); items of different groups never share a bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub bytes: u64,
    pub group: u64,
}

/// Manifests are merged once a spec has `min_count` of them under the target (Iceberg's
/// `commit.manifest.min-count-to-merge`, `commit.manifest.target-size-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergePolicy {
    pub target_bytes: u64,
    pub min_count: usize,
}

/// Bins of manifests to merge into one each; a bin holds at least two.
pub fn plan_merge(manifests: &[Item], p: MergePolicy) -> Vec<Vec<usize>> {
    let small = |i: &Item| i.bytes < p.target_bytes;
    let mut out = Vec::new();
    for group in groups(manifests) {
        let members: Vec<usize> = (0..manifests.len())
            .filter(|&i| manifests[i].group == group && small(&manifests[i]))
            .collect();
        if members.len() < p.min_count.max(2) {
            continue;
        }
        out.extend(pack(manifests, &members, p.target_bytes, 2));
    }
    out
}

/// Data files under `min_file_bytes` are rewritten into files of about `target_bytes`; a bin
/// needs `min_inputs` files (rewriting one file alone gains nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactPolicy {
    pub target_bytes: u64,
    pub min_file_bytes: u64,
    pub min_inputs: usize,
}

impl CompactPolicy {
    /// Iceberg's rewrite defaults for a target: files under 75 % of it, at least two of them.
    pub fn for_target(target_bytes: u64) -> Self {
        Self {
            target_bytes,
            min_file_bytes: target_bytes / 4 * 3,
            min_inputs: 2,
        }
    }
}

/// Bins of data files to rewrite together, each at most `target_bytes` in all.
pub fn plan_compaction(files: &[Item], p: CompactPolicy) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for group in groups(files) {
        let members: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].group == group && files[i].bytes < p.min_file_bytes)
            .collect();
        out.extend(pack(files, &members, p.target_bytes, p.min_inputs.max(2)));
    }
    out
}

fn groups(items: &[Item]) -> Vec<u64> {
    let mut g: Vec<u64> = items.iter().map(|i| i.group).collect();
    g.sort_unstable();
    g.dedup();
    g
}

/// `members` packed in order into bins of at most `target` bytes; bins under `min` go.
fn pack(items: &[Item], members: &[usize], target: u64, min: usize) -> Vec<Vec<usize>> {
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut bytes = 0u64;
    for &i in members {
        let b = items[i].bytes;
        if !cur.is_empty() && bytes.saturating_add(b) > target {
            bins.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        cur.push(i);
        bytes = bytes.saturating_add(b);
    }
    bins.push(cur);
    bins.retain(|b| b.len() >= min);
    bins
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn items(sizes: &[u64]) -> Vec<Item> {
        sizes
            .iter()
            .map(|&bytes| Item { bytes, group: 0 })
            .collect()
    }

    #[test]
    fn manifests_merge_only_from_the_minimum_count() {
        let p = MergePolicy {
            target_bytes: 100,
            min_count: 3,
        };
        assert!(plan_merge(&items(&[10, 10]), p).is_empty());
        assert_eq!(plan_merge(&items(&[10, 10, 10]), p), vec![vec![0, 1, 2]]);
        // A manifest at the target stays as it is; the rest pack into bins of the target.
        let m = items(&[60, 100, 30, 20, 50, 40]);
        assert_eq!(plan_merge(&m, p), vec![vec![0, 2], vec![3, 4]]);
    }

    #[test]
    fn compaction_keeps_groups_apart_and_leaves_big_files() {
        let p = CompactPolicy::for_target(100);
        let mut f = items(&[10, 80, 20, 30, 5]);
        f[3].group = 1;
        assert_eq!(plan_compaction(&f, p), vec![vec![0, 2, 4]]);
        f[4].group = 1;
        assert_eq!(plan_compaction(&f, p), vec![vec![0, 2], vec![3, 4]]);
    }

    proptest! {
        #[test]
        fn bins_are_disjoint_bounded_and_grouped(
            sizes in proptest::collection::vec((0u64..200, 0u64..3), 0..60),
            target in 1u64..300,
        ) {
            let f: Vec<Item> = sizes.iter().map(|&(bytes, group)| Item { bytes, group }).collect();
            let p = CompactPolicy::for_target(target);
            let bins = plan_compaction(&f, p);
            let mut seen = std::collections::BTreeSet::new();
            for b in &bins {
                prop_assert!(b.len() >= 2);
                let total: u64 = b.iter().map(|&i| f[i].bytes).sum();
                prop_assert!(total <= target);
                prop_assert!(b.iter().all(|&i| f[i].group == f[b[0]].group));
                prop_assert!(b.iter().all(|&i| f[i].bytes < p.min_file_bytes));
                prop_assert!(b.windows(2).all(|w| w[0] < w[1]));
                for &i in b { prop_assert!(seen.insert(i)); }
            }
        }
    }
}
