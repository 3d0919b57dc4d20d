//! One connection to one broker: length-prefixed frames, correlation ids, ApiVersions
//! negotiation, and a bound on every response frame before it is allocated.
//!
//! A connection is TCP or TLS ([`super::tls`]), then ApiVersions, then SASL when configured
//! ([`super::sasl`]); a SASL session the broker limits in time is renewed on the same connection
//! before the next request once 85% of it has passed (KIP-368).
//!
//! Requests go one at a time (the caller awaits the answer before the next), so a response is
//! matched by its correlation id alone. A frame is read into one buffer that the decoded
//! response shares: a Fetch response's record bytes are slices of it, never copies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::KafkaError;
use super::sasl::{self, SaslSettings};
use super::tls::{self, Stream, Tls};

/// The highest version icefall speaks of each API it uses, by API key. Fetch stays at v11 (the
/// last before tagged fields; v13 and later name topics by id): Tansu 0.6 puts a v16-only tagged
/// field into its v12 answers, which a strict decoder refuses. Every Kafka from 2.3 to 4.x
/// serves v11.
fn our_max(api_key: i16) -> i16 {
    match api_key {
        0 => 9,  // Produce
        1 => 11, // Fetch
        2 => 7,  // ListOffsets
        3 => 12, // Metadata
        17 => 1, // SaslHandshake
        18 => 3, // ApiVersions
        36 => 2, // SaslAuthenticate (v1+: session lifetime)
        22 => 4, // InitProducerId
        8 => 8,  // OffsetCommit (v8: flexible; v9 is KIP-848's)
        10 => 4, // FindCoordinator (v4: batched keys)
        11 => 9, // JoinGroup
        12 => 4, // Heartbeat
        13 => 5, // LeaveGroup
        14 => 5, // SyncGroup
        _ => 0,
    }
}

/// What every connection needs to know.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub client_id: String,
    /// Connecting, and each request (on top of any wait the request itself asks for).
    pub timeout: Duration,
    /// The largest response frame accepted (a broker may return one batch past a fetch limit).
    pub max_frame: usize,
    /// TLS and SASL (librdkafka's `security.protocol`); plaintext by default.
    pub security: Security,
}

/// How connections are secured: TLS when `tls` is set, SASL when `sasl` is.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<Tls>,
    pub sasl: Option<Arc<SaslSettings>>,
}

impl Security {
    /// librdkafka's name for it: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }
}

/// An open, negotiated connection.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    /// `host:port`, for errors.
    pub broker: String,
    correlation: i32,
    /// Per API key, the broker's (min, max) versions.
    versions: Vec<Option<(i16, i16)>>,
    client_id: StrBytes,
    timeout: Duration,
    max_frame: usize,
    /// The fetch session on this connection (KIP-227); a new connection starts without one.
    pub session: super::session::FetchSession,
    sasl: Option<Arc<SaslSettings>>,
    /// When the SASL session must be renewed (KIP-368), if the broker limits it.
    reauth_at: Option<Instant>,
}

impl Conn {
    /// Connects to `broker` (`host:port`) and asks which API versions it speaks.
    pub async fn open(broker: &str, cfg: &ConnConfig) -> Result<Conn, KafkaError> {
        let connect = TcpStream::connect(broker);
        let stream = match tokio::time::timeout(cfg.timeout, connect).await {
            Err(_) => {
                return Err(KafkaError::Timeout {
                    broker: broker.to_owned(),
                    what: "connecting",
                    timeout: cfg.timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(KafkaError::Connect {
                    broker: broker.to_owned(),
                    source,
                });
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let security = &cfg.security;
        let stream = match &security.tls {
            None => Stream::Plain(stream),
            Some(t) => {
                let host = host_of(broker);
                let hs = tokio::time::timeout(cfg.timeout, t.connect(host, stream));
                match hs.await {
                    Err(_) => {
                        return Err(KafkaError::Timeout {
                            broker: broker.to_owned(),
                            what: "the TLS handshake",
                            timeout: cfg.timeout,
                        });
                    }
                    Ok(Err(e)) => return Err(tls_failure(broker, &e, true)),
                    Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                }
            }
        };
        let mut conn = Conn {
            stream,
            broker: broker.to_owned(),
            correlation: 0,
            versions: Vec::new(),
            session: Default::default(),
            client_id: StrBytes::from_string(cfg.client_id.clone()),
            timeout: cfg.timeout,
            max_frame: cfg.max_frame,
            sasl: security.sasl.clone(),
            reauth_at: None,
        };
        conn.negotiate()
            .await
            .map_err(|e| explain_first(e, security))?;
        conn.authenticate().await?;
        Ok(conn)
    }

    async fn authenticate(&mut self) -> Result<(), KafkaError> {
        let Some(s) = self.sasl.clone() else {
            return Ok(());
        };
        let lifetime = sasl::authenticate(self, &s).await?;
        // Renew at 85% of the session, as the Java client does at 85-95%.
        self.reauth_at = lifetime.map(|l| Instant::now() + l.mul_f64(0.85));
        Ok(())
    }

    async fn negotiate(&mut self) -> Result<(), KafkaError> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("icefall");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let frame = self.round_trip(&req, 3, Duration::ZERO).await?;
        // A broker that does not speak v3 answers in v0 (error 35) and lists what it speaks.
        let c = self.correlation;
        let resp = match decode_response::<ApiVersionsRequest>(frame.clone(), 3, c) {
            Ok((_, r)) if r.error_code != 35 => r,
            _ => decode_response::<ApiVersionsRequest>(frame, 0, c)
                .map(|(_, r)| r)
                .map_err(|why| self.malformed("ApiVersions", why))?,
        };
        if resp.error_code != 0 {
            return Err(self.malformed("ApiVersions", format!("error code {}", resp.error_code)));
        }
        self.versions = versions_table(&resp);
        Ok(())
    }

    /// The version of `R` to send: the highest both sides speak.
    pub fn version<R: Request>(&self) -> Result<i16, KafkaError> {
        let theirs = self
            .versions
            .get(R::KEY as usize)
            .copied()
            .flatten()
            .unwrap_or((0, -1));
        let min = R::VERSIONS.min.max(theirs.0);
        let max = R::VERSIONS.max.min(our_max(R::KEY)).min(theirs.1);
        if min > max {
            return Err(KafkaError::Unsupported {
                broker: self.broker.clone(),
                api: api_name(R::KEY),
                theirs: format!("{}..={}", theirs.0, theirs.1),
            });
        }
        Ok(max)
    }

    /// Sends `req` at `version` and waits for its response, for up to the timeout plus `wait`
    /// (the time the request itself asks the broker to wait, e.g. a Fetch's max wait).
    pub async fn call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        wait: Duration,
    ) -> Result<R::Response, KafkaError> {
        if self.reauth_at.is_some_and(|at| Instant::now() >= at) {
            self.authenticate().await?;
        }
        self.exchange(req, version, wait).await
    }

    /// [`Conn::call`] without the re-authentication check (SASL's own requests).
    pub(super) async fn exchange<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        wait: Duration,
    ) -> Result<R::Response, KafkaError> {
        let frame = self.round_trip(req, version, wait).await?;
        let correlation = self.correlation;
        match decode_response::<R>(frame, version, correlation) {
            Ok((_, r)) => Ok(r),
            Err(why) => Err(self.malformed(api_name(R::KEY), why)),
        }
    }

    async fn round_trip<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        wait: Duration,
    ) -> Result<Bytes, KafkaError> {
        self.correlation = self.correlation.wrapping_add(1);
        let out = encode_request(req, version, self.correlation, &self.client_id)
            .map_err(|why| self.malformed(api_name(R::KEY), why))?;
        let limit = self.timeout + wait;
        let io = async {
            self.stream.write_all(&out).await?;
            read_frame(&mut self.stream, self.max_frame).await
        };
        match tokio::time::timeout(limit, io).await {
            Err(_) => Err(KafkaError::Timeout {
                broker: self.broker.clone(),
                what: api_name(R::KEY),
                timeout: limit,
            }),
            Ok(Err(source)) if tls::tls_cause(&source).is_some() => {
                Err(tls_failure(&self.broker, &source, false))
            }
            Ok(Err(source)) => Err(KafkaError::Io {
                broker: self.broker.clone(),
                api: api_name(R::KEY),
                source,
            }),
            Ok(Ok(frame)) => Ok(frame),
        }
    }

    fn malformed(&self, api: &'static str, why: String) -> KafkaError {
        KafkaError::Malformed {
            broker: self.broker.clone(),
            api,
            why,
        }
    }
}

/// The host part of `host:port` (a bracketed IPv6 address without its brackets).
fn host_of(broker: &str) -> &str {
    let host = broker.rsplit_once(':').map_or(broker, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A TLS failure as one line: the broker and rustls's cause.
fn tls_failure(broker: &str, e: &std::io::Error, handshake: bool) -> KafkaError {
    let cause = tls::tls_cause(e).unwrap_or_else(|| e.to_string());
    let hint = if cause.contains("InvalidContentType") || cause.contains("corrupt message") {
        " (is this a plaintext listener? then security.protocol is plaintext or sasl_plaintext)"
    } else {
        ""
    };
    KafkaError::Tls {
        broker: broker.to_owned(),
        why: format!(
            "{}{cause}{hint}",
            if handshake { "handshake failed: " } else { "" }
        ),
    }
}

/// The first answer on a plaintext connection lost is what a TLS listener does to it: say so in
/// the error, which stays retriable (a broker going down does the same).
fn explain_first(e: KafkaError, security: &Security) -> KafkaError {
    match e {
        KafkaError::Io {
            broker,
            api,
            source,
        } if security.tls.is_none()
            && matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            let source = std::io::Error::new(
                source.kind(),
                format!(
                    "{source} (if the broker's listener is TLS, set security.protocol to ssl or sasl_ssl)"
                ),
            );
            KafkaError::Io {
                broker,
                api,
                source,
            }
        }
        other => other,
    }
}

fn versions_table(resp: &ApiVersionsResponse) -> Vec<Option<(i16, i16)>> {
    let mut t = vec![None; 100];
    for k in &resp.api_keys {
        if let Some(slot) = usize::try_from(k.api_key).ok().and_then(|i| t.get_mut(i)) {
            *slot = Some((k.min_version, k.max_version));
        }
    }
    t
}

/// A request frame: length, header, body.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
    client_id: &StrBytes,
) -> Result<BytesMut, String> {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation;
    header.client_id = Some(client_id.clone());
    let hv = R::header_version(version);
    let size = header.compute_size(hv).map_err(|e| e.to_string())?
        + req.compute_size(version).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, hv).map_err(|e| e.to_string())?;
    req.encode(&mut buf, version).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Decodes a response frame (without its length), checking the correlation id.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation: i32,
) -> Result<(ResponseHeader, R::Response), String> {
    let hv = <R::Response as HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut frame, hv).map_err(|e| e.to_string())?;
    if header.correlation_id != correlation {
        return Err(format!(
            "correlation id {} answers no request (expected {correlation})",
            header.correlation_id
        ));
    }
    let resp = R::Response::decode(&mut frame, version).map_err(|e| format!("{e:#}"))?;
    Ok((header, resp))
}

/// Reads one length-prefixed frame, refusing a length past `max` before allocating it.
pub async fn read_frame<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> std::io::Result<Bytes> {
    let len = stream.read_i32().await?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame length {len} is outside 0..={max}"),
            )
        })?;
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let n = (&mut *stream)
            .take((len - buf.len()) as u64)
            .read_buf(&mut buf)
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.freeze())
}

pub fn api_name(key: i16) -> &'static str {
    match key {
        0 => "Produce",
        1 => "Fetch",
        2 => "ListOffsets",
        3 => "Metadata",
        17 => "SaslHandshake",
        18 => "ApiVersions",
        36 => "SaslAuthenticate",
        22 => "InitProducerId",
        8 => "OffsetCommit",
        10 => "FindCoordinator",
        11 => "JoinGroup",
        12 => "Heartbeat",
        13 => "LeaveGroup",
        14 => "SyncGroup",
        _ => "a request",
    }
}
