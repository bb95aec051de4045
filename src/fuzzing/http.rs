//! The HTTP port: arbitrary bytes as a request head, and past a WebSocket upgrade as frames,
//! through the relay's real serving (connection limits, hyper, the router, the signaling
//! session) over a real TCP connection to a relay started once per process.
//!
//! The first byte picks the shape, so that a fuzzer reaches past the request line:
//! - even: the bytes are the whole request;
//! - `1 mod 4`: a valid request line for `/rtc` with a valid token, then the bytes as headers;
//! - `3 mod 4`: a complete WebSocket upgrade with a valid token, then the bytes as frames.
//!
//! A panic on any of the relay's threads aborts the process (a fuzzer's crash), and the relay
//! must keep answering `/healthz`.

use crate::app::Running;
use crate::config::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use tern_signaling::auth::{Grants, claims_for};

struct Relay {
    addr: SocketAddr,
    token: String,
    _running: Running,
    _runtime: tokio::runtime::Runtime,
}

fn relay() -> &'static Relay {
    static RELAY: OnceLock<Relay> = OnceLock::new();
    RELAY.get_or_init(|| {
        std::panic::set_hook(Box::new(|info| {
            // Straight to the stream: a test harness would capture `eprintln!` and lose it.
            let _ = writeln!(std::io::stderr(), "panic: {info}");
            std::process::abort();
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut config = Config::default();
        config.http.listen = "127.0.0.1:0".parse().expect("an address");
        config.media.listen = "127.0.0.1:0".parse().expect("an address");
        // Every input comes from one address, many times a second.
        config.http.max_joins_per_ip_per_minute = 0;
        config.session.max_messages_per_s = 1_000;
        let running = runtime
            .block_on(crate::app::start(config))
            .expect("the relay starts");
        // No subscribe grant: a join then costs no peer connection, and the fuzzer stays fast.
        let claims = claims_for(
            "fuzz",
            "fuzzer",
            "fuzzer",
            Grants {
                subscribe: false,
                ..Grants::participant()
            },
            SystemTime::now(),
            Duration::from_secs(24 * 3600),
        );
        let token = running
            .keys
            .mint(crate::app::DEV_KID, &claims)
            .expect("a dev token");
        Relay {
            addr: running.http_addr,
            token,
            _running: running,
            _runtime: runtime,
        }
    })
}

/// One connection carrying `data` as described in the module documentation.
pub fn http_connection(data: &[u8]) {
    let relay = relay();
    let (shape, rest) = match data.split_first() {
        Some((shape, rest)) => (*shape, rest),
        None => (0, data),
    };
    let mut request = Vec::with_capacity(rest.len() + 512);
    match shape % 4 {
        1 => {
            request.extend_from_slice(
                format!("GET /rtc?access_token={} HTTP/1.1\r\n", relay.token).as_bytes(),
            );
            request.extend_from_slice(rest);
        }
        3 => {
            request.extend_from_slice(
                format!(
                    "GET /rtc?access_token={} HTTP/1.1\r\nHost: localhost\r\n\
                     Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                    relay.token
                )
                .as_bytes(),
            );
            request.extend_from_slice(rest);
        }
        _ => request.extend_from_slice(rest),
    }
    exchange(relay.addr, &request, Duration::from_millis(30));
    // Now and then, and after every upgrade (the session task lives on), the relay must still
    // answer.
    if shape % 4 == 3 || rest.first().is_some_and(|b| *b == 0) {
        // The answer ends the connection (`Connection: close`); the wait is only a bound.
        let answer = exchange(
            relay.addr,
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        );
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "/healthz: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// Sends `bytes` and reads what comes back until the server closes or nothing arrives for
/// `wait` (a server waiting for more of a head would otherwise hold the fuzzer for its whole
/// deadline). No half-close: hyper ends a connection at the client's EOF, answered or not.
fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(wait));
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while answer.len() < 1 << 20 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    answer
}
