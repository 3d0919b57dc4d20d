//! TLS to brokers (rustls, ring): the client configuration built once from files, and the
//! stream a connection reads and writes, plain or encrypted.
//!
//! The configuration is built when the settings are validated, so a missing or unreadable CA,
//! certificate or key is a configuration error before any connection is tried. The handshake
//! runs on the core that owns the connection, like every other read and write of it.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::secret::Secret;

/// Where the TLS settings come from (librdkafka's `ssl.*` names in parentheses).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificates, PEM (`ssl.ca.location`); the system's roots when absent.
    pub ca: Option<PathBuf>,
    /// The client's certificate chain, PEM (`ssl.certificate.location`), for mutual TLS.
    pub cert: Option<PathBuf>,
    /// The client's private key, PEM (`ssl.key.location`).
    pub key: Option<PathBuf>,
    /// The key's password (`ssl.key.password`), for an encrypted PKCS#8 key.
    pub key_password: Option<Secret>,
    /// Check that the broker's certificate names the host connected to
    /// (`ssl.endpoint.identification.algorithm`: `https`, the default, or `none`).
    pub verify_hostname: bool,
}

/// A TLS setting that cannot be used: names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{key} {path}: {why}")]
    File {
        key: &'static str,
        path: String,
        why: String,
    },
    #[error("{key}: {why}")]
    Setting { key: &'static str, why: String },
}

fn file_error(key: &'static str, path: &Path, why: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        key,
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// A built client configuration, shared by every connection.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    pub verify_hostname: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("verify_hostname", &self.verify_hostname)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files and builds the configuration.
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots(files.ca.as_deref())?);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Setting {
                key: "security.protocol",
                why: e.to_string(),
            })?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TlsSetupError::Setting {
                key: "ssl.ca.location",
                why: e.to_string(),
            })?;
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                inner: verifier,
                check_name: files.verify_hostname,
            }));
        let config = match (&files.cert, &files.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates("ssl.certificate.location", cert)?;
                let key_der = private_key(key, files.key_password.as_ref())?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| file_error("ssl.key.location", key, e))?
            }
            (Some(_), None) => {
                return Err(TlsSetupError::Setting {
                    key: "ssl.key.location",
                    why: "ssl.certificate.location is set, so the key is needed too".into(),
                });
            }
            (None, Some(_)) => {
                return Err(TlsSetupError::Setting {
                    key: "ssl.certificate.location",
                    why: "ssl.key.location is set, so the certificate is needed too".into(),
                });
            }
        };
        Ok(Tls {
            config: Arc::new(config),
            verify_hostname: files.verify_hostname,
        })
    }

    /// The client configuration, for a client that runs its own handshakes (the registry's).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The handshake with `host` over `tcp`.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }
}

fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates("ssl.ca.location", path)? {
                store
                    .add(cert)
                    .map_err(|e| file_error("ssl.ca.location", path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError::Setting {
                    key: "ssl.ca.location",
                    why: "not set, and this system has no CA certificates: give a PEM file".into(),
                });
            }
        }
    }
    Ok(store)
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|e| file_error(key, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn private_key(
    path: &Path,
    password: Option<&Secret>,
) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let key = "ssl.key.location";
    let pem = std::fs::read(path).map_err(|e| file_error(key, path, e))?;
    let encrypted = pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY");
    if encrypted {
        return decrypt(&pem, password).map_err(|why| file_error(key, path, why));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file_error(key, path, format!("no private key: {e}")))
}

/// An encrypted PKCS#8 key (PBES2: PBKDF2 or scrypt with AES-CBC, what `openssl pkcs8 -topk8`
/// writes), decrypted with `password`. The error never holds the password.
fn decrypt(pem: &[u8], password: Option<&Secret>) -> Result<PrivateKeyDer<'static>, String> {
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    let Some(password) = password else {
        return Err("the key is encrypted: set ssl.key.password".into());
    };
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_string())?;
    let block = text
        .find(BEGIN)
        .and_then(|a| text[a..].find(END).map(|b| &text[a..a + b + END.len()]))
        .ok_or("no complete ENCRYPTED PRIVATE KEY block")?;
    let (_, doc) = pkcs8::der::Document::from_pem(block).map_err(|e| format!("not PEM: {e}"))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| format!("not an encrypted PKCS#8 key: {e}"))?;
    let plain = info.decrypt(password.expose()).map_err(|_| {
        "cannot decrypt the key: wrong ssl.key.password, or an unsupported cipher".to_string()
    })?;
    Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()))
}

/// The WebPKI verifier, with the host-name check optional.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a connection reads and writes.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS cause inside an IO error, if it is one (a handshake failure, an alert).
pub fn tls_cause(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?;
    inner.downcast_ref::<rustls::Error>().map(|t| t.to_string())
}
