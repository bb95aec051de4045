//! Who is speaking, from the audio level every audio packet carries (RFC 6464).
//!
//! A single loud packet is not speech: a participant becomes a speaker once its voice activity
//! (the share of loud packets, smoothed over about 200 ms) has stayed high for
//! [`SpeakerConfig::min_speaking`], so a cough or a door does not count; it stops being one after
//! [`SpeakerConfig::hangover`] of quiet, so the pauses between words do not end a turn. Silence
//! sent as DTX (few or no packets) decays the same way, by time. Speakers are ordered by how
//! loud they are now, the loudest (the dominant speaker) first.
//!
//! Pure and deterministic: time is an argument.

use super::ids::ParticipantId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct SpeakerConfig {
    /// Audio levels at or under this (in -dBov, so louder) count as voice: -50 dBov.
    pub voice_level: u8,
    /// Time constant of the voice-activity average.
    pub smoothing: Duration,
    /// Activity above this is speech, under `quiet_activity` is not.
    pub speech_activity: f64,
    pub quiet_activity: f64,
    pub min_speaking: Duration,
    pub hangover: Duration,
    /// At most this many speakers are listed.
    pub max_speakers: usize,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            voice_level: 50,
            smoothing: Duration::from_millis(200),
            speech_activity: 0.5,
            quiet_activity: 0.2,
            min_speaking: Duration::from_millis(400),
            hangover: Duration::from_millis(1_200),
            max_speakers: 3,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Voice {
    activity: f64,
    /// Smoothed loudness (127 - level, so louder is more), for the order.
    loudness: f64,
    updated: Instant,
    /// Since when activity has been above speech level, while it is.
    loud_since: Option<Instant>,
    /// Since when activity has been under quiet level, while it is.
    quiet_since: Option<Instant>,
    speaking: bool,
}

pub struct SpeakerDetector {
    config: SpeakerConfig,
    voices: BTreeMap<ParticipantId, Voice>,
    /// The list last returned by [`SpeakerDetector::update`].
    speakers: Vec<ParticipantId>,
    updated_at: Option<Instant>,
}

/// How often the list is brought up to date while anybody sends audio levels.
const UPDATE_INTERVAL: Duration = Duration::from_millis(200);

impl SpeakerDetector {
    pub fn new(config: SpeakerConfig) -> Self {
        SpeakerDetector {
            config,
            voices: BTreeMap::new(),
            speakers: Vec::new(),
            updated_at: None,
        }
    }

    /// When [`SpeakerDetector::update`] is due next (never while nobody sent a level).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.voices.is_empty() {
            return None;
        }
        self.updated_at.map(|at| at + UPDATE_INTERVAL)
    }

    /// One audio packet of `id`'s with its RFC 6464 level (0 = loudest, 127 = silence). True
    /// when it is the first level ever heard, which starts the updates: [`Self::poll_timeout`]
    /// has a deadline from then on, and the caller must arm a timer for it.
    pub fn observe(&mut self, id: ParticipantId, level: u8, now: Instant) -> bool {
        let level = level.min(127);
        let started = self.updated_at.is_none();
        self.updated_at.get_or_insert(now);
        let voice = self.voices.entry(id).or_insert(Voice {
            activity: 0.0,
            loudness: 0.0,
            updated: now,
            loud_since: None,
            quiet_since: None,
            speaking: false,
        });
        let weight = weight(
            self.config.smoothing,
            now.saturating_duration_since(voice.updated),
        );
        voice.updated = now;
        let loud = level <= self.config.voice_level;
        voice.activity += (f64::from(u8::from(loud)) - voice.activity) * weight;
        voice.loudness += (f64::from(127 - level) - voice.loudness) * weight;
        started
    }

    /// A participant that left or stopped publishing audio.
    pub fn forget(&mut self, id: ParticipantId) {
        self.voices.remove(&id);
    }

    /// Brings every voice up to `now` and returns the speakers when the list changed.
    pub fn update(&mut self, now: Instant) -> Option<&[ParticipantId]> {
        let config = self.config;
        self.updated_at = Some(now);
        for voice in self.voices.values_mut() {
            // No packet for a while is silence (DTX, or a muted microphone).
            let silent = now.saturating_duration_since(voice.updated);
            if silent > Duration::from_millis(60) {
                let w = weight(config.smoothing, silent);
                voice.activity -= voice.activity * w;
                voice.loudness -= voice.loudness * w;
                voice.updated = now;
            }
            if voice.activity >= config.speech_activity {
                voice.quiet_since = None;
                let since = *voice.loud_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= config.min_speaking {
                    voice.speaking = true;
                }
            } else {
                voice.loud_since = None;
            }
            if voice.activity < config.quiet_activity {
                let since = *voice.quiet_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= config.hangover {
                    voice.speaking = false;
                }
            } else {
                voice.quiet_since = None;
            }
        }
        let mut speakers: Vec<(ParticipantId, f64)> = self
            .voices
            .iter()
            .filter(|(_, v)| v.speaking)
            .map(|(id, v)| (*id, v.loudness))
            .collect();
        speakers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        speakers.truncate(config.max_speakers);
        let same = speakers.len() == self.speakers.len()
            && speakers
                .iter()
                .zip(&self.speakers)
                .all(|((a, _), b)| a == b);
        if same {
            return None;
        }
        self.speakers = speakers.into_iter().map(|(id, _)| id).collect();
        Some(&self.speakers)
    }

    /// The speakers as last returned, loudest first.
    pub fn speakers(&self) -> &[ParticipantId] {
        &self.speakers
    }
}

/// How much of the gap to a new sample an exponential average moves after `elapsed`.
fn weight(time_constant: Duration, elapsed: Duration) -> f64 {
    let tau = time_constant.as_secs_f64().max(1e-3);
    1.0 - (-elapsed.as_secs_f64().max(0.02) / tau).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: ParticipantId = ParticipantId(1);
    const BOB: ParticipantId = ParticipantId(2);

    /// Feeds 20-ms audio packets from `from` for `ms`, `level` of each chosen by its time, and
    /// collects every change of the list (when, list).
    struct Script {
        detector: SpeakerDetector,
        start: Instant,
        now: Duration,
        changes: Vec<(Duration, Vec<ParticipantId>)>,
    }

    impl Script {
        fn new() -> Self {
            Script {
                detector: SpeakerDetector::new(SpeakerConfig::default()),
                start: Instant::now(),
                now: Duration::ZERO,
                changes: Vec::new(),
            }
        }

        /// `ms` of packets every 20 ms from each of `voices` (id, level; `None`: no packet, DTX).
        fn play(&mut self, ms: u64, voices: &[(ParticipantId, Option<u8>)]) {
            for _ in 0..ms / 20 {
                self.now += Duration::from_millis(20);
                let at = self.start + self.now;
                for (id, level) in voices {
                    if let Some(level) = level {
                        self.detector.observe(*id, *level, at);
                    }
                }
                if let Some(list) = self.detector.update(at) {
                    self.changes.push((self.now, list.to_vec()));
                }
            }
        }
    }

    #[test]
    fn talk_then_silence_makes_a_speaker_after_a_moment_and_ends_after_the_hangover() {
        let mut s = Script::new();
        s.play(2_000, &[(ALICE, Some(30))]);
        s.play(3_000, &[(ALICE, Some(127))]);
        assert_eq!(s.changes.len(), 2, "{:?}", s.changes);
        let (started, list) = &s.changes[0];
        assert_eq!(list, &vec![ALICE]);
        assert!(
            *started >= Duration::from_millis(400) && *started < Duration::from_millis(800),
            "{started:?}"
        );
        let (ended, list) = &s.changes[1];
        assert!(list.is_empty());
        let quiet_for = *ended - Duration::from_millis(2_000);
        assert!(
            quiet_for >= Duration::from_millis(1_200) && quiet_for < Duration::from_millis(2_000),
            "{quiet_for:?}"
        );
    }

    #[test]
    fn pauses_between_words_do_not_end_a_turn() {
        let mut s = Script::new();
        for _ in 0..5 {
            s.play(600, &[(ALICE, Some(35))]);
            s.play(300, &[(ALICE, Some(120))]);
        }
        assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
        assert_eq!(s.changes[0].1, vec![ALICE]);
    }

    #[test]
    fn a_cough_is_not_speech() {
        let mut s = Script::new();
        s.play(1_000, &[(ALICE, Some(127))]);
        s.play(200, &[(ALICE, Some(10))]);
        s.play(2_000, &[(ALICE, Some(127))]);
        assert!(s.changes.is_empty(), "{:?}", s.changes);
    }

    #[test]
    fn two_speakers_are_listed_loudest_first_and_dtx_silence_ends_a_turn() {
        let mut s = Script::new();
        s.play(1_000, &[(ALICE, Some(40)), (BOB, Some(20))]);
        assert_eq!(s.detector.speakers(), &[BOB, ALICE]);
        // Bob goes quiet with DTX (no packets at all); Alice goes on.
        s.play(3_000, &[(ALICE, Some(40)), (BOB, None)]);
        assert_eq!(s.detector.speakers(), &[ALICE]);
        // Bob louder than Alice again: he leads.
        s.play(1_500, &[(ALICE, Some(45)), (BOB, Some(25))]);
        assert_eq!(s.detector.speakers(), &[BOB, ALICE]);
        s.detector.forget(BOB);
        s.play(100, &[(ALICE, Some(45))]);
        assert_eq!(s.detector.speakers(), &[ALICE]);
    }

    #[test]
    fn the_first_level_heard_starts_the_updates_once() {
        let mut detector = SpeakerDetector::new(SpeakerConfig::default());
        let t0 = Instant::now();
        assert_eq!(detector.poll_timeout(), None);
        assert!(
            detector.observe(ALICE, 30, t0),
            "the first level starts them"
        );
        assert_eq!(detector.poll_timeout(), Some(t0 + UPDATE_INTERVAL));
        assert!(!detector.observe(BOB, 127, t0 + Duration::from_millis(20)));
        detector.update(t0 + UPDATE_INTERVAL);
        assert!(!detector.observe(ALICE, 30, t0 + UPDATE_INTERVAL * 2));
    }

    #[test]
    fn background_noise_under_the_voice_level_is_not_speech() {
        let mut s = Script::new();
        s.play(5_000, &[(ALICE, Some(70)), (BOB, Some(60))]);
        assert!(s.changes.is_empty());
    }
}
