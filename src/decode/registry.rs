//! The Confluent schema registry client (`--schema-registry`): every version of the topic's
//! value subject (`<topic>-value`, the registry's default naming), read once at start-up, over
//! http or https (icefall's rustls configuration, `schema.registry.ssl.*`) with optional basic
//! auth (`basic.auth.user.info`, e.g. Confluent Cloud's API key and secret).
//!
//! A record naming a schema id registered later is rejected as "unknown schema id" (a dead
//! letter, or the run's error): restarting icefall picks the new version up.

use std::time::Duration;

use serde::Deserialize;

use super::avro::AvroSchemas;
use crate::kafka::tls::Tls;
use crate::secret::Secret;

/// How long one registry request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the registry is and how to reach it.
#[derive(Clone)]
pub struct Registry {
    /// The base URL, without credentials: safe to show.
    pub url: String,
    pub basic: Option<BasicAuth>,
    /// For https: the CA, client certificate and host-name check to use.
    pub tls: Option<Tls>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url)
            .field("basic", &self.basic)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// HTTP basic auth: the user (an API key) and its password (the API secret).
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub user: String,
    pub password: Secret,
}

#[derive(Debug, Deserialize)]
struct Version {
    id: u32,
    version: u32,
    schema: String,
}

/// The subject's versions as `(id, schema)`, oldest first, the latest (the reader schema) last.
pub async fn subject_versions(registry: &Registry, topic: &str) -> Result<AvroSchemas, String> {
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(tls) = &registry.tls {
        builder = builder.use_preconfigured_tls((*tls.client_config()).clone());
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", chain(e)))?;
    let base = format!("{}/subjects/{topic}-value/versions", registry.url);
    let get = |v: String| {
        let mut request = client.get(format!("{base}/{v}"));
        if let Some(b) = &registry.basic {
            request = request.basic_auth(&b.user, Some(b.password.expose()));
        }
        let at = format!("{base}/{v}");
        async move {
            let r = request
                .send()
                .await
                .map_err(|e| format!("GET {at}: {}", chain(e)))?;
            let status = r.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let body = r
                .text()
                .await
                .map_err(|e| format!("GET {at}: {}", chain(e)))?;
            if !status.is_success() {
                return Err(format!(
                    "GET {at}: HTTP {status}{}",
                    refusal_hint(status, &body)
                ));
            }
            serde_json::from_str::<Version>(&body)
                .map(Some)
                .map_err(|e| format!("GET {at}: not a registry version: {e}"))
        }
    };
    let latest = get("latest".into())
        .await?
        .ok_or_else(|| format!("subject {topic}-value is not in the registry"))?;
    let mut versions = Vec::new();
    for v in 1..latest.version {
        // Deleted versions answer 404: records written with them are rejected as unknown.
        if let Some(old) = get(v.to_string()).await?
            && old.id != latest.id
        {
            versions.push((old.id, old.schema));
        }
    }
    versions.push((latest.id, latest.schema));
    AvroSchemas::registry(versions)
}

/// What follows the status of a refused request: a hint for 401/403, else the body (bounded).
fn refusal_hint(status: reqwest::StatusCode, body: &str) -> String {
    match status.as_u16() {
        401 => ": the registry wants credentials, or refused them (basic.auth.user.info)".into(),
        403 => ": the credentials may not read this subject".into(),
        _ => {
            let body: String = body.chars().take(200).collect();
            format!(": {body}")
        }
    }
}

/// An error and its causes on one line, without the URL reqwest adds (the caller names it, its
/// credentials taken out).
fn chain(e: reqwest::Error) -> String {
    crate::report::one_line(&e.without_url())
}
