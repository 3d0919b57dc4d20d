//! Kafka's record compression codecs: gzip, snappy (raw or xerial-framed, as Java writes it),
//! LZ4 (frame format) and zstd. Decompression appends to a caller's buffer and stops at a byte
//! limit, so a small batch can never expand into unbounded memory.

use std::io::Read;

/// A codec named by the low three bits of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown compression codec {0}")]
    Unknown(u8),
    #[error("{codec:?} data is corrupt: {why}")]
    Corrupt { codec: Codec, why: String },
    #[error("{codec:?} data decompresses past the {limit}-byte limit")]
    TooLarge { codec: Codec, limit: usize },
}

/// xerial's snappy-java stream header: magic, then version and compatible version (i32 each).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER: usize = 16;

impl Codec {
    /// Every codec Kafka defines.
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    pub fn from_attribute(bits: u8) -> Result<Self, CodecError> {
        Ok(match bits {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            other => return Err(CodecError::Unknown(other)),
        })
    }

    /// The attribute bits for this codec.
    pub fn attribute(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// Appends the decompressed `input` to `out`, failing once `out` would pass `limit` bytes.
    pub fn decompress_into(
        self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), CodecError> {
        let corrupt = |why: String| CodecError::Corrupt { codec: self, why };
        match self {
            Codec::None => bounded_read(self, input, out, limit),
            Codec::Gzip => bounded_read(self, flate2::read::GzDecoder::new(input), out, limit),
            Codec::Lz4 => bounded_read(self, lz4_flex::frame::FrameDecoder::new(input), out, limit),
            Codec::Zstd => {
                let d = zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|e| corrupt(e.to_string()))?;
                bounded_read(self, d, out, limit)
            }
            Codec::Snappy if input.starts_with(&XERIAL_MAGIC) => {
                let mut rest = input.get(XERIAL_HEADER..).unwrap_or_default();
                while !rest.is_empty() {
                    let (len, tail) = rest
                        .split_first_chunk::<4>()
                        .ok_or_else(|| corrupt("cut-short xerial block length".into()))?;
                    let len = u32::from_be_bytes(*len) as usize;
                    let block = tail
                        .get(..len)
                        .ok_or_else(|| corrupt("xerial block runs past the data".into()))?;
                    snappy_block(block, out, limit)?;
                    rest = &tail[len..];
                }
                Ok(())
            }
            Codec::Snappy => snappy_block(input, out, limit),
        }
    }

    /// Appends the compressed `input` to `out` (what a producer sends).
    pub fn compress_into(self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        use std::io::Write;
        let fail = |why: std::io::Error| CodecError::Corrupt {
            codec: self,
            why: why.to_string(),
        };
        match self {
            Codec::None => out.extend_from_slice(input),
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                e.write_all(input).map_err(fail)?;
                e.finish().map_err(fail)?;
            }
            Codec::Snappy => {
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(input.len()), 0);
                let n = snap::raw::Encoder::new()
                    .compress(input, &mut out[start..])
                    .map_err(|e| fail(std::io::Error::other(e)))?;
                out.truncate(start + n);
            }
            Codec::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(out);
                e.write_all(input).map_err(fail)?;
                e.finish().map_err(|e| fail(std::io::Error::other(e)))?;
            }
            Codec::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, 1).map_err(fail)?;
                e.write_all(input).map_err(fail)?;
                e.finish().map_err(fail)?;
            }
        }
        Ok(())
    }
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let corrupt = |e: snap::Error| CodecError::Corrupt {
        codec: Codec::Snappy,
        why: e.to_string(),
    };
    let n = snap::raw::decompress_len(block).map_err(corrupt)?;
    let start = out.len();
    if start.saturating_add(n) > limit {
        return Err(CodecError::TooLarge {
            codec: Codec::Snappy,
            limit,
        });
    }
    out.resize(start + n, 0);
    let got = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(corrupt)?;
    out.truncate(start + got);
    Ok(())
}

/// Reads `r` to its end into `out`, stopping with an error past `limit` total bytes.
fn bounded_read(
    codec: Codec,
    r: impl Read,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CodecError> {
    let room = limit.saturating_sub(out.len()) as u64;
    r.take(room + 1)
        .read_to_end(out)
        .map_err(|e| CodecError::Corrupt {
            codec,
            why: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { codec, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 5] = Codec::ALL;

    #[test]
    fn every_codec_round_trips_and_appends() {
        let input: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let mut z = Vec::new();
            c.compress_into(&input, &mut z).unwrap();
            let mut out = b"head".to_vec();
            c.decompress_into(&z, &mut out, 1 << 24).unwrap();
            assert_eq!(&out[..4], b"head", "{c:?}");
            assert_eq!(&out[4..], &input[..], "{c:?}");
            assert_eq!(Codec::from_attribute(c.attribute() as u8).unwrap(), c);
        }
        assert_eq!(Codec::from_attribute(5), Err(CodecError::Unknown(5)));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let input = vec![0u8; 1 << 20];
        for c in ALL {
            let mut z = Vec::new();
            c.compress_into(&input, &mut z).unwrap();
            let mut out = Vec::new();
            let e = c.decompress_into(&z, &mut out, 1000).unwrap_err();
            assert!(
                matches!(e, CodecError::TooLarge { limit: 1000, .. }),
                "{c:?}: {e}"
            );
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let a = b"hello hello hello hello".repeat(10);
        let b = b"world".repeat(30);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for part in [&a, &b] {
            let z = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(z.len() as u32).to_be_bytes());
            framed.extend_from_slice(&z);
        }
        let mut out = Vec::new();
        Codec::Snappy
            .decompress_into(&framed, &mut out, 1 << 20)
            .unwrap();
        assert_eq!(out, [a, b].concat());
        framed.truncate(framed.len() - 3);
        assert!(
            Codec::Snappy
                .decompress_into(&framed, &mut Vec::new(), 1 << 20)
                .is_err()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in ALL {
            let _ = c.decompress_into(&[0xff; 64], &mut Vec::new(), 1 << 20);
        }
    }
}
