//! Binding the media socket: large kernel buffers (a burst or a flood must not overflow the
//! receive queue and cost other participants their packets) and dual-stack for IPv6.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use tokio::net::UdpSocket;
use tracing::{info, warn};

/// Binds the media UDP socket at `addr` with receive and send buffers of `buffer_bytes`.
/// An IPv6 wildcard address also accepts IPv4 (v4-mapped). Call inside the runtime that will
/// wait on it.
pub fn bind_media_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    UdpSocket::from_std(bind_std_media_socket(addr, buffer_bytes)?)
}

/// [`bind_media_socket`], not yet registered with a runtime (non-blocking), for handing to
/// another thread.
pub fn bind_std_media_socket(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    set_buffers(&socket, buffer_bytes);
    Ok(socket.into())
}

fn set_buffers(socket: &Socket, bytes: usize) {
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
    // The kernel caps SO_RCVBUF at net.core.rmem_max; with CAP_NET_ADMIN it can be forced.
    if socket.recv_buffer_size().unwrap_or(0) < bytes {
        force_buffer(socket, libc::SO_RCVBUFFORCE, bytes);
    }
    if socket.send_buffer_size().unwrap_or(0) < bytes {
        force_buffer(socket, libc::SO_SNDBUFFORCE, bytes);
    }
    let (recv, send) = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    // Linux reports double the requested size (bookkeeping overhead).
    if recv < bytes {
        warn!(
            recv,
            wanted = bytes,
            "media socket receive buffer is smaller than configured; raise net.core.rmem_max \
             (sysctl) so bursts and floods do not overflow it"
        );
    } else {
        info!(recv, send, "media socket buffers");
    }
}

fn force_buffer(socket: &Socket, option: libc::c_int, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
    // SAFETY: `fd` is a valid socket owned by `socket` for the duration of the call, and the
    // option value points to a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The media socket. A dual-stack (IPv6) socket sends to IPv4 peers through their v4-mapped
/// address; the rest of the relay sees plain IPv4 ([`normalize`](super::demux::normalize)).
pub struct MediaSocket {
    pub socket: UdpSocket,
    dual_stack: bool,
}

impl MediaSocket {
    pub fn new(socket: UdpSocket) -> std::io::Result<Self> {
        let dual_stack = socket.local_addr()?.is_ipv6();
        Ok(MediaSocket { socket, dual_stack })
    }

    /// The bound address, as the rest of the relay writes addresses (v4-mapped unmapped).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr().map(super::demux::normalize)
    }

    /// Whether IPv4 peers are reached through v4-mapped addresses.
    pub fn dual_stack(&self) -> bool {
        self.dual_stack
    }
}
