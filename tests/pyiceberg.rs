//! An independent reader: PyIceberg loads the table icefall wrote from the same SQLite catalog,
//! counts the rows, checks the field ids and that columns resolve by id, and reads the offsets.
//! The Python interpreter comes from `ICEFALL_PYTHON` (set by `tools/test`, which installs
//! PyIceberg), else `python3`.

mod common;

use common::{Broker, base_args, icefall, repo};

#[test]
fn pyiceberg_reads_the_table() {
    let python = common::python_with("pyiceberg, duckdb");

    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.produce("events", 30_000, 200);
    let wh = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(wh.path()).unwrap();
    let w = w.to_str().unwrap();
    let mut args = base_args(&broker.addr, "events", w);
    args.extend(["--stop-at-end", "--commit-interval", "500ms"]);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "icefall: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let script = repo().join("tests/pyiceberg_read.py");
    let script = script.to_str().unwrap();
    let stdout =
        common::python_stdout(&python, &[script, w, "ns.events", "30000", "events", "200"]);
    assert!(
        stdout.contains("pyiceberg rows=30000")
            && stdout.contains("resolved_by_id=yes")
            && stdout.contains("rows_checked=yes"),
        "{stdout}"
    );
}

/// `--format json`: PyIceberg sees the declared fields as typed columns, with every record.
#[test]
fn pyiceberg_reads_typed_json_columns() {
    let python = common::python_with("pyiceberg");
    let broker = Broker::start();
    broker.create_topic("events", 2);
    let n = 5_000u64;
    broker.loadgen(
        "events",
        &[
            "--records",
            &n.to_string(),
            "--payload",
            "json",
            "--null-value-every",
            "0",
        ],
    );
    // Three records no schema can take, for the dead-letter table.
    let bad: Vec<Option<Vec<u8>>> = [
        &b"{not json"[..],
        br#"{"user":"no seq"}"#,
        br#"{"seq":"x","user":"u"}"#,
    ]
    .iter()
    .map(|v| Some(v.to_vec()))
    .collect();
    broker.produce_values("events", 1, &bad);
    let wh = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(wh.path()).unwrap();
    let w = w.to_str().unwrap();
    let schema = repo().join("tests/data/sample-json.schema.json");
    let mut args = base_args(&broker.addr, "events", w);
    args.extend([
        "--stop-at-end",
        "--format",
        "json",
        "--dlq-table",
        "ns.dead",
    ]);
    args.extend(["--schema", schema.to_str().unwrap()]);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let script = r#"
import sys
from pyiceberg.catalog.sql import SqlCatalog
w, n = sys.argv[1], int(sys.argv[2])
t = SqlCatalog("icefall", uri=f"sqlite:///{w}/catalog.db", warehouse=f"file://{w}").load_table("ns.events")
types = {f.name: str(f.field_type) for f in t.schema().fields}
assert "value" not in types, types
for name, want in [("seq", "long"), ("user", "string"), ("amount", "double"), ("ok", "boolean"), ("ts", "long")]:
    assert types[name] == want, (name, types)
d = t.scan(selected_fields=("seq", "user", "amount", "ok", "_kafka_offset")).to_arrow()
seqs = sorted(d["seq"].to_pylist())
assert seqs == list(range(n)), "every record once"
assert all(u.startswith("user-") for u in d["user"].to_pylist())
print(f"typed rows={d.num_rows} types={types['seq']},{types['user']},{types['amount']},{types['ok']}")
dlq = SqlCatalog("icefall", uri=f"sqlite:///{w}/catalog.db", warehouse=f"file://{w}").load_table("ns.dead")
dtypes = {f.name: str(f.field_type) for f in dlq.schema().fields}
for name, want in [("_kafka_partition", "int"), ("_kafka_offset", "long"), ("_kafka_timestamp", "timestamptz"), ("_kafka_key", "binary"), ("value", "binary"), ("error", "string")]:
    assert dtypes[name] == want, (name, dtypes)
dd = dlq.scan().to_arrow().sort_by("_kafka_offset")
values = dd["value"].to_pylist()
assert values == [b"{not json", b'{"user":"no seq"}', b'{"seq":"x","user":"u"}'], values
assert set(dd["_kafka_partition"].to_pylist()) == {1}
errors = dd["error"].to_pylist()
assert all(errors), errors
print(f"dead rows={dd.num_rows} error={errors[1]}")
"#;
    let stdout = common::python_stdout(&python, &["-c", script, w, &n.to_string()]);
    assert!(
        stdout.contains("typed rows=5000 types=long,string,double,boolean"),
        "{stdout}"
    );
    assert!(stdout.contains("dead rows=3 error="), "{stdout}");
}

/// Every Iceberg type `--format json` fills, each written with the encoding its first batch
/// chose (a dictionary for repeating values, DELTA_BINARY_PACKED for integers that move by
/// steps, plain for distinct ones, Parquet's defaults for nested and boolean columns): PyIceberg
/// reads every row back value for value, pyarrow's footer shows each choice was made, and the
/// bounds and null counts the manifests carry match the data.
#[test]
fn pyiceberg_reads_every_column_type_and_encoding() {
    let python = common::python_with("pyiceberg, duckdb");
    let broker = Broker::start();
    broker.create_topic("events", 1);
    let n = 6_000u64;
    let values: Vec<Option<Vec<u8>>> = (0..n).map(|i| Some(every_type_value(i))).collect();
    broker.produce_values("events", 0, &values);
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("every.schema.json");
    std::fs::write(&schema, EVERY_TYPE_SCHEMA).unwrap();
    let wh = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(wh.path()).unwrap();
    let w = w.to_str().unwrap();
    let mut args = base_args(&broker.addr, "events", w);
    args.extend(["--stop-at-end", "--format", "json"]);
    args.extend(["--schema", schema.to_str().unwrap()]);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = common::python_stdout(&python, &["-c", EVERY_TYPE_PY, w, &n.to_string()]);
    assert!(stdout.contains(&format!("rows={n} all equal")), "{stdout}");
}

/// Record `i` of [`pyiceberg_reads_every_column_type_and_encoding`]; `EVERY_TYPE_PY` computes
/// the same row.
fn every_type_value(i: u64) -> Vec<u8> {
    let rnd = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & (u64::MAX >> 1);
    let optional = if i.is_multiple_of(11) {
        String::new()
    } else {
        format!(
            r#","cat":"cat-{}","d":{}"#,
            i % 5,
            (i * 37 % 100_000) as f64 / 100.0
        )
    };
    format!(
        concat!(
            r#"{{"small":{},"seq":{i},"rnd":{rnd},"ms":{},"f":{},"b":{}"#,
            r#","uid":"id-{:016x}","day":"2024-01-{:02}","at":"2024-03-01T12:00:00.{:06}""#,
            r#","atz":"2024-03-01T{:02}:{:02}:{:02}Z","price":{}.{:02},"tags":[{i},{}]"#,
            r#","loc":{{"x":{i},"y":"p{}"}}{optional}}}"#
        ),
        i % 7,
        1_700_000_000_000 + i * 3,
        (i % 100) as f32 / 4.0,
        i.is_multiple_of(3),
        rnd,
        1 + i % 28,
        i % 1_000_000,
        i / 3600 % 24,
        i / 60 % 60,
        i % 60,
        i,
        i % 100,
        i + 1,
        i % 3,
        i = i,
        rnd = rnd,
        optional = optional,
    )
    .into_bytes()
}

const EVERY_TYPE_SCHEMA: &str = r#"{"type":"struct","fields":[
  {"id":1,"name":"small","required":true,"type":"int"},
  {"id":2,"name":"seq","required":true,"type":"long"},
  {"id":3,"name":"rnd","required":true,"type":"long"},
  {"id":4,"name":"ms","required":true,"type":"long"},
  {"id":5,"name":"f","required":true,"type":"float"},
  {"id":6,"name":"d","required":false,"type":"double"},
  {"id":7,"name":"b","required":true,"type":"boolean"},
  {"id":8,"name":"cat","required":false,"type":"string"},
  {"id":9,"name":"uid","required":true,"type":"string"},
  {"id":10,"name":"day","required":true,"type":"date"},
  {"id":11,"name":"at","required":true,"type":"timestamp"},
  {"id":12,"name":"atz","required":true,"type":"timestamptz"},
  {"id":13,"name":"price","required":true,"type":"decimal(12, 2)"},
  {"id":14,"name":"tags","required":true,"type":{"type":"list","element-id":16,"element":"long","element-required":true}},
  {"id":15,"name":"loc","required":true,"type":{"type":"struct","fields":[
    {"id":17,"name":"x","required":true,"type":"long"},
    {"id":18,"name":"y","required":true,"type":"string"}]}}
]}"#;

const EVERY_TYPE_PY: &str = r#"
import sys, datetime, decimal, glob
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
w, n = sys.argv[1], int(sys.argv[2])
t = SqlCatalog("icefall", uri=f"sqlite:///{w}/catalog.db", warehouse=f"file://{w}").load_table("ns.events")
d = t.scan().to_arrow().sort_by("seq")
assert d.num_rows == n, d.num_rows
utc = datetime.timezone.utc
def want(i):
    rnd = (i * 0x9E3779B97F4A7C15) & ((1 << 63) - 1)
    return {
        "small": i % 7, "seq": i, "rnd": rnd, "ms": 1_700_000_000_000 + i * 3,
        "f": (i % 100) / 4.0, "b": i % 3 == 0,
        "d": None if i % 11 == 0 else (i * 37 % 100_000) / 100.0,
        "cat": None if i % 11 == 0 else f"cat-{i % 5}",
        "uid": f"id-{rnd:016x}", "day": datetime.date(2024, 1, 1 + i % 28),
        "at": datetime.datetime(2024, 3, 1, 12, 0, 0, i % 1_000_000),
        "atz": datetime.datetime(2024, 3, 1, i // 3600 % 24, i // 60 % 60, i % 60, tzinfo=utc),
        "price": decimal.Decimal(f"{i}.{i % 100:02}"), "tags": [i, i + 1],
        "loc": {"x": i, "y": f"p{i % 3}"},
    }
for i, row in enumerate(d.to_pylist()):
    w_ = want(i)
    got = {k: row[k] for k in w_}
    assert got == w_, (i, got, w_)
# A second, independent reader (DuckDB's own Parquet reader) reads every data file, row for row;
# the zone-aware column as microseconds since the epoch, so no time zone database is needed.
import duckdb
paths = [f["file_path"].removeprefix("file://") for f in t.inspect.files().to_pylist()]
cols = [c for c in want(0) if c != "atz"]
quoted = ", ".join(f'"{c}"' for c in cols)
rel = duckdb.sql(f"select {quoted}, epoch_us(atz) from read_parquet({paths!r}) order by seq")
rows = rel.fetchall()
assert len(rows) == n, len(rows)
for i, row in enumerate(rows):
    w_ = want(i)
    w_["atz"] = (w_["atz"] - datetime.datetime(1970, 1, 1, tzinfo=utc)) // datetime.timedelta(microseconds=1)
    got = dict(zip(cols + ["atz"], row))
    assert got == w_, (i, got, w_)
# Each choice was made, as the footers say (pyarrow reads them on its own).
enc = {}
for f in t.inspect.files().to_pylist():
    md = pq.ParquetFile(f["file_path"].removeprefix("file://")).metadata
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            enc.setdefault(col.path_in_schema, set()).update(col.encodings)
dictionary = lambda c: "RLE_DICTIONARY" in enc[c] or "PLAIN_DICTIONARY" in enc[c]
for c in ["small", "cat", "day", "f", "loc.y"]:
    assert dictionary(c), (c, enc[c])
for c in ["seq", "ms", "at", "atz", "_kafka_offset"]:
    assert "DELTA_BINARY_PACKED" in enc[c] and not dictionary(c), (c, enc[c])
for c in ["rnd", "uid", "d", "price"]:
    assert not dictionary(c) and "DELTA_BINARY_PACKED" not in enc[c], (c, enc[c])
# The manifests' statistics match the data.
files = t.inspect.files().to_pylist()
lo = min(f["readable_metrics"]["seq"]["lower_bound"] for f in files)
hi = max(f["readable_metrics"]["seq"]["upper_bound"] for f in files)
assert (lo, hi) == (0, n - 1), (lo, hi)
nulls = sum(f["readable_metrics"]["cat"]["null_value_count"] for f in files)
assert nulls == len(range(0, n, 11)), nulls
# Every top-level primitive column's bounds are the data's; a string longer than 16 characters
# is truncated (the lower bound a prefix, the upper bound rounded up).
uids = d.column("uid").to_pylist()
lo = min(f["readable_metrics"]["uid"]["lower_bound"] for f in files)
hi = max(f["readable_metrics"]["uid"]["upper_bound"] for f in files)
assert lo == min(uids)[:16] and len(hi) == 16 and hi >= max(uids), (lo, hi)
for c in ["small", "seq", "rnd", "ms", "f", "d", "b", "cat", "day", "at", "atz", "price"]:
    vals = [v for v in d.column(c).to_pylist() if v is not None]
    lo = min(f["readable_metrics"][c]["lower_bound"] for f in files)
    hi = max(f["readable_metrics"][c]["upper_bound"] for f in files)
    assert (lo, hi) == (min(vals), max(vals)), (c, lo, hi, min(vals), max(vals))
print(f"rows={n} all equal (PyIceberg and DuckDB); files={len(files)}; encodings " + " ".join(f"{k}={'/'.join(sorted(v))}" for k, v in sorted(enc.items())))
"#;
