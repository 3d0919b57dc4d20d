//! SASL to brokers: PLAIN, SCRAM-SHA-256/512 (RFC 5802, 7677) and OAUTHBEARER (RFC 7628,
//! KIP-255), over SaslHandshake v1 and SaslAuthenticate (KIP-152), re-authenticated before the
//! session the broker grants ends (KIP-368).
//!
//! The mechanisms are sans-IO: each takes the broker's bytes and returns the next message or a
//! verdict, unit-tested against the RFC's exchange. [`authenticate`] carries them over one
//! connection. Passwords and tokens are [`Secret`]s: no error or log line here holds one.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use ring::{digest, hmac, pbkdf2};

use super::KafkaError;
use super::conn::Conn;
use crate::secret::Secret;

/// A mechanism, by its IANA name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    OAuthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn parse(s: &str) -> Option<Mechanism> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
            Mechanism::OAuthBearer,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// Where an OAUTHBEARER token comes from.
#[derive(Debug, Clone)]
pub enum Token {
    /// Given once (`sasl.oauthbearer.token`, possibly `@/path` read at start).
    Fixed(Secret),
    /// Read again at every authentication (`sasl.oauthbearer.token.file`), so a refreshed file is
    /// picked up by the next re-authentication.
    File(PathBuf),
}

/// What a connection authenticates with.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Option<Secret>,
    pub token: Option<Token>,
}

/// PLAIN's one message: no authorization id, the user, the password.
pub fn plain_message(user: &str, password: &Secret) -> Vec<u8> {
    let mut m = Vec::with_capacity(user.len() + password.expose().len() + 2);
    m.push(0);
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(password.expose().as_bytes());
    m
}

/// OAUTHBEARER's one message (RFC 7628 §3.1, without an authorization id).
pub fn oauthbearer_message(token: &Secret) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {}\x01\x01", token.expose()).into_bytes()
}

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }
    fn len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }
}

/// Fewer iterations than Kafka's own minimum are refused (a downgrade); more than this bound
/// would let a broker make icefall spin.
const SCRAM_MIN_ITERATIONS: u32 = 4096;
const SCRAM_MAX_ITERATIONS: u32 = 1 << 20;

/// A SCRAM exchange from the client's side.
pub struct Scram {
    hash: ScramHash,
    password: Secret,
    nonce: String,
    first_bare: String,
    /// Set by [`Scram::client_final`]: what the server's signature must be.
    expect: Option<Vec<u8>>,
}

impl Scram {
    /// `nonce`: printable, without commas (a fresh random one per exchange).
    pub fn new(hash: ScramHash, user: &str, password: Secret, nonce: String) -> Scram {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        let first_bare = format!("n={name},r={nonce}");
        Scram {
            hash,
            password,
            nonce,
            first_bare,
            expect: None,
        }
    }

    /// A random nonce: 24 bytes, base64.
    pub fn random_nonce() -> Result<String, String> {
        let mut b = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .map_err(|_| "the system's random source failed".to_string())?;
        Ok(B64.encode(b))
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// The proof, from the server's first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| "the server's first message is not UTF-8".to_string())?;
        let attr = |k: &str| {
            text.split(',')
                .find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        };
        if let Some(e) = attr("e") {
            return Err(format!("the server refused: {e}"));
        }
        let nonce = attr("r").ok_or("the server's first message has no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's nonce does not extend ours".into());
        }
        let salt = attr("s")
            .and_then(|s| B64.decode(s).ok())
            .ok_or("the server's first message has no valid salt")?;
        let iterations: u32 = attr("i")
            .and_then(|i| i.parse().ok())
            .ok_or("the server's first message has no iteration count")?;
        if !(SCRAM_MIN_ITERATIONS..=SCRAM_MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "the server asks {iterations} iterations, outside {SCRAM_MIN_ITERATIONS}..={SCRAM_MAX_ITERATIONS}"
            ));
        }
        let h = self.hash;
        let mut salted = vec![0u8; h.len()];
        let rounds = std::num::NonZeroU32::new(iterations).ok_or("zero iterations")?;
        pbkdf2::derive(
            h.pbkdf2(),
            rounds,
            &salt,
            self.password.expose().as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(h.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored = digest::digest(h.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{text},{without_proof}", self.first_bare);
        let signature = hmac::sign(&hmac::Key::new(h.hmac(), stored.as_ref()), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_sig = hmac::sign(
            &hmac::Key::new(h.hmac(), server_key.as_ref()),
            auth.as_bytes(),
        );
        self.expect = Some(server_sig.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message proves it knows the password too.
    pub fn verify_final(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).unwrap_or("");
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let got = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or("the server's final message has no signature")?;
        match &self.expect {
            Some(want) if *want == got => Ok(()),
            _ => Err("the server's signature is wrong: it does not know the password".into()),
        }
    }
}

fn auth_error(conn: &Conn, m: Mechanism, why: impl Into<String>) -> KafkaError {
    KafkaError::Auth {
        broker: conn.broker.clone(),
        mechanism: m.name(),
        why: why.into(),
    }
}

/// Authenticates `conn`; the session's lifetime if the broker set one (KIP-368).
pub(super) async fn authenticate(
    conn: &mut Conn,
    s: &SaslSettings,
) -> Result<Option<Duration>, KafkaError> {
    let m = s.mechanism;
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str(m.name());
    let v = conn.version::<SaslHandshakeRequest>()?;
    let resp = conn.exchange(&hs, v, Duration::ZERO).await?;
    match resp.error_code {
        0 => {}
        33 => {
            let enabled: Vec<&str> = resp.mechanisms.iter().map(|x| x.as_str()).collect();
            return Err(auth_error(
                conn,
                m,
                format!(
                    "the broker does not enable it (it enables: {})",
                    enabled.join(", ")
                ),
            ));
        }
        code => {
            return Err(auth_error(
                conn,
                m,
                format!("SaslHandshake error code {code}"),
            ));
        }
    }
    let missing = |what: &str| auth_error(conn, m, format!("{what} is not set"));
    match m {
        Mechanism::Plain => {
            let pw = s
                .password
                .as_ref()
                .ok_or_else(|| missing("sasl.password"))?;
            step(conn, m, plain_message(&s.username, pw))
                .await
                .map(|(_, l)| l)
        }
        Mechanism::OAuthBearer => {
            let token = match s
                .token
                .as_ref()
                .ok_or_else(|| missing("sasl.oauthbearer.token.file"))?
            {
                Token::Fixed(t) => t.clone(),
                Token::File(path) => {
                    Secret::from_file(path).map_err(|why| auth_error(conn, m, why))?
                }
            };
            let (challenge, lifetime) = step(conn, m, oauthbearer_message(&token)).await?;
            if challenge.is_empty() {
                return Ok(lifetime);
            }
            // The broker refused the token with an error document (RFC 7628 §3.2.2): answer
            // with the separator it waits for, and report what it said.
            let said = String::from_utf8_lossy(&challenge).into_owned();
            match step(conn, m, vec![0x01]).await {
                Ok(_) | Err(KafkaError::Auth { .. }) => {}
                Err(other) => return Err(other),
            }
            Err(auth_error(
                conn,
                m,
                format!("the broker refused the token: {said}"),
            ))
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let pw = s.password.clone().ok_or_else(|| missing("sasl.password"))?;
            let hash = if m == Mechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let nonce = Scram::random_nonce().map_err(|why| auth_error(conn, m, why))?;
            let mut scram = Scram::new(hash, &s.username, pw, nonce);
            let (server_first, _) = step(conn, m, scram.client_first()).await?;
            let last = scram
                .client_final(&server_first)
                .map_err(|why| auth_error(conn, m, why))?;
            let (server_final, lifetime) = step(conn, m, last).await?;
            scram
                .verify_final(&server_final)
                .map_err(|why| auth_error(conn, m, why))?;
            Ok(lifetime)
        }
    }
}

/// One SaslAuthenticate round: the broker's bytes and the session lifetime it gave.
async fn step(
    conn: &mut Conn,
    m: Mechanism,
    bytes: Vec<u8>,
) -> Result<(bytes::Bytes, Option<Duration>), KafkaError> {
    let mut req = SaslAuthenticateRequest::default();
    req.auth_bytes = bytes.into();
    let v = conn.version::<SaslAuthenticateRequest>()?;
    let resp = conn.exchange(&req, v, Duration::ZERO).await?;
    if resp.error_code != 0 {
        let msg = resp
            .error_message
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("error code {}", resp.error_code));
        let why = if resp.error_code == 58 {
            format!("wrong user name or password, or not allowed ({msg})")
        } else {
            msg
        };
        return Err(auth_error(conn, m, why));
    }
    let lifetime = u64::try_from(resp.session_lifetime_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    Ok((resp.auth_bytes, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's exchange for SCRAM-SHA-256.
    #[test]
    fn scram_sha256_matches_rfc_7677() {
        let mut s = Scram::new(
            ScramHash::Sha256,
            "user",
            Secret::parse("pencil").unwrap(),
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(s.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = s.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        let e = s
            .verify_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(e.contains("does not know the password"), "{e}");
    }

    #[test]
    fn scram_refuses_what_a_hostile_server_sends() {
        let mut s = Scram::new(
            ScramHash::Sha512,
            "a=b,c",
            Secret::parse("pw").unwrap(),
            "abc".into(),
        );
        assert_eq!(s.client_first(), b"n,,n=a=3Db=2Cc,r=abc");
        for (server, needle) in [
            (&b"r=xyz,s=AAAA,i=4096"[..], "does not extend"),
            (b"r=abc,s=AAAA,i=4096", "does not extend"),
            (b"r=abcd,s=!!,i=4096", "salt"),
            (b"r=abcd,s=AAAA,i=10", "iterations"),
            (b"r=abcd,s=AAAA,i=99999999999", "iteration"),
            (b"e=unknown-user", "refused"),
            (b"\xff", "UTF-8"),
        ] {
            let e = s.client_final(server).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        assert!(s.verify_final(b"v=AAAA").is_err(), "no proof was computed");
    }

    #[test]
    fn plain_and_oauthbearer_messages() {
        let pw = Secret::parse("pw").unwrap();
        assert_eq!(plain_message("u", &pw), b"\0u\0pw");
        let t = Secret::parse("tok").unwrap();
        assert_eq!(oauthbearer_message(&t), b"n,,\x01auth=Bearer tok\x01\x01");
        assert_eq!(
            Mechanism::parse("scram-sha-512"),
            Some(Mechanism::ScramSha512)
        );
        assert_eq!(Mechanism::parse("GSSAPI"), None);
    }
}
