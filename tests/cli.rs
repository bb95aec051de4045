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
    for var in [
        "TERN_CONFIG",
        "TERN_HTTP_LISTEN",
        "TERN_MEDIA_LISTEN",
        "TERN_ADVERTISE_IPS",
        "TERN_API_KEY",
        "TERN_API_SECRET",
        "TERN_LOG",
        "TERN_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd
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
            let _ =
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
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
