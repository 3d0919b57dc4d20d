//! Heap allocations per record on the fetch core and on the shard core, counted by a counting
//! global allocator (harness = false): the goal is none per record.
//!
//! Fetch core: a Fetch answer's batches (the sample shape, 500 records per batch, uncompressed
//! and zstd) decoded in place and routed into per-shard-core batches of views, as
//! `source::fetch` does. Shard core: those batches appended to a file encoder (for raw records,
//! icefall's own pages writer), and the file finished (Parquet, zstd 1). Each step runs warm (its
//! reusable state built by a first pass), over 64 answers of 8,192 records.
//!
//!     cargo bench --bench allocs

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use icefall::kafka::{Codec, Decoded, Decoder, Isolation};
use icefall::record::{Batch, Record};
use icefall::routing::Router;
use icefall::sink::encode::{EncodeOptions, FileEncoder};
use icefall::sink::schema::raw_arrow_schema;
use icefall::source::emit::{Fetched, PerCore, route};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 8_192;
const ANSWERS: usize = 64;

/// Allocations per record of `step` run `ANSWERS` times after one warm-up run.
fn per_record(mut step: impl FnMut() -> usize) -> f64 {
    step();
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut records = 0;
    for _ in 0..ANSWERS {
        records += step();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / records as f64
}

fn main() {
    let records: Vec<Record> = (0..N as u64).map(common::sample_record).collect();
    let shard_cores = 2;
    let router = Router::new(8, shard_cores as u32);
    println!("| step | headers | codec | allocations per record |");
    println!("| --- | --- | --- | --- |");
    for with_headers in [false, true] {
        for codec in [Codec::None, Codec::Zstd] {
            let data = common::fetch_answer(&records, codec, if with_headers { 2 } else { 0 });
            let mut decoder = Decoder::new(1 << 28);
            let mut out = Decoded::default();
            let mut per_core: Vec<PerCore> = (0..shard_cores).map(|_| PerCore::default()).collect();
            let fetch = per_record(|| {
                decoder
                    .decode(&data, 0, Isolation::ReadCommitted, &[], &mut out)
                    .expect("decode");
                let f = Fetched {
                    buf: &out.buf,
                    records: &out.records,
                    headers: &out.headers,
                };
                route(&router, 3, f, &mut per_core);
                // What the emitter does per shard core: the views move into a batch, which the
                // shard core drops once encoded.
                for pc in &mut per_core {
                    drop(pc.take(3, &out.buf));
                }
                out.records.len()
            });
            let h = if with_headers { "2" } else { "0" };
            println!("| fetch core: decode in place + route | {h} | {codec:?} | {fetch:.4} |");
        }
    }
    for with_headers in [false, true] {
        let recs: Vec<Record> = records
            .iter()
            .map(|r| Record {
                headers: r
                    .headers
                    .iter()
                    .take(if with_headers { 2 } else { 0 })
                    .cloned()
                    .collect(),
                ..r.clone()
            })
            .collect();
        let batch = Batch::of_records(3, &recs);
        let opts = EncodeOptions::default();
        let mut enc = FileEncoder::new(0, raw_arrow_schema(), &opts).expect("encoder");
        let mut rejected = Vec::new();
        let append = per_record(|| {
            enc.append(3, batch.records(), &mut rejected)
                .expect("append");
            enc.encode_buffered().expect("encode");
            batch.records.len()
        });
        let mut enc = FileEncoder::new(0, raw_arrow_schema(), &opts).expect("encoder");
        let file = per_record(|| {
            enc.append(3, batch.records(), &mut rejected)
                .expect("append");
            enc.finish_file().expect("finish").expect("a file");
            batch.records.len()
        });
        let h = if with_headers { "2" } else { "0" };
        println!("| shard core: append to the file encoder (pages) | {h} | - | {append:.4} |");
        println!(
            "| shard core: append + finish a Parquet file (zstd 1) per 8,192 | {h} | - | {file:.4} |"
        );
    }
}
