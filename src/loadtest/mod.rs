//! `tern loadtest`: R rooms of P publishers and S subscribers against a relay, every packet
//! stamped so receivers measure loss, duplicates, reordering, jitter and end-to-end latency.
//!
//! Signaling runs as one small task per participant on the async runtime; media runs on a few
//! driver threads, each owning many `rtc` peer connections and their UDP sockets
//! ([`driver`]). Participants join at a steady rate; measurement starts once all of them
//! receive everything they expect, and counts packets by their send time.

mod cpu;
mod driver;
mod media;
mod net;
mod participant;
mod peer;
mod poller;
mod publisher;
mod report;
mod scenario;
mod shared;
mod signaling;
mod stats;
mod token;

pub use report::Report;

use anyhow::{Context, bail};
use clap::Parser;
use publisher::MediaSettings;
use report::{Progress, RunFacts, Totals};
use scenario::Shape;
use shared::{Counters, Shared, clock_ns, snapshot};
use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tern_signaling::auth::KeySet;
use token::TokenSource;
use tokio::sync::watch;

/// After the window closes, packets still in flight (and retransmissions) get this long to
/// arrive before the counts are taken.
const GRACE: Duration = Duration::from_secs(1);

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tern loadtest",
    about = "Load a relay with synthetic participants and measure what arrives",
    long_about = "Load a relay with synthetic participants and measure what arrives.\n\n\
        Joins R rooms of P publishers (Opus at 50 packets/s, VP8 at --video-kbps and 30 fps, \
        framed like a real encoder's, keyframes on schedule and on every PLI) and S subscribers. \
        Every participant receives every publisher of its room but itself. Every packet carries \
        its stream, number and send time, so receivers measure loss, duplicates, reordering, \
        jitter and end-to-end latency. Participants join at --ramp-per-s; measurement starts \
        once all of them receive everything and lasts --duration.\n\n\
        Tokens are minted with --api-key/--api-secret (TERN_API_KEY/TERN_API_SECRET), or, \
        without a key, fetched from a dev-mode relay's /dev/token (loopback only).\n\n\
        A relay bounds what one client address may do: joins per minute \
        (http.max_joins_per_ip_per_minute, 120) and connections \
        (http.max_connections_per_client, 256); and participants per room \
        (room.max_participants, 100). For large runs raise the settings on the relay and spread \
        participants over several local addresses with --local-ip."
)]
pub struct LoadtestArgs {
    /// The relay's HTTP address; signaling is its /rtc WebSocket (plain HTTP only).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub url: String,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// Publishers per room (each also receives the room's other publishers).
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Subscribers per room (receive only).
    #[arg(long, default_value_t = 10)]
    pub subscribers: u32,
    /// How long to measure once everybody receives, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Participants joining per second during ramp-up (signaling is not stampeded).
    #[arg(long, default_value_t = 20.0)]
    pub ramp_per_s: f64,
    /// VP8 bitrate of each publisher in kbit/s (30 fps; keyframes are 4 times a delta frame).
    #[arg(long, default_value_t = 500)]
    pub video_kbps: u32,
    /// Publish Opus only.
    #[arg(long)]
    pub audio_only: bool,
    /// Join as end-to-end encrypting participants (`e2ee=1`), with every frame behind its clear
    /// codec bytes pseudo-random, as encrypted frames look to the relay.
    #[arg(long)]
    pub e2ee: bool,
    /// Subscribers count the relay's RTP without decrypting it once they receive every stream,
    /// so that the generator costs far less than the relay and can saturate it (run the relay
    /// with --media-bandwidth-estimation false: such receivers send no transport-cc feedback).
    /// Loss is then counted by arrival time; latency and jitter are not measured.
    #[arg(long)]
    pub count_only: bool,
    /// A keyframe this often (and whenever the relay sends a PLI), e.g. 3s.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub keyframe_interval: Duration,
    /// Simulcast layers per video track, 1 to 3. Accepted so scripts can be written ahead, but
    /// only one layer is sent for now: values above 1 behave as 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub simulcast_layers: u8,
    /// API key id to mint join tokens with (with --api-secret); without one, tokens come from
    /// the relay's dev-mode /dev/token.
    #[arg(
        long,
        env = "TERN_API_KEY",
        value_name = "KID",
        requires = "api_secret"
    )]
    pub api_key: Option<String>,
    /// API secret for --api-key.
    #[arg(
        long,
        env = "TERN_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        requires = "api_key"
    )]
    pub api_secret: Option<String>,
    /// Local addresses to spread participants over, round-robin (signaling and media; repeat or
    /// comma-separate), e.g. 127.0.0.1,127.0.0.2 against a relay on loopback. The relay bounds
    /// joins and connections per client address, so large runs either raise those limits or
    /// use several.
    #[arg(long = "local-ip", value_delimiter = ',', value_name = "IP")]
    pub local_ips: Vec<IpAddr>,
    /// Media driver threads (default: half the cores, at least one).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How long to wait after the last join for everybody to receive; measurement then starts
    /// anyway and the report says how many were ready.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Prefix of room names and identities (a random run id follows it).
    #[arg(long, default_value = "load", value_name = "PREFIX")]
    pub room_prefix: String,
    /// Print one JSON document with the summary instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `30s`, `2m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?} (e.g. 30s, 2m)"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("bad duration {text:?}"))
}

/// The `tern loadtest` command: runs, then prints the table or the JSON document.
pub fn main(args: LoadtestArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Runs one load test and returns its summary. Usable from tests with a relay in-process.
pub async fn run(args: &LoadtestArgs) -> anyhow::Result<Report> {
    let shape = Shape {
        rooms: args.rooms,
        publishers: args.publishers,
        subscribers: args.subscribers,
        audio_only: args.audio_only,
    };
    if shape.rooms == 0 || shape.publishers == 0 {
        bail!("a load test needs at least one room and one publisher per room");
    }
    if !args.ramp_per_s.is_finite() || args.ramp_per_s <= 0.0 {
        bail!("--ramp-per-s must be positive");
    }
    if args.simulcast_layers > 1 {
        eprintln!(
            "note: --simulcast-layers {}: only one layer is sent for now",
            args.simulcast_layers
        );
    }
    let authority = authority(&args.url)?;
    let tokens = token_source(args, &authority)?;
    raise_open_file_limit();
    clock_ns(Instant::now()); // fixes the epoch before any packet is stamped
    let run_id = format!("{}-{:04x}", args.room_prefix, rand::random::<u16>());
    let specs = scenario::participants(shape, &run_id);
    let shared = Arc::new(Shared::default());
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let media = MediaSettings {
        video_bps: u64::from(args.video_kbps) * 1000,
        audio_only: args.audio_only,
        keyframe_interval: args.keyframe_interval,
        e2ee: args.e2ee,
        count_only: args.count_only,
    };
    let mut drivers = Vec::new();
    let mut counters = Vec::new();
    for id in 0..threads {
        let c = Arc::new(Counters::default());
        drivers.push(driver::spawn(id, shared.clone(), c.clone(), media.clone())?);
        counters.push(c);
    }
    let ctx = Arc::new(signaling::Context {
        authority: authority.clone(),
        e2ee: args.e2ee,
        local_ips: args.local_ips.clone(),
        tokens,
        shared: shared.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let mut progress = Progress::new(std::io::stdout().is_terminal(), specs.len());

    // Ramp-up: one join every 1/ramp_per_s, then wait until everybody receives.
    let began = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / args.ramp_per_s);
    let mut sessions = Vec::new();
    for spec in specs.iter().cloned() {
        let at = began + gap.mul_f64(spec.index as f64);
        while Instant::now() < at {
            progress.tick("ramp-up", &shared, snapshot(&counters));
            let step = at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            tokio::time::sleep(step).await;
        }
        let driver = drivers[spec.index % threads].clone();
        sessions.push(tokio::spawn(signaling::participant(
            spec,
            ctx.clone(),
            driver,
            stopped.clone(),
        )));
    }
    let deadline = Instant::now() + args.ready_timeout;
    while shared.ready.load(Relaxed) < specs.len()
        && shared.failed.load(Relaxed) < specs.len()
        && Instant::now() < deadline
    {
        progress.tick("ramp-up", &shared, snapshot(&counters));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_up = began.elapsed();
    if shared.joined.load(Relaxed) == 0 {
        let _ = stop.send(true);
        for driver in &drivers {
            driver.finish().await;
        }
        progress.clear();
        bail!(
            "no participant could join: {}",
            shared
                .first_error()
                .unwrap_or_else(|| "no answer from the relay".into())
        );
    }
    let participants_ready = shared.ready.load(Relaxed);
    if participants_ready < specs.len() {
        progress.clear();
        eprintln!(
            "warning: {participants_ready} of {} participants receive everything after {:.1} s; measuring anyway",
            specs.len(),
            ramp_up.as_secs_f64()
        );
    }

    // The measurement window.
    let cpu_before = cpu::process();
    let threads_before = threads_cpu(&drivers);
    let window_start = Instant::now();
    shared.open_window(window_start);
    while window_start.elapsed() < args.duration {
        progress.tick("measuring", &shared, snapshot(&counters));
        let left = args.duration.saturating_sub(window_start.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
    }
    let window_end = Instant::now();
    shared.close_window(window_end);
    let cpu = cpu::process().saturating_sub(cpu_before);
    let media_threads_cpu = threads_before
        .zip(threads_cpu(&drivers))
        .map(|(before, after)| after.saturating_sub(before));
    tokio::time::sleep(GRACE).await;

    // Counts first (drivers stop and close their peer connections), then everybody leaves.
    let mut totals = Totals::default();
    for driver in &drivers {
        if let Some(t) = driver.finish().await {
            totals.merge(t);
        }
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for session in sessions {
            let _ = session.await;
        }
    })
    .await;
    progress.clear();
    let facts = RunFacts {
        url: args.url.clone(),
        shape,
        participants: specs.len(),
        video_kbps: args.video_kbps,
        e2ee: args.e2ee,
        count_only: args.count_only,
        threads,
        ramp_up,
        window: window_end - window_start,
        cpu,
        media_threads_cpu,
        participants_ready,
    };
    Ok(Report::new(facts, totals, snapshot(&counters), &shared))
}

/// `host:port` of an `http://` URL (a trailing path is ignored).
fn authority(url: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!(
            "--url must be http://HOST:PORT (plain HTTP; the relay's /rtc WebSocket is found there)"
        );
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("--url {url:?} names no host");
    }
    Ok(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        },
    )
}

fn token_source(args: &LoadtestArgs, authority: &str) -> anyhow::Result<TokenSource> {
    Ok(match (&args.api_key, &args.api_secret) {
        (Some(kid), Some(secret)) => TokenSource::Mint {
            keys: KeySet::new([(kid.clone(), secret.clone().into_bytes())]),
            kid: kid.clone(),
            // Valid through ramp-up and the run; a participant whose token expired mid-run
            // would not care (tokens are checked at join), but a retry after 429 would.
            ttl: args.duration + args.ready_timeout + Duration::from_secs(3600),
        },
        (None, None) => TokenSource::DevEndpoint {
            authority: authority.to_owned(),
        },
        _ => bail!("--api-key and --api-secret go together"),
    })
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2)
}

/// The driver threads' CPU time together; `None` if any cannot be read.
fn threads_cpu(drivers: &[driver::DriverHandle]) -> Option<Duration> {
    drivers.iter().map(|d| cpu::thread(d.tid)).sum()
}

/// Each participant holds a TCP and one or two UDP sockets: a large run needs more than the
/// usual soft limit of 1,024 descriptors.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:18080").unwrap(),
            "127.0.0.1:18080"
        );
        assert_eq!(
            authority("http://relay.example/").unwrap(),
            "relay.example:80"
        );
        assert_eq!(authority("http://[::1]:8080/x").unwrap(), "[::1]:8080");
        assert!(authority("https://relay.example").is_err());
        assert!(authority("127.0.0.1:8080").is_err());
    }

    #[test]
    fn arguments_parse_with_defaults() {
        let args =
            LoadtestArgs::try_parse_from(["loadtest", "--rooms", "2", "--duration", "3s"]).unwrap();
        assert_eq!((args.rooms, args.publishers, args.subscribers), (2, 1, 10));
        assert_eq!(args.duration, Duration::from_secs(3));
        assert!(LoadtestArgs::try_parse_from(["loadtest", "--simulcast-layers", "4"]).is_err());
    }
}
