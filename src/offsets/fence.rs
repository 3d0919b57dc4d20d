//! Fencing: whether an epoch's offsets may be laid over the table as it stands now.

use crate::record::Offsets;

/// A partition another writer moved under this one: the table holds it at `table`, while this
/// writer's epoch starts where it last left it, `expected` (`None`: it never stood in the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub partition: i32,
    pub table: i64,
    pub expected: Option<i64>,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.expected {
            Some(e) => write!(
                f,
                "partition {} is at {} in the table, not at {e}",
                self.partition, self.table
            ),
            None => write!(
                f,
                "partition {} is at {} in the table, which this writer never committed",
                self.partition, self.table
            ),
        }
    }
}

/// Fencing: the partitions of `ours` (this writer's offsets after the epoch) whose offset in the
/// table (`base`, freshly loaded) is not where this writer left it (`prior`: what it recovered or
/// last committed). A partition the table does not hold yet is nobody's. An epoch with any moved
/// partition must not be committed: another writer has landed records of that partition since,
/// and laying `ours` over it would land them twice or move the offsets back.
pub fn fence(base: &Offsets, prior: &Offsets, ours: &Offsets) -> Vec<Moved> {
    ours.keys()
        .filter_map(|p| {
            let table = *base.get(p)?;
            let expected = prior.get(p).copied();
            (expected != Some(table)).then_some(Moved {
                partition: *p,
                table,
                expected,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::merge;
    use proptest::prelude::*;

    #[test]
    fn fencing_refuses_a_partition_the_table_holds_elsewhere() {
        let m = |v: &[(i32, i64)]| v.iter().copied().collect::<Offsets>();
        let prior = m(&[(0, 10), (1, 20), (2, 5)]);
        let ours = m(&[(0, 15), (1, 20), (2, 9)]);
        // Where this writer left them, or not yet in the table: nothing moved.
        assert!(fence(&m(&[(0, 10), (1, 20), (7, 3)]), &prior, &ours).is_empty());
        assert!(fence(&Offsets::new(), &prior, &ours).is_empty());
        // Advanced by another writer (0), moved back (1, not advanced by us): both refused.
        let moved = fence(&m(&[(0, 12), (1, 18), (2, 5)]), &prior, &ours);
        assert_eq!(
            moved,
            vec![
                Moved {
                    partition: 0,
                    table: 12,
                    expected: Some(10)
                },
                Moved {
                    partition: 1,
                    table: 18,
                    expected: Some(20)
                },
            ]
        );
        assert_eq!(
            moved[0].to_string(),
            "partition 0 is at 12 in the table, not at 10"
        );
        // A partition this writer never had in the table, now there.
        let fresh = fence(&m(&[(3, 4)]), &prior, &m(&[(3, 8)]));
        assert_eq!(
            fresh,
            vec![Moved {
                partition: 3,
                table: 4,
                expected: None
            }]
        );
    }

    proptest! {
        /// A table only this writer commits to never fences it.
        #[test]
        fn a_lone_writer_is_never_fenced(
            start in proptest::collection::btree_map(0i32..64, 0i64..1_000, 0..20),
            steps in proptest::collection::vec(proptest::collection::btree_map(0i32..64, 0i64..100, 0..20), 1..10),
        ) {
            let mut table = Offsets::new();
            let mut prior = start.clone();
            for step in steps {
                let mut ours = prior.clone();
                for (p, d) in step {
                    *ours.entry(p).or_insert(0) += d;
                }
                prop_assert!(fence(&table, &prior, &ours).is_empty());
                table = merge(&table, &ours);
                prior = ours;
            }
        }
    }
}
