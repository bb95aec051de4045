//! The bitrate of one received stream, for the admin API and (later) bandwidth allocation.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

/// Bytes counted in one-second windows; the reading is the last complete window, so it moves
/// once a second and costs one comparison per packet.
#[derive(Debug, Clone, Default)]
pub struct BitrateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    last_bps: u64,
}

impl BitrateMeter {
    /// Counts bytes; returns the reading of the window this packet closed, if it closed one.
    pub fn record(&mut self, bytes: u32, now: Instant) -> Option<u64> {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        let mut closed = None;
        if elapsed >= WINDOW {
            // A gap of several windows means the stream paused: the window covers only its bytes.
            self.last_bps = if elapsed < 2 * WINDOW {
                self.bytes * 8 * 1_000_000 / elapsed.as_micros().max(1) as u64
            } else {
                self.bytes * 8
            };
            self.window_start = Some(now);
            self.bytes = 0;
            closed = Some(self.last_bps);
        }
        self.bytes += u64::from(bytes);
        closed
    }

    /// Bits per second over the last complete window; 0 once the stream has been silent for two
    /// windows.
    pub fn bitrate_bps(&self, now: Instant) -> u64 {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < 2 * WINDOW => self.last_bps,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_stream_reads_its_rate() {
        let start = Instant::now();
        let mut meter = BitrateMeter::default();
        // 100 packets of 1250 bytes per second = 1 Mbit/s.
        for i in 0..250u64 {
            meter.record(1250, start + Duration::from_millis(i * 10));
        }
        let now = start + Duration::from_millis(2_490);
        assert_eq!(meter.bitrate_bps(now), 1_000_000);
    }

    #[test]
    fn silence_reads_zero() {
        let start = Instant::now();
        let mut meter = BitrateMeter::default();
        assert_eq!(meter.bitrate_bps(start), 0);
        for i in 0..150u64 {
            meter.record(1250, start + Duration::from_millis(i * 10));
        }
        assert!(meter.bitrate_bps(start + Duration::from_millis(1_500)) > 0);
        assert_eq!(meter.bitrate_bps(start + Duration::from_secs(5)), 0);
    }
}
