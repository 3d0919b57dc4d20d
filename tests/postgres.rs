//! The SQL catalog on PostgreSQL: a throwaway cluster started on a free loopback port (Debian's
//! postgresql package; `tools/test` installs it when missing). Two runs against it, the second
//! resuming from the offsets the first committed; the table ends with every record once.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Broker, read_rows, sample, table_view_in, verify_sample};
use icefall::sink::commit::CatalogSpec;
use icefall::sink::storage::ObjectStoreStorage;

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run the tests with tools/test, which installs it")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn pg(bin: &Path, tool: &str, args: &[&str]) {
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    let out = cmd.args(args).output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{tool}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Cluster {
    bin: PathBuf,
    data: String,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            pg(
                &self.bin,
                "pg_ctl",
                &["-D", &self.data, "stop", "-m", "immediate"],
            )
        });
    }
}

#[test]
fn postgres_catalog_commits_and_resumes() {
    let bin = pg_bin();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = dir.path().join("data").to_string_lossy().into_owned();
    let sock = dir.path().to_string_lossy().into_owned();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    pg(
        &bin,
        "initdb",
        &["-D", &data, "-A", "trust", "-U", "icefall", "--no-sync"],
    );
    let opts = format!("-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off");
    let log = dir.path().join("pg.log").to_string_lossy().into_owned();
    pg(
        &bin,
        "pg_ctl",
        &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
    );
    let _cluster = Cluster {
        bin: bin.clone(),
        data,
        _dir: dir,
    };
    pg(
        &bin,
        "createdb",
        &["-h", "127.0.0.1", "-p", &port, "-U", "icefall", "catalog"],
    );
    let uri = format!("postgres://icefall@127.0.0.1:{port}/catalog");

    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.produce("events", 10_000, 100);
    let wh = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(wh.path()).unwrap();
    let w = w.to_str().unwrap();
    let run = || {
        let out = common::icefall(&[
            "--brokers",
            &broker.addr,
            "--topic",
            "events",
            "--warehouse",
            w,
            "--table",
            "ns.events",
            "--catalog",
            &uri,
            "--stop-at-end",
            "--commit-interval",
            "300ms",
        ]);
        assert!(
            out.status.success(),
            "icefall: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    // More records, then a second run that must resume where the first committed.
    broker.loadgen(
        "events",
        &["--records", "5000", "--first-seq", "10000", "--keys", "100"],
    );
    run();

    let spec = CatalogSpec {
        uri,
        warehouse_url: format!("file://{w}"),
    };
    let view = table_view_in(&spec, ObjectStoreStorage::local(), "ns.events");
    let files: Vec<_> = view
        .files
        .iter()
        .map(|p| (p.clone(), read_rows(p)))
        .collect();
    let shape = sample::Shape {
        keys: 100,
        ..Default::default()
    };
    assert_eq!(verify_sample(&files, &shape, 15_000), 15_000);

    // Maintenance on PostgreSQL: the lease row and the rewrites' compare-and-swap speak its
    // numbered placeholders; the files of both runs become one.
    let out = common::icefall_command()
        .args([
            "maintain",
            "--warehouse",
            w,
            "--table",
            "ns.events",
            "--catalog",
            &spec.uri,
        ])
        .args(["--expire-older-than", "0s", "--retain-last", "1"])
        .args(["--target-file-size", "64MiB"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        common::field(&line, "compacted_files") as usize,
        view.files.len(),
        "{line}"
    );
    assert_eq!(common::field(&line, "into_files") as u64, 1, "{line}");
    let after = table_view_in(&spec, ObjectStoreStorage::local(), "ns.events");
    assert_eq!((after.files.len(), after.snapshots), (1, 1));
    let files: Vec<_> = after
        .files
        .iter()
        .map(|p| (p.clone(), read_rows(p)))
        .collect();
    assert_eq!(verify_sample(&files, &shape, 15_000), 15_000);
    assert!(
        !Path::new(w).join("catalog.db").exists(),
        "no SQLite catalog was created"
    );
}
