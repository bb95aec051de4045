//! Webhooks: room and participant events POSTed as JSON to the configured URLs, signed with an
//! API secret, retried with backoff, and never in the media path's way.
//!
//! The worker hands events to a bounded queue with `try_send` (a full queue drops and counts the
//! event). One delivery task per URL sends them in order, so a receiver sees each room's events
//! in the order they happened; a receiver that is down delays only its own deliveries.
//!
//! Signature: header `Tern-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with the secret of the key named in `Tern-Key-Id`.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_signaling::protocol::{LeaveReason, TrackKind, TrackSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RoomStarted,
    RoomFinished,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventParticipant {
    pub id: String,
    pub identity: String,
    pub name: String,
    /// How it came: `websocket` or `whip`.
    pub via: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventTrack {
    pub id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub codec: String,
}

/// One event as receivers get it (the JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unique per event: receivers de-duplicate retried deliveries with it.
    pub id: String,
    pub event: EventKind,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<EventParticipant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<EventTrack>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<LeaveReason>,
}

impl Event {
    /// An event that happened at `at`.
    pub fn new(event: EventKind, room: &str, at: SystemTime) -> Self {
        let now = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        Event {
            id: format!("EV_{:016x}", rand::random::<u64>()),
            event,
            created_at_ms: now.as_millis() as u64,
            room: room.to_owned(),
            participant: None,
            track: None,
            reason: None,
        }
    }
}

/// Where events go: one queue per URL, fed without ever waiting.
#[derive(Clone, Default)]
pub struct Webhooks {
    queues: Vec<mpsc::Sender<Arc<Event>>>,
    metrics: Option<Arc<WebhookMetrics>>,
}

impl Webhooks {
    /// Hands an event to every URL's queue; a full queue drops it (counted).
    pub fn emit(&self, event: Event) {
        if self.queues.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for queue in &self.queues {
            if queue.try_send(event.clone()).is_err()
                && let Some(metrics) = &self.metrics
            {
                metrics.dropped.inc();
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.queues.is_empty()
    }
}

pub struct WebhookMetrics {
    pub delivered: IntCounter,
    pub retried: IntCounter,
    pub failed: IntCounter,
    pub dropped: IntCounter,
}

impl WebhookMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let vec = IntCounterVec::new(
            Opts::new(
                "tern_webhook_deliveries_total",
                "Webhook delivery attempts by outcome: delivered (2xx), retried (an attempt \
                 failed, another follows), failed (every attempt failed), dropped (queue full).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(vec.clone()))?;
        Ok(WebhookMetrics {
            delivered: vec.with_label_values(&["delivered"]),
            retried: vec.with_label_values(&["retried"]),
            failed: vec.with_label_values(&["failed"]),
            dropped: vec.with_label_values(&["dropped"]),
        })
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub urls: Vec<String>,
    pub key_id: String,
    pub secret: Vec<u8>,
    /// Events waiting per URL before new ones are dropped.
    pub queue: usize,
    pub attempts: u32,
    pub timeout: Duration,
    /// First retry delay; doubles up to [`MAX_BACKOFF`].
    pub backoff: Duration,
}

const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Responses are read only as far as the status line; this bounds what a receiver can make the
/// relay read.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Starts one delivery task per URL.
pub fn start(settings: WebhookSettings, metrics: Arc<WebhookMetrics>) -> Webhooks {
    let settings = Arc::new(settings);
    let mut queues = Vec::new();
    for url in settings.urls.clone() {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        queues.push(tx);
        tokio::spawn(deliver_all(url, rx, settings.clone(), metrics.clone()));
    }
    Webhooks {
        queues,
        metrics: Some(metrics),
    }
}

async fn deliver_all(
    url: String,
    mut events: mpsc::Receiver<Arc<Event>>,
    settings: Arc<WebhookSettings>,
    metrics: Arc<WebhookMetrics>,
) {
    let Ok(target) = Target::parse(&url) else {
        warn!(%url, "webhook URL not usable; its events are dropped");
        while events.recv().await.is_some() {
            metrics.failed.inc();
        }
        return;
    };
    let tls = target.tls.then(tls_connector);
    while let Some(event) = events.recv().await {
        let body = match serde_json::to_vec(&*event) {
            Ok(body) => body,
            Err(_) => continue,
        };
        let mut backoff = settings.backoff;
        let mut delivered = false;
        for attempt in 1..=settings.attempts.max(1) {
            match tokio::time::timeout(
                settings.timeout,
                post(&target, tls.as_ref(), &body, &settings),
            )
            .await
            {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    delivered = true;
                    break;
                }
                Ok(Ok(status)) => debug!(%url, status, attempt, "webhook refused"),
                Ok(Err(err)) => debug!(%url, attempt, "webhook failed: {err}"),
                Err(_) => debug!(%url, attempt, "webhook timed out"),
            }
            if attempt < settings.attempts {
                metrics.retried.inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        if delivered {
            metrics.delivered.inc();
        } else {
            metrics.failed.inc();
            warn!(%url, event = ?event.event, room = %event.room, "webhook not delivered");
        }
    }
}

/// `Tern-Signature` for a body sent at `t` (seconds since the Unix epoch).
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = t.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

#[derive(Debug, Clone)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("not http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse().map_err(|_| "bad port".to_string())?;
                (host, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Target {
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = tokio_rustls::rustls::RootCertStore::from_iter(
        webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
    );
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One POST; returns the response status.
async fn post(
    target: &Target,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: &[u8],
    settings: &WebhookSettings,
) -> std::io::Result<u16> {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let host_header = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nTern-Key-Id: {}\r\nTern-Signature: {}\r\n\
         User-Agent: tern/{}\r\nConnection: close\r\n\r\n",
        target.path,
        body.len(),
        settings.key_id,
        signature(&settings.secret, t, body),
        env!("CARGO_PKG_VERSION"),
    );
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    match tls {
        None => exchange(tcp, head.as_bytes(), body).await,
        Some(connector) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = connector.connect(name, tcp).await?;
            exchange(stream, head.as_bytes(), body).await
        }
    }
}

async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut stream: S,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<u16> {
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    while !response.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || response.len() > MAX_RESPONSE_HEAD {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let status_line = String::from_utf8_lossy(&response);
    status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("https://hooks.example/tern/events?x=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example", 443, "/tern/events?x=1")
        );
        let t = Target::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 9000, "/"));
        let t = Target::parse("http://[::1]:9000/h").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://:80/").is_err());
    }

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // Reference value from openssl:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
