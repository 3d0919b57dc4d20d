//! Deterministic sample records: record `i`'s key, value and headers are a pure function of `i`
//! and the shape, so whoever reads the data back can re-derive every byte. Shared (by `#[path]`)
//! between `icefall-loadgen`, the integration tests and the benches.

#![allow(dead_code)]

/// Header that carries the record's sequence number in the sample stream.
pub const SEQ_HEADER: &str = "seq";

/// The shape of a sample stream.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Distinct keys.
    pub keys: u64,
    pub value_bytes: usize,
    /// Every n-th record has no key (0: never).
    pub null_key_every: u64,
    /// Every n-th record has an empty value (0: never).
    pub empty_value_every: u64,
    /// Every n-th record has a null value, a tombstone (0: never).
    pub null_value_every: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            keys: 1_000,
            value_bytes: 100,
            null_key_every: 20,
            empty_value_every: 25,
            null_value_every: 101,
        }
    }
}

fn every(i: u64, n: u64) -> bool {
    n != 0 && i.is_multiple_of(n)
}

/// splitmix64: a cheap, well-mixed function of `i`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Shape {
    pub fn key(&self, i: u64) -> Option<Vec<u8>> {
        if every(i, self.null_key_every) {
            return None;
        }
        Some(format!("key-{:06}", mix(i) % self.keys.max(1)).into_bytes())
    }

    pub fn value(&self, i: u64) -> Option<Vec<u8>> {
        if every(i, self.null_value_every) {
            return None;
        }
        if every(i, self.empty_value_every) {
            return Some(Vec::new());
        }
        let mut v = Vec::with_capacity(self.value_bytes);
        let mut x = mix(i ^ 0x5eed);
        while v.len() < self.value_bytes {
            x = mix(x);
            let take = (self.value_bytes - v.len()).min(8);
            v.extend_from_slice(&x.to_le_bytes()[..take]);
        }
        Some(v)
    }

    /// Headers, sorted by name. Always carries [`SEQ_HEADER`].
    pub fn headers(&self, i: u64) -> Vec<(String, Vec<u8>)> {
        let mut h = Vec::with_capacity(3);
        if every(i, 7) {
            h.push(("empty".to_string(), Vec::new()));
        }
        h.push((SEQ_HEADER.to_string(), i.to_string().into_bytes()));
        if every(i, 3) {
            h.push(("trace".to_string(), mix(i).to_be_bytes().repeat(2)));
        }
        h
    }
}

/// Kafka's default partitioner for keyed records: murmur2 of the key, made positive, modulo the
/// partition count (what the Java client and librdkafka's murmur2 partitioner pick).
pub fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Kafka's murmur2 (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}
