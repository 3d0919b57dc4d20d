//! An S3 warehouse: data files and Iceberg metadata go to an S3-compatible store (moto's server,
//! started on a free loopback port) through object_store, configured only by the standard AWS
//! environment variables; the catalog is SQLite. The table is read back through S3.
//! The Python interpreter with moto comes from `ICEFALL_PYTHON` (set by `tools/test`).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Broker, icefall, icefall_command, read_rows_from, sample, table_view_in, verify_sample,
};
use iceberg::io::Storage;
use icefall::sink::commit::CatalogSpec;
use icefall::sink::storage::ObjectStoreStorage;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "icefall"),
    ("AWS_SECRET_ACCESS_KEY", "icefall"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ALLOW_HTTP", "true"),
];

#[test]
fn s3_warehouse_round_trips() {
    let python = common::python_with("moto.server, boto3");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let _moto = Moto(
        Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let made = Command::new(&python)
        .args(["-c", "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='icefall', aws_secret_access_key='icefall').create_bucket(Bucket='icefall')", &endpoint])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "create bucket: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    let broker = Broker::start();
    broker.create_topic("events", 4);
    // 8 MB on one shard core in 2,000-row groups: the file goes up as a multipart upload.
    broker.loadgen(
        "events",
        &[
            "--records",
            "20000",
            "--keys",
            "100",
            "--value-bytes",
            "400",
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let catalog = format!("sqlite://{}/catalog.db?mode=rwc", tmp.path().display());
    let out = {
        let mut cmd = icefall_command();
        cmd.args([
            "run",
            "--brokers",
            &broker.addr,
            "--topic",
            "events",
            "--table",
            "ns.events",
        ])
        .args([
            "--warehouse",
            "s3://icefall/wh",
            "--catalog",
            &catalog,
            "--stop-at-end",
            "--row-group-rows",
            "2000",
        ])
        .args(common::one_core_args())
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("ICEFALL_LOG", "warn");
        for (k, v) in AWS_ENV {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    assert!(
        out.status.success(),
        "icefall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("files=1 ") && stdout.contains("streamed_files=1"),
        "one file, uploaded in parts: {stdout}"
    );
    // The s3:// warehouse without --catalog is refused up front.
    let refused = icefall(&[
        "--brokers",
        &broker.addr,
        "--topic",
        "events",
        "--table",
        "ns.events",
        "--warehouse",
        "s3://icefall/wh",
    ]);
    assert_eq!(refused.status.code(), Some(2));

    // Read back through S3 with the same environment.
    // SAFETY: this test binary runs this one test; nothing else reads the environment meanwhile.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
        for (k, v) in AWS_ENV {
            std::env::set_var(k, v);
        }
    }
    let storage = ObjectStoreStorage::s3("icefall").unwrap();
    let spec = CatalogSpec {
        uri: catalog.replace("mode=rwc", "mode=rw"),
        warehouse_url: "s3://icefall/wh".into(),
    };
    let view = table_view_in(&spec, storage.clone(), "ns.events");
    assert!(!view.files.is_empty());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let files: Vec<_> = view
        .files
        .iter()
        .map(|p| {
            let loc = p.to_string_lossy().into_owned();
            assert!(loc.starts_with("s3://icefall/wh/ns/events/data/"), "{loc}");
            let bytes = rt.block_on(storage.read(&loc)).unwrap();
            (p.clone(), read_rows_from(bytes, &loc))
        })
        .collect();
    let shape = sample::Shape {
        keys: 100,
        value_bytes: 400,
        ..Default::default()
    };
    assert_eq!(verify_sample(&files, &shape, 20_000), 20_000);
    assert!(tmp.path().join("catalog.db").exists());
    assert!(
        !std::path::Path::new("s3:").exists(),
        "nothing went to a local s3: directory"
    );
}
