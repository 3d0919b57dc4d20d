//! Test certificates made by openssl: a CA, a server certificate for `localhost` and a client
//! certificate with an encrypted key; stunnel (Debian's TLS terminator) in front of a plaintext
//! broker port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of `client-encrypted.key`.
pub const KEY_PASSWORD: &str = "kp-Zq81vW";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for `localhost` only, and a client certificate whose key is
/// encrypted with [`KEY_PASSWORD`].
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn make() -> Certs {
        let dir = tempfile::tempdir().expect("cert dir");
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec![
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=icefall test CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        for (name, san) in [
            ("server", "DNS:localhost"),
            ("client", "DNS:icefall-client"),
        ] {
            let subj = format!("/CN={name}");
            let mut req = vec!["req", "-nodes", "-subj", &subj];
            req.extend(ec);
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(d, &req);
            std::fs::write(
                d.join(format!("{name}.ext")),
                format!("subjectAltName={san}\n"),
            )
            .expect("ext");
            let ext = format!("{name}.ext");
            let pem = format!("{name}.pem");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &pem,
                ],
            );
        }
        let pass = format!("pass:{KEY_PASSWORD}");
        openssl(
            d,
            &[
                "pkcs8",
                "-topk8",
                "-in",
                "client.key",
                "-out",
                "client-encrypted.key",
                "-passout",
                &pass,
            ],
        );
        Certs { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// stunnel in front of a plaintext broker port; stopped on drop.
pub struct Terminator {
    child: Child,
    _conf: PathBuf,
}

impl Terminator {
    pub fn start(certs: &Certs, port: u16, backend: &str, require_client_cert: bool) -> Terminator {
        let conf = certs.dir().join(format!("stunnel-{port}.conf"));
        let mut text = format!(
            "foreground = yes\npid =\ndebug = 3\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = {backend}\ncert = {}\nkey = {}\n",
            certs.path("server.pem"),
            certs.path("server.key")
        );
        if require_client_cert {
            text.push_str(&format!(
                "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                certs.path("ca.pem")
            ));
        }
        std::fs::write(&conf, text).expect("stunnel conf");
        let child = Command::new("stunnel4")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel4 (tools/test installs Debian's stunnel4)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "stunnel did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Terminator { child, _conf: conf }
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
