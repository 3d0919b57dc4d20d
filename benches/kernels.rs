//! The hot kernels of one record's trip, each alone (criterion): the key hash and routing, the
//! fetch core's split of a fetch response by shard core, Arrow column building, and Parquet
//! encoding (zstd level 1, as icefall writes), and `--format json`'s decoding into typed columns
//! (alone, and with Parquet). Records are the sample shape the end-to-end benches produce
//! (10-byte keys from 1,000, 100-byte values, 1-3 headers; JSON values of ~100 bytes with six
//! fields for the decode group), 8,192 per iteration. Every group reports records/s and payload
//! MB/s; each encoded shape also prints its file size per record (`file bytes/record`).
//!
//! `cargo bench --bench kernels` (quick: ~1 s of measurement per kernel); set
//! `ICEFALL_BENCH_FULL=1` for criterion's default 5 s.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use icefall::decode::avro::AvroSchemas;
use icefall::decode::fields::KnownFields;
use icefall::kafka::{Decoded, Decoder, Isolation};
use icefall::record::{Batch, Record};
use icefall::routing::Router;
use icefall::sink::encode::{EncodeOptions, FileEncoder};
use icefall::sink::schema::{Shape, arrow_schema, raw_arrow_schema};
use icefall::source::emit::{Fetched, PerCore, route};

const N: usize = 8_192;

fn sample_records() -> Vec<Record> {
    (0..N as u64).map(common::sample_record).collect()
}

fn throughput(records: &[Record]) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: records.len() as u64,
        bytes: records.iter().map(Record::payload_bytes).sum::<usize>() as u64,
    }
}

fn kernels(c: &mut Criterion) {
    let records = sample_records();
    let tp = throughput(&records);

    let mut g = c.benchmark_group("route");
    g.throughput(tp.clone());
    let keys: Vec<Option<Vec<u8>>> = records.iter().map(|r| r.key.clone()).collect();
    for cores in [1u32, 8, 64] {
        let router = Router::new(cores * 4, cores);
        g.bench_function(format!("key_hash_and_core/{cores}_cores"), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for k in &keys {
                    acc += router.core_of(router.shard_of(k.as_deref(), 3));
                }
                black_box(acc)
            })
        });
    }
    g.finish();

    // The fetch core's per-answer work: batches decoded in place (CRC-32C, every record and
    // header walked into views), then converted to records and split by shard core.
    let mut g = c.benchmark_group("fetch");
    g.throughput(tp.clone());
    for with_headers in [false, true] {
        let data = common::fetch_answer(
            &records,
            icefall::kafka::Codec::None,
            if with_headers { 2 } else { 0 },
        );
        let name = if with_headers {
            "2_headers"
        } else {
            "0_headers"
        };
        let mut decoder = Decoder::new(1 << 28);
        let mut out = Decoded::default();
        g.bench_function(format!("decode_in_place/{name}"), |b| {
            b.iter(|| {
                decoder
                    .decode(&data, 0, Isolation::ReadCommitted, &[], &mut out)
                    .expect("decode");
                black_box(out.records.len())
            })
        });
        let router = Router::new(8 * 4, 8);
        let mut per_core: Vec<PerCore> = (0..8).map(|_| PerCore::default()).collect();
        g.bench_function(format!("decode_and_route/{name}/8_cores"), |b| {
            b.iter(|| {
                decoder
                    .decode(&data, 0, Isolation::ReadCommitted, &[], &mut out)
                    .expect("decode");
                let fetched = Fetched {
                    buf: &out.buf,
                    records: &out.records,
                    headers: &out.headers,
                };
                route(&router, 3, fetched, &mut per_core);
                for v in &mut per_core {
                    v.clear();
                }
            })
        });
    }
    g.finish();

    let schema = raw_arrow_schema();
    let opts = EncodeOptions::default();
    let batch = Batch::of_records(3, &records);
    let mut g = c.benchmark_group("encode");
    g.throughput(tp);
    // What one shard core spends to land the sample records as Parquet, through icefall's own
    // pages (`pages`, what raw tables use) and through Arrow builders and `ArrowWriter`
    // (`arrow`, the writer before): a fresh encoder per file (`fresh`, as the benches before
    // issue 17's pages writer measured), and one encoder writing file after file (`steady`, as
    // a shard core does).
    for (name, arrow_writer) in [("pages", false), ("arrow", true)] {
        let opts = EncodeOptions {
            arrow_writer,
            ..opts.clone()
        };
        g.bench_function(format!("{name}/fresh_zstd1"), |b| {
            b.iter_batched(
                || FileEncoder::new(0, schema.clone(), &opts).expect("encoder"),
                |mut enc| {
                    enc.append(3, batch.records(), &mut Vec::new())
                        .expect("append");
                    enc.finish_file().expect("encode").expect("a file")
                },
                BatchSize::LargeInput,
            )
        });
        let mut enc = FileEncoder::new(0, schema.clone(), &opts).expect("encoder");
        g.bench_function(format!("{name}/steady_zstd1"), |b| {
            b.iter(|| {
                enc.append(3, batch.records(), &mut Vec::new())
                    .expect("append");
                enc.finish_file().expect("encode").expect("a file")
            })
        });
    }
    g.finish();
    file_size("raw", &schema, &opts, &records);
    let arrow_opts = EncodeOptions {
        arrow_writer: true,
        ..opts.clone()
    };
    file_size("raw_arrow_writer", &schema, &arrow_opts, &records);

    // --format json: the sample's JSON values into six typed columns.
    let json_shape = common::sample::Shape {
        payload: common::sample::Payload::Json,
        null_value_every: 0,
        ..Default::default()
    };
    let json: Vec<Record> = (0..N as u64)
        .map(|i| common::sample_record_of(&json_shape, i))
        .collect();
    let declared =
        std::fs::read_to_string(common::repo().join("tests/data/sample-json.schema.json"))
            .expect("schema file");
    let typed = Shape::parse_typed(&declared).expect("schema");
    let typed = arrow_schema(&typed.iceberg_schema().expect("iceberg schema")).expect("arrow");
    decode_group(c, "decode_json", &json, &typed, &opts);
    // The walk over each value's top-level keys that counts fields the table lacks (part of
    // typed_columns above): what it adds to decoding.
    let known = KnownFields::new(typed.fields().iter().map(|f| f.name().as_str()));
    let mut g = c.benchmark_group("json_field_scan");
    g.throughput(throughput(&json));
    g.bench_function("top_level_keys", |b| {
        b.iter(|| {
            let unknown: usize = json
                .iter()
                .filter_map(|r| r.value.as_deref())
                .map(|v| known.unknown(v, |_| {}))
                .sum();
            assert_eq!(unknown, 0);
        })
    });
    g.finish();

    // --format avro: the same events as bare Avro bodies (sample.avsc), into the same columns.
    let avsc =
        std::fs::read_to_string(common::repo().join("tests/data/sample.avsc")).expect("avsc file");
    let avro: Vec<Record> = json
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            value: Some(json_shape.avro_value(i as u64)),
            ..r.clone()
        })
        .collect();
    let avro_opts = EncodeOptions {
        avro: Some(AvroSchemas::plain(&avsc).expect("avsc")),
        ..opts.clone()
    };
    decode_group(c, "decode_avro", &avro, &typed, &avro_opts);
}

/// Decoding `records`' values into the typed columns of `schema`, then into a Parquet file.
fn decode_group(
    c: &mut Criterion,
    name: &str,
    records: &[Record],
    schema: &arrow_schema::SchemaRef,
    opts: &EncodeOptions,
) {
    file_size(name, schema, opts, records);
    let mut g = c.benchmark_group(name);
    g.throughput(throughput(records));
    let batch = Batch::of_records(3, records);
    let records = batch.records();
    g.bench_function("typed_columns", |b| {
        b.iter_batched(
            || FileEncoder::new(0, schema.clone(), opts).expect("encoder"),
            |mut enc| {
                let mut rejected = Vec::new();
                enc.append(3, records, &mut rejected).expect("append");
                assert!(rejected.is_empty(), "{:?}", rejected.first());
                enc
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("typed_parquet_zstd1", |b| {
        b.iter_batched(
            || FileEncoder::new(0, schema.clone(), opts).expect("encoder"),
            |mut enc| {
                enc.append(3, records, &mut Vec::new()).expect("append");
                enc.finish_file().expect("encode").expect("a file")
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Prints the size of the file `records` encode to, per record: what a change to the writer
/// costs or saves on disk (BENCHMARKS.md compares it across commits).
fn file_size(
    name: &str,
    schema: &arrow_schema::SchemaRef,
    opts: &EncodeOptions,
    records: &[Record],
) {
    let batch = Batch::of_records(3, records);
    let mut enc = FileEncoder::new(0, schema.clone(), opts).expect("encoder");
    enc.append(3, batch.records(), &mut Vec::new())
        .expect("append");
    let file = enc.finish_file().expect("encode").expect("a file");
    println!(
        "file bytes/record {name}: {:.2} ({} records, {} bytes, zstd 1)",
        file.size() as f64 / records.len() as f64,
        records.len(),
        file.size()
    );
}

fn config() -> Criterion {
    let c = Criterion::default();
    if std::env::var_os("ICEFALL_BENCH_FULL").is_some() {
        c
    } else {
        c.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(1))
            .sample_size(20)
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = kernels
}
criterion_main!(benches);
