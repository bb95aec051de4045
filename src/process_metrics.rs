//! The standard `process_*` metrics (CPU, memory, file descriptors, threads, start time), read
//! from /proc at scrape time. Linux only, like the relay.

use prometheus::{Counter, Gauge, IntGauge, Registry};

pub struct ProcessMetrics {
    cpu_seconds: Counter,
    resident_memory: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start_time: Gauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

impl ProcessMetrics {
    pub fn register(registry: &Registry) -> Self {
        let metrics = ProcessMetrics {
            cpu_seconds: register(
                registry,
                Counter::new(
                    "process_cpu_seconds_total",
                    "User and system CPU time of the relay process, seconds.",
                )
                .expect("valid metric"),
            ),
            resident_memory: register(
                registry,
                IntGauge::new("process_resident_memory_bytes", "Resident memory, bytes.")
                    .expect("valid metric"),
            ),
            virtual_memory: register(
                registry,
                IntGauge::new(
                    "process_virtual_memory_bytes",
                    "Virtual memory size, bytes.",
                )
                .expect("valid metric"),
            ),
            open_fds: register(
                registry,
                IntGauge::new("process_open_fds", "Open file descriptors.").expect("valid metric"),
            ),
            max_fds: register(
                registry,
                IntGauge::new("process_max_fds", "Limit on open file descriptors.")
                    .expect("valid metric"),
            ),
            threads: register(
                registry,
                IntGauge::new("process_threads", "Threads of the relay process.")
                    .expect("valid metric"),
            ),
            start_time: register(
                registry,
                Gauge::new(
                    "process_start_time_seconds",
                    "Start time of the process, seconds since the Unix epoch.",
                )
                .expect("valid metric"),
            ),
        };
        metrics.update();
        metrics
    }

    /// Reads /proc/self; values that cannot be read keep their last value.
    pub fn update(&self) {
        if let Some(stat) = Stat::read() {
            // Counters only go up: add what accrued since the last scrape.
            let seconds = stat.cpu_ticks as f64 / ticks_per_second();
            let accrued = seconds - self.cpu_seconds.get();
            if accrued > 0.0 {
                self.cpu_seconds.inc_by(accrued);
            }
            self.resident_memory.set(stat.rss_pages * page_size());
            self.virtual_memory.set(stat.vsize_bytes);
            self.threads.set(stat.threads);
            if let Some(boot) = boot_time() {
                self.start_time
                    .set(boot + stat.start_ticks as f64 / ticks_per_second());
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(entries.count() as i64);
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds.set(limit.rlim_cur.min(i64::MAX as u64) as i64);
        }
    }
}

struct Stat {
    cpu_ticks: u64,
    threads: i64,
    start_ticks: u64,
    vsize_bytes: i64,
    rss_pages: i64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// proc(5): fields after the command name, which is in parentheses and may contain spaces.
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state); field n is fields[n - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            cpu_ticks: field(14)? + field(15)?,
            threads: field(20)? as i64,
            start_ticks: field(22)?,
            vsize_bytes: field(23)? as i64,
            rss_pages: field(24)? as i64,
        })
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size } else { 4096 }
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parens() {
        let line = "4242 (tern (worker) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 987654321 2048 18446744073709551615";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.cpu_ticks, 300);
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_ticks, 12345);
        assert_eq!(stat.vsize_bytes, 987_654_321);
        assert_eq!(stat.rss_pages, 2048);
    }

    #[test]
    fn reads_this_process() {
        let registry = Registry::new();
        let metrics = ProcessMetrics::register(&registry);
        metrics.update();
        assert!(metrics.resident_memory.get() > 0);
        assert!(metrics.open_fds.get() > 0);
        assert!(metrics.threads.get() >= 1);
        assert!(metrics.start_time.get() > 1.0e9);
    }
}
