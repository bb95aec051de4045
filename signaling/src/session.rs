//! One participant's WebSocket connection: a pump between the socket and [`RoomControl`].
//!
//! The pump is written over a generic sink and stream so that the hostile-input rules (size limit,
//! decode errors, idle timeout) are the same whatever carries the frames. It owns no room state:
//! everything but `ping` goes to the relay, and everything the relay says comes back as events.

use crate::control::{Disconnect, JoinRefusal, JoinRequest, RoomControl, SessionEvent};
use crate::limits::{Limit, TokenBucket};
use crate::metrics::SignalingMetrics;
use crate::protocol::{
    ClientMessage, ErrorCode, LeaveReason, ServerMessage, bounded_error_text, decode_client_message,
};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Largest client text message accepted, in bytes; a larger one closes the connection.
    pub max_message_bytes: usize,
    /// A connection that sends nothing (not even `ping`) for this long is treated as dropped.
    pub idle_timeout: Duration,
    /// Messages per second one connection may send, sustained; bursts of the same number. Every
    /// frame counts (text, binary, ping, pong). Frames over it are dropped with `rate_limited`;
    /// after a ping over it the connection is not read for the time one token takes to refill.
    pub max_messages_per_s: u32,
    /// A write to the client (one message, or the close) must finish within this; a client that
    /// stops reading is dropped then, so it holds no task or socket buffer for long.
    pub write_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_message_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(30),
            max_messages_per_s: 50,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// WebSocket close code 1008 "policy violation" (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code 1009 "message too big".
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_NORMAL: u16 = 1000;

/// Runs one connection to its end: joins, pumps, and reports the disconnect.
pub async fn run<C, S, R>(
    control: C,
    request: JoinRequest,
    limits: SessionLimits,
    metrics: Arc<SignalingMetrics>,
    mut sink: S,
    mut stream: R,
) where
    C: RoomControl,
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let admission = match control.join(request).await {
        Ok(admission) => admission,
        Err(refusal) => {
            refuse(&mut sink, &metrics, limits.write_timeout, refusal).await;
            return;
        }
    };
    metrics.connections.inc();
    metrics.connections_total.inc();
    let session = admission.session;
    // Same spelling as the participant id on the wire.
    tracing::Span::current().record(
        "participant",
        tracing::field::display(format_args!("PA_{:x}", session.participant)),
    );
    debug!("signaling session open");
    let mut events = admission.events;
    let mut pump = Pump::new(sink, &metrics, limits.write_timeout);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut rate = TokenBucket::new(
        limits.max_messages_per_s,
        limits.max_messages_per_s,
        std::time::Instant::now(),
    );
    // One `rate_limited` reply per second at most: the replies must not become the flood.
    let mut last_rate_reply: Option<std::time::Instant> = None;
    // The time the bucket takes to refill one token.
    let token_interval = Duration::from_secs(1) / limits.max_messages_per_s.max(1);
    // While false the client's frames are left unread, until `resume_reading` (a ping flood).
    let mut reading = true;
    let resume_reading = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(resume_reading);

    let how = loop {
        tokio::select! {
            frame = stream.next(), if reading => {
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                let frame = match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break Disconnect::Dropped,
                    Some(Ok(frame)) => frame,
                };
                if let Message::Text(text) = &frame
                    && text.len() > limits.max_message_bytes
                {
                    let message = format!(
                        "message of {} bytes exceeds the limit of {} bytes",
                        text.len(),
                        limits.max_message_bytes
                    );
                    metrics.limits.breached(Limit::MessageSize);
                    pump.error(ErrorCode::MessageTooLarge, &message).await;
                    pump.close(CLOSE_TOO_BIG, "message too big").await;
                    break Disconnect::ProtocolViolation;
                }
                // Every frame spends the budget, not only the JSON messages: pings, pongs and
                // binary frames cost the relay as much to read, and a ping costs a pong too.
                let now = std::time::Instant::now();
                if !rate.take(now) {
                    metrics.limits.breached(Limit::MessageRate);
                    if let Message::Ping(_) = frame {
                        // The WebSocket layer answers each ping as it reads it, before it gets
                        // here, so its pong cannot be withheld; only reading can be held back.
                        // Over the limit, nothing more is read until the bucket has refilled:
                        // the rest of the flood waits unread and the pongs stay near the limit
                        // (unlimited, 37,500 pings/s cost 19 % of a core).
                        reading = false;
                        resume_reading.as_mut().reset(tokio::time::Instant::now() + token_interval);
                    }
                    if last_rate_reply.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
                        last_rate_reply = Some(now);
                        let message = format!(
                            "more than {} messages per second; messages are being dropped",
                            limits.max_messages_per_s
                        );
                        if !pump.error(ErrorCode::RateLimited, &message).await {
                            break Disconnect::Dropped;
                        }
                    }
                    continue;
                }
                let text = match frame {
                    Message::Text(text) => text,
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
                    Message::Binary(_) => {
                        if !pump.error(ErrorCode::MalformedMessage, "binary frames are not part of the protocol").await {
                            break Disconnect::Dropped;
                        }
                        continue;
                    }
                };
                match decode_client_message(&text) {
                    Err(err) => {
                        if !pump.error(err.code, &err.message).await {
                            break Disconnect::Dropped;
                        }
                    }
                    Ok(ClientMessage::Ping { timestamp }) => {
                        pump.metrics.message(crate::protocol::ClientMessageKind::Ping);
                        if !pump.send(&ServerMessage::Pong { timestamp }).await {
                            break Disconnect::Dropped;
                        }
                    }
                    Ok(message) => {
                        pump.metrics.message(message.kind());
                        control.message(session, message).await;
                    }
                }
            }
            () = &mut resume_reading, if !reading => reading = true,
            event = events.recv() => match event {
                Some(SessionEvent::Message(mut message)) => {
                    if let ServerMessage::Error { code, message: text, .. } = &mut message {
                        pump.metrics.error(*code);
                        // The relay's texts may quote what the client sent (an SDP line, a
                        // candidate); bounded here, where every error of the relay leaves.
                        *text = bounded_error_text(std::mem::take(text));
                    }
                    if !pump.send(&message).await {
                        break Disconnect::Dropped;
                    }
                }
                Some(SessionEvent::Close(reason)) => {
                    pump.send(&ServerMessage::Closed { reason }).await;
                    pump.close(CLOSE_NORMAL, close_text(reason)).await;
                    break Disconnect::Dropped;
                }
                None => {
                    // The relay let go of this connection (it could not keep up, or it was
                    // replaced without a reason): end it so the client reconnects.
                    pump.close(CLOSE_POLICY, "session ended by relay").await;
                    break Disconnect::Dropped;
                }
            },
            _ = &mut idle => {
                info!(participant = session.participant, "signaling idle timeout");
                metrics.limits.breached(Limit::IdleSession);
                pump.close(CLOSE_POLICY, "idle timeout").await;
                break Disconnect::Dropped;
            }
        }
    };
    // A client that stopped reading. If the worker let go of it first (its event queue was
    // full), the worker counted it already.
    if pump.timed_out && !events.is_closed() {
        metrics.limits.breached(Limit::SlowSession);
    }
    metrics.connections.dec();
    debug!(
        participant = session.participant,
        ?how,
        "signaling connection ended"
    );
    control.disconnected(session, how).await;
}

fn close_text(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Left => "left",
        LeaveReason::Timeout => "timeout",
        LeaveReason::TransportFailed => "transport failed",
        LeaveReason::Replaced => "replaced by a newer connection",
        LeaveReason::SlowConsumer => "too slow",
        LeaveReason::Shutdown => "relay shutting down",
        LeaveReason::Removed => "removed by an operator",
        LeaveReason::RoomDeleted => "room deleted",
    }
}

async fn refuse<S: Sink<Message> + Unpin>(
    sink: &mut S,
    metrics: &SignalingMetrics,
    write_timeout: Duration,
    refusal: JoinRefusal,
) {
    let text = match refusal {
        JoinRefusal::ResumeFailed => "session cannot be resumed; join again without resume_token",
        JoinRefusal::RoomFull => "the room is full",
        JoinRefusal::TooManyRooms => "the relay holds its maximum number of rooms; try another",
        JoinRefusal::Unavailable => "the relay takes no joins right now; retry later",
        JoinRefusal::Overloaded => {
            "the relay's media worker for this room is at its load limit; retry in a few seconds or use another node"
        }
        JoinRefusal::E2eeRequired => {
            "this room is end-to-end encrypted only; join with e2ee=1 from a client that encrypts"
        }
    };
    let mut pump = Pump::new(sink, metrics, write_timeout);
    pump.error(refusal.code(), text).await;
    pump.close(CLOSE_POLICY, refusal.code().as_str()).await;
}

struct Pump<'m, S> {
    sink: S,
    metrics: &'m SignalingMetrics,
    write_timeout: Duration,
    /// A write failed or timed out: the socket is given up, nothing more is written to it.
    broken: bool,
    /// A write did not finish within `write_timeout`: the client stopped reading.
    timed_out: bool,
}

impl<'m, S: Sink<Message> + Unpin> Pump<'m, S> {
    fn new(sink: S, metrics: &'m SignalingMetrics, write_timeout: Duration) -> Self {
        Pump {
            sink,
            metrics,
            write_timeout,
            broken: false,
            timed_out: false,
        }
    }

    /// Returns false once the socket is given up: gone, or not taking the message within the
    /// write timeout.
    async fn send(&mut self, message: &ServerMessage) -> bool {
        let text = match serde_json::to_string(message) {
            Ok(text) => text,
            Err(err) => {
                warn!("cannot encode server message: {err}");
                return true;
            }
        };
        self.write(Message::Text(Utf8Bytes::from(text))).await
    }

    async fn write(&mut self, message: Message) -> bool {
        if self.broken {
            return false;
        }
        match tokio::time::timeout(self.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => return true,
            Ok(Err(_)) => {}
            Err(_) => {
                warn!("client stopped reading its signaling messages; dropping the connection");
                self.timed_out = true;
            }
        }
        self.broken = true;
        false
    }

    /// Sends an error reply; false as `send`.
    async fn error(&mut self, code: ErrorCode, message: &str) -> bool {
        self.metrics.error(code);
        self.send(&ServerMessage::error(code, message)).await
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        if self.write(Message::Close(Some(frame))).await {
            let _ = tokio::time::timeout(self.write_timeout, self.sink.close()).await;
        }
    }
}
