//! Pure routing: which shard a record goes to, which core runs a shard, which fetch core owns a
//! partition.
//!
//! Owns the fixed-seed key hash (never a random seed: a key must land on the same shard after a
//! restart), the placement arithmetic, and the [`overload`] policy (a routed record goes to its
//! shard's ring, or, when that ring is full at the live tail, to the drop ledger). Knows nothing
//! of Kafka clients, executors or files: it maps numbers to numbers and is tested as such.

pub mod overload;

/// Fixed seeds for the key hash. Changing them re-routes every key: don't.
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// Maps a record to its shard, and a shard to the index of the shard core that runs it.
#[derive(Clone)]
pub struct Router {
    hasher: ahash::RandomState,
    shards: u32,
    shard_cores: u32,
}

impl Router {
    /// `shards` hash buckets spread round-robin over `shard_cores` cores. Both must be non-zero.
    pub fn new(shards: u32, shard_cores: u32) -> Self {
        assert!(
            shards > 0 && shard_cores > 0,
            "router needs shards and cores"
        );
        Self {
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            shards,
            shard_cores,
        }
    }

    /// The stable 64-bit hash of a key.
    #[inline]
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a record: by key hash, or by partition when the record has no key. With one
    /// shard (one shard core, the default on small hosts) every record is shard 0, unhashed.
    #[inline]
    pub fn shard_of(&self, key: Option<&[u8]>, partition: i32) -> u32 {
        if self.shards == 1 {
            return 0;
        }
        match key {
            Some(k) => (self.key_hash(k) % u64::from(self.shards)) as u32,
            None => (partition.unsigned_abs()) % self.shards,
        }
    }

    /// The index (into the shard core list) of the core that runs `shard`.
    #[inline]
    pub fn core_of(&self, shard: u32) -> usize {
        (shard % self.shard_cores) as usize
    }

    /// The shards core `core_index` runs.
    pub fn shards_on_core(&self, core_index: usize) -> impl Iterator<Item = u32> + '_ {
        (0..self.shards).filter(move |s| self.core_of(*s) == core_index)
    }
}

/// Spreads partitions over fetch cores round-robin, in partition order. Returns, per fetch core,
/// the partitions it owns.
pub fn assign_partitions(partitions: &[i32], fetch_cores: usize) -> Vec<Vec<i32>> {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    let n = fetch_cores.max(1);
    let mut out = vec![Vec::new(); n];
    for (i, p) in sorted.into_iter().enumerate() {
        out[i % n].push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_shard_takes_every_record_unhashed() {
        let r = Router::new(1, 1);
        for (k, p) in [(Some(&b"user-42"[..]), 3), (None, 7), (Some(&b""[..]), -1)] {
            assert_eq!(r.shard_of(k, p), 0);
        }
    }

    /// Golden values: if a dependency upgrade changes the hash, routing would silently change
    /// across a restart. This test makes that loud.
    #[test]
    fn key_hash_is_stable() {
        let r = Router::new(256, 4);
        let got: Vec<u32> = ["", "a", "user-42", "order:1234567"]
            .iter()
            .map(|k| r.shard_of(Some(k.as_bytes()), 0))
            .collect();
        let again: Vec<u32> = ["", "a", "user-42", "order:1234567"]
            .iter()
            .map(|k| Router::new(256, 4).shard_of(Some(k.as_bytes()), 0))
            .collect();
        assert_eq!(got, again);
        assert_eq!(got, GOLDEN.to_vec(), "the routing hash changed");
    }

    /// Shards of "", "a", "user-42", "order:1234567" out of 256. aHash picks its AES path at
    /// compile time (`target-cpu=native` on an AES machine would change these): release builds
    /// use the portable path.
    const GOLDEN: [u32; 4] = [137, 165, 8, 36];

    #[test]
    fn null_keys_route_by_partition() {
        let r = Router::new(8, 2);
        assert_eq!(r.shard_of(None, 3), 3);
        assert_eq!(r.shard_of(None, 11), 3);
        assert_eq!(r.core_of(3), 1);
        assert_eq!(r.shards_on_core(0).collect::<Vec<_>>(), vec![0, 2, 4, 6]);
    }

    #[test]
    fn partitions_spread_round_robin() {
        assert_eq!(
            assign_partitions(&[3, 0, 2, 1, 4], 2),
            vec![vec![0, 2, 4], vec![1, 3]]
        );
        assert_eq!(
            assign_partitions(&[0, 1], 4),
            vec![vec![0], vec![1], vec![], vec![]]
        );
    }

    proptest! {
        #[test]
        fn every_key_lands_on_a_valid_shard_and_core(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            shards in 1u32..1024,
            cores in 1u32..128,
            partition in 0i32..10_000,
        ) {
            let r = Router::new(shards, cores);
            let s = r.shard_of(Some(&key), partition);
            prop_assert!(s < shards);
            prop_assert!(r.core_of(s) < cores as usize);
            prop_assert_eq!(s, Router::new(shards, cores).shard_of(Some(&key), partition + 1));
        }

        #[test]
        fn assignment_is_a_partition_of_the_input(ps in proptest::collection::btree_set(0i32..500, 0..64), n in 1usize..9) {
            let ps: Vec<i32> = ps.into_iter().collect();
            let owned = assign_partitions(&ps, n);
            let mut all: Vec<i32> = owned.iter().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, ps);
            let sizes: Vec<usize> = owned.iter().map(Vec::len).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }
}
