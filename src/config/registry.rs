//! How to reach the schema registry (`--schema-registry URL` and, among the Kafka options, the
//! names Confluent's serializers take: `schema.registry.ssl.*`, `basic.auth.credentials.source`,
//! `basic.auth.user.info`): validated into a [`Registry`] whose URL carries no credentials.

use super::ConfigError;
use super::kafka::{Opts, error, parse, tls_config};
use crate::decode::registry::{BasicAuth, Registry};
use crate::secret::{Secret, url_shown};

const FLAG: &str = "--schema-registry";

/// The registry of `url` (`None` without `--schema-registry`); the registry keys are refused
/// when there is no registry, and the `ssl.*` ones when it is not https.
pub fn registry(options: &[String], url: Option<&str>) -> Result<Option<Registry>, ConfigError> {
    let opts = parse(options)?;
    let keys: Vec<&str> = opts
        .keys()
        .filter(|k| k.starts_with("schema.registry.") || k.starts_with("basic.auth."))
        .collect();
    let Some(raw) = url else {
        return match keys.first() {
            Some(k) => Err(error(k, "is set, but --schema-registry is not")),
            None => Ok(None),
        };
    };
    let bad = |reason: String| ConfigError::invalid(FLAG, url_shown(raw), reason);
    let mut parsed = url::Url::parse(raw).map_err(|e| bad(format!("not a URL: {e}")))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("expected an http:// or https:// URL".into())),
    };
    if let Some(k) = keys.iter().find(|k| k.starts_with("schema.registry.ssl."))
        && !https
    {
        return Err(error(k, format!("is set, but {FLAG} is http, not https")));
    }
    let from_url = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, password) => Some(BasicAuth {
            user: percent(user),
            password: Secret::new(percent(password.unwrap_or_default())),
        }),
    };
    // Credentials never travel in the URL itself: reqwest would show them in its errors.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let basic = basic_auth(&opts, from_url)?;
    let tls = if https {
        Some(tls_config(&opts, "schema.registry.")?)
    } else {
        None
    };
    Ok(Some(Registry {
        url: parsed.as_str().trim_end_matches('/').to_string(),
        basic,
        tls,
    }))
}

/// Basic auth as `basic.auth.credentials.source` says: `USER_INFO` (`basic.auth.user.info`,
/// `USER:PASSWORD`) or `URL` (`https://USER:PASSWORD@host`); unset, whichever is given.
fn basic_auth(
    opts: &Opts<'_>,
    from_url: Option<BasicAuth>,
) -> Result<Option<BasicAuth>, ConfigError> {
    const SOURCE: &str = "basic.auth.credentials.source";
    const INFO: &str = "basic.auth.user.info";
    let info = opts
        .secret(INFO)?
        .map(|s| match s.expose().split_once(':') {
            Some((user, password)) => Ok(BasicAuth {
                user: user.to_string(),
                password: Secret::new(password.to_string()),
            }),
            None => Err(error(
                INFO,
                "expected USER:PASSWORD (the API key and secret)",
            )),
        })
        .transpose()?;
    match opts.get(SOURCE).map(str::to_ascii_uppercase).as_deref() {
        None if info.is_some() && from_url.is_some() => Err(error(
            INFO,
            "is set, and so are credentials in --schema-registry: give one",
        )),
        None => Ok(info.or(from_url)),
        Some("USER_INFO") => info.map(Some).ok_or_else(|| {
            error(
                INFO,
                "is required with basic.auth.credentials.source USER_INFO",
            )
        }),
        Some("URL") => from_url.map(Some).ok_or_else(|| {
            error(
                SOURCE,
                "is URL, but --schema-registry carries no USER:PASSWORD@",
            )
        }),
        Some(other) => Err(error(
            SOURCE,
            format!("{other:?}: expected USER_INFO or URL"),
        )),
    }
}

/// A URL's user or password, percent-decoded.
fn percent(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn credentials_come_from_user_info_or_the_url_and_leave_the_url() {
        let r = registry(
            &opts(&["basic.auth.user.info=KEY:se:cret"]),
            Some("https://reg.example/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.url, "https://reg.example");
        let b = r.basic.unwrap();
        assert_eq!((b.user.as_str(), b.password.expose()), ("KEY", "se:cret"));
        assert!(r.tls.is_some());

        let r = registry(
            &opts(&["basic.auth.credentials.source=url"]),
            Some("http://k%40x:p%2Fw@reg.example:8081/base"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.url, "http://reg.example:8081/base");
        let b = r.basic.unwrap();
        assert_eq!((b.user.as_str(), b.password.expose()), ("k@x", "p/w"));
        assert!(r.tls.is_none());
        assert!(!format!("{:?}", registry(&[], Some("http://u:p-Q7@h")).unwrap()).contains("p-Q7"));

        assert!(registry(&[], None).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_key_and_never_the_secret() {
        for (o, url, needle) in [
            (
                &["basic.auth.user.info=u:hunter2"][..],
                None,
                "--schema-registry is not",
            ),
            (
                &["schema.registry.ssl.ca.location=/ca.pem"],
                Some("http://h"),
                "is http, not https",
            ),
            (
                &["basic.auth.user.info=hunter2"],
                Some("https://h"),
                "USER:PASSWORD",
            ),
            (
                &["basic.auth.user.info=u:hunter2"],
                Some("https://a:hunter2@h"),
                "give one",
            ),
            (
                &["basic.auth.credentials.source=URL"],
                Some("https://h"),
                "carries no USER:PASSWORD@",
            ),
            (
                &["basic.auth.credentials.source=USER_INFO"],
                Some("https://a:hunter2@h"),
                "is required",
            ),
            (
                &["basic.auth.credentials.source=SASL_INHERIT"],
                Some("https://h"),
                "expected USER_INFO or URL",
            ),
            (
                &["schema.registry.ssl.ca.location=/nonexistent/ca.pem"],
                Some("https://a:hunter2@h"),
                "schema.registry.ssl.ca.location",
            ),
            (&[], Some("ftp://a:hunter2@h"), "http:// or https://"),
        ] {
            let e = registry(&opts(o), url).unwrap_err().to_string();
            assert!(e.contains(needle), "{o:?} {url:?}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
