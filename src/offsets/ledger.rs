//! The drop ledger: per partition, sorted disjoint inclusive offset ranges.
//!
//! Used three ways: the fetch core names every record it drops ([`Ranges::push`], amortised O(1)
//! for offsets that arrive in order), the io role unions what the fetch cores of one epoch
//! dropped, and `replay-dropped` subtracts what was already replayed from what was dropped. The
//! summary form is `{"3":[[10,12],[20,20]]}`: partition as a string, inclusive `[first, last]`.

use std::collections::BTreeMap;

/// Sorted, disjoint, non-adjacent inclusive ranges per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(BTreeMap<i32, Vec<[i64; 2]>>);

impl Ranges {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one offset. Offsets of a partition pushed in increasing order cost O(1) each.
    pub fn push(&mut self, partition: i32, offset: i64) {
        self.push_range(partition, offset, offset);
    }

    /// Adds `[first, last]` (inclusive).
    pub fn push_range(&mut self, partition: i32, first: i64, last: i64) {
        if first > last {
            return;
        }
        let v = self.0.entry(partition).or_default();
        match v.last_mut() {
            Some(l) if first > l[1].saturating_add(1) => v.push([first, last]),
            Some(l) if first >= l[0] => l[1] = l[1].max(last),
            None => v.push([first, last]),
            Some(_) => {
                v.push([first, last]);
                normalise(v);
            }
        }
    }

    /// Adds every range of `other`.
    pub fn union(&mut self, other: &Ranges) {
        for (p, rs) in &other.0 {
            let v = self.0.entry(*p).or_default();
            v.extend_from_slice(rs);
            normalise(v);
        }
    }

    /// What is in `self` and not in `other`.
    pub fn minus(&self, other: &Ranges) -> Ranges {
        let mut out = Ranges::new();
        for (p, rs) in &self.0 {
            let cut = other.0.get(p).map(Vec::as_slice).unwrap_or(&[]);
            for &[first, last] in rs {
                let mut from = first;
                for &[a, b] in cut {
                    if b < from || a > last {
                        continue;
                    }
                    if a > from {
                        out.push_range(*p, from, a - 1);
                    }
                    from = from.max(b.saturating_add(1));
                    if from > last {
                        break;
                    }
                }
                if from <= last {
                    out.push_range(*p, from, last);
                }
            }
        }
        out
    }

    pub fn contains(&self, partition: i32, offset: i64) -> bool {
        let Some(v) = self.0.get(&partition) else {
            return false;
        };
        let i = v.partition_point(|r| r[1] < offset);
        v.get(i).is_some_and(|r| r[0] <= offset)
    }

    /// Offsets covered.
    pub fn count(&self) -> u64 {
        self.0
            .values()
            .flatten()
            .map(|r| (r[1] - r[0]) as u64 + 1)
            .sum()
    }

    /// Number of ranges (what the summary's size grows with).
    pub fn range_count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    pub fn partitions(&self) -> impl Iterator<Item = (i32, &[[i64; 2]])> {
        self.0.iter().map(|(p, v)| (*p, v.as_slice()))
    }

    /// `{"3":[[10,12],[20,20]]}`.
    pub fn encode(&self) -> String {
        let map: BTreeMap<String, &Vec<[i64; 2]>> =
            self.0.iter().map(|(p, v)| (p.to_string(), v)).collect();
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn decode(json: &str) -> Result<Ranges, String> {
        let map: BTreeMap<String, Vec<[i64; 2]>> =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut out = Ranges::new();
        for (p, rs) in map {
            let p: i32 = p
                .parse()
                .map_err(|_| format!("partition {p:?} is not a number"))?;
            for [first, last] in rs {
                if first < 0 || last < first {
                    return Err(format!("partition {p}: bad range [{first}, {last}]"));
                }
                out.push_range(p, first, last);
            }
        }
        Ok(out)
    }
}

/// Sorts and coalesces overlapping or adjacent ranges.
fn normalise(v: &mut Vec<[i64; 2]>) {
    v.sort_unstable();
    let mut out: Vec<[i64; 2]> = Vec::with_capacity(v.len());
    for r in v.drain(..) {
        match out.last_mut() {
            Some(l) if r[0] <= l[1].saturating_add(1) => l[1] = l[1].max(r[1]),
            _ => out.push(r),
        }
    }
    *v = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn set_of(r: &Ranges) -> BTreeSet<(i32, i64)> {
        r.partitions()
            .flat_map(|(p, rs)| {
                rs.iter()
                    .flat_map(move |x| (x[0]..=x[1]).map(move |o| (p, o)))
            })
            .collect()
    }

    fn from_set(s: &BTreeSet<(i32, i64)>) -> Ranges {
        let mut r = Ranges::new();
        for &(p, o) in s {
            r.push(p, o);
        }
        r
    }

    #[test]
    fn in_order_offsets_coalesce_and_encode_as_the_summary_prescribes() {
        let mut r = Ranges::new();
        for o in [10, 11, 12, 20] {
            r.push(3, o);
        }
        r.push(0, 5);
        assert_eq!(r.encode(), r#"{"0":[[5,5]],"3":[[10,12],[20,20]]}"#);
        assert_eq!((r.count(), r.range_count()), (5, 3));
        assert_eq!(Ranges::decode(&r.encode()).unwrap(), r);
        assert!(Ranges::decode(r#"{"x":[[1,2]]}"#).is_err());
        assert!(Ranges::decode(r#"{"1":[[5,2]]}"#).is_err());
        assert!(Ranges::decode(r#"{"1":[5]}"#).is_err());
        assert!(r.contains(3, 11) && !r.contains(3, 13) && !r.contains(1, 10));
    }

    proptest! {
        #[test]
        fn ranges_behave_as_sets(
            a in proptest::collection::btree_set((0i32..3, 0i64..200), 0..120),
            b in proptest::collection::btree_set((0i32..3, 0i64..200), 0..120),
        ) {
            let (ra, rb) = (from_set(&a), from_set(&b));
            prop_assert_eq!(set_of(&ra), a.clone());
            let mut u = ra.clone();
            u.union(&rb);
            u.union(&rb);
            prop_assert_eq!(set_of(&u), a.union(&b).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(set_of(&ra.minus(&rb)), a.difference(&b).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(Ranges::decode(&u.encode()).unwrap(), u.clone());
            prop_assert_eq!(u.count() as usize, a.union(&b).count());
            // Out-of-order pushes give the same canonical form.
            let mut rev = Ranges::new();
            for &(p, o) in a.iter().rev() {
                rev.push(p, o);
            }
            prop_assert_eq!(rev, ra);
        }
    }
}
