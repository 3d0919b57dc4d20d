//! Commit latency with the SQLite catalog: one fast-append snapshot per epoch (one real Parquet
//! file and the offsets in the summary), through icefall's committer, on a fresh local warehouse.
//! `harness = false`; latencies go into an HdrHistogram. Latency grows with the table's history
//! (each snapshot's manifest list names every earlier manifest), so it also reports the first and
//! last 10% separately, and the windows of 100 commits ending at commit 100, EPOCHS/2 and EPOCHS.
//! With MAINTAIN_EVERY, `icefall maintain`'s pass (`sink::maintain::run`: compaction, manifest
//! merging with Iceberg's defaults, expiry keeping the newest 100 snapshots) runs after every
//! MAINTAIN_EVERY commits, and its times are reported; without it, one pass runs at the end on
//! the whole history.
//!
//! RETAIN (default 100) is how many snapshots a pass keeps; `--second-writer` adds another
//! writer (its own committer and topic, as a second process would) committing every 5 ms, whose
//! commits race the measured writer's and the maintainer's. The measured writer and the
//! maintainer share a gate, as `run --maintain-interval` does.
//!
//!     cargo bench --bench commit [-- EPOCHS [MAINTAIN_EVERY [RETAIN]] [--second-writer]]

use std::time::Instant;

use hdrhistogram::Histogram;
use iceberg::io::Storage;
use icefall::config::maintain::MaintainConfig;
use icefall::record::{Offsets, Record};
use icefall::sink::commit::{CatalogSpec, Committer, RetryPolicy, ensure_table, open_catalog};
use icefall::sink::encode::{EncodeOptions, FileEncoder};
use icefall::sink::maintain::run;
use icefall::sink::replace::Pointer;
use icefall::sink::schema;
use icefall::sink::stats::data_file;
use icefall::sink::storage::ObjectStoreStorage;

fn main() {
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let epochs: u64 = nums.first().copied().unwrap_or(200);
    let maintain_every: Option<u64> = nums.get(1).copied().filter(|n| *n > 0);
    let retain: u64 = nums.get(2).copied().filter(|n| *n > 0).unwrap_or(100);
    let second_writer = std::env::args().any(|a| a == "--second-writer");
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
        let ident: icefall::config::TableIdent = "bench.commits".parse().expect("ident");
        let table_id = iceberg::TableIdent::new(
            iceberg::NamespaceIdent::new(ident.namespace.clone()),
            ident.name.clone(),
        );
        let table = ensure_table(catalog.as_ref(), &ident, &schema::Shape::Raw)
            .await
            .expect("table");
        let location = table.metadata().location().to_string();
        let table_schema = table.metadata().current_schema().as_ref().clone();
        let retry = RetryPolicy {
            base: std::time::Duration::from_millis(10),
            cap: std::time::Duration::from_secs(1),
            attempts: 50,
        };
        let gate = std::sync::Arc::new(icefall::sink::guard::Gate::default());
        let mut committer = Committer::new(catalog.clone(), ident.clone(), "events".into(), retry, table.clone())
            .with_gate(gate.clone());
        let keep = MaintainConfig {
            expire_older_than: Some(std::time::Duration::ZERO),
            retain_last: std::num::NonZeroUsize::new(retain as usize),
            compact: true,
            merge_manifests: true,
            ..MaintainConfig::default()
        };
        let pointer = Pointer::open(&spec.uri).await.expect("catalog pointer").map(|p| p.with_gate(gate));
        // The pass of `icefall maintain`: rewrites and expiry, then the metadata files no log
        // names (here once 5 s old rather than 10 minutes: the bench runs minutes, not months).
        let pass = || async {
            let p = run(catalog.as_ref(), pointer.as_ref(), &storage, &ident, &keep, i64::MAX).await;
            let settled = icefall::metrics::now_ms() - 5_000;
            icefall::sink::orphans::old_metadata(catalog.as_ref(), &ident, &storage, settled, false)
                .await
                .expect("old metadata");
            p
        };
        // The second writer: another process's committer on its own topic, every 5 ms.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let second = (second_writer).then(|| {
            let (spec, ident, stop) = (spec.clone(), ident.clone(), stop.clone());
            let (storage, location, table_schema) = (storage.clone(), location.clone(), table_schema.clone());
            tokio::spawn(async move {
                // Its own catalog and connection pool, as another process has.
                let catalog = open_catalog(&spec, storage.clone()).await.expect("catalog");
                let mut c = Committer::new(catalog, ident, "other".into(), retry, table);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let df = one_file(&storage, &location, &table_schema, "other", n).await;
                    let prior = Offsets::from([(0, (n * 1_000) as i64)]);
                    let offsets = Offsets::from([(0, ((n + 1) * 1_000) as i64)]);
                    c.commit(n, vec![df], (n > 1).then_some(&prior), &offsets, Vec::new())
                        .await
                        .expect("second writer's commit");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                n
            })
        });
        let mut passes = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        let window = |end: u64| Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map(|h| (end, h));
        let mut windows: Vec<(u64, Histogram<u64>)> = [100.min(epochs), epochs / 2, epochs]
            .into_iter()
            .map(|end| window(end).expect("histogram"))
            .collect();
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let (mut first, mut last) = (all.clone(), all.clone());
        let tenth = (epochs / 10).max(1);
        for epoch in 1..=epochs {
            let df = one_file(&storage, &location, &table_schema, "events", epoch).await;
            let offsets = Offsets::from([(0, ((epoch + 1) * 1_000) as i64)]);
            let prior = match epoch {
                0 => Offsets::new(),
                _ => Offsets::from([(0, (epoch * 1_000) as i64)]),
            };
            let t = Instant::now();
            committer
                .commit(epoch, vec![df], Some(&prior), &offsets, Vec::new())
                .await
                .expect("commit");
            let us = t.elapsed().as_micros().max(1) as u64;
            all.record(us).expect("record");
            if epoch <= tenth {
                first.record(us).expect("record");
            }
            if epoch > epochs - tenth {
                last.record(us).expect("record");
            }
            for (end, h) in &mut windows {
                if epoch <= *end && epoch + 100 > *end {
                    h.record(us).expect("record");
                }
            }
            if windows.iter().any(|(end, _)| *end == epoch) {
                let t = catalog.load_table(&table_id).await.expect("load");
                let path = t.metadata_location().unwrap_or_default().trim_start_matches("file://");
                let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
                let list = t.metadata().current_snapshot().expect("head");
                let manifests = t.manifest_list_reader(list).load().await.expect("list");
                println!(
                    "  at commit {epoch}: {} snapshots, {} manifests, metadata file {bytes} bytes",
                    t.metadata().snapshots().count(),
                    manifests.entries().len()
                );
            }
            if maintain_every.is_some_and(|n| epoch % n == 0) {
                let t = Instant::now();
                pass().await.expect("maintain");
                // The writer's next commit finds the table changed and retries, as it would.
                passes.record(t.elapsed().as_micros().max(1) as u64).expect("record");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = second {
            println!("second writer: {} commits meanwhile", h.await.expect("second writer"));
        }
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "commit latency, SQLite catalog, {epochs} commits of one 1,000-row file each (ms):"
        );
        println!(
            "  all        p50 {:7.2}  p99 {:7.2}  max {:7.2}",
            ms(&all, 0.5),
            ms(&all, 0.99),
            all.max() as f64 / 1e3
        );
        println!(
            "  first 10%  p50 {:7.2}  p99 {:7.2}",
            ms(&first, 0.5),
            ms(&first, 0.99)
        );
        println!(
            "  last 10%   p50 {:7.2}  p99 {:7.2}",
            ms(&last, 0.5),
            ms(&last, 0.99)
        );
        for (end, h) in &windows {
            println!(
                "  commits {:>5}..={end:<5} p50 {:7.2}  p99 {:7.2}",
                end.saturating_sub(99).max(1),
                ms(h, 0.5),
                ms(h, 0.99)
            );
        }
        match maintain_every {
            Some(n) => println!(
                "  maintenance every {n} commits (keep the newest {retain}): {} passes, p50 {:.1} ms, max {:.1} ms",
                passes.len(),
                ms(&passes, 0.5),
                passes.max() as f64 / 1e3
            ),
            None => {
                let t = Instant::now();
                let pass = pass().await.expect("maintain");
                println!(
                    "  one pass on the whole history: {:.1} ms, {}",
                    t.elapsed().as_secs_f64() * 1e3,
                    pass.line()
                );
            }
        }
    });
}

/// One 1,000-row Parquet file of `tag`'s epoch, uploaded under the table's data folder.
async fn one_file(
    storage: &ObjectStoreStorage,
    location: &str,
    table_schema: &iceberg::spec::Schema,
    tag: &str,
    epoch: u64,
) -> iceberg::spec::DataFile {
    let mut enc = FileEncoder::new(0, schema::raw_arrow_schema(), &EncodeOptions::default())
        .expect("encoder");
    let recs: Vec<Record> = (0..1_000)
        .map(|i| Record {
            offset: (epoch * 1_000 + i) as i64,
            timestamp_ms: 1_700_000_000_000,
            shard: 0,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![1; 100]),
            headers: Default::default(),
        })
        .collect();
    let batch = icefall::record::Batch::of_records(0, &recs);
    enc.append(0, batch.records(), &mut Vec::new())
        .expect("append");
    let f = enc.finish_file().expect("encode").expect("file");
    let path = format!("{location}/data/bench-{tag}-{epoch:06}.parquet");
    let size = f.size();
    storage.write(&path, f.to_bytes()).await.expect("upload");
    data_file(path, size, &f.metadata, table_schema, 0).expect("data file")
}
