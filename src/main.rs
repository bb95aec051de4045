//! The `tern` binary: `tern` (= `tern serve`) runs the relay; `tern token` mints a join token;
//! `tern loadtest` loads a relay with synthetic participants.

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use tern::config::{Config, LogFormat};
use tern_signaling::auth::{Grants, KeySet, check_claim_text, claims_for};
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "Tern: a secure video-call media relay (SFU) with built-in signaling.",
    long_about = "Tern: a secure video-call media relay (SFU) with built-in signaling.\n\n\
        With no arguments it starts in dev mode on 127.0.0.1: signaling and the web client on \
        http://127.0.0.1:8080, media on UDP 127.0.0.1:50000, and a generated secret so the \
        bundled page can mint its own tokens.\n\n\
        Settings come from defaults, then a TOML file (--config), then TERN_* environment \
        variables, then flags; deploy/tern.example.toml lists every option."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default).
    Serve(ServeArgs),
    /// Print a join token signed with a configured API key.
    Token(TokenArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    // Its help text is on `LoadtestArgs`.
    Loadtest(tern::loadtest::LoadtestArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a TOML configuration file (keys, values, combinations, TLS files) and say what is
    /// wrong, naming the key. Exits 0 when the file is good.
    Check {
        /// The file to check.
        file: PathBuf,
        /// TERN_* variables and these flags apply as when serving, so a file that relies on
        /// them (e.g. the API secret in TERN_API_SECRET) is checked as it will run.
        #[command(flatten)]
        serve: ServeArgs,
    },
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(short, long, env = "TERN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP/WebSocket listen address (signaling, web client, /healthz, /metrics).
    #[arg(long, env = "TERN_HTTP_LISTEN", value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// UDP address of the one media socket all peer connections share.
    #[arg(long, env = "TERN_MEDIA_LISTEN", value_name = "ADDR")]
    media_listen: Option<SocketAddr>,
    /// ICE-TCP listen address for clients whose UDP is blocked (off unless set).
    #[arg(long, env = "TERN_TCP_LISTEN", value_name = "ADDR")]
    tcp_listen: Option<SocketAddr>,
    /// IP address put in ICE candidates (repeat or comma-separate; needed when --media-listen
    /// is a wildcard such as 0.0.0.0).
    #[arg(
        long = "advertise-ip",
        env = "TERN_ADVERTISE_IPS",
        value_delimiter = ',',
        value_name = "IP"
    )]
    advertise_ips: Vec<IpAddr>,
    /// API key id for join tokens (with --api-secret); turns dev mode off.
    #[arg(
        long,
        env = "TERN_API_KEY",
        value_name = "KID",
        requires = "api_secret"
    )]
    api_key: Option<String>,
    /// API secret for --api-key (at least 32 bytes).
    #[arg(
        long,
        env = "TERN_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    api_secret: Option<String>,
    /// HTTPS/WSS listen address (with --tls-cert and --tls-key); plain HTTP stays on
    /// --http-listen.
    #[arg(long, env = "TERN_TLS_LISTEN", value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long, env = "TERN_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
    #[arg(long, env = "TERN_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Web origin allowed to use the relay from a browser besides its own, e.g.
    /// https://app.example.com (repeat or comma-separate; `*` allows any).
    #[arg(
        long = "allowed-origin",
        env = "TERN_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    allowed_origins: Vec<String>,
    /// Reverse proxy whose X-Forwarded-For names the client, for join limits: an address or CIDR
    /// range, e.g. 10.0.0.0/8 (repeat or comma-separate). Without one the header is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "TERN_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    trusted_proxies: Vec<String>,
    /// Shared secret of the TURN servers in ice.turn_urls (their coturn static-auth-secret).
    #[arg(
        long,
        env = "TERN_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    turn_secret: Option<String>,
    /// Log filter, e.g. `info` or `tern=debug,rtc=warn`.
    #[arg(long, env = "TERN_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// Log format.
    #[arg(long, env = "TERN_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Room the token admits to. With the admin grant, `*` means every room.
    #[arg(long)]
    room: String,
    /// Identity of the participant (unique per room).
    #[arg(long)]
    identity: String,
    /// Display name (defaults to the identity).
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. 3600, 90m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Comma-separated grants: publish, subscribe, publish_data, admin.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "publish,subscribe,publish_data"
    )]
    grant: Vec<String>,
    /// Key id to sign with (defaults to the only configured key).
    #[arg(long)]
    kid: Option<String>,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("bad duration unit in {text:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(seconds))
}

/// Settings named by their generic flag (`--section-key`), as (key, value).
type SettingFlags = Vec<(String, String)>;

/// The command line with a flag for every setting the named flags do not cover, on the
/// commands that read the configuration.
fn command() -> clap::Command {
    let with_settings = |mut cmd: clap::Command| {
        let taken: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for setting in tern::settings::catalogue() {
            let flag = setting.flag();
            if taken.contains(&flag) {
                continue;
            }
            let help = format!(
                "{} [file: {}; env: {}]",
                setting.help,
                setting.key,
                setting.env()
            );
            cmd = cmd.arg(
                clap::Arg::new(setting.key.clone())
                    .long(flag)
                    .value_name("VALUE")
                    .help(help)
                    .help_heading("Settings (each key of the configuration file)"),
            );
        }
        cmd
    };
    let cmd = with_settings(Cli::command());
    let cmd = cmd.mut_subcommand("serve", with_settings);
    let cmd = cmd.mut_subcommand("token", with_settings);
    cmd.mut_subcommand("config", |config| {
        config.mut_subcommand("check", with_settings)
    })
}

/// The generic setting flags given in `matches`.
fn setting_flags(matches: &clap::ArgMatches) -> SettingFlags {
    tern::settings::catalogue()
        .into_iter()
        .filter_map(|setting| {
            let value = matches
                .try_get_one::<String>(&setting.key)
                .ok()
                .flatten()?
                .clone();
            Some((setting.key, value))
        })
        .collect()
}

/// The `TERN_*` variables the named flags read themselves.
fn named_variables() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(str::to_owned))
        .collect()
}

fn load_config(args: &ServeArgs, flags: &SettingFlags) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let named = named_variables();
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    let from_env = tern::settings::from_environment(std::env::vars(), &named)?;
    config = tern::settings::apply(config, &from_env)?;
    if let Some(addr) = args.http_listen {
        config.http.listen = addr;
    }
    if let Some(addr) = args.media_listen {
        config.media.listen = addr;
    }
    if let Some(addr) = args.tcp_listen {
        config.media.tcp_listen = Some(addr);
    }
    if !args.advertise_ips.is_empty() {
        config.media.advertised_ips = args.advertise_ips.clone();
    }
    if let Some(addr) = args.tls_listen {
        config.http.tls_listen = Some(addr);
    }
    if let Some(file) = &args.tls_cert {
        config.http.tls_cert_file = Some(file.clone());
    }
    if let Some(file) = &args.tls_key {
        config.http.tls_key_file = Some(file.clone());
    }
    if !args.allowed_origins.is_empty() {
        config.http.allowed_origins = args.allowed_origins.clone();
    }
    if !args.trusted_proxies.is_empty() {
        config.http.trusted_proxies = args.trusted_proxies.clone();
    }
    if let Some(secret) = &args.turn_secret {
        config.ice.turn_secret = secret.clone();
    }
    if let (Some(kid), Some(secret)) = (&args.api_key, &args.api_secret) {
        config.auth.keys.insert(kid.clone(), secret.clone());
    }
    if let Some(filter) = &args.log {
        config.log.filter = filter.clone();
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    let config = tern::settings::apply(config, flags)?;
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config) {
    tern::logging::init(&config.log);
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // The generic setting flags of whichever command runs.
    let flags = match matches.subcommand() {
        Some(("config", config)) => config
            .subcommand()
            .map(|(_, check)| setting_flags(check))
            .unwrap_or_default(),
        Some((_, sub)) => setting_flags(sub),
        None => setting_flags(&matches),
    };
    let result = match cli.command {
        Some(Command::Token(args)) => token(args, &flags),
        Some(Command::Config(ConfigCommand::Check { file, serve })) => {
            check_config(file, serve, &flags)
        }
        Some(Command::Serve(args)) => serve(args, &flags),
        Some(Command::Loadtest(args)) => tern::loadtest::main(args),
        None => serve(cli.serve, &flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tern: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs, flags: &SettingFlags) -> anyhow::Result<()> {
    let config = load_config(&args, flags)?;
    init_logging(&config);
    let drain_timeout = Duration::from_secs(config.drain.timeout_s);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        // Both streams exist before /readyz can say yes (a SIGTERM from an orchestrator must never
        // meet the default handler) and live for the whole run: a listener made anew on each loop
        // turn, as `tokio::signal::ctrl_c()` is, misses a signal that lands between two turns.
        let mut signals = Signals {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        };
        let mut running = tern::app::start(config).await?;
        let url = format!("http://{}/", running.http_addr);
        if running.dev_mode {
            tracing::info!(
                "dev mode: open {url}?room=dev&name=alice and {url}?room=dev&name=bob in two tabs"
            );
        } else {
            tracing::info!("serving signaling on {url}rtc; mint join tokens with `tern token`");
        }
        tokio::select! {
            _ = running.wait() => bail!("the relay stopped unexpectedly"),
            _ = signals.interrupt.recv() => {
                tracing::info!("interrupted; shutting down");
                Ok(())
            }
            _ = signals.terminate.recv() => drain(&mut running, &mut signals, drain_timeout).await,
        }
    });
    // A blocking task still running (a DNS lookup for a webhook, say) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

/// SIGTERM: stop taking joins, let calls end (or the timeout pass), then exit. Another SIGTERM or
/// a SIGINT exits at once.
async fn drain(
    running: &mut tern::app::Running,
    signals: &mut Signals,
    timeout: Duration,
) -> anyhow::Result<()> {
    running.drain();
    tracing::info!(
        timeout_s = timeout.as_secs(),
        "SIGTERM: draining; exiting when the last participant leaves (signal again to exit now)"
    );
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => {
                tracing::warn!("second SIGTERM: exiting now");
                return Ok(());
            }
            _ = signals.interrupt.recv() => {
                tracing::warn!("SIGINT while draining: exiting now");
                return Ok(());
            }
            _ = &mut deadline => {
                let left = running.participants().unwrap_or(0);
                tracing::warn!(participants = left, "drain timeout: exiting with calls in progress");
                return Ok(());
            }
            _ = running.wait() => bail!("the relay stopped unexpectedly while draining"),
            _ = poll.tick() => {
                if running.participants().unwrap_or(0) == 0 {
                    tracing::info!("drained: no participants left; exiting");
                    return Ok(());
                }
            }
        }
    }
}

fn check_config(file: PathBuf, mut args: ServeArgs, flags: &SettingFlags) -> anyhow::Result<()> {
    args.config = Some(file.clone());
    let config = load_config(&args, flags)?;
    if let (Some(cert), Some(key)) = (&config.http.tls_cert_file, &config.http.tls_key_file) {
        tern_signaling::tls::server_config(cert, key)?;
    }
    println!(
        "{}: ok ({} mode)",
        file.display(),
        if config.dev_mode() {
            "dev"
        } else {
            "production"
        }
    );
    Ok(())
}

fn token(args: TokenArgs, flags: &SettingFlags) -> anyhow::Result<()> {
    let config = load_config(&args.serve, flags)?;
    if config.dev_mode() {
        bail!(
            "no API key configured: dev-mode secrets are generated per process, so a token \
             minted here would not verify. Configure auth.keys or TERN_API_KEY/TERN_API_SECRET, \
             or fetch a dev token from http://127.0.0.1:8080/dev/token"
        );
    }
    let kid = match args.kid {
        Some(kid) => kid,
        None if config.auth.keys.len() == 1 => {
            config.auth.keys.keys().next().cloned().unwrap_or_default()
        }
        None => bail!("several keys are configured; choose one with --kid"),
    };
    let mut grants = Grants::default();
    for grant in &args.grant {
        match grant.trim() {
            "publish" => grants.publish = true,
            "subscribe" => grants.subscribe = true,
            "publish_data" => grants.publish_data = true,
            "admin" => grants.admin = true,
            "" => {}
            other => bail!("unknown grant {other:?} (publish, subscribe, publish_data, admin)"),
        }
    }
    let keys = KeySet::new(
        config
            .auth
            .keys
            .iter()
            .map(|(k, s)| (k.clone(), s.clone().into_bytes())),
    );
    let name = args.name.unwrap_or_else(|| args.identity.clone());
    if check_claim_text(&args.identity, &name, &args.room).is_err() {
        bail!(
            "identity and room must be 1 to 256 characters and the name at most 256, with no \
             control characters: the relay refuses such a token"
        );
    }
    let claims = claims_for(
        &args.room,
        &args.identity,
        &name,
        grants,
        SystemTime::now(),
        args.ttl,
    );
    let token = keys
        .mint(&kid, &claims)
        .map_err(|e| anyhow::anyhow!("cannot sign with key {kid:?}: {e}"))?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
