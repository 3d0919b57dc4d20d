//! End to end against a real Tansu broker: 200,000 keyed records over 8 partitions land as
//! Parquet exactly once, byte-equal, per-key order kept; with the default layout, all roles on
//! one core, and every core of the machine running both fetch and shards.

mod common;

use common::{Broker, base_args, icefall, read_warehouse, sample, verify_sample};

const RECORDS: u64 = 200_000;
const KEYS: u64 = 1_200;

fn summary_field(stdout: &str, name: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("summary "))
        .expect("summary line");
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .parse()
        .expect("number")
}

#[test]
fn every_record_lands_once_in_key_order_on_any_core_layout() {
    let broker = Broker::start();
    broker.create_topic("events", 8);
    broker.produce("events", RECORDS, KEYS);
    let shape = sample::Shape {
        keys: KEYS,
        ..Default::default()
    };

    let online = icefall::runtime::online_cores().expect("online cores");
    let one_core = common::one_core_args();
    let all = icefall::config::CoreList::new(online.clone())
        .expect("cores")
        .to_string();
    let layouts: Vec<(&str, Vec<&str>)> = vec![
        ("default", vec![]),
        (
            // One shard core writes one ~24 MB file of 10 row groups: they are uploaded in parts
            // while the file goes on (a multipart upload), and the parts make the whole file.
            "one core, streamed file",
            one_core
                .iter()
                .map(String::as_str)
                .chain(["--row-group-rows", "20000"])
                .collect(),
        ),
        (
            "every core, small files",
            vec![
                "--fetch-cores",
                &all,
                "--shard-cores",
                &all,
                "--shards",
                "64",
                "--file-max-bytes",
                "1MiB",
                "--batch-rows",
                "1000",
                "--ring-batches",
                "4",
                // A tiny queue: the fetcher waits on full rings while barriers keep flowing.
                "--queue-capacity",
                "500",
                "--commit-interval",
                "200ms",
            ],
        ),
    ];
    for (name, extra) in layouts {
        let wh = tempfile::tempdir().expect("temp dir");
        let wh_str = wh.path().to_str().expect("utf8 path");
        let mut args = base_args(&broker.addr, "events", wh_str);
        args.extend(extra.iter().copied());
        args.push("--stop-at-end");
        let out = icefall(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: icefall failed: {stderr}");
        assert_eq!(
            summary_field(&stdout, "records"),
            RECORDS,
            "{name}: {stdout}"
        );

        let files = read_warehouse(&wh.path().join("ns/events/data"));
        assert!(!files.is_empty(), "{name}: no data files");
        assert_eq!(
            summary_field(&stdout, "files"),
            files.len() as u64,
            "{name}"
        );
        let rows = verify_sample(&files, &shape, RECORDS);
        assert_eq!(rows as u64, RECORDS, "{name}");
        if name.contains("streamed") {
            assert_eq!(files.len(), 1, "{name}: one file");
            assert!(
                summary_field(&stdout, "streamed_files") >= 1,
                "{name}: the file was not streamed: {stdout}"
            );
            let f = std::fs::File::open(&files[0].0).expect("data file");
            let meta = parquet::file::reader::SerializedFileReader::new(f).expect("parquet");
            use parquet::file::reader::FileReader;
            assert_eq!(meta.metadata().num_row_groups(), 10, "{name}");
        }
        if name.contains("small files") {
            assert!(
                files.len() > 2,
                "{name}: expected files to roll, got {}",
                files.len()
            );
        }
        eprintln!("{name}: {} rows in {} files", rows, files.len());
    }
}
