//! A small HTTP/1.1 server for `/metrics`, `/health`, `/ready` and `/status`, and the progress
//! line, both run as tasks on the io core's runtime. GET and HEAD only, one request per
//! connection, bounded request size and read time: enough for Prometheus and Kubernetes probes
//! without a web framework.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::expose;
use super::group::GroupLive;
use super::live::Live;

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server shows: one run's pipeline, or a group member with the pipeline of its current
/// generation (none while it rebalances).
#[derive(Debug, Clone)]
pub enum Served {
    Run(Arc<Live>),
    Group(Arc<GroupLive>),
}

/// The response to `method path` for one run: status line, content type, body.
pub fn respond(live: &Live, method: &str, path: &str) -> (&'static str, &'static str, String) {
    answer(
        method,
        path,
        || expose::prometheus(live),
        || live.ready(),
        || expose::status(live),
    )
}

/// [`respond`] for a group member: the pipeline's view (if one runs) and the group's.
pub fn respond_group(
    g: &GroupLive,
    method: &str,
    path: &str,
) -> (&'static str, &'static str, String) {
    let live = g.current();
    answer(
        method,
        path,
        || {
            let mut out = live.as_deref().map(expose::prometheus).unwrap_or_default();
            g.prometheus(&mut out);
            out
        },
        || match &live {
            Some(l) => l.ready(),
            None => Err("rebalancing: no partitions held yet".into()),
        },
        || {
            let mut v = live
                .as_deref()
                .map(expose::status)
                .unwrap_or_else(|| serde_json::json!({}));
            v["group"] = g.status();
            v
        },
    )
}

fn answer(
    method: &str,
    path: &str,
    metrics: impl FnOnce() -> String,
    ready: impl FnOnce() -> Result<(), String>,
    status: impl FnOnce() -> serde_json::Value,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET or HEAD only\n".into());
    }
    match path.split('?').next().unwrap_or(path) {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        "/health" => ("200 OK", TEXT, "ok\n".into()),
        "/ready" => match ready() {
            Ok(()) => ("200 OK", TEXT, "ready\n".into()),
            Err(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        "/status" => {
            let mut body = serde_json::to_string_pretty(&status())
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            body.push('\n');
            ("200 OK", "application/json", body)
        }
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /health, /ready or /status\n".into(),
        ),
    }
}

async fn handle(mut stream: TcpStream, served: Served) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(end));
            }
            if buf.len() > MAX_REQUEST {
                return Ok(None);
            }
        }
    })
    .await;
    let Ok(Ok(Some(end))) = head else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let (status, kind, body) = match &served {
        Served::Run(live) => respond(live, method, path),
        Served::Group(g) => respond_group(g, method, path),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// Serves until the runtime it runs on shuts down. `listener` was bound (and its address
/// logged) before the run started, so a taken port fails the run at once.
pub async fn serve(listener: std::net::TcpListener, served: Served) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "http: cannot serve on the bound socket");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let served = served.clone();
                crate::runtime::detach(async move {
                    if let Err(e) = handle(stream, served).await {
                        tracing::debug!(error = %e, "http: connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The progress line: on a terminal a status line redrawn every second, otherwise an `info` log
/// line every `every`.
pub async fn progress(live: Arc<Live>, every: Duration) {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_secs(1)
    } else {
        every
    };
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    let mut before = expose::totals(&live);
    let mut at = std::time::Instant::now();
    loop {
        ticker.tick().await;
        let now = expose::totals(&live);
        let line = expose::progress_line(now, before, at.elapsed().as_secs_f64(), super::now_ms());
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            tracing::info!("progress {line}");
        }
        (before, at) = (now, std::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_member_between_generations_is_healthy_not_ready_and_names_its_group() {
        let g = GroupLive::new("sink", None);
        let get = |path| respond_group(&g, "GET", path);
        assert_eq!(get("/health").0, "200 OK");
        let (status, _, body) = get("/ready");
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains("rebalancing"), "{body}");
        let (_, _, body) = get("/metrics");
        assert!(
            body.contains("icefall_group_generation{group=\"sink\"} -1"),
            "{body}"
        );
        assert!(
            !body.contains("icefall_records_total"),
            "no pipeline, no pipeline metrics"
        );
        let (_, _, body) = get("/status");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["group"]["group"], "sink");
        assert_eq!(
            respond_group(&g, "POST", "/ready").0,
            "405 Method Not Allowed"
        );
    }
}
