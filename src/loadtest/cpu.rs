//! The load generator's own CPU time, so a benchmark can tell whether the generator (and not
//! the relay) was the bottleneck, or subtract it when both share a machine.

use std::time::Duration;

/// User + system time of this whole process so far. getrusage reads the same counters as
/// `/proc/self/stat` (utime + stime) but in microseconds rather than clock ticks, which matters
/// over a window of a few seconds.
pub fn process() -> Duration {
    // SAFETY: `usage` is a valid, writable rusage for the call to fill.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// The calling thread's id, for [`thread`].
pub fn current_thread_id() -> i32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

/// On-CPU time (user + system) of one thread of this process: the first field of its
/// schedstat, in nanoseconds. `None` once the thread is gone or without schedstat.
pub fn thread(tid: i32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = (process(), thread(current_thread_id()).expect("schedstat"));
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = (process(), thread(current_thread_id()).unwrap());
        assert!(after.0 > before.0);
        assert!(after.1 - before.1 >= Duration::from_millis(10));
    }
}
