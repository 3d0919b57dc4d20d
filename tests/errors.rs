//! Bad input gets a one-line error naming the problem and a documented exit code, never a panic;
//! a failed or killed run leaves no `.parquet` file that is not a whole Parquet file.

mod common;

use std::net::TcpListener;

use common::{
    Broker, assert_clean_failure, base_args, icefall, parquet_files, read_rows, spawn_icefall,
    wait_for_files,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn unreachable_broker_is_named() {
    let wh = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = base_args(&addr, "events", wh.path().to_str().unwrap());
    args.extend(["--kafka-timeout", "2s", "--stop-at-end"]);
    let out = icefall(&args);
    assert_clean_failure(&out, 3, &["cannot reach Kafka", &addr]);
    assert!(parquet_files(wh.path()).is_empty());
}

#[test]
fn bad_flags_and_cores_exit_2() {
    let wh = tempfile::tempdir().unwrap();
    let w = wh.path().to_str().unwrap();
    let online = icefall::runtime::online_cores().unwrap();
    // A core id one past the highest this process may use: not online, whatever the machine.
    let offline = (online.iter().max().unwrap() + 1).to_string();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--shard-cores", &offline],
            vec!["--shard-cores", "is not online"],
        ),
        (
            vec!["--io-core", &offline],
            vec!["--io-core", "is not online"],
        ),
        (
            vec!["--fetch-cores", "3-1"],
            vec!["--fetch-cores", "backwards"],
        ),
        (
            vec!["--start", "yesterday"],
            vec!["--start", "earliest, latest"],
        ),
        (
            vec!["--fetch-max-wait", "10"],
            vec!["--fetch-max-wait", "no unit"],
        ),
    ];
    for (extra, needles) in cases {
        let mut args = base_args("127.0.0.1:9", "events", w);
        args.extend(extra.iter().copied());
        assert_clean_failure(&icefall(&args), 2, &needles);
    }
    let mut args = base_args("127.0.0.1:9", "events", w);
    args[7] = "no-namespace";
    assert_clean_failure(&icefall(&args), 2, &["--table", "NAMESPACE.NAME"]);

    if online.len() >= 2 {
        // A partial overlap between explicit lists is refused (identical lists may share cores).
        let two = icefall::config::CoreList::new(online[..2].to_vec())
            .unwrap()
            .to_string();
        let one = online[1].to_string();
        let mut args = base_args("127.0.0.1:9", "events", w);
        args.extend(["--fetch-cores", &two, "--shard-cores", &one]);
        assert_clean_failure(&icefall(&args), 2, &["overlap"]);
    }
}

#[test]
fn unwritable_warehouse_and_unknown_topic() {
    let broker = Broker::start();
    broker.create_topic("events", 2);

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let wh = file.join("warehouse");
    let mut args = base_args(&broker.addr, "events", wh.to_str().unwrap());
    args.push("--stop-at-end");
    assert_clean_failure(&icefall(&args), 4, &["warehouse", "not writable"]);

    let good = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "no-such-topic", good.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--kafka-timeout", "5s"]);
    assert_clean_failure(&icefall(&args), 3, &["no-such-topic", "does not exist"]);

    let mut args = base_args(&broker.addr, "events", good.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--partitions", "0,7"]);
    assert_clean_failure(&icefall(&args), 3, &["no partition 7"]);

    let mut args = base_args(&broker.addr, "events", good.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--start", "5"]);
    assert_clean_failure(&icefall(&args), 3, &["--start 5", "partition 0"]);
    assert!(parquet_files(good.path()).is_empty());
}

/// SIGKILL at an arbitrary moment while files are being written: every `.parquet` file left is a
/// whole, readable Parquet file (writes are staged under another name and renamed).
#[test]
fn a_killed_run_leaves_only_whole_files() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.produce("events", 150_000, 500);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend([
        "--file-max-bytes",
        "64KiB",
        "--batch-rows",
        "256",
        "--stop-at-end",
    ]);
    let mut child = spawn_icefall(&args);
    let data = wh.path().join("ns/events/data");
    wait_for_files(&mut child, &data, 3);
    let _ = child.kill();
    let _ = child.wait();
    let files = parquet_files(&data);
    assert!(
        !files.is_empty(),
        "the run wrote no file before it was killed"
    );
    for f in &files {
        assert!(!read_rows(f).is_empty(), "{} is empty", f.display());
    }
}
