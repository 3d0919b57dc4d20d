//! The in-memory body of a Parquet file being written: fixed-size chunks, never one growing `Vec`.
//!
//! A file of up to `--file-max-bytes` (128 MiB by default) written into one `Vec<u8>` doubles its
//! way there: every doubling copies what was written and faults in fresh pages, which measured
//! as a third of the shard core (BENCHMARKS.md). Chunks are filled once, frozen into `Bytes` and
//! handed to object_store without being joined: the full ones as soon as a row group is written
//! ([`Chunks::take_done`], streamed to a multipart upload), the rest when the file is finished.

use bytes::Bytes;

/// Bytes per chunk: large enough that a file is a few dozen of them, small enough that the
/// allocator serves it from its per-thread pages rather than a fresh mapping.
pub const CHUNK_BYTES: usize = 4 << 20;

/// A `std::io::Write` sink that keeps what it is given as a list of chunks.
#[derive(Debug)]
pub struct Chunks {
    /// Bytes of the chunks already taken by [`Chunks::take_done`].
    taken: usize,
    done: Vec<Bytes>,
    current: Vec<u8>,
    chunk: usize,
}

impl Default for Chunks {
    fn default() -> Self {
        Self::with_chunk(CHUNK_BYTES)
    }
}

impl Chunks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Chunks of `chunk` bytes (at least 1).
    pub fn with_chunk(chunk: usize) -> Self {
        Self {
            taken: 0,
            done: Vec::new(),
            current: Vec::new(),
            chunk: chunk.max(1),
        }
    }

    /// Bytes written so far, taken chunks included.
    pub fn len(&self) -> usize {
        self.taken + self.done.iter().map(Bytes::len).sum::<usize>() + self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The full chunks written since the last call, in order; the one being filled stays.
    pub fn take_done(&mut self) -> Vec<Bytes> {
        let done = std::mem::take(&mut self.done);
        self.taken += done.iter().map(Bytes::len).sum::<usize>();
        done
    }

    /// The chunks not taken yet, in order; the last one may be short.
    pub fn into_parts(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.done
                .push(Bytes::from(std::mem::take(&mut self.current)));
        }
        self.done
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            if self.current.capacity() == 0 {
                self.current = Vec::with_capacity(self.chunk);
            }
            let room = self.chunk - self.current.len();
            let (now, rest) = buf.split_at(room.min(buf.len()));
            self.current.extend_from_slice(now);
            buf = rest;
            if self.current.len() == self.chunk {
                self.done
                    .push(Bytes::from(std::mem::take(&mut self.current)));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    proptest! {
        #[test]
        fn chunks_hold_every_byte_in_order(
            chunk in 1usize..20,
            writes in proptest::collection::vec((0usize..50, any::<bool>()), 0..8),
        ) {
            let mut c = Chunks::with_chunk(chunk);
            let mut want = Vec::new();
            let mut got: Vec<Bytes> = Vec::new();
            for (i, (n, take)) in writes.iter().enumerate() {
                let part: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
                c.write_all(&part).unwrap();
                want.extend_from_slice(&part);
                if *take {
                    let taken = c.take_done();
                    prop_assert!(taken.iter().all(|p| p.len() == chunk), "only full chunks");
                    got.extend(taken);
                }
            }
            prop_assert_eq!(c.len(), want.len());
            got.extend(c.into_parts());
            prop_assert!(got.iter().all(|p| !p.is_empty() && p.len() <= chunk));
            prop_assert_eq!(got.concat(), want);
        }
    }
}
