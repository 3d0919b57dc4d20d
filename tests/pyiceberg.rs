//! An independent reader: PyIceberg loads the table icefall wrote from the same SQLite catalog,
//! counts the rows, checks the field ids and that columns resolve by id, and reads the offsets.
//! The Python interpreter comes from `ICEFALL_PYTHON` (set by `tools/test`, which installs
//! PyIceberg), else `python3`.

mod common;

use common::{Broker, base_args, icefall, repo};

#[test]
fn pyiceberg_reads_the_table() {
    let python = common::python_with("pyiceberg");

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
    let stdout = common::python_stdout(&python, &[script, w, "ns.events", "30000", "events"]);
    assert!(
        stdout.contains("pyiceberg rows=30000") && stdout.contains("resolved_by_id=yes"),
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
