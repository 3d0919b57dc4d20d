//! Deterministic sample records: record `i`'s key, value and headers are a pure function of `i`
//! and the shape, so whoever reads the data back can re-derive every byte. Shared (by `#[path]`)
//! between `icefall-loadgen`, the integration tests and the benches.

#![allow(dead_code)]

/// Header that carries the record's sequence number in the sample stream.
pub const SEQ_HEADER: &str = "seq";

/// How keys are drawn from the key space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key of rank r (1-based) with probability ∝ 1/r^s: a few hot keys (s around 1).
    Zipf(f64),
}

/// What a value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Random bytes.
    Raw,
    /// A JSON object (an event with a few typed fields), padded to the value size.
    Json,
}

/// The shape of a sample stream.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Distinct keys.
    pub keys: u64,
    pub value_bytes: usize,
    /// Every n-th record has no key (0: never).
    pub null_key_every: u64,
    /// Every n-th record has an empty value (0: never; raw payloads only).
    pub empty_value_every: u64,
    /// Every n-th record has a null value, a tombstone (0: never).
    pub null_value_every: u64,
    pub dist: KeyDist,
    pub payload: Payload,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            keys: 1_000,
            value_bytes: 100,
            null_key_every: 20,
            empty_value_every: 25,
            null_value_every: 101,
            dist: KeyDist::Uniform,
            payload: Payload::Raw,
        }
    }
}

/// Maps a uniform `u` in [0, 1) to a Zipf rank in 0..n (0 the hottest), by inverting the
/// continuous approximation of the Zipf CDF: pure, O(1), no table.
pub fn zipf_rank(u: f64, n: u64, s: f64) -> u64 {
    // x runs over [1, n + 1): its floor is the 1-based rank.
    let n_f = n.max(1) as f64 + 1.0;
    let x = if (s - 1.0).abs() < 1e-9 {
        n_f.powf(u)
    } else {
        let e = 1.0 - s;
        ((n_f.powf(e) - 1.0) * u + 1.0).powf(1.0 / e)
    };
    (x.floor() as u64).clamp(1, n.max(1)) - 1
}

/// A uniform value in [0, 1) from 53 well-mixed bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
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
    /// The key index of record `i` (0..keys), before formatting.
    pub fn key_index(&self, i: u64) -> u64 {
        match self.dist {
            KeyDist::Uniform => mix(i) % self.keys.max(1),
            KeyDist::Zipf(s) => zipf_rank(unit(mix(i)), self.keys, s),
        }
    }

    pub fn key(&self, i: u64) -> Option<Vec<u8>> {
        if every(i, self.null_key_every) {
            return None;
        }
        Some(format!("key-{:06}", self.key_index(i)).into_bytes())
    }

    pub fn value(&self, i: u64) -> Option<Vec<u8>> {
        if every(i, self.null_value_every) {
            return None;
        }
        if self.payload == Payload::Json {
            return Some(self.json_value(i));
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

    /// An event as JSON, padded with a `note` to at least `value_bytes`.
    fn json_value(&self, i: u64) -> Vec<u8> {
        use std::fmt::Write;
        let x = mix(i ^ 0x5eed);
        let mut v = String::with_capacity(self.value_bytes + 96);
        let _ = write!(
            v,
            r#"{{"seq":{i},"user":"user-{:06}","amount":{}.{:02},"ok":{},"ts":{},"note":""#,
            self.key_index(i),
            x % 100_000,
            (x >> 20) % 100,
            x & 1 == 0,
            1_700_000_000_000u64 + i,
        );
        let mut y = x;
        while v.len() + 2 < self.value_bytes {
            y = mix(y);
            let _ = write!(v, "{:x}", y & 0xf);
        }
        v.push_str("\"}");
        v.into_bytes()
    }

    /// The event of [`Self::json_value`] as a bare Avro body of `tests/data/sample.avsc`,
    /// padded with its `note` to at least `value_bytes`.
    pub fn avro_value(&self, i: u64) -> Vec<u8> {
        let x = mix(i ^ 0x5eed);
        let mut v = Vec::with_capacity(self.value_bytes + 16);
        avro_long(i as i64, &mut v);
        avro_string(&format!("user-{:06}", self.key_index(i)), &mut v);
        // The optional fields are ["null", T] unions: branch 1 holds the value.
        avro_long(1, &mut v);
        let amount = (x % 100_000) as f64 + ((x >> 20) % 100) as f64 / 100.0;
        v.extend_from_slice(&amount.to_le_bytes());
        avro_long(1, &mut v);
        v.push(u8::from(x & 1 == 0));
        avro_long(1, &mut v);
        avro_long(1_700_000_000_000 + i as i64, &mut v);
        let mut note = String::new();
        let mut y = x;
        while v.len() + note.len() + 3 < self.value_bytes {
            y = mix(y);
            note.push(char::from_digit((y & 0xf) as u32, 16).unwrap_or('0'));
        }
        avro_long(1, &mut v);
        avro_string(&note, &mut v);
        v
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

/// Avro's `long` (and `int`): zig-zag, then a little-endian base-128 varint.
pub fn avro_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro's `string` (and `bytes`): the length as a `long`, then the bytes.
pub fn avro_string(s: &str, out: &mut Vec<u8>) {
    avro_long(s.len() as i64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Confluent's wire format: magic byte 0, the schema id (4 bytes, big-endian), then the body.
pub fn avro_framed(id: u32, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend(body);
    v
}
