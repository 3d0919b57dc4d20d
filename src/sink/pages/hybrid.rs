//! Parquet's RLE / bit-packed hybrid (levels and dictionary indices) and the bit packing that
//! DELTA_BINARY_PACKED shares. Sans-IO: slices in, bytes appended.
//!
//! The encoder sees a page's values whole, so it finds runs by looking ahead instead of
//! buffering: a value repeated at least 8 times becomes an RLE run, everything between runs is
//! bit-packed in groups of 8 (the last group of a page padded with zeros, which readers skip
//! by the page's value count).

/// Appends `n` as an unsigned LEB128 varint.
pub fn uleb(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Zigzag: small magnitudes of either sign become small unsigned numbers.
pub fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Bits needed for `max` (0 for 0).
pub fn width_of(max: u64) -> u8 {
    (64 - max.leading_zeros()) as u8
}

/// Appends `values` (each below 2^`width`, `width` ≤ 64) packed least significant bit first,
/// the last byte padded with zeros.
pub fn pack(values: impl Iterator<Item = u64>, width: u8, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    if width > 32 {
        return pack_wide(values, width, out);
    }
    // Eight bytes at a time: a value that does not fit what is left of the word carries its
    // high bits into the next one.
    let w = u32::from(width);
    let (mut acc, mut bits) = (0u64, 0u32);
    for v in values {
        acc |= v << bits;
        bits += w;
        if bits >= 64 {
            out.extend_from_slice(&acc.to_le_bytes());
            bits -= 64;
            acc = v >> (w - bits);
        }
    }
    out.extend_from_slice(&acc.to_le_bytes()[..(bits as usize).div_ceil(8)]);
}

/// [`pack`] for widths above 32 (deltas of values that jump).
fn pack_wide(values: impl Iterator<Item = u64>, width: u8, out: &mut Vec<u8>) {
    let (mut acc, mut bits) = (0u128, 0u32);
    for v in values {
        acc |= u128::from(v) << bits;
        bits += u32::from(width);
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// Appends `values` (each below 2^`width`, `width` ≤ 32) in the RLE / bit-packed hybrid,
/// without the length prefix data page v1 puts before levels.
pub fn encode<T: Symbol>(values: &[T], width: u8, out: &mut Vec<u8>) {
    let mut pending = 0; // first value not written yet
    let mut i = 0;
    while i < values.len() {
        let v = values[i];
        let j = T::run_end(values, i);
        if j - i >= 8 {
            // Fill the last group of the values before the run from the run itself.
            let fill = (8 - (i - pending) % 8) % 8;
            if i > pending {
                bit_packed(&values[pending..i + fill], width, out);
            }
            rle_run(v.into(), (j - i - fill) as u64, width, out);
            pending = j;
        }
        i = j;
    }
    if pending < values.len() {
        bit_packed(&values[pending..], width, out);
    }
}

/// What the hybrid encodes: levels (bytes) and dictionary indices.
pub trait Symbol: Copy + PartialEq + Into<u64> {
    /// The end of the run of equal values that starts at `start`.
    fn run_end(values: &[Self], start: usize) -> usize {
        let v = values[start];
        let mut j = start + 1;
        while j < values.len() && values[j] == v {
            j += 1;
        }
        j
    }
}

impl Symbol for u32 {}

impl Symbol for u8 {
    /// Eight levels at a time: definition levels are long runs.
    fn run_end(values: &[u8], start: usize) -> usize {
        let v = values[start];
        let word = u64::from_ne_bytes([v; 8]);
        let mut j = start + 1;
        while let Some(next) = values.get(j..j + 8) {
            if u64::from_ne_bytes(next.try_into().unwrap_or_default()) != word {
                break;
            }
            j += 8;
        }
        while j < values.len() && values[j] == v {
            j += 1;
        }
        j
    }
}

pub fn rle_run(value: u64, count: u64, width: u8, out: &mut Vec<u8>) {
    uleb(count << 1, out);
    let bytes = usize::from(width).div_ceil(8);
    out.extend_from_slice(&value.to_le_bytes()[..bytes]);
}

/// `values` in groups of 8, the last one padded with zeros.
fn bit_packed<T: Copy + Into<u64>>(values: &[T], width: u8, out: &mut Vec<u8>) {
    let groups = values.len().div_ceil(8);
    uleb(((groups as u64) << 1) | 1, out);
    let padding = groups * 8 - values.len();
    let all = values.iter().map(|v| (*v).into());
    pack(all.chain(std::iter::repeat_n(0, padding)), width, out);
}

/// Test-only decoder of the hybrid: `n` values of `width` bits.
#[cfg(test)]
pub fn decode(mut bytes: &[u8], width: u8, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let header = read_uleb(&mut bytes);
        if header & 1 == 0 {
            let k = usize::from(width).div_ceil(8);
            let mut v = [0u8; 8];
            v[..k].copy_from_slice(&bytes[..k]);
            bytes = &bytes[k..];
            out.extend(std::iter::repeat_n(
                u64::from_le_bytes(v),
                (header >> 1) as usize,
            ));
        } else {
            let count = (header >> 1) as usize * 8;
            let used = (count * usize::from(width)).div_ceil(8);
            out.extend(unpack(&bytes[..used], width, count));
            bytes = &bytes[used..];
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
pub fn read_uleb(bytes: &mut &[u8]) -> u64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let b = bytes[0];
        *bytes = &bytes[1..];
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return n;
        }
        shift += 7;
    }
}

#[cfg(test)]
pub fn unpack(bytes: &[u8], width: u8, count: usize) -> Vec<u64> {
    (0..count)
        .map(|i| {
            let mut v = 0u64;
            for b in 0..usize::from(width) {
                let bit = i * usize::from(width) + b;
                v |= u64::from((bytes[bit / 8] >> (bit % 8)) & 1) << b;
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn runs() -> impl Strategy<Value = (u8, Vec<u32>)> {
        (0u8..=32).prop_flat_map(|width| {
            let max = if width == 0 { 0 } else { (1u64 << width) - 1 } as u32;
            let run = (0..=max, 1usize..20);
            (Just(width), prop::collection::vec(run, 0..40)).prop_map(|(w, rs)| {
                let v = rs.into_iter().flat_map(|(v, n)| std::iter::repeat_n(v, n));
                (w, v.collect())
            })
        })
    }

    proptest! {
        #[test]
        fn hybrid_round_trips((width, values) in runs()) {
            let mut out = Vec::new();
            encode(&values, width, &mut out);
            let back = decode(&out, width, values.len());
            let want: Vec<u64> = values.iter().map(|v| u64::from(*v)).collect();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn packing_round_trips(width in 1u8..=64, seed in prop::collection::vec(any::<u64>(), 0..70)) {
            let mask = if width == 64 { u64::MAX } else { (1 << width) - 1 };
            let values: Vec<u64> = seed.iter().map(|v| v & mask).collect();
            let mut out = Vec::new();
            pack(values.iter().copied(), width, &mut out);
            prop_assert_eq!(out.len(), (values.len() * usize::from(width)).div_ceil(8));
            prop_assert_eq!(unpack(&out, width, values.len()), values);
        }
    }

    #[test]
    fn long_runs_cost_a_few_bytes() {
        let mut out = Vec::new();
        encode(&[1u8; 100_000], 1, &mut out);
        assert_eq!(
            out.len(),
            4,
            "a varint header of 3 bytes and one value byte"
        );
        let mut mixed = vec![0u8, 1, 0];
        mixed.extend([1u8; 50]);
        let mut out = Vec::new();
        encode(&mixed, 1, &mut out);
        assert_eq!(
            decode(&out, 1, mixed.len()),
            mixed.iter().map(|v| u64::from(*v)).collect::<Vec<_>>()
        );
        assert_eq!(
            out.len(),
            4,
            "one bit-packed group borrowing 5 of the run, then the run"
        );
    }
}
