//! TCP connections to the relay from a chosen local address, so one generator can appear as
//! several clients (the relay bounds what one client address may hold).

use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `authority` (`host:port`), from `local` if given (then only to relay addresses
/// of its family).
pub async fn connect(authority: &str, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(authority).await? {
        if local.is_some_and(|ip| ip.is_ipv4() != addr.is_ipv4()) {
            continue;
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                // Signaling is small request/answer traffic: no Nagle delay on SDP.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{authority} has no address of the --local-ip family"),
        )
    }))
}

/// What to add to an error where the relay dropped a connection without a word: it does that
/// to connections beyond its per-address cap.
pub fn closed_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe => {
            " (a relay closes connections beyond http.max_connections_per_client, 256 per \
             address by default: raise it, or spread participants with --local-ip)"
        }
        _ => "",
    }
}
