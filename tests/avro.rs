//! `--format avro`: bare Avro bodies with `--schema FILE.avsc`, and Confluent's wire format with
//! `--schema-registry` (two versions of the subject, resolved to the latest), against a real
//! broker; undecodable values go to the dead-letter table.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::sample::{avro_framed as framed, avro_long, avro_string};
use common::{Broker, base_args, icefall, read_table, table_view};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const V1: &str = r#"{"type":"record","name":"Event","fields":[{"name":"seq","type":"long"},{"name":"user","type":"string"},{"name":"amount","type":["null","double"],"default":null}]}"#;
const V2: &str = r#"{"type":"record","name":"Event","fields":[{"name":"seq","type":"long"},{"name":"user","type":"string"},{"name":"amount","type":["null","double"],"default":null},{"name":"note","type":"string","default":"-"}]}"#;

/// The Avro body of an `Event` (V1; V2 when `note` is given).
fn body(seq: i64, note: Option<&str>) -> Vec<u8> {
    let mut b = Vec::new();
    avro_long(seq, &mut b);
    avro_string(&format!("user-{}", seq % 7), &mut b);
    if seq % 2 == 0 {
        avro_long(0, &mut b);
    } else {
        avro_long(1, &mut b);
        b.extend_from_slice(&(seq as f64 / 2.0).to_le_bytes());
    }
    if let Some(n) = note {
        avro_string(n, &mut b);
    }
    b
}

/// seq → note of every row of the typed table (note `None` when the table has no such column).
fn rows(warehouse: &std::path::Path) -> BTreeMap<i64, Option<String>> {
    let mut out = BTreeMap::new();
    for f in table_view(warehouse, "ns.events").files {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap();
        for b in reader.build().unwrap() {
            let b = b.unwrap();
            assert!(b.column_by_name("value").is_none());
            let seq = b.column_by_name("seq").unwrap().as_primitive::<Int64Type>();
            let note = b
                .column_by_name("note")
                .map(|c| c.as_string::<i32>().clone());
            for i in 0..b.num_rows() {
                let n = note.as_ref().map(|n| n.value(i).to_string());
                assert!(
                    out.insert(seq.value(i), n).is_none(),
                    "seq {} twice",
                    seq.value(i)
                );
            }
        }
    }
    out
}

fn dead_letters(warehouse: &std::path::Path) -> Vec<(i32, i64, Vec<u8>)> {
    let (_, files) = read_table(warehouse, "ns.dead");
    let mut out: Vec<_> = files
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .map(|r| (r.partition, r.offset, r.value.unwrap_or_default()))
        .collect();
    out.sort();
    out
}

/// `--format avro` with `schema` (the schema flag and its value) and `--dlq-table ns.dead`, to the
/// end of the topic.
fn run_to_end(broker: &Broker, warehouse: &std::path::Path, schema: &[&str]) {
    let mut args = base_args(&broker.addr, "events", warehouse.to_str().unwrap());
    args.extend([
        "--stop-at-end",
        "--format",
        "avro",
        "--dlq-table",
        "ns.dead",
    ]);
    args.extend(schema);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bare_avro_bodies_land_as_typed_columns_and_bad_ones_as_dead_letters() {
    let broker = Broker::start();
    broker.create_topic("events", 2);
    let n = 4_000i64;
    for p in 0..2 {
        let values: Vec<Option<Vec<u8>>> = (0..n / 2)
            .map(|i| {
                let seq = i * 2 + p as i64;
                Some(match seq {
                    // A truncated body and one with trailing bytes.
                    100 => body(seq, None)[..2].to_vec(),
                    301 => [body(seq, None), b"zz".to_vec()].concat(),
                    _ => body(seq, None),
                })
            })
            .collect();
        broker.produce_values("events", p, &values);
    }
    let wh = tempfile::tempdir().unwrap();
    let avsc = wh.path().join("event.avsc");
    std::fs::write(&avsc, V1).unwrap();
    run_to_end(&broker, wh.path(), &["--schema", avsc.to_str().unwrap()]);
    let table = rows(wh.path());
    assert_eq!(table.len() as i64, n - 2);
    assert!(
        (0..n)
            .filter(|s| *s != 100 && *s != 301)
            .all(|s| table.contains_key(&s))
    );
    let dead = dead_letters(wh.path());
    // seq = offset * 2 + partition.
    assert_eq!(
        dead.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
        [(0, 50), (1, 150)]
    );
    assert_eq!(
        dead[0].2,
        body(100, None)[..2].to_vec(),
        "the value as it came"
    );
}

/// The registry: Python's HTTP server over a directory of answers, over TLS when given a
/// certificate and key, answering 401 to a request without the `Authorization` it expects.
const REGISTRY_PY: &str = r#"
import base64, http.server, os, ssl, sys
directory, port = sys.argv[1], int(sys.argv[2])
auth = os.environ.get("REGISTRY_AUTH")
expected = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=directory, **k)
    def do_GET(self):
        if expected and self.headers.get("Authorization") != expected:
            body = b'{"error_code":401,"message":"Unauthorized"}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="registry"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
if os.environ.get("REGISTRY_CERT"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.environ["REGISTRY_CERT"], os.environ["REGISTRY_KEY"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// A directory served over HTTP holding the registry's answers for `events-value`.
struct Registry {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

/// How the registry is reached: https with this certificate and key, basic auth `USER:PASSWORD`.
#[derive(Default)]
struct Access<'a> {
    tls: Option<(&'a str, &'a str)>,
    user_info: Option<&'a str>,
}

impl Registry {
    fn start(versions: &[(u32, u32, &str)]) -> Self {
        Self::start_with(versions, Access::default())
    }

    fn start_with(versions: &[(u32, u32, &str)], access: Access<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("subjects/events-value/versions");
        std::fs::create_dir_all(&at).unwrap();
        for (i, (version, id, schema)) in versions.iter().enumerate() {
            let doc = serde_json::json!({"subject": "events-value", "version": version, "id": id, "schema": schema});
            std::fs::write(at.join(version.to_string()), doc.to_string()).unwrap();
            if i + 1 == versions.len() {
                std::fs::write(at.join("latest"), doc.to_string()).unwrap();
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("python3");
        cmd.args(["-c", REGISTRY_PY])
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((cert, key)) = access.tls {
            cmd.env("REGISTRY_CERT", cert).env("REGISTRY_KEY", key);
        }
        if let Some(info) = access.user_info {
            cmd.env("REGISTRY_AUTH", info);
        }
        let child = cmd.spawn().expect("python3 registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let scheme = if access.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Self {
            child,
            url: format!("{scheme}://localhost:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn confluent_wire_format_with_two_schema_versions_and_an_unknown_id() {
    let registry = Registry::start(&[(1, 21, V1), (2, 22, V2)]);
    let broker = Broker::start();
    broker.create_topic("events", 1);
    let values: Vec<Option<Vec<u8>>> = (0..3_000i64)
        .map(|seq| {
            Some(match seq {
                // Written with a schema the registry does not have.
                777 => framed(99, body(seq, None)),
                s if s % 3 == 0 => framed(22, body(s, Some("v2"))),
                s => framed(21, body(s, None)),
            })
        })
        .collect();
    broker.produce_values("events", 0, &values);
    let wh = tempfile::tempdir().unwrap();
    run_to_end(&broker, wh.path(), &["--schema-registry", &registry.url]);
    let table = rows(wh.path());
    assert_eq!(table.len(), 2_999);
    for (seq, note) in &table {
        let want = if seq % 3 == 0 { "v2" } else { "-" };
        assert_eq!(
            note.as_deref(),
            Some(want),
            "seq {seq}: V1 records take V2's default"
        );
    }
    let dead = dead_letters(wh.path());
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].0, dead[0].1), (0, 777));

    // Without a dead-letter table the unknown id fails the run, naming partition and offset.
    let wh2 = tempfile::tempdir().unwrap();
    let mut args = base_args(&broker.addr, "events", wh2.path().to_str().unwrap());
    args.extend(["--stop-at-end", "--format", "avro"]);
    args.extend(["--schema-registry", &registry.url]);
    common::assert_clean_failure(
        &icefall(&args),
        7,
        &["partition 0 offset 777", "unknown schema id 99"],
    );
}

#[test]
fn registry_over_https_with_basic_auth_never_showing_the_secret() {
    const SECRET: &str = "sec-R3g9";
    let certs = common::certs::Certs::make();
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let user_info = format!("KEY7:{SECRET}");
    let registry = Registry::start_with(
        &[(1, 21, V1)],
        Access {
            tls: Some((&cert, &key)),
            user_info: Some(&user_info),
        },
    );
    let broker = Broker::start();
    broker.create_topic("events", 1);
    let values: Vec<Option<Vec<u8>>> = (0..300i64)
        .map(|s| Some(framed(21, body(s, None))))
        .collect();
    broker.produce_values("events", 0, &values);
    let info_file = certs.dir().join("registry-user-info");
    std::fs::write(&info_file, format!("{user_info}\n")).unwrap();
    let ca = format!("schema.registry.ssl.ca.location={}", certs.path("ca.pem"));
    let from_file = format!("basic.auth.user.info=@{}", info_file.display());

    // The API key and secret from a file, the registry's CA given.
    let wh = tempfile::tempdir().unwrap();
    let reg = ["--schema-registry", registry.url.as_str()];
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = reg.iter().map(|s| s.to_string()).collect();
        a.extend(["--kafka-option".into(), ca.clone()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let args = with(&["--kafka-option", &from_file]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_to_end(&broker, wh.path(), &args);
    assert_eq!(rows(wh.path()).len(), 300);

    // In the URL instead (basic.auth.credentials.source=URL); `config check` masks it.
    let in_url = registry
        .url
        .replace("https://", &format!("https://{user_info}@"));
    let wh2 = tempfile::tempdir().unwrap();
    let url_args = [
        "--schema-registry",
        &in_url,
        "--kafka-option",
        &ca,
        "--kafka-option",
        "basic.auth.credentials.source=URL",
    ];
    run_to_end(&broker, wh2.path(), &url_args);
    assert_eq!(rows(wh2.path()).len(), 300);
    let mut check_args = base_args(&broker.addr, "events", wh2.path().to_str().unwrap());
    check_args.extend(["--format", "avro"]);
    check_args.extend(url_args);
    let check = common::icefall_command()
        .args(["config", "check"])
        .args(&check_args)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{shown}");
    assert!(shown.contains("https://KEY7:***@localhost"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");

    // Refusals: one line naming the cause, exit 2, the secret nowhere.
    let wh3 = tempfile::tempdir().unwrap();
    let fail = |extra: Vec<String>, needles: &[&str]| {
        let mut args = base_args(&broker.addr, "events", wh3.path().to_str().unwrap());
        args.extend(["--stop-at-end", "--format", "avro"]);
        args.extend(extra.iter().map(String::as_str));
        let out = icefall(&args);
        common::assert_clean_failure(&out, 2, needles);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(SECRET), "{stderr}");
    };
    let wrong = format!("basic.auth.user.info=KEY7:not-{SECRET}");
    fail(
        with(&["--kafka-option", &wrong]),
        &["--schema-registry", "HTTP 401", "basic.auth.user.info"],
    );
    fail(with(&[]), &["HTTP 401"]);
    let system_roots: Vec<String> = vec![
        "--schema-registry".into(),
        registry.url.clone(),
        "--kafka-option".into(),
        from_file.clone(),
    ];
    fail(
        system_roots,
        &["--schema-registry", "certificate", "UnknownIssuer"],
    );
}
