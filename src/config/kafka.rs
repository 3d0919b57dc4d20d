//! Kafka client settings by librdkafka's names (`security.protocol`, `ssl.*`, `sasl.*`), as
//! users carry them from kcat `-X`, Vector or Redpanda Connect: validated into the client's
//! [`Security`].
//!
//! They come as `--kafka-option KEY=VALUE` (repeatable), a `[kafka]` table in the config file and
//! `ICEFALL_KAFKA_<KEY>` variables (dots as underscores), layered like every other setting; the
//! last value of a key wins. Secret values (passwords, tokens) may be `@/path` and are never
//! shown: not in an error, nor in `config check` (masked).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::ConfigError;
use crate::kafka::Security;
use crate::kafka::sasl::{Mechanism, SaslSettings, Token};
use crate::kafka::tls::{Tls, TlsFiles};
use crate::secret::Secret;

/// Every key icefall accepts, and whether its value is a secret.
pub const KEYS: &[(&str, bool)] = &[
    ("security.protocol", false),
    ("ssl.ca.location", false),
    ("ssl.certificate.location", false),
    ("ssl.key.location", false),
    ("ssl.key.password", true),
    ("ssl.endpoint.identification.algorithm", false),
    ("sasl.mechanism", false),
    ("sasl.mechanisms", false),
    ("sasl.username", false),
    ("sasl.password", true),
    ("sasl.oauthbearer.token", true),
    ("sasl.oauthbearer.token.file", false),
    ("schema.registry.ssl.ca.location", false),
    ("schema.registry.ssl.certificate.location", false),
    ("schema.registry.ssl.key.location", false),
    ("schema.registry.ssl.key.password", true),
    (
        "schema.registry.ssl.endpoint.identification.algorithm",
        false,
    ),
    ("basic.auth.credentials.source", false),
    ("basic.auth.user.info", true),
    ("schema.registry.basic.auth.user.info", true),
];

/// Whether `key` holds a secret (an unknown key counts as one: its value is never shown).
pub fn is_secret(key: &str) -> bool {
    KEYS.iter().find(|(k, _)| *k == key).is_none_or(|(_, s)| *s)
}

/// The variable that sets `key`: `sasl.password` → `ICEFALL_KAFKA_SASL_PASSWORD`.
pub fn env_name(key: &str) -> String {
    format!("ICEFALL_KAFKA_{}", key.replace('.', "_").to_uppercase())
}

/// The `ICEFALL_KAFKA_*` variables that are set, as `(key, value, variable)`.
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String, String)> {
    KEYS.iter()
        .filter_map(|(k, _)| {
            let var = env_name(k);
            env(&var).map(|v| (k.to_string(), v, var))
        })
        .collect()
}

/// How `config check` shows a value.
pub fn shown(key: &str, value: &str) -> String {
    if is_secret(key) {
        "***".into()
    } else {
        value.into()
    }
}

pub(super) fn error(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Kafka {
        source_name: format!("--kafka-option {key}"),
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// `KEY=VALUE`, the key known.
pub fn split(option: &str) -> Result<(&str, &str), ConfigError> {
    let Some((key, value)) = option.split_once('=') else {
        return Err(ConfigError::Kafka {
            source_name: "--kafka-option".into(),
            key: String::new(),
            reason: "expected KEY=VALUE, e.g. security.protocol=sasl_ssl".into(),
        });
    };
    let key = key.trim();
    if !KEYS.iter().any(|(k, _)| *k == key) {
        let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        return Err(error(
            key,
            format!("unknown key; icefall takes: {}", known.join(", ")),
        ));
    }
    Ok((key, value))
}

/// The options by key, the last value of each (`sasl.mechanisms` read as `sasl.mechanism`,
/// `schema.registry.basic.auth.user.info` as `basic.auth.user.info`), every key known.
pub(super) fn parse(options: &[String]) -> Result<Opts<'_>, ConfigError> {
    let mut map: BTreeMap<&str, &str> = BTreeMap::new();
    for o in options {
        let (k, v) = split(o)?;
        let k = match k {
            "sasl.mechanisms" => "sasl.mechanism",
            "schema.registry.basic.auth.user.info" => "basic.auth.user.info",
            k => k,
        };
        map.insert(k, v);
    }
    Ok(Opts(map))
}

/// The options, validated (files read, the TLS configuration built).
pub fn security(options: &[String]) -> Result<Security, ConfigError> {
    let opts = parse(options)?;
    let get = |k: &str| opts.get(k);
    let protocol = get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase();
    let (tls, sasl) = match protocol.as_str() {
        "plaintext" => (false, false),
        "ssl" => (true, false),
        "sasl_plaintext" => (false, true),
        "sasl_ssl" => (true, true),
        other => {
            return Err(error(
                "security.protocol",
                format!("{other:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl"),
            ));
        }
    };
    for (k, _) in opts.0.iter().filter(|(_, v)| !v.is_empty()) {
        let needs = if k.starts_with("ssl.") && !tls {
            "ssl or sasl_ssl"
        } else if k.starts_with("sasl.") && !sasl {
            "sasl_plaintext or sasl_ssl"
        } else {
            continue;
        };
        return Err(error(
            k,
            format!("is set, but security.protocol is {protocol}: it applies with {needs}"),
        ));
    }
    let tls = if tls {
        Some(tls_config(&opts, "")?)
    } else {
        None
    };
    let sasl = if sasl {
        Some(Arc::new(sasl_settings(&opts)?))
    } else {
        None
    };
    Ok(Security { tls, sasl })
}

/// The TLS configuration from the `{prefix}ssl.*` keys (`""` for the brokers,
/// `schema.registry.` for the registry); errors name the prefixed key.
pub(super) fn tls_config(opts: &Opts<'_>, prefix: &str) -> Result<Tls, ConfigError> {
    let key = |k: &str| format!("{prefix}{k}");
    let algorithm = key("ssl.endpoint.identification.algorithm");
    let verify_hostname = match opts
        .get(&algorithm)
        .unwrap_or("https")
        .to_ascii_lowercase()
        .as_str()
    {
        "https" => true,
        "none" => false,
        other => {
            return Err(error(
                &algorithm,
                format!("{other:?}: expected https (check the server's host name) or none"),
            ));
        }
    };
    let files = TlsFiles {
        ca: opts.get(&key("ssl.ca.location")).map(PathBuf::from),
        cert: opts
            .get(&key("ssl.certificate.location"))
            .map(PathBuf::from),
        key: opts.get(&key("ssl.key.location")).map(PathBuf::from),
        key_password: opts.secret(&key("ssl.key.password"))?,
        verify_hostname,
    };
    Tls::new(&files).map_err(|e| match e {
        crate::kafka::tls::TlsSetupError::File { key: k, path, why } => {
            error(&key(k), format!("{path}: {why}"))
        }
        crate::kafka::tls::TlsSetupError::Setting { key: k, why } => {
            error(&key(k), why.replace("ssl.", &key("ssl.")))
        }
    })
}

/// The options by key, the last value of each.
pub(super) struct Opts<'a>(BTreeMap<&'a str, &'a str>);

impl<'a> Opts<'a> {
    /// A key's value; an empty value is no value.
    pub(super) fn get(&self, k: &str) -> Option<&'a str> {
        self.0.get(k).copied().filter(|v| !v.is_empty())
    }

    /// The keys that have a value.
    pub(super) fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.0
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
    }

    pub(super) fn secret(&self, k: &str) -> Result<Option<Secret>, ConfigError> {
        self.get(k)
            .map(|v| Secret::parse(v).map_err(|why| error(k, why)))
            .transpose()
    }
}

fn sasl_settings(opts: &Opts<'_>) -> Result<SaslSettings, ConfigError> {
    let get = |k: &str| opts.get(k);
    let secret = |k: &str| opts.secret(k);
    let names = "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER";
    let m = get("sasl.mechanism")
        .ok_or_else(|| error("sasl.mechanism", format!("is required with SASL: {names}")))?;
    let mechanism = Mechanism::parse(m)
        .ok_or_else(|| error("sasl.mechanism", format!("{m:?}: expected {names}")))?;
    let username = get("sasl.username").unwrap_or_default().to_string();
    let password = secret("sasl.password")?;
    let token = match (
        secret("sasl.oauthbearer.token")?,
        get("sasl.oauthbearer.token.file"),
    ) {
        (Some(t), _) => Some(Token::Fixed(t)),
        (None, Some(path)) => {
            Secret::from_file(path.as_ref())
                .map_err(|why| error("sasl.oauthbearer.token.file", why))?;
            Some(Token::File(PathBuf::from(path)))
        }
        (None, None) => None,
    };
    match mechanism {
        Mechanism::OAuthBearer if token.is_none() => Err(error(
            "sasl.oauthbearer.token.file",
            "OAUTHBEARER needs a token: sasl.oauthbearer.token.file (re-read at every re-authentication) or sasl.oauthbearer.token",
        )),
        Mechanism::OAuthBearer => Ok(()),
        _ if username.is_empty() => Err(error(
            "sasl.username",
            format!("is required with {}", mechanism.name()),
        )),
        _ if password.is_none() => Err(error(
            "sasl.password",
            format!("is required with {}", mechanism.name()),
        )),
        _ => Ok(()),
    }?;
    Ok(SaslSettings {
        mechanism,
        username,
        password,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plaintext_by_default_and_sasl_when_asked() {
        let s = security(&[]).unwrap();
        assert_eq!(s.protocol(), "plaintext");
        let s = security(&opts(&[
            "security.protocol=SASL_PLAINTEXT",
            "sasl.mechanisms=scram-sha-512",
            "sasl.username=alice",
            "sasl.password=pw",
        ]))
        .unwrap();
        assert_eq!(s.protocol(), "sasl_plaintext");
        let sasl = s.sasl.unwrap();
        assert_eq!(sasl.mechanism, Mechanism::ScramSha512);
        assert_eq!(sasl.password.as_ref().unwrap().expose(), "pw");
        assert!(!format!("{sasl:?}").contains("pw\""));
    }

    #[test]
    fn errors_name_the_key_and_never_a_secret() {
        for (o, needle) in [
            (&["sasl.pasword=hunter2"][..], "unknown key"),
            (&["security.protocol=tls"], "expected plaintext"),
            (&["ssl.ca.location=/x"], "security.protocol is plaintext"),
            (
                &["security.protocol=sasl_ssl", "sasl.password=hunter2"],
                "sasl.mechanism",
            ),
            (
                &[
                    "security.protocol=sasl_plaintext",
                    "sasl.mechanism=GSSAPI",
                    "sasl.password=hunter2",
                ],
                "GSSAPI",
            ),
            (
                &[
                    "security.protocol=sasl_plaintext",
                    "sasl.mechanism=PLAIN",
                    "sasl.password=hunter2",
                ],
                "sasl.username",
            ),
            (
                &[
                    "security.protocol=ssl",
                    "ssl.ca.location=/nonexistent/ca.pem",
                ],
                "/nonexistent/ca.pem",
            ),
            (
                &[
                    "security.protocol=ssl",
                    "ssl.endpoint.identification.algorithm=maybe",
                ],
                "expected https",
            ),
            (
                &[
                    "security.protocol=sasl_plaintext",
                    "sasl.mechanism=PLAIN",
                    "sasl.username=u",
                    "sasl.password=@/nonexistent/pw",
                ],
                "/nonexistent/pw",
            ),
            (&["novalue"], "KEY=VALUE"),
        ] {
            let e = security(&opts(o)).unwrap_err().to_string();
            assert!(e.contains(needle), "{o:?}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn later_values_win_and_secrets_are_masked() {
        let s = security(&opts(&[
            "security.protocol=ssl",
            "security.protocol=plaintext",
        ]))
        .unwrap();
        assert_eq!(s.protocol(), "plaintext");
        assert_eq!(shown("sasl.password", "x"), "***");
        assert_eq!(shown("sasl.username", "alice"), "alice");
        assert_eq!(
            env_name("ssl.key.password"),
            "ICEFALL_KAFKA_SSL_KEY_PASSWORD"
        );
    }
}
