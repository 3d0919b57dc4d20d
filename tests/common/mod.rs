//! Shared integration-test harness: a real Tansu broker started through `tools/broker` on a free
//! loopback port, sample data produced with `icefall-loadgen`, the `icefall` binary run as a child
//! process, and every Parquet file read back.

#![allow(dead_code)]

pub mod certs;
#[path = "../../tools/sample.rs"]
pub mod sample;
pub mod wire_broker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A broker that lives as long as this value.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub addr: String,
    engine: String,
    /// Extra `tools/broker` variables (`BROKER_ADVERTISE`, `BROKER_ARGS`).
    env: Vec<(String, String)>,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with_engine("memory")
    }

    pub fn start_with_engine(engine: &str) -> Broker {
        Self::start_with(engine, &[])
    }

    /// With `tools/broker` variables, e.g. `BROKER_ADVERTISE` (metadata names a TLS terminator).
    pub fn start_with(engine: &str, env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let addr = Self::launch(dir.path(), engine, None, &env);
        Broker {
            dir,
            addr,
            engine: engine.to_string(),
            env,
        }
    }

    /// Stops the broker and starts it again on the same port and data with other variables.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        self.stop();
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.start_again();
    }

    fn launch(dir: &Path, engine: &str, port: Option<&str>, env: &[(String, String)]) -> String {
        let out = Command::new(repo().join("tools/broker"))
            .arg("start")
            .arg(dir)
            .args(port)
            .env("BROKER_ENGINE", engine)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run tools/broker");
        assert!(
            out.status.success(),
            "broker start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// Stops the broker process (its data stays in its directory).
    pub fn stop(&self) {
        let status = Command::new(repo().join("tools/broker"))
            .arg("stop")
            .arg(self.dir.path())
            .status()
            .expect("run tools/broker");
        assert!(status.success(), "broker stop failed");
    }

    /// Starts the broker again on the same port, over the same data.
    pub fn start_again(&self) {
        let port = self.addr.rsplit_once(':').expect("HOST:PORT").1;
        let addr = Self::launch(self.dir.path(), &self.engine, Some(port), &self.env);
        assert_eq!(addr, self.addr);
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(repo().join("tools/broker"))
            .args(["create-topic"])
            .arg(self.dir.path())
            .args([name, &partitions.to_string()])
            .output()
            .expect("run tools/broker");
        assert!(
            out.status.success(),
            "create-topic failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces `records` sample records with the default shape (plus `keys` distinct keys).
    pub fn produce(&self, topic: &str, records: u64, keys: u64) {
        self.loadgen(
            topic,
            &[
                "--records",
                &records.to_string(),
                "--keys",
                &keys.to_string(),
            ],
        );
    }

    /// Runs `icefall-loadgen` against this broker with `args`; its stdout (the summary line).
    pub fn loadgen(&self, topic: &str, args: &[&str]) -> String {
        loadgen(&self.addr, topic, args)
    }

    /// Produces records with exactly these values (and no key) to one partition, in order.
    pub fn produce_values(&self, topic: &str, partition: i32, values: &[Option<Vec<u8>>]) {
        block_on(async {
            let mut p = producer(&self.addr, topic).await;
            let records: Vec<_> = values
                .iter()
                .map(|v| icefall::kafka::ProduceRecord {
                    timestamp_ms: now_ms(),
                    key: None,
                    value: v.as_deref(),
                    headers: &[],
                })
                .collect();
            p.send(&[(partition, &records)]).await.expect("produce");
        });
    }

    /// Every record of one partition from its first offset to its high watermark.
    pub fn read_partition(&self, topic: &str, partition: i32) -> Vec<KafkaRecord> {
        read_partition(&self.addr, topic, partition)
    }
}

/// Runs a future on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn client_config(addr: &str) -> icefall::kafka::ClientConfig {
    icefall::kafka::ClientConfig {
        bootstrap: vec![addr.to_owned()],
        conn: icefall::kafka::ConnConfig {
            client_id: "icefall-tests".into(),
            timeout: Duration::from_secs(20),
            max_frame: 64 << 20,
            security: Default::default(),
        },
        retry_for: Duration::from_secs(20),
    }
}

/// A plain (not idempotent) producer for test data.
pub async fn producer(addr: &str, topic: &str) -> icefall::kafka::Producer {
    let client = icefall::kafka::Client::connect(client_config(addr))
        .await
        .expect("client");
    let cfg = icefall::kafka::ProducerConfig {
        idempotent: false,
        codec: icefall::kafka::Codec::None,
        request_timeout: Duration::from_secs(20),
    };
    icefall::kafka::Producer::open(client, topic, cfg)
        .await
        .expect("producer")
}

/// A record as Kafka holds it, headers in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl KafkaRecord {
    /// The last value of header `k`, as text.
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(hk, _)| hk == k.as_bytes())
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record of one partition from its first offset to its high watermark (read_uncommitted).
pub fn read_partition(addr: &str, topic: &str, partition: i32) -> Vec<KafkaRecord> {
    use icefall::kafka::fetch::{FetchParams, Want};
    block_on(async {
        let mut client = icefall::kafka::Client::connect(client_config(addr))
            .await
            .expect("client");
        let params = FetchParams {
            max_wait: Duration::ZERO,
            min_bytes: 0,
            max_bytes: 8 << 20,
            partition_max_bytes: 8 << 20,
            isolation: icefall::kafka::Isolation::ReadUncommitted,
        };
        let mut decoder = icefall::kafka::Decoder::new(1 << 28);
        let mut d = icefall::kafka::Decoded::default();
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let want = Want {
                partition,
                offset: at,
                leader_epoch: -1,
            };
            let answers = client
                .fetch_once(topic, &[want], &params)
                .await
                .expect("fetch");
            let a = &answers[0];
            decoder
                .decode(&a.records, at, params.isolation, &a.aborted, &mut d)
                .expect("decode");
            for r in &d.records {
                let own = |s: icefall::record::Span| s.get(&d.buf).map(<[u8]>::to_vec);
                let hs = &d.headers[r.headers.start as usize..][..r.headers.len as usize];
                out.push(KafkaRecord {
                    offset: r.offset,
                    key: own(r.key),
                    value: own(r.value),
                    headers: hs
                        .iter()
                        .map(|h| (own(h.key).unwrap_or_default(), own(h.value)))
                        .collect(),
                });
            }
            let next = d.next_offset.unwrap_or(at).max(at);
            if next >= a.high_watermark || next == at {
                return out;
            }
            at = next;
        }
    })
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tools/broker"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Asserts a failed run: the exit code, no panic, and one `icefall: error:` line holding every
/// needle.
pub fn assert_clean_failure(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("icefall: error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
}

/// Runs `python ARGS…`, asserts it succeeded (showing its output if not), returns its stdout.
pub fn python_stdout<S: AsRef<std::ffi::OsStr>>(python: &str, args: &[S]) -> String {
    let out = Command::new(python)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{python}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The Python interpreter `tools/test` prepared (`ICEFALL_PYTHON`), checked to import `modules`.
pub fn python_with(modules: &str) -> String {
    let python = std::env::var("ICEFALL_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{python} cannot import {modules}: run the tests with tools/test, which installs them"
    );
    python
}

/// The `icefall` binary, its HTTP endpoint on a free port (tests run in parallel).
pub fn icefall_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_icefall"));
    c.env("ICEFALL_HTTP_ADDR", "127.0.0.1:0");
    c
}

/// Runs `icefall-loadgen --brokers ADDR --topic TOPIC ARGS…`, asserts it succeeded and returns
/// its stdout.
pub fn loadgen(addr: &str, topic: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_icefall-loadgen"))
        .args(["--brokers", addr, "--topic", topic])
        .args(args)
        .output()
        .expect("run icefall-loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `icefall run` with the given extra flags and waits for it.
pub fn icefall(args: &[&str]) -> Output {
    icefall_command()
        .arg("run")
        .args(args)
        .env("ICEFALL_LOG", "warn")
        .output()
        .expect("run icefall")
}

/// Starts `icefall run` in the background, output piped, and returns at once.
pub fn spawn_icefall(args: &[&str]) -> Child {
    spawn_run(args, "warn")
}

fn spawn_run(args: &[&str], log: &str) -> Child {
    icefall_command()
        .arg("run")
        .args(args)
        .env("ICEFALL_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn icefall")
}

/// Waits until `dir` holds at least `n` data files, the child exits, or a minute passes.
pub fn wait_for_files(child: &mut Child, dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while parquet_files(dir).len() < n && Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every role on the first online core (never a fixed CPU id).
pub fn one_core_args() -> Vec<String> {
    let first = icefall::runtime::online_cores().expect("online cores")[0].to_string();
    [
        "--fetch-cores",
        &first,
        "--shard-cores",
        &first,
        "--io-core",
        &first,
    ]
    .map(str::to_owned)
    .to_vec()
}

pub fn base_args<'a>(broker: &'a str, topic: &'a str, warehouse: &'a str) -> Vec<&'a str> {
    vec![
        "--brokers",
        broker,
        "--topic",
        topic,
        "--warehouse",
        warehouse,
        "--table",
        "ns.events",
    ]
}

/// One row read back from a data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In order; keys may repeat, values may be null (a legacy map table: never null).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Every `.parquet` file under `dir`, sorted by path (for one shard core: write order).
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Reads every row of one Parquet file, in row order.
pub fn read_rows(path: &Path) -> Vec<Row> {
    let bytes = bytes::Bytes::from(std::fs::read(path).expect("read parquet"));
    read_rows_from(bytes, &path.display().to_string())
}

/// Reads every row of a Parquet file held in memory.
pub fn read_rows_from(bytes: bytes::Bytes, name: &str) -> Vec<Row> {
    let path = std::path::Path::new(name);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap_or_else(|e| panic!("{} is not a readable Parquet file: {e}", path.display()))
        .build()
        .expect("reader");
    let mut rows = Vec::new();
    for batch in reader {
        let b: RecordBatch = batch.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let part = b
            .column_by_name("_kafka_partition")
            .expect("partition")
            .as_primitive::<Int32Type>();
        let off = b
            .column_by_name("_kafka_offset")
            .expect("offset")
            .as_primitive::<Int64Type>();
        let ts = b
            .column_by_name("_kafka_timestamp")
            .expect("timestamp")
            .as_primitive::<TimestampMicrosecondType>();
        let key = b
            .column_by_name("_kafka_key")
            .expect("key")
            .as_binary::<i32>();
        let val = b.column_by_name("value").expect("value").as_binary::<i32>();
        let hdr = b.column_by_name("_kafka_headers").expect("headers");
        for i in 0..b.num_rows() {
            let headers = header_pairs(hdr, i);
            rows.push(Row {
                partition: part.value(i),
                offset: off.value(i),
                timestamp_ms: ts.value(i) / 1_000,
                key: (!key.is_null(i)).then(|| key.value(i).to_vec()),
                value: (!val.is_null(i)).then(|| val.value(i).to_vec()),
                headers,
            });
        }
    }
    rows
}

/// Reads a whole warehouse: rows per file, files in path order.
/// Row `i` of a headers column: `list<struct<key, value>>`, or a legacy map.
pub fn header_pairs(col: &arrow_array::ArrayRef, i: usize) -> Vec<(String, Option<Vec<u8>>)> {
    let (keys, values) = match col.data_type() {
        arrow_schema::DataType::Map(..) => {
            let e = col.as_map().value(i);
            (e.column(0).clone(), e.column(1).clone())
        }
        _ => {
            let e = col.as_list::<i32>().value(i);
            let e = e.as_struct();
            (e.column(0).clone(), e.column(1).clone())
        }
    };
    let (k, v) = (keys.as_string::<i32>(), values.as_binary::<i32>());
    (0..k.len())
        .map(|j| {
            (
                k.value(j).to_string(),
                (!v.is_null(j)).then(|| v.value(j).to_vec()),
            )
        })
        .collect()
}

pub fn read_warehouse(dir: &Path) -> Vec<(PathBuf, Vec<Row>)> {
    parquet_files(dir)
        .into_iter()
        .map(|p| {
            let rows = read_rows(&p);
            (p, rows)
        })
        .collect()
}

/// Checks a warehouse against a sample stream of `n` records (seq 0..n) on a fresh topic:
/// every (partition, offset) exactly once and all offsets of every partition present; every
/// row's key, value and headers byte-equal to the sample's; per key, offsets strictly increase
/// across rows in file order. Returns the number of rows.
pub fn verify_sample(files: &[(PathBuf, Vec<Row>)], shape: &sample::Shape, n: u64) -> usize {
    verify(files, shape, n, true)
}

/// [`verify_sample`] without the key order (replayed records land after newer ones).
pub fn verify_sample_set(files: &[(PathBuf, Vec<Row>)], shape: &sample::Shape, n: u64) -> usize {
    verify(files, shape, n, false)
}

fn verify(files: &[(PathBuf, Vec<Row>)], shape: &sample::Shape, n: u64, key_order: bool) -> usize {
    let mut seen_seq = vec![false; n as usize];
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut last_per_key: BTreeMap<(i32, Vec<u8>), (i64, PathBuf)> = BTreeMap::new();
    let mut rows = 0;
    for (path, file_rows) in files {
        for r in file_rows {
            rows += 1;
            let seq_header = r.headers.iter().find(|(k, _)| k == sample::SEQ_HEADER);
            let seq_value = seq_header.and_then(|h| h.1.as_deref()).expect("seq header");
            let seq: u64 = std::str::from_utf8(seq_value)
                .expect("utf8 seq")
                .parse()
                .expect("numeric seq");
            assert!(seq < n, "unknown seq {seq}");
            assert!(
                !seen_seq[seq as usize],
                "seq {seq} landed twice (p{} o{})",
                r.partition, r.offset
            );
            seen_seq[seq as usize] = true;
            assert_eq!(r.key, shape.key(seq), "key of seq {seq}");
            assert_eq!(r.value, shape.value(seq), "value of seq {seq}");
            let want: Vec<_> = shape
                .headers(seq)
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
            assert_eq!(r.headers, want, "headers of seq {seq}");
            assert!(r.timestamp_ms > 1_600_000_000_000, "timestamp of seq {seq}");
            offsets.entry(r.partition).or_default().push(r.offset);
            if key_order
                && let Some(k) = &r.key
                && let Some((prev, prev_file)) =
                    last_per_key.insert((r.partition, k.clone()), (r.offset, path.clone()))
            {
                assert!(
                    prev < r.offset,
                    "key {:?} went back from offset {prev} ({}) to {} ({})",
                    String::from_utf8_lossy(k),
                    prev_file.display(),
                    r.offset,
                    path.display()
                );
            }
        }
    }
    assert_eq!(rows as u64, n, "row count");
    assert!(seen_seq.iter().all(|s| *s), "some records are missing");
    for (p, mut offs) in offsets {
        let count = offs.len();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), count, "partition {p} has a duplicate offset");
        assert_eq!(
            offs,
            (0..count as i64).collect::<Vec<_>>(),
            "partition {p} misses offsets"
        );
    }
    rows
}

/// What the table says: the data files of its current snapshot (local paths, in path order) and
/// that snapshot's summary.
pub struct TableView {
    pub files: Vec<PathBuf>,
    pub summary: std::collections::HashMap<String, String>,
    pub snapshots: usize,
}

/// The SQLite catalog icefall keeps in a local warehouse.
fn local_spec(warehouse: &Path) -> icefall::sink::commit::CatalogSpec {
    let abs = std::fs::canonicalize(warehouse).expect("warehouse");
    icefall::sink::commit::CatalogSpec {
        uri: format!("sqlite://{}?mode=rw", abs.join("catalog.db").display()),
        warehouse_url: format!("file://{}", abs.display()),
    }
}

/// Loads `ns.events` from the warehouse's SQLite catalog through icefall's own storage adapter.
pub fn table_view(warehouse: &Path, table: &str) -> TableView {
    let spec = local_spec(warehouse);
    table_view_in(
        &spec,
        icefall::sink::storage::ObjectStoreStorage::local(),
        table,
    )
}

/// Loads a table from any catalog and storage icefall supports.
pub fn table_view_in(
    spec: &icefall::sink::commit::CatalogSpec,
    storage: icefall::sink::storage::ObjectStoreStorage,
    table: &str,
) -> TableView {
    try_table_view_in(spec, storage, table).expect("table exists")
}

/// Loads a table, or `None` while icefall has not created it yet.
pub fn try_table_view_in(
    spec: &icefall::sink::commit::CatalogSpec,
    storage: icefall::sink::storage::ObjectStoreStorage,
    table: &str,
) -> Option<TableView> {
    use futures_util::TryStreamExt;
    use icefall::sink::commit::{load_existing, open_catalog};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let catalog = open_catalog(spec, storage).await.expect("catalog");
        let t = load_existing(catalog.as_ref(), &table.parse().expect("table ident"), None)
            .await
            .expect("load")?;
        let snapshots = t.metadata().snapshots().count();
        let Some(snap) = t.metadata().current_snapshot() else {
            return Some(TableView {
                files: Vec::new(),
                summary: Default::default(),
                snapshots,
            });
        };
        let summary = snap.summary().additional_properties.clone();
        let tasks: Vec<_> = t
            .scan()
            .build()
            .expect("scan")
            .plan_files()
            .await
            .expect("plan")
            .try_collect()
            .await
            .expect("tasks");
        let mut files: Vec<PathBuf> = tasks
            .iter()
            .map(|task| {
                PathBuf::from(
                    task.data_file_path
                        .strip_prefix("file://")
                        .unwrap_or(&task.data_file_path),
                )
            })
            .collect();
        files.sort();
        files.dedup();
        Some(TableView {
            files,
            summary,
            snapshots,
        })
    })
}

/// Asserts every partition's rows are offsets `0..n` exactly once (a gap-free, duplicate-free
/// prefix) and returns `n` per partition.
pub fn assert_prefixes(files: &[(PathBuf, Vec<Row>)]) -> BTreeMap<i32, i64> {
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (_, rows) in files {
        for r in rows {
            per_partition.entry(r.partition).or_default().push(r.offset);
        }
    }
    per_partition
        .into_iter()
        .map(|(p, mut offs)| {
            offs.sort_unstable();
            let n = offs.len() as i64;
            assert_eq!(
                offs,
                (0..n).collect::<Vec<_>>(),
                "partition {p}: not a gap-free, duplicate-free prefix"
            );
            (p, n)
        })
        .collect()
}

/// Reads the committed data files of a table (not orphans of killed runs).
pub fn read_table(warehouse: &Path, table: &str) -> (TableView, Vec<(PathBuf, Vec<Row>)>) {
    let view = table_view(warehouse, table);
    let rows = view
        .files
        .iter()
        .map(|p| (p.clone(), read_rows(p)))
        .collect();
    (view, rows)
}

/// Starts `icefall run` with info logs; stderr is collected into the returned buffer.
pub fn spawn_icefall_logged(args: &[&str]) -> (Child, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut child = spawn_run(args, "info");
    let log = collect_stderr(&mut child);
    (child, log)
}

/// The child's stderr (piped), collected line by line into the returned buffer as it comes.
pub fn collect_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = sink.lock().expect("log");
            l.push_str(&line);
            l.push('\n');
        }
    });
    log
}

/// Waits until `log` holds `needle` at least `count` times; panics with the log after `within`.
pub fn wait_for_log(log: &std::sync::Mutex<String>, needle: &str, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let text = log.lock().expect("log").clone();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {count}x {needle:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` from icefall's HTTP endpoint: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to icefall's http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

/// The sum of every sample of `name` in Prometheus text (any labels).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The HTTP address icefall logged (`http: serving … addr=HOST:PORT`).
pub fn logged_http_addr(log: &std::sync::Mutex<String>) -> String {
    wait_for_log(log, "http: serving", 1, Duration::from_secs(60));
    let text = log.lock().expect("log").clone();
    let line = text
        .lines()
        .find(|l| l.contains("http: serving"))
        .expect("the http line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .expect("addr=")
        .to_string()
}

/// Waits until the table's committed offsets of `topic` add up to `total`.
pub fn wait_for_committed(
    warehouse: &Path,
    table: &str,
    topic: &str,
    total: i64,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let key = format!("icefall.offsets.{topic}");
    loop {
        // The catalog file and the table appear a moment apart: absent means nothing committed.
        let view = if warehouse.join("catalog.db").exists() {
            let spec = local_spec(warehouse);
            try_table_view_in(
                &spec,
                icefall::sink::storage::ObjectStoreStorage::local(),
                table,
            )
        } else {
            None
        };
        let sum: i64 = if let Some(view) = view {
            view.summary
                .get(&key)
                .map(|j| {
                    icefall::offsets::decode_offsets(j)
                        .expect("offsets")
                        .values()
                        .sum()
                })
                .unwrap_or(0)
        } else {
            0
        };
        if sum >= total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {sum} of {total} offsets"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every drop and replay of `topic` in the table's history.
pub fn table_ledger(warehouse: &Path, table: &str, topic: &str) -> icefall::offsets::Ledger {
    let spec = local_spec(warehouse);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let catalog = icefall::sink::commit::open_catalog(
            &spec,
            icefall::sink::storage::ObjectStoreStorage::local(),
        )
        .await
        .expect("catalog");
        let t = icefall::sink::commit::load_existing(
            catalog.as_ref(),
            &table.parse().expect("ident"),
            None,
        )
        .await
        .expect("load")
        .expect("table exists");
        icefall::sink::commit::ledger(&t, topic)
            .await
            .expect("ledger")
    })
}

/// A `key=value` field of the `summary`/`replayed` line on stdout.
pub fn stdout_field(stdout: &str, name: &str) -> u64 {
    stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
        .parse()
        .expect("number")
}

/// A `name=value` figure from a tool's output line, or NaN when absent (benches print it).
pub fn field(text: &str, name: &str) -> f64 {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// What one child process did.
pub struct Measured {
    pub stdout: String,
    pub wall_s: f64,
    pub peak_rss_mb: f64,
    /// User plus system CPU time of the process.
    pub cpu_s: f64,
    /// The system part of `cpu_s` (socket reads, page faults, page-cache writes).
    pub sys_s: f64,
}

/// Runs `cmd` to its end, asserts it succeeded, and measures its wall time and peak resident set.
pub fn measure(cmd: &mut Command) -> Measured {
    let started = Instant::now();
    // Reaped by wait4 below, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let mut stderr = child.stderr.expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child and fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall_s = started.elapsed().as_secs_f64();
    let err = err_reader.join().unwrap_or_default();
    assert!(
        rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed ({status}):\n{out}\n{err}"
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Measured {
        stdout: out,
        wall_s,
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        sys_s: secs(usage.ru_stime),
    }
}

/// Sample record `i` of the default shape, as icefall's `Record` (benches feed it to kernels).
pub fn sample_record(i: u64) -> icefall::record::Record {
    sample_record_of(&sample::Shape::default(), i)
}

/// Record `i` of `shape`, as icefall holds it.
pub fn sample_record_of(shape: &sample::Shape, i: u64) -> icefall::record::Record {
    icefall::record::Record {
        offset: i as i64,
        timestamp_ms: 1_700_000_000_000 + i as i64,
        shard: 0,
        key: shape.key(i),
        value: shape.value(i),
        headers: shape
            .headers(i)
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), Some(v)))
            .collect(),
    }
}

/// `records` as one Fetch answer's bytes: batches of 500 records in `codec`, each record with
/// its first `headers` headers (benches).
pub fn fetch_answer(
    records: &[icefall::record::Record],
    codec: icefall::kafka::Codec,
    headers: usize,
) -> bytes::Bytes {
    use icefall::kafka::encode::{BatchSpec, OutRecord, encode_batch};
    let mut out = Vec::new();
    for chunk in records.chunks(500) {
        let hs: Vec<Vec<icefall::kafka::HeaderRef<'_>>> = chunk
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .take(headers)
                    .map(|(k, v)| (k.as_slice(), v.as_deref()))
                    .collect()
            })
            .collect();
        let recs: Vec<OutRecord<'_>> = chunk
            .iter()
            .zip(&hs)
            .map(|(r, h)| OutRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: h,
            })
            .collect();
        let spec = BatchSpec {
            codec,
            ..BatchSpec::default()
        };
        encode_batch(&spec, &recs, &mut out).expect("encode");
    }
    bytes::Bytes::from(out)
}

/// What only a `--group` member serves.
const GROUP_METRICS: [&str; 5] = [
    "icefall_rebalances_total",
    "icefall_rebalance_seconds_total",
    "icefall_fenced_commits_total",
    "icefall_group_generation",
    "icefall_group_assigned_partitions",
];

/// Every metric the shipped Grafana dashboard queries is one `/metrics` serves (`text`); the
/// group panels' only when `group`.
pub fn dashboard_queries_are_served(text: &str, group: bool) {
    let missing = dashboard_metrics_missing(text, group);
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not serve"
    );
}

/// The metrics the shipped dashboard queries that `text` lacks (the group's only when `group`).
pub fn dashboard_metrics_missing(text: &str, group: bool) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/icefall.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard is JSON");
    let mut names = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("icefall_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.push(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(
        names.len() >= 15,
        "the dashboard queries icefall's metrics: {names:?}"
    );
    names.retain(|name| {
        let served = text
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        !served && (group || !GROUP_METRICS.contains(&name.as_str()))
    });
    names
}

/// `icefall maintain` on `ns.events` keeping only the current snapshot (plus `extra` flags);
/// asserts it succeeded and returns its line.
pub fn maintain_all(warehouse: &str, extra: &[&str]) -> String {
    let out = icefall_command()
        .args(["maintain", "--warehouse", warehouse, "--table", "ns.events"])
        .args(["--expire-older-than", "0s", "--retain-last", "1"])
        .args(extra)
        .output()
        .expect("run maintain");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("maintained expired_snapshots="),
        "maintain failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `body` in PyIceberg with `t` the warehouse's `ns.events` table (and `os` imported);
/// returns its stdout.
pub fn pyiceberg_events(warehouse: &str, body: &str) -> String {
    let py = python_with("pyiceberg");
    let script = format!(
        "import os\n\
         from pyiceberg.catalog.sql import SqlCatalog\n\
         c = SqlCatalog('icefall', uri='sqlite:///{warehouse}/catalog.db', warehouse='file://{warehouse}')\n\
         t = c.load_table('ns.events')\n\
         {body}"
    );
    python_stdout(&py, &["-c", &script])
}

/// Sets a table property of `ns.events` through PyIceberg.
pub fn set_events_property(warehouse: &str, key: &str, value: &str) {
    let body = format!(
        "with t.transaction() as tx:\n\
         \x20   tx.set_properties({{'{key}': '{value}'}})\n"
    );
    pyiceberg_events(warehouse, &body);
}

/// PyIceberg code that counts into `missing` the manifest lists and data files any snapshot of
/// `t` references that are not on the local disk.
pub const COUNT_MISSING_PY: &str = "local = lambda p: p.removeprefix('file://')\n\
     missing = 0\n\
     for s in t.metadata.snapshots:\n\
     \x20   missing += not os.path.exists(local(s.manifest_list))\n\
     \x20   for task in t.scan(snapshot_id=s.snapshot_id).plan_files():\n\
     \x20       missing += not os.path.exists(local(task.file.file_path))\n";
