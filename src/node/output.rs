//! What the node hands to whatever drives it: datagrams to send, and events for signaling,
//! webhooks and the ICE-TCP connections. The node never sends anything itself.

use crate::webhooks::Event;
use bytes::BytesMut;
use std::net::SocketAddr;
use tern_signaling::control::{SessionEvent, SessionKey};

/// How a transmit leaves the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// The media UDP socket.
    Udp,
    /// The ICE-TCP connection from `to` (RFC 4571 framing is the driver's business).
    Tcp,
}

/// One datagram the node wants sent.
#[derive(Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    pub carrier: Carrier,
    pub bytes: BytesMut,
}

/// Something the node has to say besides packets.
#[derive(Debug)]
pub enum NodeEvent {
    /// Deliver `event` to the signaling session `session`.
    Session {
        session: SessionKey,
        event: SessionEvent,
    },
    /// The node is done with this session: once its queued events are delivered, close it.
    SessionEnded(SessionKey),
    /// A room, participant or track event for the webhook receivers.
    Webhook(Event),
    /// The ICE-TCP connection from this peer presented a valid STUN request: it is a client's.
    TcpMatched(SocketAddr),
    /// The leg this ICE-TCP connection served is gone: close the connection.
    TcpClose(SocketAddr),
}
