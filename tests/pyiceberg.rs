//! An independent reader: PyIceberg loads the table icefall wrote from the same SQLite catalog,
//! counts the rows, checks the field ids and that columns resolve by id, and reads the offsets.
//! The Python interpreter comes from `ICEFALL_PYTHON` (set by `tools/test`, which installs
//! PyIceberg), else `python3`.

mod common;

use std::process::Command;

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

    let out = Command::new(&python)
        .arg(repo().join("tests/pyiceberg_read.py"))
        .args([w, "ns.events", "30000", "events"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyIceberg check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let wh = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(wh.path()).unwrap();
    let w = w.to_str().unwrap();
    let schema = repo().join("tests/data/sample-json.schema.json");
    let mut args = base_args(&broker.addr, "events", w);
    args.extend(["--stop-at-end", "--format", "json"]);
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
"#;
    let out = Command::new(&python)
        .args(["-c", script, w, &n.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyIceberg: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("typed rows=5000 types=long,string,double,boolean"),
        "{stdout}"
    );
}
