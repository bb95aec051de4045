//! One generated participant as its driver thread holds it: its legs, what it publishes, and
//! what it receives (per-stream stats), and when it counts as ready.

use super::media::Stamp;
use super::peer::LegKind;
use super::publisher::{MediaKind, Publisher};
use super::scenario::ParticipantSpec;
use super::shared::{Counters, Shared, clock_ns};
use super::stats::{Arrival, Histogram, StreamReceiver};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rustc_hash::FxHashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tern_signaling::protocol::ClientMessage;
use tokio::sync::mpsc::UnboundedSender;

/// Samples a driver gathers for the report.
#[derive(Debug, Default)]
pub struct Samples {
    pub latency: Histogram,
    /// How late media ticks ran: the generator's own health.
    pub send_lag: Histogram,
    pub join_times_us: Vec<u64>,
    pub plis: u64,
    pub keyframes: u64,
    pub unstamped: u64,
    pub unexpected: u64,
    /// RTP counted without decrypting it (`--count-only`), arrived inside the window.
    pub sealed_in_window: u64,
}

/// A participant: its legs (peer keys in the driver), its publisher, its receive stats.
pub struct Participant {
    pub spec: ParticipantSpec,
    pub ws_open: Instant,
    pub outgoing: UnboundedSender<ClientMessage>,
    pub publish: Option<usize>,
    pub subscribe: Option<usize>,
    pub publisher: Option<Publisher>,
    pub streams: FxHashMap<u32, StreamReceiver>,
    streams_with_media: usize,
    first_media_at: Option<Instant>,
    subscribe_connected: bool,
    ready: bool,
}

impl Participant {
    pub fn new(
        spec: ParticipantSpec,
        ws_open: Instant,
        outgoing: UnboundedSender<ClientMessage>,
    ) -> Self {
        let streams = spec
            .expected_streams
            .iter()
            .map(|&s| (s, StreamReceiver::default()))
            .collect();
        Participant {
            spec,
            ws_open,
            outgoing,
            publish: None,
            subscribe: None,
            publisher: None,
            streams,
            streams_with_media: 0,
            first_media_at: None,
            subscribe_connected: false,
            ready: false,
        }
    }

    /// One RTP packet from the subscribe leg.
    pub fn on_rtp(
        &mut self,
        payload: &[u8],
        now: Instant,
        shared: &Shared,
        counters: &Counters,
        samples: &mut Samples,
    ) {
        Counters::add(&counters.received, 1);
        let Some(stamp) = Stamp::read(payload) else {
            samples.unstamped += 1;
            return;
        };
        let Some(stream) = self.streams.get_mut(&stamp.stream) else {
            samples.unexpected += 1;
            return;
        };
        let first = !stream.has_packets();
        let arrived_ns = clock_ns(now);
        let in_window = shared.in_window(stamp.sent_ns);
        let arrival = stream.on_packet(stamp.counter, stamp.sent_ns, arrived_ns, in_window);
        if in_window && arrival != Arrival::Duplicate {
            Counters::add(&counters.received_in_window, 1);
            samples
                .latency
                .record(arrived_ns.saturating_sub(stamp.sent_ns) / 1_000);
        }
        if first {
            self.streams_with_media += 1;
            if self.first_media_at.is_none() {
                self.first_media_at = Some(now);
                // Publishers that join before the others wait for them; only subscribers'
                // join times say how fast the relay brings a newcomer in.
                if self.spec.is_subscriber() {
                    let us = now.saturating_duration_since(self.ws_open).as_micros() as u64;
                    samples.join_times_us.push(us);
                }
            }
            self.check_ready(shared);
        }
    }

    /// Whether it is connected and receives every stream it expects.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// An RTP packet counted without decrypting it (`--count-only`): its stamp is sealed, so it
    /// counts by arrival time and has no latency.
    pub fn on_sealed_rtp(
        &self,
        now: Instant,
        shared: &Shared,
        counters: &Counters,
        samples: &mut Samples,
    ) {
        Counters::add(&counters.received, 1);
        if shared.in_window(clock_ns(now)) {
            Counters::add(&counters.received_in_window, 1);
            samples.sealed_in_window += 1;
        }
    }

    /// RTCP from the publish leg: the relay asks for a keyframe with PLI (or FIR).
    pub fn on_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>], samples: &mut Samples) {
        let Some(publisher) = self.publisher.as_mut() else {
            return;
        };
        for packet in packets {
            let any = packet.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                publisher.keyframe_requested = true;
                samples.plis += 1;
            }
        }
    }

    /// A leg's connection state changed. Returns the first media ticks when the publish leg
    /// has just connected.
    pub fn on_leg_state(
        &mut self,
        leg: LegKind,
        state: RTCPeerConnectionState,
        now: Instant,
        shared: &Shared,
    ) -> Vec<(Instant, MediaKind)> {
        let mut ticks = Vec::new();
        match (leg, state) {
            (LegKind::Publish, RTCPeerConnectionState::Connected) => {
                if let Some(publisher) = self.publisher.as_mut().filter(|p| !p.running) {
                    // Publishers spread over the media periods by their number, so that many
                    // publishers do not send in the same millisecond.
                    let n = u64::from(self.spec.publisher.unwrap_or(0));
                    ticks = publisher.start(now, Duration::from_micros(n * 7_919));
                }
            }
            (LegKind::Subscribe, RTCPeerConnectionState::Connected) => {
                self.subscribe_connected = true;
            }
            (LegKind::Publish, RTCPeerConnectionState::Failed) => {
                if let Some(publisher) = self.publisher.as_mut() {
                    publisher.running = false;
                }
                shared.error("publish leg failed (ICE/DTLS)");
            }
            (LegKind::Subscribe, RTCPeerConnectionState::Failed) => {
                shared.error("subscribe leg failed (ICE/DTLS)");
            }
            _ => {}
        }
        self.check_ready(shared);
        ticks
    }

    /// Connected and receiving every stream it expects (and sending, if it publishes).
    fn check_ready(&mut self, shared: &Shared) {
        let sending = self.publisher.as_ref().is_none_or(|p| p.running);
        if !self.ready
            && sending
            && self.subscribe_connected
            && self.streams_with_media == self.streams.len()
        {
            self.ready = true;
            shared.ready.fetch_add(1, Relaxed);
        }
    }
}
