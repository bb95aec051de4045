//! A legitimate call that an attack test runs beside: Carol publishes audio and video to Bob.
//! An attack must leave it unharmed.

use super::*;
use tern::app::Running;

pub struct Call {
    pub relay: Running,
    pub carol: Client,
    pub bob: Client,
    _pump: MediaPump,
}

/// Starts a relay (adjusted by `adjust`) with Carol streaming to Bob in `room`.
pub async fn call(room: &str, adjust: impl FnOnce(&mut tern::config::Config)) -> Call {
    let relay = start_relay(adjust).await;
    let carol = Client::connect(&relay, room, "carol").await;
    carol.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, room, "bob").await;
    let pump = MediaPump::start(&carol);
    wait_more(&mut bob, "carol", "video", 5).await;
    Call {
        relay,
        carol,
        bob,
        _pump: pump,
    }
}

impl Call {
    pub async fn dropped(&self, reason: &str) -> f64 {
        metric(
            &self.relay,
            &format!("tern_packets_dropped_total{{reason=\"{reason}\"}}"),
        )
        .await
    }

    pub async fn breaches(&self, limit: &str) -> f64 {
        metric(
            &self.relay,
            &format!("tern_limit_breaches_total{{limit=\"{limit}\"}}"),
        )
        .await
    }

    /// Bob got Carol's stream without a gap: at least `seconds` more of it arrived (100 packets
    /// a second per kind from the test pump).
    pub async fn assert_unharmed(&mut self, seconds: u32) {
        let n = (seconds * 100) as usize;
        wait_more(&mut self.bob, "carol", "video", n).await;
        wait_more(&mut self.bob, "carol", "audio", n).await;
        // Shown when an assertion below fails: where the relay dropped packets.
        let body = self.relay.metrics.render(self.relay.snapshot.read());
        for line in body
            .lines()
            .filter(|l| l.starts_with("tern_packets_dropped_total"))
        {
            eprintln!("{line}");
        }
        assert_no_gap(&self.bob, "carol", "video", n);
        assert_no_gap(&self.bob, "carol", "audio", n);
    }
}
