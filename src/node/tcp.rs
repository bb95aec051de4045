//! ICE-TCP: one TCP port for clients whose UDP is blocked (RFC 6544 passive candidates, RFC 4571
//! framing: each packet is preceded by its 16-bit length).
//!
//! Each connection has a reader and a writer task; neither touches a leg. Frames go to the
//! media worker through one bounded channel (full: dropped and counted), and the worker sends
//! through each connection's bounded queue without waiting (full: dropped and counted), so a
//! slow or stalled TCP client never holds up the worker. Safeguards: frames over the largest
//! datagram close the connection; a connection that has not been matched to a leg by an
//! integrity-checked STUN request within the deadline is closed; connections are capped.

use super::guard::MAX_DATAGRAM_BYTES;
use crate::metrics::TcpCounters;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

#[derive(Debug, Clone, Copy)]
pub struct TcpSettings {
    pub max_connections: usize,
    /// How long a new connection has to get an integrity-checked STUN request accepted.
    pub stun_deadline: Duration,
    /// Frames queued towards one client before further ones are dropped.
    pub send_queue: usize,
}

/// What connection tasks tell the worker.
pub enum TcpEvent {
    Opened { peer: SocketAddr, writer: TcpWriter },
    Frame { peer: SocketAddr, frame: BytesMut },
    Closed { peer: SocketAddr },
}

/// The worker's handle on one connection.
pub struct TcpWriter {
    frames: mpsc::Sender<Bytes>,
    /// Set by the worker once a leg accepted a STUN request from this connection.
    matched: Arc<AtomicBool>,
}

impl TcpWriter {
    /// Queues one packet; false when the connection is backed up or gone.
    pub fn send(&self, packet: &[u8]) -> bool {
        let mut framed = BytesMut::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        framed.extend_from_slice(packet);
        self.frames.try_send(framed.freeze()).is_ok()
    }

    pub fn mark_matched(&self) {
        self.matched.store(true, Ordering::Relaxed);
    }
}

/// Accepts connections until the listener fails for good.
pub async fn serve(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    settings: TcpSettings,
    counters: TcpCounters,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok((stream, peer)) => (stream, super::demux::normalize(peer)),
            Err(err) => {
                debug!("ICE-TCP accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The gauge is the count: only this task raises it, and closing tasks lower it.
        if counters.open.get() as usize >= settings.max_connections {
            counters.over_limit.inc();
            continue; // dropping the stream closes it
        }
        let _ = stream.set_nodelay(true);
        counters.open.inc();
        let events = events.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            connection(stream, peer, &events, settings, &counters).await;
            let _ = events.send(TcpEvent::Closed { peer }).await;
            counters.open.dec();
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    events: &mpsc::Sender<TcpEvent>,
    settings: TcpSettings,
    counters: &TcpCounters,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(settings.send_queue.max(1));
    let matched = Arc::new(AtomicBool::new(false));
    let opened = TcpEvent::Opened {
        peer,
        writer: TcpWriter {
            frames: frames_tx,
            matched: matched.clone(),
        },
    };
    if events.send(opened).await.is_err() {
        return;
    }
    let write = async move {
        // Ends when the worker drops the connection's writer (it closed the leg or refused the
        // connection) or the socket fails.
        while let Some(frame) = frames_rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    let read = async {
        let mut buffer = BytesMut::with_capacity(2 + MAX_DATAGRAM_BYTES);
        loop {
            // A whole frame, or as much as the largest allowed frame needs: never more.
            while let Some(frame) = next_frame(&mut buffer) {
                match frame {
                    Ok(frame) => {
                        // Full channel: the worker is saturated; drop like a lost datagram.
                        let _ = events.try_send(TcpEvent::Frame { peer, frame });
                    }
                    Err(()) => {
                        counters.oversized_frame.inc();
                        return;
                    }
                }
            }
            buffer.reserve(2 + MAX_DATAGRAM_BYTES - buffer.len());
            match reader.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let deadline = async {
        tokio::time::sleep(settings.stun_deadline).await;
        if matched.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
        _ = deadline => {
            counters.no_stun.inc();
            debug!(%peer, "ICE-TCP connection without an accepted STUN request; closing");
        }
    }
}

/// Splits one RFC 4571 frame off the front of `buffer`: `None` until one is complete,
/// `Some(Err(()))` for a frame longer than any packet a leg accepts.
fn next_frame(buffer: &mut BytesMut) -> Option<Result<BytesMut, ()>> {
    if buffer.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buffer[0], buffer[1]]));
    if len > MAX_DATAGRAM_BYTES {
        return Some(Err(()));
    }
    if buffer.len() < 2 + len {
        return None;
    }
    let mut frame = buffer.split_to(2 + len);
    let _ = frame.split_to(2);
    Some(Ok(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_and_within_reads() {
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&[0, 3, b'a', b'b']);
        assert!(next_frame(&mut buffer).is_none());
        buffer.extend_from_slice(&[b'c', 0, 1, b'x', 0]);
        assert_eq!(&next_frame(&mut buffer).unwrap().unwrap()[..], b"abc");
        assert_eq!(&next_frame(&mut buffer).unwrap().unwrap()[..], b"x");
        assert!(next_frame(&mut buffer).is_none());
        assert_eq!(&buffer[..], &[0]);
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_read() {
        let mut buffer = BytesMut::from(&[0xff, 0xff][..]);
        assert!(matches!(next_frame(&mut buffer), Some(Err(()))));
        let mut empty = BytesMut::from(&[0, 0][..]);
        assert_eq!(next_frame(&mut empty).unwrap().unwrap().len(), 0);
    }
}
