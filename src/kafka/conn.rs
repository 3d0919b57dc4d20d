//! One connection to one broker: length-prefixed frames, correlation ids, ApiVersions
//! negotiation, and a bound on every response frame before it is allocated.
//!
//! Requests go one at a time (the caller awaits the answer before the next), so a response is
//! matched by its correlation id alone. A frame is read into one buffer that the decoded
//! response shares: a Fetch response's record bytes are slices of it, never copies.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::KafkaError;

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
        18 => 3, // ApiVersions
        22 => 4, // InitProducerId
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
}

/// An open, negotiated connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
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
        let mut conn = Conn {
            stream,
            broker: broker.to_owned(),
            correlation: 0,
            versions: Vec::new(),
            session: Default::default(),
            client_id: StrBytes::from_string(cfg.client_id.clone()),
            timeout: cfg.timeout,
            max_frame: cfg.max_frame,
        };
        conn.negotiate().await?;
        Ok(conn)
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
        18 => "ApiVersions",
        22 => "InitProducerId",
        _ => "a request",
    }
}
