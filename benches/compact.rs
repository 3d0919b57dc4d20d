//! Compaction throughput on one core: FILES small Parquet files (ROWS rows of 200-byte values
//! each, half of each value random so it does not compress away) are committed to a fresh
//! SQLite-catalog table, then `sink::rewrite::compact` rewrites them into one file on a
//! current-thread runtime. Reports MB/s read and written. `harness = false`.
//!
//!     cargo bench --bench compact [-- FILES [ROWS]]

use std::time::Instant;

use iceberg::io::Storage;
use icefall::record::{Offsets, Record};
use icefall::sink::commit::{CatalogSpec, Committer, RetryPolicy, ensure_table, open_catalog};
use icefall::sink::encode::{EncodeOptions, FileEncoder};
use icefall::sink::replace::Pointer;
use icefall::sink::rewrite::compact;
use icefall::sink::schema;
use icefall::sink::stats::data_file;
use icefall::sink::storage::ObjectStoreStorage;

fn main() {
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let files = nums.first().copied().unwrap_or(32);
    let rows = nums.get(1).copied().unwrap_or(50_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let abs = std::fs::canonicalize(dir.path()).expect("canonical");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let storage = ObjectStoreStorage::local();
        let spec = CatalogSpec {
            uri: format!("sqlite://{}?mode=rwc", abs.join("catalog.db").display()),
            warehouse_url: format!("file://{}", abs.display()),
        };
        let catalog = open_catalog(&spec, storage.clone()).await.expect("catalog");
        let ident = "bench.compact".parse().expect("ident");
        let table = ensure_table(catalog.as_ref(), &ident, &schema::Shape::Raw)
            .await
            .expect("table");
        let location = table.metadata().location().to_string();
        let table_schema = table.metadata().current_schema().as_ref().clone();
        let retry = RetryPolicy {
            base: std::time::Duration::from_millis(10),
            cap: std::time::Duration::from_secs(1),
            attempts: 3,
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut dfs = Vec::new();
        for n in 0..files {
            let mut enc = FileEncoder::new(0, schema::raw_arrow_schema(), &EncodeOptions::default())
                .expect("encoder");
            let recs: Vec<Record> = (0..rows)
                .map(|i| {
                    let mut v = vec![b'v'; 200];
                    for b in v.iter_mut().take(100) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        *b = seed as u8;
                    }
                    Record {
                        offset: (n * rows + i) as i64,
                        timestamp_ms: 1_700_000_000_000,
                        shard: 0,
                        key: Some(format!("k{}", i % 1000).into_bytes()),
                        value: Some(v),
                        headers: Default::default(),
                    }
                })
                .collect();
            let batch = icefall::record::Batch::of_records(0, &recs);
            enc.append(0, batch.records(), &mut Vec::new()).expect("append");
            let f = enc.finish_file().expect("encode").expect("file");
            let path = format!("{location}/data/bench-{n:06}.parquet");
            let size = f.size();
            storage.write(&path, f.to_bytes()).await.expect("upload");
            dfs.push(data_file(path, size, &f.metadata, &table_schema, 0).expect("data file"));
        }
        let bytes_in: u64 = dfs.iter().map(|f| f.file_size_in_bytes()).sum();
        let mut committer = Committer::new(catalog.clone(), ident.clone(), "events".into(), retry, table);
        let offsets = Offsets::from([(0, (files * rows) as i64)]);
        committer
            .commit(1, dfs, None, &offsets, Vec::new())
            .await
            .expect("commit");
        let pointer = Pointer::open(&spec.uri).await.expect("pointer").expect("a SQL catalog");
        let t = Instant::now();
        let done = compact(catalog.as_ref(), &pointer, &storage, &ident, 1 << 40, false)
            .await
            .expect("compact");
        let secs = t.elapsed().as_secs_f64();
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "compaction, one core: {} files ({:.1} MB, {} rows) into {} in {:.2} s: {:.1} MB/s read, {:.0} rows/s",
            done.files,
            mb(bytes_in),
            files * rows,
            done.into,
            secs,
            mb(done.bytes_read) / secs,
            (files * rows) as f64 / secs
        );
    });
}
