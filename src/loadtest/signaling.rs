//! One participant's signaling: a WebSocket task on the async runtime that joins, passes SDP to
//! and from the participant's driver thread, pings, and leaves when the run ends. Media never
//! passes through here.

use super::driver::{Command, DriverHandle, Join};
use super::net;
use super::scenario::ParticipantSpec;
use super::shared::Shared;
use super::token::TokenSource;
use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tern_signaling::auth::Grants;
use tern_signaling::protocol::{ClientMessage, ServerMessage};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message};

/// PROTOCOL.md §5: a session silent for 30 s counts as dropped.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Kernel buffers of each peer's socket: bursts (a keyframe to many subscribers) must not
/// overflow them while the driver thread is busy with other peers.
const SOCKET_BUFFER_BYTES: usize = 1 << 20;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub struct Context {
    /// `host:port` of the relay's HTTP listener.
    pub authority: String,
    /// Join with `e2ee=1`.
    pub e2ee: bool,
    /// Local addresses participants are spread over, round-robin (empty: the system's choice).
    pub local_ips: Vec<IpAddr>,
    pub tokens: TokenSource,
    pub shared: Arc<Shared>,
}

/// Runs one participant's session until `stop` turns true (then it leaves) or the relay ends it.
pub async fn participant(
    spec: ParticipantSpec,
    ctx: Arc<Context>,
    driver: DriverHandle,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(err) = session(spec, &ctx, &driver, &mut stop).await
        && !*stop.borrow()
    {
        ctx.shared.failed.fetch_add(1, Relaxed);
        ctx.shared.error(format!("{err:#}"));
    }
}

async fn session(
    spec: ParticipantSpec,
    ctx: &Context,
    driver: &DriverHandle,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let grants = if spec.is_subscriber() {
        Grants {
            subscribe: true,
            ..Grants::default()
        }
    } else {
        Grants::participant()
    };
    let ws = connect(ctx, &spec, grants, stop).await?;
    let ws_open = Instant::now();
    // Media leaves from the address signaling reached the relay from: the route the relay sees.
    let local_ip = ws.get_ref().local_addr()?.ip();
    let (mut tx, mut rx) = ws.split();
    let (outgoing, mut to_send) = mpsc::unbounded_channel();
    let mut outgoing = Some(outgoing);
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            frame = rx.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => bail!("the relay closed the WebSocket"),
                    Some(Err(err)) => bail!("WebSocket: {err}"),
                    Some(Ok(_)) => continue,
                };
                let message: ServerMessage = serde_json::from_str(&text)
                    .context("the relay sent a message this client cannot decode")?;
                match message {
                    ServerMessage::Joined { .. } => {
                        let Some(outgoing) = outgoing.take() else {
                            continue; // a resume would say joined again; this client never resumes
                        };
                        ctx.shared.joined.fetch_add(1, Relaxed);
                        let publish_socket = match spec.publisher {
                            Some(_) => Some(bind(local_ip)?),
                            None => None,
                        };
                        driver.send(Command::Join(Box::new(Join {
                            spec: spec.clone(),
                            ws_open,
                            publish_socket,
                            outgoing,
                        })));
                    }
                    ServerMessage::SubscribeOffer { sdp, new_connection, .. } => {
                        let socket = if new_connection { Some(bind(local_ip)?) } else { None };
                        driver.send(Command::SubscribeOffer { index: spec.index, sdp, socket });
                    }
                    ServerMessage::PublishAnswer { sdp, .. } => {
                        driver.send(Command::PublishAnswer { index: spec.index, sdp });
                    }
                    ServerMessage::Error { code, .. } => {
                        ctx.shared.error(format!("relay error: {}", code.as_str()));
                    }
                    ServerMessage::Closed { reason } => {
                        bail!("closed by the relay: {}", serde_json::to_string(&reason)?.trim_matches('"'))
                    }
                    _ => {}
                }
            }
            Some(message) = to_send.recv() => {
                tx.send(Message::Text(serde_json::to_string(&message)?.into())).await?;
            }
            _ = keepalive.tick() => {
                let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
                tx.send(Message::Text(serde_json::to_string(&ClientMessage::Ping { timestamp })?.into())).await?;
            }
            _ = stop.changed() => {
                let leave = serde_json::to_string(&ClientMessage::Leave {})?;
                let _ = tx.send(Message::Text(leave.into())).await;
                // Wait briefly for the relay's `closed`, so it counts a clean leave.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(frame)) = rx.next().await {
                        if matches!(frame, Message::Close(_)) {
                            break;
                        }
                    }
                }).await;
                return Ok(());
            }
        }
    }
}

/// Opens the WebSocket. A relay refusing with 429 (`too_many_joins`: its per-address join
/// limit) is waited out as `Retry-After` says, so a large run still gets everybody in.
async fn connect(
    ctx: &Context,
    spec: &ParticipantSpec,
    grants: Grants,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Ws> {
    let local = match ctx.local_ips.len() {
        0 => None,
        n => Some(ctx.local_ips[spec.index % n]),
    };
    loop {
        let token = ctx
            .tokens
            .token(&spec.room, &spec.identity, grants, local)
            .await?;
        let e2ee = if ctx.e2ee { "&e2ee=1" } else { "" };
        let url = format!("ws://{}/rtc?access_token={token}{e2ee}", ctx.authority);
        let stream = net::connect(&ctx.authority, local)
            .await
            .context("cannot reach the relay")?;
        let response = match tokio_tungstenite::client_async(url.as_str(), stream).await {
            Ok((ws, _)) => return Ok(ws),
            Err(tungstenite::Error::Http(response)) => response,
            Err(tungstenite::Error::Io(err)) => {
                bail!("WebSocket handshake: {err}{}", net::closed_hint(&err))
            }
            Err(err) => bail!("WebSocket handshake: {err}"),
        };
        let status = response.status().as_u16();
        let code = response
            .body()
            .as_deref()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if status != 429 {
            bail!("join refused: HTTP {status} {code}");
        }
        ctx.shared.error(
            "join refused with 429 too_many_joins and retried (raise the relay's \
             http.max_joins_per_ip_per_minute for load tests)",
        );
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1u64)
            .clamp(1, 60);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = stop.changed() => bail!("stopped while waiting to join"),
        }
    }
}

/// A UDP socket for one peer connection (the relay tells legs apart by 4-tuple), with large
/// buffers, handed to the driver thread as a plain non-blocking socket.
fn bind(ip: IpAddr) -> anyhow::Result<UdpSocket> {
    crate::node::socket::bind_std_media_socket(SocketAddr::new(ip, 0), SOCKET_BUFFER_BYTES)
        .context("cannot bind a media socket")
}
