//! The dictionary of one byte-array column chunk (record keys): each distinct value once, in
//! the order first seen, kept as the dictionary page's own PLAIN body so that writing the page
//! copies nothing. Sans-IO.

/// One distinct value: where its bytes are in the page body, and its hash.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    start: usize,
    len: usize,
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
    /// The index of `v`, added if it is new.
    pub fn intern(&mut self, v: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(v);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            match self.slots[i] {
                0 => break,
                s => {
                    let e = self.entries[s as usize - 1];
                    if e.hash == hash && &self.plain[e.start..e.start + e.len] == v {
                        return s - 1;
                    }
                }
            }
            i = (i + 1) & mask;
        }
        let index = self.entries.len() as u32;
        self.plain
            .extend_from_slice(&(v.len() as u32).to_le_bytes());
        let start = self.plain.len();
        self.plain.extend_from_slice(v);
        self.entries.push(Entry {
            hash,
            start,
            len: v.len(),
        });
        self.slots[i] = index + 1;
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
        fn each_distinct_value_gets_one_index(values in prop::collection::vec(prop::collection::vec(0u8..4, 0..4), 0..3000)) {
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
