//! Keyframe requests toward one publisher track, throttled.
//!
//! Many subscribers can lose the picture at once (a burst of loss, several joins); the encoder
//! needs to hear it once. At most one request per interval goes out; a request that arrives
//! inside the interval is remembered and sent when the interval ends, unless a keyframe arrived
//! in the meantime.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KeyframeRequester {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeRequester {
    pub fn new(min_interval: Duration) -> Self {
        KeyframeRequester {
            min_interval,
            last_sent: None,
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

    /// A keyframe arrived: whoever was waiting has it.
    pub fn keyframe_received(&mut self) {
        self.pending = false;
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
    fn ten_requests_in_a_second_send_at_most_two() {
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
        k.keyframe_received();
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.handle_timeout(t1 + INTERVAL));
    }
}
