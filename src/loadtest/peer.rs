//! One peer connection of a generated participant, with the UDP socket it owns (the relay
//! tells legs apart by 4-tuple, so every leg has a socket of its own).

use super::shared::Counters;
use crate::node::engine::host_candidate;
use crate::node::pair::{ClientSettings, client_peer_connection_with};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::sansio::Protocol;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegKind {
    Publish,
    Subscribe,
}

pub struct Peer {
    pub pc: RTCPeerConnection,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    /// Slot of its participant in the driver.
    pub participant: usize,
    pub kind: LegKind,
    /// The deadline queued for this peer in the timer heap, if any.
    pub armed: Option<Instant>,
}

impl Peer {
    pub fn new(
        socket: UdpSocket,
        participant: usize,
        kind: LegKind,
        now: Instant,
    ) -> anyhow::Result<Peer> {
        let local = socket.local_addr()?;
        let video: &[&str] = &["video/VP8"];
        let mut pc = client_peer_connection_with(
            now,
            &ClientSettings {
                video_mime_types: Some(video),
                ..ClientSettings::default()
            },
        )?;
        pc.add_local_candidate(host_candidate(local)?)?;
        Ok(Peer {
            pc,
            socket,
            local,
            participant,
            kind,
            armed: None,
        })
    }
}

/// The relay's offer applied and answered on the subscribe leg.
pub fn answer(
    pc: &mut RTCPeerConnection,
    sdp: String,
    now: Instant,
) -> Result<String, rtc::shared::error::Error> {
    let offer = RTCSessionDescription::offer(sdp)?;
    pc.set_remote_description(now, offer)?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer.clone())?;
    Ok(answer.sdp)
}

/// Sends every datagram the peer connection has queued.
pub fn flush(peer: &mut Peer, counters: &Counters) {
    while let Some(out) = peer.pc.poll_write() {
        if let Err(err) = peer.socket.send_to(&out.message, out.transport.peer_addr)
            && err.kind() == io::ErrorKind::WouldBlock
        {
            Counters::add(&counters.send_dropped, 1);
        }
    }
}
