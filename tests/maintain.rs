//! `icefall maintain` on a table that several runs fed: a dry run changes nothing; a pass that
//! keeps only the current snapshot deletes the files only expired snapshots reached, and only
//! those. PyIceberg reads the same rows, schema and field ids before and after. A run after it
//! resumes from the table's offsets and reads nothing twice. The orphan sweep deletes old
//! unreferenced files and unfinished uploads, never a referenced or a young one.

mod common;

use std::path::{Path, PathBuf};

use common::{Broker, base_args, icefall, read_table, sample, table_view, verify_sample};

const ROUNDS: u64 = 5;
const PER_ROUND: u64 = 2_000;

fn field(line: &str, name: &str) -> u64 {
    common::field(line, name) as u64
}

/// Every file under the warehouse's table folder.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("ns/events")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What PyIceberg reads: rows, distinct (partition, offset) pairs, field ids.
fn pyiceberg(warehouse: &str) -> String {
    common::pyiceberg_events(
        warehouse,
        "d = t.scan().to_arrow()\n\
         pairs = set(zip(d['_kafka_partition'].to_pylist(), d['_kafka_offset'].to_pylist()))\n\
         print(d.num_rows, len(pairs), [(f.name, f.field_id) for f in t.schema().fields])\n",
    )
}

/// A pass without the rewrites (their own test is below).
fn expire_only(w: &str, extra: &[&str]) -> String {
    let args = [&["--no-compact", "--no-merge-manifests"][..], extra].concat();
    common::maintain_all(w, &args)
}

#[test]
fn a_pass_expires_history_deletes_only_the_unreachable_and_readers_see_the_same_table() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let wh = tempfile::tempdir().expect("warehouse");
    let w = wh.path().to_str().expect("utf-8 path");
    let mut run = base_args(&broker.addr, "events", w);
    run.push("--stop-at-end");
    for round in 0..ROUNDS {
        let first = (round * PER_ROUND).to_string();
        let records = PER_ROUND.to_string();
        broker.loadgen(
            "events",
            &[
                "--records",
                &records,
                "--first-seq",
                &first,
                "--keys",
                "100",
            ],
        );
        let out = icefall(&run);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let total = ROUNDS * PER_ROUND;
    let before = table_view(wh.path(), "ns.events");
    assert_eq!(before.snapshots as u64, ROUNDS);
    let read_before = pyiceberg(w);
    assert!(
        read_before.starts_with(&format!("{total} {total} ")),
        "{read_before}"
    );
    let on_disk = files(wh.path());
    let sizes: std::collections::BTreeMap<&PathBuf, u64> = on_disk
        .iter()
        .map(|f| (f, std::fs::metadata(f).map_or(0, |m| m.len())))
        .collect();

    // A dry run says what it would do and changes nothing.
    let dry = expire_only(w, &["--dry-run"]);
    assert_eq!(field(&dry, "expired_snapshots"), ROUNDS - 1, "{dry}");
    assert_eq!(files(wh.path()), on_disk, "a dry run deletes nothing");
    assert_eq!(table_view(wh.path(), "ns.events").snapshots as u64, ROUNDS);

    let line = expire_only(w, &[]);
    assert!(line.starts_with("maintained expired_snapshots="), "{line}");
    assert_eq!(field(&line, "expired_snapshots"), ROUNDS - 1, "{line}");
    // Fast appends: each expired snapshot's manifest list goes; the manifests and data files
    // are all still read by the current snapshot.
    assert_eq!(field(&line, "deleted_files"), ROUNDS - 1, "{line}");
    assert_eq!(field(&line, "manifests_after"), ROUNDS, "{line}");
    let after = table_view(wh.path(), "ns.events");
    assert_eq!(after.snapshots, 1);
    assert_eq!(after.files, before.files, "the same data files");
    assert_eq!(pyiceberg(w), read_before, "PyIceberg reads the same table");
    let left = files(wh.path());
    let gone: Vec<_> = on_disk.iter().filter(|f| !left.contains(f)).collect();
    assert_eq!(gone.len() as u64, ROUNDS - 1, "{gone:?}");
    let freed: u64 = gone.iter().map(|f| sizes[*f]).sum();
    assert_eq!(field(&line, "deleted_bytes"), freed, "{line}");
    assert!(
        gone.iter().all(|f| f.to_string_lossy().contains("snap-")),
        "{gone:?}"
    );
    for f in &after.files {
        assert!(f.exists(), "{} is referenced and must stay", f.display());
    }
    // Nothing more to do.
    let again = expire_only(w, &[]);
    assert_eq!(field(&again, "expired_snapshots"), 0, "{again}");

    // The orphan sweep: an upload a killed run never committed and an unfinished staging file,
    // both two hours old, go; a young one may still be on its way to a commit and stays.
    let data = after.files[0].parent().expect("data dir").to_path_buf();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let mut orphans = Vec::new();
    for name in [
        "never-committed.parquet",
        "unfinished.parquet#1",
        "young.parquet",
    ] {
        let path = data.join(name);
        std::fs::copy(&after.files[0], &path).expect("copy");
        if !name.starts_with("young") {
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(two_hours_ago).expect("backdate");
            orphans.push(path.clone());
        }
    }
    let dry = expire_only(w, &["--orphans", "--orphans-older-than", "1h", "--dry-run"]);
    assert_eq!(field(&dry, "orphans"), 2, "{dry}");
    assert!(
        orphans.iter().all(|p| p.exists()),
        "a dry run deletes nothing"
    );
    let swept = expire_only(w, &["--orphans", "--orphans-older-than", "1h"]);
    assert_eq!(field(&swept, "orphans"), 2, "{swept}");
    assert!(orphans.iter().all(|p| !p.exists()), "{orphans:?}");
    assert!(data.join("young.parquet").exists(), "a young file stays");
    std::fs::remove_file(data.join("young.parquet")).expect("rm");
    for f in &after.files {
        assert!(f.exists(), "{} is referenced and must stay", f.display());
    }
    assert_eq!(
        pyiceberg(w),
        read_before,
        "PyIceberg reads the same table after the sweep"
    );

    // A run after it resumes where the table stands.
    broker.loadgen(
        "events",
        &[
            "--records",
            "500",
            "--first-seq",
            &total.to_string(),
            "--keys",
            "100",
        ],
    );
    let out = icefall(&run);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(common::field(&stdout, "records") as u64, 500, "{stdout}");
    let (_, rows) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: 100,
        ..Default::default()
    };
    assert_eq!(
        verify_sample(&rows, &shape, total + 500) as u64,
        total + 500
    );

    // Old metadata files: with write.metadata.previous-versions-max=1 each commit's log names
    // one earlier file; a pass deletes the older ones (once they are past the in-flight guard).
    common::set_events_property(w, "write.metadata.previous-versions-max", "1");
    let first = (total + 500).to_string();
    broker.loadgen(
        "events",
        &["--records", "100", "--first-seq", &first, "--keys", "100"],
    );
    assert!(icefall(&run).status.success());
    let metadata_files = || -> Vec<PathBuf> {
        files(wh.path())
            .into_iter()
            .filter(|f| f.to_string_lossy().ends_with(".metadata.json"))
            .collect()
    };
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in metadata_files() {
        let file = std::fs::File::options().write(true).open(&f).expect("open");
        file.set_modified(hour_ago).expect("backdate");
    }
    let many = metadata_files().len();
    let line = expire_only(w, &[]);
    let left = metadata_files();
    assert_eq!(
        left.len(),
        2,
        "the current metadata file and the one its log names: {left:?}"
    );
    assert!(field(&line, "deleted_files") as usize >= many - 2, "{line}");
    let read = pyiceberg(w);
    let want = total + 600;
    assert!(read.starts_with(&format!("{want} {want} ")), "{read}");
}

/// What PyIceberg reads of every snapshot: whether a file any of them references is missing.
fn pyiceberg_all_snapshots(warehouse: &str) -> String {
    let body = format!(
        "{}print('missing', missing, '')\n",
        common::COUNT_MISSING_PY
    );
    common::pyiceberg_events(warehouse, &body)
}

fn produce(broker: &Broker, first: u64, records: u64) {
    let (first, records) = (first.to_string(), records.to_string());
    broker.loadgen(
        "events",
        &[
            "--records",
            &records,
            "--first-seq",
            &first,
            "--keys",
            "100",
        ],
    );
}

#[test]
fn merging_manifests_and_compacting_files_keep_every_row_once_and_every_snapshot_whole() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let wh = tempfile::tempdir().expect("warehouse");
    let w = wh.path().to_str().expect("utf-8 path");
    let mut run = base_args(&broker.addr, "events", w);
    run.push("--stop-at-end");
    for round in 0..ROUNDS {
        produce(&broker, round * PER_ROUND, PER_ROUND);
        assert!(icefall(&run).status.success());
    }
    let mut total = ROUNDS * PER_ROUND;
    common::set_events_property(w, "commit.manifest.min-count-to-merge", "3");
    let read_before = pyiceberg(w);
    assert!(
        read_before.starts_with(&format!("{total} {total} ")),
        "{read_before}"
    );
    let files_before = table_view(wh.path(), "ns.events").files.len();
    assert!(
        files_before >= ROUNDS as usize,
        "a small file a round: {files_before}"
    );

    // Merging: the five manifests (one per commit) become one, every entry EXISTING.
    let dry = common::maintain_all(w, &["--no-compact", "--dry-run"]);
    assert_eq!(
        field(&dry, "manifests_after"),
        ROUNDS,
        "a dry run merges nothing: {dry}"
    );
    let merged = common::maintain_all(w, &["--no-compact"]);
    assert_eq!(field(&merged, "manifests_before"), ROUNDS, "{merged}");
    assert_eq!(field(&merged, "manifests_after"), 1, "{merged}");
    assert_eq!(field(&merged, "compacted_files"), 0, "{merged}");
    assert_eq!(pyiceberg(w), read_before, "PyIceberg reads the same table");
    assert!(pyiceberg_all_snapshots(w).starts_with("missing 0 "));
    let view = table_view(wh.path(), "ns.events");
    assert_eq!(
        view.files.len(),
        files_before,
        "merging rewrites no data file"
    );
    let what = view.summary.get("icefall.maintenance").map(String::as_str);
    assert_eq!(what, Some("merge-manifests"));

    // Compacting: a writer commits one more round; every small file becomes one.
    produce(&broker, total, PER_ROUND);
    assert!(icefall(&run).status.success());
    total += PER_ROUND;
    let read_before = pyiceberg(w);
    let files_before = table_view(wh.path(), "ns.events").files.len();
    let line = common::maintain_all(w, &["--no-merge-manifests", "--target-file-size", "64MiB"]);
    assert_eq!(
        field(&line, "compacted_files"),
        files_before as u64,
        "{line}"
    );
    assert_eq!(field(&line, "into_files"), 1, "{line}");
    assert_eq!(field(&line, "manifests_after"), 1, "{line}");
    let view = table_view(wh.path(), "ns.events");
    assert_eq!(view.files.len(), 1, "{:?}", view.files);
    assert_eq!(
        view.snapshots, 1,
        "the rewrite carries the offsets: older carriers expire"
    );
    assert_eq!(
        view.summary.get("total-records").map(String::as_str),
        Some(total.to_string().as_str())
    );
    assert_eq!(
        pyiceberg(w),
        read_before,
        "PyIceberg reads the same rows after compaction"
    );
    assert!(pyiceberg_all_snapshots(w).starts_with("missing 0 "));

    // The offsets survive: a restart reads only what is new, and nothing twice.
    produce(&broker, total, 500);
    let out = icefall(&run);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(common::field(&stdout, "records") as u64, 500, "{stdout}");
    total += 500;
    // The next pass compacts the compacted file with the new ones and expires what the
    // compaction replaced: its inputs go, no snapshot misses a file.
    let line = common::maintain_all(w, &["--target-file-size", "64MiB"]);
    assert!(
        field(&line, "deleted_files") >= files_before as u64,
        "{line}"
    );
    assert_eq!(table_view(wh.path(), "ns.events").files.len(), 1);
    assert!(pyiceberg_all_snapshots(w).starts_with("missing 0 "));
    let read = pyiceberg(w);
    assert!(read.starts_with(&format!("{total} {total} ")), "{read}");
    let (_, rows) = read_table(wh.path(), "ns.events");
    let shape = sample::Shape {
        keys: 100,
        ..Default::default()
    };
    assert_eq!(verify_sample(&rows, &shape, total) as u64, total);
    // The compacted file keeps each key's records in offset order.
    let mut last = std::collections::BTreeMap::new();
    for r in rows.iter().flat_map(|(_, r)| r) {
        if let Some(k) = &r.key
            && let Some(prev) = last.insert((r.partition, k.clone()), r.offset)
        {
            assert!(
                prev < r.offset,
                "key order broken at p{} o{}",
                r.partition,
                r.offset
            );
        }
    }
}
