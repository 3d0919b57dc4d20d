//! The Confluent schema registry client (`--schema-registry`): every version of the topic's
//! value subject (`<topic>-value`, the registry's default naming), read once at start-up.
//!
//! A record naming a schema id registered later is rejected as "unknown schema id" (a dead
//! letter, or the run's error): restarting icefall picks the new version up.

use serde::Deserialize;

use super::avro::AvroSchemas;

#[derive(Debug, Deserialize)]
struct Version {
    id: u32,
    version: u32,
    schema: String,
}

/// The subject's versions as `(id, schema)`, oldest first, the latest (the reader schema) last.
pub async fn subject_versions(url: &str, topic: &str) -> Result<AvroSchemas, String> {
    let client = reqwest::Client::new();
    let base = format!(
        "{}/subjects/{topic}-value/versions",
        url.trim_end_matches('/')
    );
    let get = |v: String| {
        let client = client.clone();
        let at = format!("{base}/{v}");
        async move {
            let r = client
                .get(&at)
                .send()
                .await
                .map_err(|e| format!("GET {at}: {e}"))?;
            let status = r.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let body = r.text().await.map_err(|e| format!("GET {at}: {e}"))?;
            if !status.is_success() {
                return Err(format!("GET {at}: HTTP {status}: {body}"));
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
