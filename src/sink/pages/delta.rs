//! DELTA_BINARY_PACKED for 64-bit integers (offsets and timestamps, which rise by small steps).
//! Sans-IO: a page's values in, the encoded page body appended.
//!
//! Blocks of 128 deltas in 4 miniblocks of 32; each block stores its smallest delta once and
//! each miniblock packs the deltas above it at the width its largest one needs. Offsets that
//! rise by one pack at width 0: the page of 100,000 offsets is a few hundred bytes.

use super::hybrid::{pack, uleb, width_of, zigzag};

const BLOCK: usize = 128;
const MINIBLOCKS: usize = 4;
const MINI: usize = BLOCK / MINIBLOCKS;

/// Appends `values` DELTA_BINARY_PACKED.
pub fn encode(values: &[i64], out: &mut Vec<u8>) {
    uleb(BLOCK as u64, out);
    uleb(MINIBLOCKS as u64, out);
    uleb(values.len() as u64, out);
    uleb(zigzag(values.first().copied().unwrap_or(0)), out);
    let mut deltas = [0i64; BLOCK];
    let mut start = 1;
    while start < values.len() {
        let n = (values.len() - start).min(BLOCK);
        for (k, d) in deltas[..n].iter_mut().enumerate() {
            *d = values[start + k].wrapping_sub(values[start + k - 1]);
        }
        write_block(&deltas[..n], out);
        start += n;
    }
}

/// One block of `deltas` (at most [`BLOCK`]; the last block of a page may hold fewer).
fn write_block(deltas: &[i64], out: &mut Vec<u8>) {
    let min = deltas.iter().copied().min().unwrap_or(0);
    uleb(zigzag(min), out);
    let above = |d: &i64| d.wrapping_sub(min) as u64;
    let mut widths = [0u8; MINIBLOCKS];
    for (w, mini) in widths.iter_mut().zip(deltas.chunks(MINI)) {
        *w = width_of(mini.iter().map(above).fold(0, |a, b| a | b));
    }
    out.extend_from_slice(&widths);
    for (w, mini) in widths.iter().zip(deltas.chunks(MINI)) {
        let padding = MINI - mini.len();
        pack(
            mini.iter()
                .map(above)
                .chain(std::iter::repeat_n(0, padding)),
            *w,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::hybrid::{read_uleb, unpack};
    use super::*;
    use proptest::prelude::*;

    /// Test-only decoder, written from the format's description.
    fn decode(mut b: &[u8]) -> Vec<i64> {
        let unzig = |n: u64| ((n >> 1) as i64) ^ -((n & 1) as i64);
        let block = read_uleb(&mut b) as usize;
        let minis = read_uleb(&mut b) as usize;
        let n = read_uleb(&mut b) as usize;
        let mut out = vec![unzig(read_uleb(&mut b))];
        while out.len() < n {
            let min = unzig(read_uleb(&mut b));
            let widths = b[..minis].to_vec();
            b = &b[minis..];
            for w in widths {
                if out.len() >= n {
                    break;
                }
                let per = block / minis;
                let used = per * usize::from(w) / 8;
                for d in unpack(&b[..used], w, per) {
                    if out.len() < n {
                        let last = *out.last().unwrap();
                        out.push(last.wrapping_add(min.wrapping_add(d as i64)));
                    }
                }
                b = &b[used..];
            }
        }
        out.truncate(n);
        out
    }

    proptest! {
        #[test]
        fn round_trips_any_values(values in prop::collection::vec(any::<i64>(), 0..400)) {
            let mut out = Vec::new();
            encode(&values, &mut out);
            prop_assert_eq!(decode(&out), values);
        }

        #[test]
        fn round_trips_small_steps(start in any::<i64>(), steps in prop::collection::vec(-3i64..50, 0..700)) {
            let values: Vec<i64> = steps.iter().scan(start, |v, s| { *v = v.wrapping_add(*s); Some(*v) }).collect();
            let mut out = Vec::new();
            encode(&values, &mut out);
            prop_assert_eq!(decode(&out), values);
        }
    }

    #[test]
    fn consecutive_offsets_pack_at_width_zero() {
        let values: Vec<i64> = (1_000_000..1_100_000).collect();
        let mut out = Vec::new();
        encode(&values, &mut out);
        // Per block: the min delta (1 byte) and four widths of 0.
        assert!(out.len() < 4_000, "{} bytes", out.len());
        assert_eq!(decode(&out), values);
    }
}
