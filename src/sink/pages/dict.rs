//! The dictionary of one byte-array column chunk (record keys, header keys): each distinct
//! value once, in the order first seen, kept as the dictionary page's own PLAIN body so that
//! writing the page copies nothing. Sans-IO.
//!
//! Values of up to 16 bytes (nearly every key and header name) are read as two words, which
//! are both their hash's input and, with the length, an exact stand-in for their bytes: a
//! lookup is a multiply and a compare of registers, no hashing loop and no `memcmp`.

/// One distinct value: where its bytes are in the page body, its hash and (up to 16 bytes)
/// its [`Short`] form.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    short: Short,
    start: usize,
    len: usize,
}

/// A value's hash and, when it has one, its short form.
struct Key {
    hash: u64,
    short: Option<Short>,
}

/// A value of up to 16 bytes as two words that together hold every byte (they overlap when it
/// is shorter), so that with its length it compares exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Short(u64, u64);

impl Short {
    fn of(v: &[u8]) -> Option<Short> {
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let half = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default()));
        let n = v.len();
        Some(match n {
            0 => Short(0, 0),
            1..=3 => Short(
                u64::from(v[0]) | u64::from(v[n / 2]) << 8 | u64::from(v[n - 1]) << 16,
                0,
            ),
            4..=7 => Short(half(&v[..4]), half(&v[n - 4..])),
            8..=16 => Short(word(&v[..8]), word(&v[n - 8..])),
            _ => return None,
        })
    }

    /// A hash of the two words and the length (a folded 128-bit multiply).
    fn hash(self, len: usize) -> u64 {
        const K0: u64 = 0xa076_1d64_78bd_642f;
        const K1: u64 = 0xe703_7ed1_a0b4_28db;
        let x = u128::from(self.0 ^ K0) * u128::from(self.1 ^ K1 ^ len as u64);
        (x as u64) ^ ((x >> 64) as u64)
    }
}

#[derive(Debug)]
pub struct Dictionary {
    /// The dictionary page's body: every value as a 4-byte little-endian length and its bytes.
    plain: Vec<u8>,
    entries: Vec<Entry>,
    /// Open addressing: an entry's index + 1, or 0 for a free slot; a power of two long, at
    /// most half full.
    slots: Vec<u32>,
    hasher: ahash::RandomState,
}

impl Default for Dictionary {
    fn default() -> Self {
        Self {
            plain: Vec::new(),
            entries: Vec::new(),
            slots: vec![0; 1024],
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
        }
    }
}

impl Dictionary {
    /// The index of `v`, if it is in the dictionary.
    #[inline]
    pub fn find(&self, v: &[u8]) -> Option<u32> {
        self.probe(&self.key(v), v).ok()
    }

    /// The index of `v`, added if it is new.
    #[inline]
    pub fn intern(&mut self, v: &[u8]) -> u32 {
        let key = self.key(v);
        match self.probe(&key, v) {
            Ok(index) => index,
            Err(slot) => self.insert(key, slot, v),
        }
    }

    #[inline]
    fn key(&self, v: &[u8]) -> Key {
        let short = Short::of(v);
        let hash = match short {
            Some(s) => s.hash(v.len()),
            None => self.hasher.hash_one(v),
        };
        Key { hash, short }
    }

    /// `v`'s index, or the free slot where it would go.
    #[inline]
    fn probe(&self, key: &Key, v: &[u8]) -> Result<u32, usize> {
        let mask = self.slots.len() - 1;
        let mut i = key.hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return Err(i);
            }
            let e = &self.entries[s as usize - 1];
            let same = e.hash == key.hash
                && e.len == v.len()
                && match key.short {
                    Some(short) => e.short == short,
                    None => &self.plain[e.start..e.start + e.len] == v,
                };
            if same {
                return Ok(s - 1);
            }
            i = (i + 1) & mask;
        }
    }

    #[cold]
    fn insert(&mut self, key: Key, slot: usize, v: &[u8]) -> u32 {
        let index = self.entries.len() as u32;
        self.plain
            .extend_from_slice(&(v.len() as u32).to_le_bytes());
        let start = self.plain.len();
        self.plain.extend_from_slice(v);
        self.entries.push(Entry {
            hash: key.hash,
            short: key.short.unwrap_or_default(),
            start,
            len: v.len(),
        });
        self.slots[slot] = index + 1;
        if self.entries.len() * 2 > self.slots.len() {
            self.grow();
        }
        index
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (k, e) in self.entries.iter().enumerate() {
            let mut i = e.hash as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = k as u32 + 1;
        }
        self.slots = slots;
    }

    /// Distinct values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The dictionary page's body.
    pub fn page(&self) -> &[u8] {
        &self.plain
    }

    /// The value of index `i` (empty if there is none).
    pub fn get(&self, i: u32) -> &[u8] {
        self.entries
            .get(i as usize)
            .map_or(&[], |e| &self.plain[e.start..e.start + e.len])
    }

    /// The values, in index order.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.entries
            .iter()
            .map(|e| &self.plain[e.start..e.start + e.len])
    }

    /// Forgets every value (the next column chunk starts its own dictionary).
    pub fn clear(&mut self) {
        self.plain.clear();
        self.entries.clear();
        self.slots.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn each_distinct_value_gets_one_index(values in prop::collection::vec(prop::collection::vec(0u8..3, 0..20), 0..3000)) {
            let mut d = Dictionary::default();
            let mut seen: Vec<Vec<u8>> = Vec::new();
            for v in &values {
                let i = d.intern(v) as usize;
                match seen.iter().position(|s| s == v) {
                    Some(k) => prop_assert_eq!(i, k),
                    None => { prop_assert_eq!(i, seen.len()); seen.push(v.clone()); }
                }
            }
            prop_assert_eq!(d.values().map(<[u8]>::to_vec).collect::<Vec<_>>(), seen.clone());
            let plain: Vec<u8> = seen.iter().flat_map(|v| (v.len() as u32).to_le_bytes().into_iter().chain(v.iter().copied())).collect();
            prop_assert_eq!(d.page(), &plain[..]);
        }
    }

    #[test]
    fn grows_past_its_first_table_and_clears() {
        let mut d = Dictionary::default();
        for n in 0..5_000u32 {
            assert_eq!(d.intern(&n.to_le_bytes()), n);
        }
        assert_eq!(d.intern(&17u32.to_le_bytes()), 17);
        d.clear();
        assert_eq!(d.len(), 0);
        assert_eq!(d.intern(b"again"), 0);
    }
}
