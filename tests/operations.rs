//! Operating icefall: the HTTP endpoints scraped during a run, configuration from a file and the
//! environment, and a broker restart in the middle of a run.

mod common;

use std::time::{Duration, Instant};

use common::{
    Broker, assert_clean_failure, assert_prefixes, base_args, http_get, icefall_command,
    logged_http_addr, metric_sum, read_table, repo, spawn_icefall_logged, wait_for_committed,
};

/// Scrapes until `done` holds for the metrics text, returning every scrape.
fn scrape_until(addr: &str, within: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let (code, text) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        let finished = done(&text);
        seen.push(text);
        if finished {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "gave up; last scrape:\n{}",
            seen.last().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(child: std::process::Child) -> std::process::Output {
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    child.wait_with_output().expect("wait")
}

#[test]
fn metrics_show_records_and_commits_grow_and_lag_reach_zero() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.produce("events", 30_000, 300);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--commit-interval", "1s", "--progress-interval", "1s"]);
    let (child, log) = spawn_icefall_logged(&args);
    let addr = logged_http_addr(&log);

    let (code, body) = http_get(&addr, "/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let caught_up = |want: f64| {
        move |t: &str| {
            metric_sum(t, "icefall_records_total") == want
                && metric_sum(t, "icefall_committed_offset") == want
                && metric_sum(t, "icefall_partition_lag") == 0.0
                && t.matches("icefall_partition_lag{").count() == 4
        }
    };
    let first = scrape_until(&addr, Duration::from_secs(120), caught_up(30_000.0));
    // More records while it runs: the counters must move again and the lag return to 0.
    broker.produce("events", 20_000, 300);
    let second = scrape_until(&addr, Duration::from_secs(120), caught_up(50_000.0));
    let committed: Vec<f64> = first
        .iter()
        .chain(&second)
        .map(|t| metric_sum(t, "icefall_committed_offset"))
        .collect();
    assert!(
        committed.windows(2).all(|w| w[0] <= w[1]),
        "committed offsets never go back: {committed:?}"
    );
    // The first scrape comes before the first 1 s commit: the offsets grew 0 → 30,000 → 50,000.
    assert!(committed[0] < 30_000.0, "{committed:?}");
    let last = second.last().unwrap();
    assert_eq!(metric_sum(last, "icefall_dropped_total"), 0.0);
    assert_eq!(
        metric_sum(last, "icefall_record_latency_seconds_count"),
        50_000.0,
        "every committed record has a latency"
    );
    assert!(metric_sum(last, "icefall_commit_duration_seconds_count") >= 2.0);
    assert!(metric_sum(last, "icefall_commits_total") >= 2.0);
    assert!(last.contains("icefall_queue_depth{shard=\"0\""), "{last}");
    // The group panels are served by `--group` members (tests/scale_out checks those).
    common::dashboard_queries_are_served(last, false);

    let (code, body) = http_get(&addr, "/ready");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(&addr, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    let parts = status["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 4);
    let total: i64 = parts
        .iter()
        .map(|p| p["committed_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 50_000);
    assert!(
        parts
            .iter()
            .all(|p| p["lag"] == 0 && p["fetch_cpu"].is_u64())
    );
    assert!(status["shard_cores"][0]["cpu"].is_u64());
    let (code, _) = http_get(&addr, "/nope");
    assert_eq!(code, 404);

    let out = stop(child);
    assert!(out.status.success(), "exit {:?}", out.status.code());
    let text = log.lock().unwrap().clone();
    assert!(
        text.contains("progress records="),
        "a progress line: {text}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let broker = Broker::start();
    broker.create_topic("events", 1);
    broker.produce("events", 100, 10);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--log-format", "json"]);
    let out = icefall_command()
        .arg("run")
        .args(&args)
        .env("ICEFALL_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut messages = Vec::new();
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(messages.iter().any(|m| m == "placement"), "{messages:?}");
}

const PROFILES: [&str; 2] = ["config/default.toml", "config/high-throughput.toml"];

fn check(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = icefall_command();
    c.args(["config", "check"]).args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn shipped_profiles_pass_config_check_and_show_where_values_come_from() {
    for profile in PROFILES {
        let path = repo().join(profile);
        let out = check(
            &[
                "--config",
                path.to_str().unwrap(),
                "--topic",
                "orders",
                "--warehouse",
                "/tmp/icefall-wh",
            ],
            &[
                ("ICEFALL_TABLE", "lake.orders"),
                ("ICEFALL_BROKERS", "kafka:9092"),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("topic = \"orders\""), "{stdout}");
        let table = stdout.lines().find(|l| l.starts_with("table =")).unwrap();
        assert!(table.ends_with("# ICEFALL_TABLE"), "{table}");
        let interval = stdout
            .lines()
            .find(|l| l.starts_with("commit-interval ="))
            .unwrap();
        assert!(
            interval.contains(profile.rsplit('/').next().unwrap()),
            "{interval}"
        );
    }
}

#[test]
fn bad_config_is_refused_by_check_and_run_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base =
        "brokers = \"127.0.0.1:9\"\ntopic = \"t\"\nwarehouse = \"/tmp/x\"\ntable = \"a.b\"\n";
    let cases: [(&str, &[&str]); 5] = [
        (
            "colour = \"blue\"\n",
            &["key `colour`", "unknown key", "commit-interval"],
        ),
        (
            "queue-capacity = true\n",
            &["key `queue-capacity`", "expected a string or a number"],
        ),
        (
            "commit-interval = \"ten seconds\"\n",
            &["key `commit-interval`", "e.g. 250ms, 10s"],
        ),
        (
            "fetch-max-wait = 5\n",
            &["key `fetch-max-wait`", "no unit", "5s"],
        ),
        (
            "stop-at-end = \"yes\"\n",
            &["key `stop-at-end`", "true or false"],
        ),
    ];
    for (i, (extra, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let p = path.to_str().unwrap();
        assert_clean_failure(&check(&["--config", p], &[]), 2, needles);
        let run = icefall_command()
            .args(["run", "--config", p])
            .output()
            .unwrap();
        assert_clean_failure(&run, 2, needles);
    }
    // A missing topic, and a bad environment variable.
    let path = dir.path().join("no-topic.toml");
    std::fs::write(&path, base.replace("topic = \"t\"\n", "")).unwrap();
    let p = path.to_str().unwrap();
    let needles = ["--topic is required", "ICEFALL_TOPIC", "`topic`"];
    assert_clean_failure(&check(&["--config", p], &[]), 2, &needles);
    let run = icefall_command()
        .args(["run", "--config", p])
        .output()
        .unwrap();
    assert_clean_failure(&run, 2, &needles);
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, base).unwrap();
    let out = check(
        &["--config", path.to_str().unwrap()],
        &[("ICEFALL_ZSTD_LEVEL", "40")],
    );
    assert_clean_failure(&out, 2, &["ICEFALL_ZSTD_LEVEL \"40\"", "1 to 22"]);
}

#[test]
fn a_broker_restart_mid_run_loses_and_duplicates_nothing() {
    // Tansu's SQLite engine keeps the log across the restart.
    let broker = Broker::start_with_engine("sqlite");
    broker.create_topic("events", 2);
    broker.produce("events", 3_000, 100);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    args.extend(["--commit-interval", "1s", "--kafka-timeout", "60s"]);
    let (child, log) = spawn_icefall_logged(&args);
    wait_for_committed(
        wh.path(),
        "ns.events",
        "events",
        3_000,
        Duration::from_secs(120),
    );

    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    broker.start_again();
    broker.produce("events", 2_000, 100);
    wait_for_committed(
        wh.path(),
        "ns.events",
        "events",
        5_000,
        Duration::from_secs(120),
    );

    let out = stop(child);
    let text = log.lock().unwrap().clone();
    assert!(out.status.success(), "exit {:?}: {text}", out.status.code());
    assert!(
        text.contains("retrying") && text.contains("Kafka broker"),
        "the outage was seen mid-run and retried: {text}"
    );
    let (view, files) = read_table(wh.path(), "ns.events");
    assert!(view.snapshots >= 2);
    let counts = assert_prefixes(&files);
    assert_eq!(counts.values().sum::<i64>(), 5_000, "every record once");
}

#[test]
fn a_drain_that_outlives_the_drain_timeout_exits_6() {
    let broker = Broker::start();
    broker.create_topic("events", 1);
    broker.produce("events", 2_000, 10);
    let wh = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh.path().to_str().unwrap());
    // Shard 0 (the only one) sleeps 30 s before each batch: the drain cannot finish in 1 s.
    args.extend(["--debug-slow-shard", "0:30s", "--drain-timeout", "1s"]);
    let (child, log) = spawn_icefall_logged(&args);
    let addr = logged_http_addr(&log);
    scrape_until(&addr, Duration::from_secs(60), |t| {
        metric_sum(t, "icefall_records_total") > 0.0
    });
    let signalled = Instant::now();
    let out = stop(child);
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(out.status.code(), Some(6));
    let text = log.lock().unwrap().clone();
    assert!(
        text.contains("icefall: error: --drain-timeout 1s"),
        "{text}"
    );
}

/// deploy/kubernetes/icefall.yaml parses, its container's flags are ones `icefall config check`
/// accepts, and its probes, port and scrape settings are where icefall serves them.
#[test]
fn kubernetes_example_matches_icefalls_flags_and_endpoints() {
    let path = repo().join("deploy/kubernetes/icefall.yaml");
    let py = common::python_with("yaml");
    let json = common::python_stdout(
        &py,
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            path.to_str().expect("utf-8 path"),
        ],
    );
    let docs: Vec<serde_json::Value> = serde_json::from_str(&json).expect("YAML as JSON");
    let set = docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .expect("a StatefulSet");
    let pod = &set["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name} in {args:?}"))
    };
    assert_eq!(flag("instance-id"), "$(POD_NAME)");
    let env = c["env"].as_array().expect("env");
    let pod_name = env
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // The port icefall listens on, the probes and the scrape settings agree.
    let port: u16 = flag("http-addr")
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port");
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port);
    let notes = &pod["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/port"], port.to_string());
    assert_eq!(notes["prometheus.io/path"], "/metrics");
    // Its flags and variables are icefall's: `config check` accepts them, and the default port
    // is the example's.
    let mut check = icefall_command();
    check.args(["config", "check"]);
    check.args(
        args[1..]
            .iter()
            .map(|a| a.replace("$(POD_NAME)", "icefall-0")),
    );
    for e in env.iter().filter(|e| e["value"].is_string()) {
        check.env(
            e["name"].as_str().expect("name"),
            e["value"].as_str().expect("value"),
        );
    }
    check.env("ICEFALL_CATALOG", "postgres://icefall@db/catalog");
    check.env_remove("ICEFALL_HTTP_ADDR");
    let out = check.output().expect("config check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("instance-id = \"icefall-0\""), "{text}");
    let defaults = icefall_command()
        .args(["config", "check", "--brokers", "k:9092", "--topic", "t"])
        .args(["--warehouse", "/tmp/w", "--table", "a.b"])
        .env_remove("ICEFALL_HTTP_ADDR")
        .output()
        .expect("config check");
    let defaults = String::from_utf8_lossy(&defaults.stdout);
    assert!(
        defaults.contains(&format!("http-addr = \"127.0.0.1:{port}\"")),
        "the default port is the example's {port}: {defaults}"
    );
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    let drain: u64 = flag("drain-timeout")
        .trim_end_matches('s')
        .parse()
        .expect("seconds");
    assert!(
        grace > drain,
        "the pod's grace {grace}s outlasts the drain {drain}s"
    );
}
