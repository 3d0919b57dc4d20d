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
