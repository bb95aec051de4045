//! The `tern` binary as an operator meets it: --help, configuration precedence, `tern token`,
//! and the example config staying true to the defaults.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tern::config::Config;
use tern_signaling::auth::KeySet;

fn tern() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    // The developer's environment must not leak into these tests.
    for (var, _) in std::env::vars() {
        if var.starts_with("TERN_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// Every setting has a flag and a variable; precedence holds for them too; a `TERN_*` variable
/// that names no setting stops the relay with a hint instead of being ignored.
#[test]
fn every_setting_has_a_flag_and_a_variable_and_unknown_variables_are_reported() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tern.example.toml");
    let help = String::from_utf8(tern().arg("--help").output().unwrap().stdout).unwrap();
    for setting in tern::settings::catalogue() {
        assert!(
            help.contains(&setting.env()),
            "--help does not name {}",
            setting.env()
        );
    }
    assert!(help.contains("--media-allow-srtp-sha1-80"));
    // A variable applies, a flag beats it, and validation names the key.
    let out = tern()
        .args(["config", "check", example])
        .env("TERN_ROOM_MAX_PARTICIPANTS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("room.max_participants"),
        "{out:?}"
    );
    let out = tern()
        .args(["config", "check", example, "--room-max-participants", "5"])
        .env("TERN_ROOM_MAX_PARTICIPANTS", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A misspelt variable is reported with the nearest real one.
    let out = tern()
        .args(["config", "check", example])
        .env("TERN_MEDIA_ALLOW_SRTP_SHA1_8", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TERN_MEDIA_ALLOW_SRTP_SHA1_8")
            && err.contains("TERN_MEDIA_ALLOW_SRTP_SHA1_80"),
        "{err}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthy(port: u16) -> bool {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(
                b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            );
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stream, &mut text);
            if text.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_example_config_lists_exactly_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tern.example.toml");
    let config = Config::from_file(std::path::Path::new(path)).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn help_explains_every_option() {
    let out = tern().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--config",
        "TERN_CONFIG",
        "--http-listen",
        "TERN_HTTP_LISTEN",
        "--media-listen",
        "TERN_MEDIA_LISTEN",
        "--advertise-ip",
        "--api-key",
        "--tls-listen",
        "--tls-cert",
        "--tls-key",
        "--allowed-origin",
        "--log",
        "token",
        "dev mode",
    ] {
        assert!(
            text.contains(needle),
            "--help does not mention {needle}:\n{text}"
        );
    }
}

#[test]
fn a_bad_config_fails_at_start_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tern-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[room]\nmax_participantz = 3\n").unwrap();
    let out = tern().arg("--config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_participantz"), "{err}");

    std::fs::write(&file, "[media]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = tern().arg("--config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("media.advertised_ips"));
}

#[test]
fn flags_beat_environment_beat_file() {
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("tern-cli-prec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tern.toml");
    std::fs::write(
        &file,
        format!("[http]\nlisten = \"127.0.0.1:{file_port}\"\n[media]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let spawn = |env: Option<u16>, flag: Option<u16>| {
        let mut cmd = tern();
        cmd.arg("--config")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(port) = env {
            cmd.env("TERN_HTTP_LISTEN", format!("127.0.0.1:{port}"));
        }
        if let Some(port) = flag {
            cmd.arg("--http-listen").arg(format!("127.0.0.1:{port}"));
        }
        Relay(cmd.spawn().unwrap())
    };
    {
        let _relay = spawn(None, None);
        assert!(healthy(file_port), "the file's address is used");
    }
    {
        let _relay = spawn(Some(env_port), None);
        assert!(healthy(env_port), "the environment beats the file");
    }
    {
        let _relay = spawn(Some(env_port), Some(flag_port));
        assert!(healthy(flag_port), "a flag beats the environment");
    }
}

#[test]
fn tern_token_signs_with_the_configured_key() {
    let secret = "0123456789abcdef0123456789abcdef-secret";
    let out = tern()
        .args([
            "token",
            "--room",
            "board",
            "--identity",
            "ceo",
            "--ttl",
            "2h",
            "--grant",
            "subscribe,admin",
        ])
        .env("TERN_API_KEY", "ops")
        .env("TERN_API_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let keys = KeySet::new([("ops".to_owned(), secret.as_bytes().to_vec())]);
    let claims = keys.verify(&token, SystemTime::now()).unwrap();
    assert_eq!(
        (claims.room.as_str(), claims.sub.as_str()),
        ("board", "ceo")
    );
    assert!(claims.grants.subscribe && claims.grants.admin && !claims.grants.publish);
    assert!(claims.exp >= claims.nbf + 7200 - 1);

    let out = tern()
        .args(["token", "--room", "r", "--identity", "i"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no key, no token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key configured"));
}

/// Sends a raw request and returns the status line (or what came back).
fn raw_request(port: u16, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn tokens_never_reach_the_log_even_at_debug() {
    let secret = "0123456789abcdef0123456789abcdef-logs";
    let keys = KeySet::new([("ops".to_owned(), secret.as_bytes().to_vec())]);
    let mint = |grants| {
        let claims = tern_signaling::auth::claims_for(
            "r",
            "alice",
            "alice",
            grants,
            SystemTime::now(),
            Duration::from_secs(600),
        );
        keys.mint("ops", &claims).unwrap()
    };
    let participant = mint(tern_signaling::auth::Grants::participant());
    let admin = mint(tern_signaling::auth::Grants {
        admin: true,
        ..Default::default()
    });
    let forged = format!("{participant}x");
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("tern-cli-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("relay.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let relay = Relay(
        tern()
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .args(["--media-listen", "127.0.0.1:0", "--log", "debug"])
            .env("TERN_API_KEY", "ops")
            .env("TERN_API_SECRET", secret)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    assert!(healthy(port));
    let upgrade = |token: &str| {
        format!(
            "GET /rtc?access_token={token} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    assert!(raw_request(port, &upgrade(&participant)).contains("101"));
    assert!(raw_request(port, &upgrade(&forged)).contains("401"));
    let api = format!(
        "GET /api/rooms HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\n\
         Connection: close\r\n\r\n"
    );
    assert!(raw_request(port, &api).contains("200"));
    // Wait until the relay has logged all three requests (and the join), then stop it.
    let end = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.matches("http request").count() >= 4 && text.contains("session open") {
            break text;
        }
        assert!(Instant::now() < end, "requests not logged:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(relay);
    assert!(text.contains("path=/rtc"), "{text}");
    // Everything a session logs carries its room, identity and participant id.
    assert!(
        text.contains("session{room=r identity=alice participant=PA_"),
        "{text}"
    );
    for token in [&participant, &forged, &admin] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token reached the log");
    }
    assert!(
        !text.contains("access_token"),
        "a query string reached the log"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_check_accepts_good_files_and_names_the_key_in_bad_ones() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tern.example.toml");
    let out = tern().args(["config", "check", example]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let dir = std::env::temp_dir().join(format!("tern-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[room]\nmax_participantz = 3\n", "max_participantz"),
        ("[room]\nmax_participants = \"many\"\n", "max_participants"),
        ("[room]\nmax_participants = 0\n", "room.max_participants"),
        (
            "[room]\ndeparture_timeout_s = 0\n",
            "room.departure_timeout_s",
        ),
        (
            "[http]\ntls_listen = \"127.0.0.1:8443\"\n",
            "http.tls_listen",
        ),
        (
            "[http]\nlisten = \"0.0.0.0:8080\"\n",
            "auth.keys", // dev mode on a public address
        ),
        (
            "[auth]\nkeys = { k = \"short\" }\n",
            "auth.keys", // secret under 32 bytes
        ),
        (
            "[http]\ntls_listen = \"127.0.0.1:8443\"\ntls_cert_file = \"/nonexistent/cert.pem\"\n\
             tls_key_file = \"/nonexistent/key.pem\"\n",
            "/nonexistent/cert.pem",
        ),
        ("[drain]\ntimeout = 5\n", "timeout"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = tern()
            .args(["config", "check"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} passed the check");
        assert!(
            err.contains(key),
            "{text}: the error does not name {key}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
