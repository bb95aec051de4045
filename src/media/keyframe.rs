//! Keyframe requests toward one publisher track, throttled.
//!
//! Many subscribers can lose the picture at once (a burst of loss, several joins); the encoder
//! needs to hear it once. At most one request per interval goes out; a request that arrives
//! inside the interval is remembered and sent when the interval ends, unless a keyframe arrived
//! in the meantime. A subscriber's PLI/FIR that arrives within the interval after a keyframe went
//! by is answered by that keyframe (the subscriber asked before it arrived) and is not repeated
//! to the encoder; a new subscription's need is never answered by a keyframe it did not get.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KeyframeRequester {
    min_interval: Duration,
    last_sent: Option<Instant>,
    last_keyframe: Option<Instant>,
    pending: bool,
}

impl KeyframeRequester {
    pub fn new(min_interval: Duration) -> Self {
        KeyframeRequester {
            min_interval,
            last_sent: None,
            last_keyframe: None,
            pending: false,
        }
    }

    /// Someone needs a keyframe. Returns true when a request should be sent now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now < last + self.min_interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// A subscriber reported picture loss (PLI/FIR). Returns true when a request should be sent
    /// now.
    pub fn request_from_subscriber(&mut self, now: Instant) -> bool {
        let recent_keyframe = self
            .last_keyframe
            .is_some_and(|at| now < at + self.min_interval);
        if recent_keyframe {
            return false;
        }
        self.request(now)
    }

    /// A keyframe arrived: whoever was waiting has it.
    pub fn keyframe_received(&mut self, now: Instant) {
        self.pending = false;
        self.last_keyframe = Some(now);
    }

    /// When a deferred request falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending {
            self.last_sent.map(|last| last + self.min_interval)
        } else {
            None
        }
    }

    /// Returns true when a deferred request should be sent now.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => self.request(now),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);

    #[test]
    fn ten_subscriber_requests_in_a_second_send_at_most_two() {
        // The encoder answers each request with a keyframe 10 ms later.
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(INTERVAL);
        let mut sent = Vec::new();
        let mut keyframe_due = None;
        for ms in 0..1300u64 {
            let now = t0 + Duration::from_millis(ms);
            if keyframe_due == Some(ms) {
                k.keyframe_received(now);
            }
            let asked = ms % 95 == 0 && ms < 950 && k.request_from_subscriber(now);
            if asked || k.handle_timeout(now) {
                sent.push(ms);
                keyframe_due = Some(ms + 10);
            }
        }
        assert_eq!(sent.len(), 2, "sent at {sent:?}");
    }

    #[test]
    fn without_keyframes_requests_are_spaced_by_the_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(INTERVAL);
        let mut sent = 0;
        for i in 0..10u64 {
            let now = t0 + Duration::from_millis(i * 100);
            if k.request(now) {
                sent += 1;
            }
            if k.handle_timeout(now) {
                sent += 1;
            }
        }
        assert_eq!(sent, 2, "one at 0 ms, one at 500 ms");
    }

    #[test]
    fn a_new_subscription_is_not_answered_by_a_past_keyframe() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(INTERVAL);
        k.keyframe_received(t0);
        assert!(
            k.request(t0 + Duration::from_millis(50)),
            "joining after it went by"
        );
        assert!(!k.request_from_subscriber(t0 + Duration::from_millis(60)));
    }

    #[test]
    fn a_deferred_request_is_sent_when_due_unless_a_keyframe_came() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(INTERVAL);
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(10)));
        assert_eq!(k.poll_timeout(), Some(t0 + INTERVAL));
        assert!(!k.handle_timeout(t0 + Duration::from_millis(499)));
        assert!(k.handle_timeout(t0 + INTERVAL));
        assert_eq!(k.poll_timeout(), None);

        let t1 = t0 + Duration::from_secs(5);
        assert!(k.request(t1));
        assert!(!k.request(t1 + Duration::from_millis(1)));
        k.keyframe_received(t1 + Duration::from_millis(2));
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.handle_timeout(t1 + INTERVAL));
    }
}
