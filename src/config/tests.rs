//! Validation of `run`'s flags.
use super::*;

fn args(extra: &[&str]) -> RunArgs {
    let mut argv = vec![
        "icefall",
        "run",
        "--brokers",
        "127.0.0.1:9092",
        "--topic",
        "t",
        "--warehouse",
        "/tmp/w",
        "--table",
        "ns.t",
    ];
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).command {
        Command::Run(a)
        | Command::ReplayDropped(a)
        | Command::Maintain(a)
        | Command::Config(ConfigCommand::Check(a)) => a,
    }
}

#[test]
fn validation_names_the_flag_and_value() {
    let e = args(&["--fetch-cores", "3-1"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--fetch-cores \"3-1\""), "{e}");
    let e = args(&["--fetch-max-wait", "5"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--fetch-max-wait") && e.contains("no unit"),
        "{e}"
    );
    let e = args(&["--shards", "0"]).validate().unwrap_err().to_string();
    assert!(e.starts_with("--shards \"0\""), "{e}");
    let mut a = args(&[]);
    a.brokers = Some("localhost".into());
    let e = a.validate().unwrap_err().to_string();
    assert!(e.contains("--brokers") && e.contains("HOST:PORT"), "{e}");
    assert!(args(&[]).validate().is_ok());
    let e = args(&["--catalog", "mysql://x"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--catalog \"mysql://x\"") && e.contains("postgres://"),
        "{e}"
    );
    let mut a = args(&[]);
    a.warehouse = Some("s3://bucket/wh".into());
    let e = a.validate().unwrap_err().to_string();
    assert!(e.contains("needs --catalog"), "{e}");
    a.catalog = Some("postgres://u:p@localhost/db".into());
    let c = a.validate().unwrap();
    assert_eq!(
        c.warehouse,
        WarehouseLocation::S3 {
            bucket: "bucket".into(),
            prefix: "wh".into()
        }
    );
    assert!(matches!(c.catalog, Some(CatalogKind::Postgres(_))));
    let e = args(&["--overload", "sometimes"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--overload \"sometimes\"") && e.contains("auto, block or drop"),
        "{e}"
    );
    let e = args(&["--live-threshold", "lots"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--live-threshold"), "{e}");
    let c = args(&["--overload", "drop", "--debug-slow-shard", "3:20ms"])
        .validate()
        .unwrap();
    assert_eq!(
        (c.overload, c.slow_shard),
        (OverloadMode::Drop, Some((3, Duration::from_millis(20))))
    );
}

#[test]
fn group_flags_reach_the_config_and_exclude_partitions() {
    let cfg = args(&[
        "--group",
        "sink",
        "--instance-id",
        "pod-0",
        "--session-timeout",
        "10s",
    ])
    .validate()
    .unwrap();
    let g = cfg.group.expect("group mode");
    assert_eq!((g.group.as_str(), g.topic.as_str()), ("sink", "t"));
    assert_eq!(g.instance_id.as_deref(), Some("pod-0"));
    assert_eq!(g.session_timeout, Duration::from_secs(10));
    assert!(args(&[]).validate().unwrap().group.is_none());
    let e = args(&["--group", "sink", "--partitions", "0-3"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--partitions \"0-3\""), "{e}");
    let e = args(&["--group", "sink", "--heartbeat-interval", "1m"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--heartbeat-interval \"1m\""), "{e}");
}
