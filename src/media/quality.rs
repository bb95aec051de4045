//! Each participant's connection quality, as the page shows it: good, poor or lost. Judged
//! every few seconds from what the relay measures of the participant's two legs (unrepaired
//! loss on its uplink; loss and round-trip time of its downlink from transport-cc feedback) and
//! from the bandwidth allocator's decisions (a participant whose video is held back for its
//! bandwidth has a poor connection, whatever the loss says). Worse is told at once, better only
//! once it has held for two judgements in a row, so the indicator does not flicker.

use std::time::Duration;

/// What one judgement looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkSample {
    /// Share of the participant's packets that never reached the relay (retransmissions
    /// included) since the last sample.
    pub uplink_loss: Option<f64>,
    /// Share of the relay's packets to the participant that were lost on the way, before any
    /// retransmission (transport-cc feedback; the receiver reports where there is none).
    pub downlink_loss: Option<f64>,
    /// Round-trip time between relay and participant (from transport-cc feedback, or the
    /// receiver reports).
    pub rtt: Option<Duration>,
    /// The allocator paused or lowered video for this participant for lack of bandwidth.
    pub held_back: bool,
    /// The participant's legs are up and its signaling is connected.
    pub connected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Poor,
    Lost,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Poor => "poor",
            Quality::Lost => "lost",
        }
    }
}

/// Loss (either way) from which a connection is poor: video shows artefacts and freezes.
pub const POOR_LOSS: f64 = 0.05;
/// Round-trip time from which a connection is poor: conversation starts to trip.
pub const POOR_RTT: Duration = Duration::from_millis(400);
/// Good judgements in a row before a poor or lost connection is called good again.
const BETTER_AFTER: u8 = 2;

/// The judgement of one sample, without history.
pub fn classify(sample: &LinkSample) -> Quality {
    if !sample.connected {
        return Quality::Lost;
    }
    let lossy = [sample.uplink_loss, sample.downlink_loss]
        .into_iter()
        .flatten()
        .any(|loss| loss >= POOR_LOSS);
    let slow = sample.rtt.is_some_and(|rtt| rtt >= POOR_RTT);
    if lossy || slow || sample.held_back {
        Quality::Poor
    } else {
        Quality::Good
    }
}

/// One participant's quality over time.
#[derive(Debug, Clone)]
pub struct QualityMeter {
    current: Quality,
    better_streak: u8,
}

impl Default for QualityMeter {
    fn default() -> Self {
        QualityMeter {
            current: Quality::Good,
            better_streak: 0,
        }
    }
}

fn rank(quality: Quality) -> u8 {
    match quality {
        Quality::Good => 0,
        Quality::Poor => 1,
        Quality::Lost => 2,
    }
}

impl QualityMeter {
    pub fn current(&self) -> Quality {
        self.current
    }

    /// Takes a sample; returns the new quality when it changed.
    pub fn update(&mut self, sample: &LinkSample) -> Option<Quality> {
        let judged = classify(sample);
        if rank(judged) >= rank(self.current) {
            self.better_streak = 0;
            if judged == self.current {
                return None;
            }
            self.current = judged;
            return Some(judged);
        }
        self.better_streak += 1;
        if self.better_streak < BETTER_AFTER {
            return None;
        }
        self.better_streak = 0;
        self.current = judged;
        Some(judged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> LinkSample {
        LinkSample {
            uplink_loss: Some(0.0),
            downlink_loss: Some(0.001),
            rtt: Some(Duration::from_millis(40)),
            held_back: false,
            connected: true,
        }
    }

    #[test]
    fn each_cause_alone_makes_a_connection_poor_or_lost() {
        assert_eq!(classify(&healthy()), Quality::Good);
        assert_eq!(
            classify(&LinkSample {
                connected: true,
                ..Default::default()
            }),
            Quality::Good
        );
        let cases = [
            (
                LinkSample {
                    uplink_loss: Some(0.08),
                    ..healthy()
                },
                Quality::Poor,
            ),
            (
                LinkSample {
                    downlink_loss: Some(0.05),
                    ..healthy()
                },
                Quality::Poor,
            ),
            (
                LinkSample {
                    rtt: Some(Duration::from_millis(450)),
                    ..healthy()
                },
                Quality::Poor,
            ),
            (
                LinkSample {
                    held_back: true,
                    ..healthy()
                },
                Quality::Poor,
            ),
            (
                LinkSample {
                    connected: false,
                    ..healthy()
                },
                Quality::Lost,
            ),
            (
                LinkSample {
                    uplink_loss: Some(0.049),
                    ..healthy()
                },
                Quality::Good,
            ),
        ];
        for (sample, expected) in cases {
            assert_eq!(classify(&sample), expected, "{sample:?}");
        }
    }

    #[test]
    fn worse_is_told_at_once_and_better_after_two_judgements() {
        let mut meter = QualityMeter::default();
        assert_eq!(meter.update(&healthy()), None, "starts good");
        let lossy = LinkSample {
            downlink_loss: Some(0.2),
            ..healthy()
        };
        assert_eq!(meter.update(&lossy), Some(Quality::Poor));
        assert_eq!(meter.update(&lossy), None);
        assert_eq!(
            meter.update(&healthy()),
            None,
            "one good sample is not enough"
        );
        assert_eq!(
            meter.update(&lossy),
            None,
            "and a bad one starts the count again"
        );
        assert_eq!(meter.update(&healthy()), None);
        assert_eq!(meter.update(&healthy()), Some(Quality::Good));
        let gone = LinkSample {
            connected: false,
            ..healthy()
        };
        assert_eq!(meter.update(&gone), Some(Quality::Lost));
        assert_eq!(meter.update(&lossy), None, "lost to poor waits as well");
        assert_eq!(meter.update(&lossy), Some(Quality::Poor));
        assert_eq!(meter.current(), Quality::Poor);
    }

    #[test]
    fn a_long_call_with_an_occasional_bad_moment_stays_calm() {
        // Two hours of judgements every 2 s, a lossy one in every 50: the indicator turns poor
        // for each, and good again two judgements later; it never flips on every sample.
        let mut meter = QualityMeter::default();
        let mut changes = 0;
        for i in 0..3_600 {
            let sample = if i % 50 == 10 {
                LinkSample {
                    uplink_loss: Some(0.1),
                    ..healthy()
                }
            } else {
                healthy()
            };
            changes += usize::from(meter.update(&sample).is_some());
        }
        assert_eq!(changes, 2 * (3_600 / 50));
        assert_eq!(meter.current(), Quality::Good);
    }
}
