//! Secured clusters: the whole pipeline over TLS (Tansu behind stunnel, Debian's TLS
//! terminator, with certificates made here by openssl), mutual TLS with an encrypted client key,
//! and SASL/SCRAM against Tansu's own server side (rsasl). No secret may appear in any output.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use common::certs::{Certs, KEY_PASSWORD, Terminator, free_port};
use common::wire_broker::{Log, SaslSetup, WireBroker};
use common::{Broker, assert_clean_failure, base_args, icefall, icefall_command, loadgen};

const SCRAM_PASSWORD: &str = "pw-Xk29fQ";

fn options(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["--kafka-option".to_string(), format!("{k}={v}")])
        .collect()
}

fn run(broker: &str, topic: &str, wh: &Path, extra: &[String]) -> Output {
    let mut args: Vec<&str> = base_args(broker, topic, wh.to_str().expect("utf8"));
    args.extend(["--stop-at-end", "--kafka-timeout", "5s"]);
    args.extend(extra.iter().map(String::as_str));
    icefall(&args)
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn landed(wh: &Path) -> usize {
    common::read_warehouse(wh)
        .iter()
        .map(|(_, rows)| rows.len())
        .sum()
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [KEY_PASSWORD, SCRAM_PASSWORD] {
        assert!(!text.contains(s), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn tls_end_to_end_with_the_host_name_checked() {
    let certs = Certs::make();
    let port = free_port();
    let tls_addr = format!("localhost:{port}");
    let broker = Broker::start_with("memory", &[("BROKER_ADVERTISE", &tls_addr)]);
    let _tls = Terminator::start(&certs, port, &broker.addr, false);
    broker.create_topic("secure", 4);
    let ca = certs.path("ca.pem");
    let tls = options(&[("security.protocol", "ssl"), ("ssl.ca.location", &ca)]);
    produce_with(&tls_addr, "secure", "3000", &tls);

    let wh = tempfile::tempdir().expect("warehouse");
    let out = run(&tls_addr, "secure", wh.path(), &tls);
    assert_ok(&out);
    assert_eq!(landed(wh.path()), 3000);

    // The certificate names localhost, not 127.0.0.1: refused, unless the check is off.
    let ip_addr = format!("127.0.0.1:{port}");
    let wh = tempfile::tempdir().expect("warehouse");
    let out = run(&ip_addr, "secure", wh.path(), &tls);
    assert_clean_failure(&out, 3, &["TLS", &ip_addr, "not valid for name"]);
    let mut off = tls.clone();
    off.extend(options(&[(
        "ssl.endpoint.identification.algorithm",
        "none",
    )]));
    let out = run(&ip_addr, "secure", wh.path(), &off);
    assert_ok(&out);
    assert_eq!(landed(wh.path()), 3000);

    // Without our CA (the system's roots) and in plaintext: one line naming broker and cause.
    let wh = tempfile::tempdir().expect("warehouse");
    let out = run(
        &tls_addr,
        "secure",
        wh.path(),
        &options(&[("security.protocol", "ssl")]),
    );
    assert_clean_failure(&out, 3, &["TLS", &tls_addr, "UnknownIssuer"]);
    let out = run(&tls_addr, "secure", wh.path(), &[]);
    assert_clean_failure(&out, 3, &[&tls_addr, "security.protocol"]);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let certs = Certs::make();
    let port = free_port();
    let tls_addr = format!("localhost:{port}");
    let broker = Broker::start_with("memory", &[("BROKER_ADVERTISE", &tls_addr)]);
    let _tls = Terminator::start(&certs, port, &broker.addr, true);
    broker.create_topic("mtls", 2);
    let ca = certs.path("ca.pem");
    let cert = certs.path("client.pem");
    let key = certs.path("client-encrypted.key");
    let mtls = options(&[
        ("security.protocol", "ssl"),
        ("ssl.ca.location", &ca),
        ("ssl.certificate.location", &cert),
        ("ssl.key.location", &key),
        ("ssl.key.password", KEY_PASSWORD),
    ]);
    produce_with(&tls_addr, "mtls", "1000", &mtls);

    let wh = tempfile::tempdir().expect("warehouse");
    let out = run(&tls_addr, "mtls", wh.path(), &mtls);
    assert_ok(&out);
    assert_eq!(landed(wh.path()), 1000);
    assert_no_secret("a run's output", &String::from_utf8_lossy(&out.stderr));

    let no_cert = options(&[("security.protocol", "ssl"), ("ssl.ca.location", &ca)]);
    let out = run(&tls_addr, "mtls", wh.path(), &no_cert);
    assert_clean_failure(&out, 3, &["TLS", &tls_addr]);

    // A wrong key password is a configuration error naming the key file, not the password.
    let mut wrong = mtls.clone();
    wrong.extend(options(&[("ssl.key.password", "not-it")]));
    let out = run(&tls_addr, "mtls", wh.path(), &wrong);
    assert_clean_failure(
        &out,
        2,
        &[
            "ssl.key.location",
            "client-encrypted.key",
            "ssl.key.password",
        ],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-it"));
}

/// Tansu keeps SCRAM users in its storage: made with `tansu user create` while the broker is
/// open, then the broker restarts requiring authentication (SQLite keeps them across).
fn scram_broker(tls_port: Option<u16>) -> Broker {
    let advertise = tls_port.map(|p| format!("localhost:{p}"));
    let env: Vec<(&str, &str)> = advertise
        .as_deref()
        .map(|a| ("BROKER_ADVERTISE", a))
        .into_iter()
        .collect();
    let mut broker = Broker::start_with("sqlite", &env);
    for (mechanism, user) in [("scram256", "alice"), ("scram512", "bob")] {
        let out = Command::new("tansu")
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://{}", broker.addr),
            ])
            .args(["--mechanism", mechanism, user, SCRAM_PASSWORD])
            .output()
            .expect("tansu user create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    broker.create_topic("scram", 2);
    if tls_port.is_none() {
        loadgen(&broker.addr, "scram", &["--records", "400"]);
    }
    let mut env = env;
    env.push(("BROKER_ARGS", "--authentication"));
    broker.restart_with(&env);
    broker
}

fn scram(mechanism: &str, user: &str, password: &str) -> Vec<String> {
    options(&[
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", user),
        ("sasl.password", password),
    ])
}

#[test]
fn scram_sha_256_and_512_against_tansu() {
    let broker = scram_broker(None);
    for (mechanism, user) in [("SCRAM-SHA-256", "alice"), ("SCRAM-SHA-512", "bob")] {
        let wh = tempfile::tempdir().expect("warehouse");
        let out = run(
            &broker.addr,
            "scram",
            wh.path(),
            &scram(mechanism, user, SCRAM_PASSWORD),
        );
        assert!(
            out.status.success(),
            "{mechanism}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(landed(wh.path()), 400, "{mechanism}");
        let out = run(
            &broker.addr,
            "scram",
            wh.path(),
            &scram(mechanism, user, "wrong-pw"),
        );
        assert_clean_failure(&out, 3, &[mechanism, &broker.addr, "refused"]);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-pw"));
    }
    // A client without SASL is turned away, and the error says what to set.
    let wh = tempfile::tempdir().expect("warehouse");
    let out = run(&broker.addr, "scram", wh.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SASL/SCRAM over mutual TLS, with a key password and a SASL password, both read from files:
/// neither appears in a log line (debug level), an error, `/status`, `/metrics` or
/// `config check`.
#[test]
fn secrets_never_shown_over_sasl_ssl() {
    let certs = Certs::make();
    let port = free_port();
    let broker = scram_broker(Some(port));
    let _tls = Terminator::start(&certs, port, &broker.addr, true);
    let tls_addr = format!("localhost:{port}");
    let secrets = tempfile::tempdir().expect("secrets");
    let pw_file = secrets.path().join("sasl-password");
    std::fs::write(&pw_file, format!("{SCRAM_PASSWORD}\n")).expect("write");
    let ca = certs.path("ca.pem");
    let cert = certs.path("client.pem");
    let key = certs.path("client-encrypted.key");
    let pw_ref = format!("@{}", pw_file.display());
    let opts = options(&[
        ("security.protocol", "SASL_SSL"),
        ("ssl.ca.location", &ca),
        ("ssl.certificate.location", &cert),
        ("ssl.key.location", &key),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "bob"),
    ]);
    let mut produce_args: Vec<&str> = vec!["--records", "500"];
    produce_args.extend(opts.iter().map(String::as_str));
    let mut produce = Command::new(env!("CARGO_BIN_EXE_icefall-loadgen"));
    produce
        .args(["--brokers", &tls_addr, "--topic", "scram"])
        .args(&produce_args)
        .env("ICEFALL_KAFKA_SASL_PASSWORD", &pw_ref)
        .env("ICEFALL_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD);
    let out = produce.output().expect("loadgen");
    assert_ok(&out);

    let wh = tempfile::tempdir().expect("warehouse");
    let mut args: Vec<String> = base_args(&tls_addr, "scram", wh.path().to_str().expect("utf8"))
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(opts.iter().cloned());
    args.extend(["--commit-interval".into(), "200ms".into()]);
    let mut child = icefall_command()
        .arg("run")
        .args(&args)
        .env("ICEFALL_KAFKA_SASL_PASSWORD", &pw_ref)
        .env("ICEFALL_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
        .env("ICEFALL_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn icefall");
    let log = common::collect_stderr(&mut child);
    common::wait_for_committed(
        wh.path(),
        "ns.events",
        "scram",
        500,
        Duration::from_secs(60),
    );
    let http = common::logged_http_addr(&log);
    for path in ["/status", "/metrics"] {
        let (code, body) = common::http_get(&http, path);
        assert_eq!(code, 200, "{path}");
        assert_no_secret(path, &body);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", log.lock().expect("log"));
    std::thread::sleep(Duration::from_millis(200));
    let text = log.lock().expect("log").clone();
    assert!(text.contains("security_protocol=\"sasl_ssl\""), "{text}");
    assert!(text.contains("sasl_mechanism=\"SCRAM-SHA-512\""), "{text}");
    assert_no_secret(
        "the log",
        &format!("{text}{}", String::from_utf8_lossy(&out.stdout)),
    );

    let check = icefall_command()
        .args(["config", "check"])
        .args(&args)
        .env("ICEFALL_KAFKA_SASL_PASSWORD", SCRAM_PASSWORD)
        .env("ICEFALL_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
        .output()
        .expect("config check");
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(shown.contains("\"sasl.password\" = \"***\""), "{shown}");
    assert_no_secret(
        "config check",
        &format!("{shown}{}", String::from_utf8_lossy(&check.stderr)),
    );

    // A wrong password over TLS: exit 3 naming the mechanism, without the password.
    let out = icefall_command()
        .arg("run")
        .args(&args)
        .args(["--stop-at-end", "--kafka-timeout", "5s"])
        .env("ICEFALL_KAFKA_SASL_PASSWORD", "wrong-pw")
        .env("ICEFALL_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
        .output()
        .expect("run");
    assert_clean_failure(&out, 3, &["SCRAM-SHA-512", "refused"]);
    assert_no_secret("the error", &String::from_utf8_lossy(&out.stderr));
}

fn sasl_broker(topic: &str, setup: SaslSetup) -> WireBroker {
    let wb = WireBroker::start(1, topic, BTreeMap::from([(0, Log::default())]));
    wb.state.lock().unwrap().sasl = Some(setup);
    wb
}

fn produce_with(addr: &str, topic: &str, records: &str, opts: &[String]) {
    let mut args: Vec<&str> = vec!["--records", records];
    args.extend(opts.iter().map(String::as_str));
    loadgen(addr, topic, &args);
}

/// PLAIN against rsasl's server side (Tansu's PLAIN takes any password, so it cannot say no).
#[test]
fn plain_right_and_wrong_password_and_a_mechanism_not_enabled() {
    let wb = sasl_broker(
        "plain",
        SaslSetup {
            mechanisms: vec!["PLAIN".into(), "OAUTHBEARER".into()],
            users: BTreeMap::from([("carol".to_string(), SCRAM_PASSWORD.to_string())]),
            ..Default::default()
        },
    );
    let addr = wb.bootstrap();
    let plain = |pw: &str| {
        options(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "carol"),
            ("sasl.password", pw),
        ])
    };
    produce_with(&addr, "plain", "300", &plain(SCRAM_PASSWORD));
    let wh = tempfile::tempdir().expect("warehouse");
    let out = run(&addr, "plain", wh.path(), &plain(SCRAM_PASSWORD));
    assert_ok(&out);
    assert_eq!(landed(wh.path()), 300);
    assert_no_secret("a run", &String::from_utf8_lossy(&out.stderr));

    let out = run(&addr, "plain", wh.path(), &plain("wrong-pw"));
    assert_clean_failure(&out, 3, &["PLAIN", &addr, "refused"]);
    let out = run(
        &addr,
        "plain",
        wh.path(),
        &scram("SCRAM-SHA-256", "carol", SCRAM_PASSWORD),
    );
    assert_clean_failure(
        &out,
        3,
        &["SCRAM-SHA-256", "does not enable", "PLAIN, OAUTHBEARER"],
    );
    let s = wb.state.lock().unwrap();
    assert_eq!(
        s.unauthenticated, 0,
        "no request came before authentication"
    );
    assert!(
        s.authentications
            .iter()
            .any(|(m, u, ok)| m == "PLAIN" && u == "carol" && !ok)
    );
}

/// OAUTHBEARER sends the file's token, and a re-authentication (the broker grants 400 ms
/// sessions) reads the file again: a refreshed token reaches the broker in the same run.
#[test]
fn oauthbearer_sends_the_token_and_rereads_a_changed_file() {
    let wb = sasl_broker(
        "oauth",
        SaslSetup {
            mechanisms: vec!["OAUTHBEARER".into()],
            tokens: vec!["tok-1".into(), "tok-2".into()],
            lifetime_ms: 400,
            ..Default::default()
        },
    );
    let addr = wb.bootstrap();
    let dir = tempfile::tempdir().expect("token dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-1\n").expect("token");
    let path = token.display().to_string();
    let opts = options(&[
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", "OAUTHBEARER"),
        ("sasl.oauthbearer.token.file", &path),
    ]);
    produce_with(&addr, "oauth", "200", &opts);
    let wh = tempfile::tempdir().expect("warehouse");
    let mut args: Vec<String> = base_args(&addr, "oauth", wh.path().to_str().expect("utf8"))
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(opts.iter().cloned());
    args.extend(["--commit-interval", "100ms", "--fetch-max-wait", "100ms"].map(String::from));
    let child = icefall_command()
        .arg("run")
        .args(&args)
        .env("ICEFALL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn icefall");
    common::wait_for_committed(
        wh.path(),
        "ns.events",
        "oauth",
        200,
        Duration::from_secs(60),
    );
    std::fs::write(&token, "tok-2\n").expect("token");
    let seen = |t: &str| {
        wb.state
            .lock()
            .unwrap()
            .authentications
            .iter()
            .any(|(m, tok, ok)| m == "OAUTHBEARER" && tok == t && *ok)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen("tok-2") {
        assert!(Instant::now() < deadline, "the refreshed token never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    assert_ok(&out);
    assert!(seen("tok-1"));
    assert_eq!(wb.state.lock().unwrap().unauthenticated, 0);
    assert_eq!(landed(wh.path()), 200);

    // A token the broker refuses: exit 3 with what the broker said.
    std::fs::write(&token, "expired\n").expect("token");
    let out = run(&addr, "oauth", wh.path(), &opts);
    assert_clean_failure(
        &out,
        3,
        &["OAUTHBEARER", "refused the token", "invalid_token"],
    );
}
