//! The relay's log: an env filter, text or JSON, and two defences against what peers send.
//!
//! - Every field is escaped in text logs: a value with a newline or a terminal escape (an
//!   identity, a room name, an error text that quotes input) cannot forge a line or repaint an
//!   operator's terminal. (JSON logs are escaped by JSON itself.)
//! - No call site writes more than [`LINES_PER_SECOND`] lines a second. Anything a peer can
//!   trigger per packet or per message would otherwise let it fill the disk; the excess is
//!   dropped and summed up once per [`SUMMARY_INTERVAL`] in one line per call site.

use crate::config::{LogConfig, LogFormat};
use std::fmt;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines one call site may write per second before the rest of that second is dropped.
pub const LINES_PER_SECOND: u32 = 100;
/// How often dropped lines are reported.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Installs the global subscriber (once per process) and starts the summary thread.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let limit = &*Box::leak(Box::new(CallsiteLimit::new(LINES_PER_SECOND)));
    let filter = tracing_subscriber::filter::FilterExt::and(filter, limit);
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let layer = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .fmt_fields(EscapedFields::default())
            .with_filter(filter)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
    {
        limit.report_every(SUMMARY_INTERVAL);
    }
}

/// Formats fields as tracing-subscriber's default does, then escapes every control character
/// (`\n`, `\r`, ESC ...) so each event stays one line of plain text.
#[derive(Default)]
pub struct EscapedFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut plain = String::new();
        self.inner.format_fields(Writer::new(&mut plain), fields)?;
        write_escaped(&mut writer, &plain)
    }
}

/// Writes `text` with control characters (C0, DEL, C1) as escapes.
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for ch in text.chars() {
        match ch {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Call sites hash into this many slots; two that share one share its budget (harmless: the
/// budget is generous and a collision only makes suppression earlier).
const SLOTS: usize = 512;

/// A per-call-site budget of lines per second, lock-free: the media worker logs through it.
pub struct CallsiteLimit {
    per_second: u32,
    started: Instant,
    slots: Box<[Slot]>,
}

#[derive(Default)]
struct Slot {
    callsite: AtomicPtr<Metadata<'static>>,
    /// The second (since `started`) that `lines` counts.
    second: AtomicU64,
    lines: AtomicU32,
    suppressed: AtomicU64,
}

impl CallsiteLimit {
    pub fn new(per_second: u32) -> Self {
        CallsiteLimit {
            per_second,
            started: Instant::now(),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    /// Whether one more line from `metadata` may be written now.
    pub fn allow(&self, metadata: &'static Metadata<'static>) -> bool {
        let slot = &self.slots[(metadata as *const Metadata<'_> as usize >> 4) % SLOTS];
        slot.callsite.store(
            metadata as *const Metadata<'static> as *mut Metadata<'static>,
            Ordering::Relaxed,
        );
        let second = self.started.elapsed().as_secs();
        if slot.second.swap(second, Ordering::Relaxed) != second {
            slot.lines.store(0, Ordering::Relaxed);
        }
        if slot.lines.fetch_add(1, Ordering::Relaxed) < self.per_second {
            true
        } else {
            slot.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Lines dropped since the last call, by call site (`target file:line`).
    pub fn take_suppressed(&self) -> Vec<(String, u64)> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let count = slot.suppressed.swap(0, Ordering::Relaxed);
                let metadata = slot.callsite.load(Ordering::Relaxed);
                // SAFETY: only `&'static Metadata` pointers are ever stored.
                let metadata = unsafe { metadata.as_ref() }?;
                (count > 0).then(|| (describe(metadata), count))
            })
            .collect()
    }

    fn report_every(&'static self, interval: Duration) {
        let spawned = std::thread::Builder::new()
            .name("log-summary".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    for (callsite, suppressed) in self.take_suppressed() {
                        tracing::warn!(
                            target: "tern::log",
                            suppressed,
                            callsite,
                            "log lines dropped: more than {} a second from one place",
                            self.per_second
                        );
                    }
                }
            });
        if let Err(err) = spawned {
            eprintln!("tern: cannot start the log summary thread: {err}");
        }
    }
}

fn describe(metadata: &Metadata<'_>) -> String {
    format!(
        "{} {}:{}",
        metadata.target(),
        metadata.file().unwrap_or("?"),
        metadata.line().unwrap_or(0)
    )
}

impl<S: Subscriber> Filter<S> for &'static CallsiteLimit {
    fn enabled(&self, _metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    /// Every level may pass, so the env filter alone bounds the level. Without a hint the
    /// combined filter had none either: `log`'s max level stayed at TRACE, and every `debug!`
    /// inside `rtc` (several per forwarded packet) went through the whole filter before being
    /// dropped, 2.8 % of the relay's time in the `two-rooms` profile.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        self.allow(event.metadata())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_env_filter_alone_bounds_the_level() {
        use tracing::level_filters::LevelFilter;
        let limit: &'static CallsiteLimit = Box::leak(Box::new(CallsiteLimit::new(10)));
        for (directives, level) in [
            ("info", LevelFilter::INFO),
            ("warn,tern::node=debug", LevelFilter::DEBUG),
            ("error", LevelFilter::ERROR),
        ] {
            let filter =
                tracing_subscriber::filter::FilterExt::and(EnvFilter::new(directives), limit);
            let hint = Filter::<tracing_subscriber::Registry>::max_level_hint(&filter);
            assert_eq!(hint, Some(level), "{directives}");
        }
    }

    fn text(captured: &Captured) -> String {
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn no_field_can_forge_a_line_or_an_escape_sequence() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(EscapedFields::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let identity = "mallory\n2026-11-30T00:00:00Z  INFO tern: admin logged in";
            let room = "\u{1b}[2J\u{1b}[31mred";
            let span = tracing::info_span!("session", room = %room);
            let _entered = span.enter();
            tracing::info!(identity = %identity, "joined {}", "\r\u{9b}x");
        });
        let out = text(&captured);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{9b}'));
        assert!(out.contains("mallory\\n2026"), "{out}");
        assert!(out.contains("\\u{1b}[2J"), "{out}");
    }

    #[test]
    fn a_call_site_writes_at_most_its_budget_a_second_and_the_rest_is_counted() {
        let limit: &'static CallsiteLimit = Box::leak(Box::new(CallsiteLimit::new(10)));
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(limit);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000 {
                tracing::warn!(i, "a peer sent something odd");
            }
            tracing::info!("another call site still gets its lines");
        });
        let out = text(&captured);
        // Normally 10; 20 if the loop straddled a second.
        let odd = out.matches("something odd").count();
        assert!((10..=20).contains(&odd), "{odd} lines");
        assert!(out.contains("another call site"));
        let suppressed = limit.take_suppressed();
        assert_eq!(suppressed.len(), 1);
        assert_eq!(suppressed[0].1, 1000 - odd as u64);
        assert!(
            suppressed[0].0.contains("logging.rs"),
            "{:?}",
            suppressed[0]
        );
        assert!(limit.take_suppressed().is_empty(), "taken once");
    }
}
