//! Receiving many datagrams with one system call (`recvmmsg`).
//!
//! In a mesh every participant publishes, so the relay receives a datagram for every few it
//! sends; one `recvfrom` each paid the kernel entry once per datagram. `recvmmsg` fills up to
//! [`RECV_BATCH`] slots of one reused buffer at once; the driver copies each datagram out (a
//! memcpy of about a kilobyte, far cheaper than a system call) so that slots are reused at once
//! and a datagram the node keeps holds only its own bytes.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams taken from the kernel per call.
pub const RECV_BATCH: usize = 32;
/// Bytes per slot: more than any datagram a leg accepts (`guard::MAX_DATAGRAM_BYTES`), so a
/// longer one arrives cut to this length, still over the limit, and is dropped as oversized.
const SLOT_BYTES: usize = 2_048;
const _: () = assert!(SLOT_BYTES > super::guard::MAX_DATAGRAM_BYTES);

/// Reusable space for `recvmmsg`.
pub struct RecvBatch {
    slots: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Datagrams the last call received.
    received: usize,
}

// SAFETY: the raw pointers inside the iovecs and headers point into `slots` and `addrs`, which
// are allocated once and never resized, and are rebuilt before every call.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) address.
        let empty: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RecvBatch {
            slots: vec![0; RECV_BATCH * SLOT_BYTES],
            addrs: vec![empty; RECV_BATCH],
            iovecs: Vec::with_capacity(RECV_BATCH),
            headers: Vec::with_capacity(RECV_BATCH),
            received: 0,
        }
    }
}

impl RecvBatch {
    /// Receives what is waiting on `fd` (non-blocking), up to [`RECV_BATCH`] datagrams; a
    /// `WouldBlock` error when nothing is. (Under tokio, call it inside `try_io`, so that the
    /// runtime learns the socket was drained: otherwise it reports it readable forever.)
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received = 0;
        self.iovecs.clear();
        self.headers.clear();
        for slot in self.slots.chunks_exact_mut(SLOT_BYTES) {
            self.iovecs.push(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT_BYTES,
            });
        }
        for (addr, iovec) in self.addrs.iter_mut().zip(self.iovecs.iter_mut()) {
            // SAFETY: an all-zero mmsghdr is a valid empty header; the fields set point at live
            // buffers owned by `self`.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iovec as *mut libc::iovec;
            header.msg_hdr.msg_iovlen = 1;
            self.headers.push(header);
        }
        loop {
            // SAFETY: `headers` holds RECV_BATCH initialised headers whose pointers stay valid
            // for the call (nothing is moved or resized until it returns).
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.headers.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                self.received = n as usize;
                return Ok(self.received);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
    }

    /// Datagram `index` of the last call: its sender and bytes (`None` for an address family
    /// other than IPv4/IPv6, which a UDP socket does not produce).
    pub fn datagram(&self, index: usize) -> Option<(SocketAddr, &[u8])> {
        if index >= self.received {
            return None;
        }
        let len = (self.headers[index].msg_len as usize).min(SLOT_BYTES);
        let bytes = &self.slots[index * SLOT_BYTES..index * SLOT_BYTES + len];
        Some((socket_addr(&self.addrs[index])?, bytes))
    }
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Datagrams received now (0 when none waits).
    fn receive(batch: &mut RecvBatch, socket: &UdpSocket) -> usize {
        match batch.receive(socket.as_raw_fd()) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn one_call_takes_every_waiting_datagram_with_its_sender() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let to = receiver.local_addr().unwrap();
        let senders: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, sender) in senders.iter().enumerate() {
            sender.send_to(&vec![i as u8; 100 + i], to).unwrap();
        }
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        // Loopback delivers at once, but the test does not rely on one call taking all three.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 3 && std::time::Instant::now() < deadline {
            let n = receive(&mut batch, &receiver);
            for i in 0..n {
                let (from, bytes) = batch.datagram(i).unwrap();
                got.push((from, bytes.to_vec()));
            }
        }
        assert_eq!(got.len(), 3);
        for (i, sender) in senders.iter().enumerate() {
            assert_eq!(got[i].0, sender.local_addr().unwrap());
            assert_eq!(got[i].1, vec![i as u8; 100 + i]);
        }
        assert!(batch.datagram(3).is_none());
        let drained = batch.receive(receiver.as_raw_fd()).unwrap_err();
        assert_eq!(drained.kind(), io::ErrorKind::WouldBlock, "nothing left");
    }

    #[test]
    fn an_oversized_datagram_arrives_cut_and_still_over_the_limit() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(&[7u8; 9_000], receiver.local_addr().unwrap())
            .unwrap();
        sender
            .send_to(b"next", receiver.local_addr().unwrap())
            .unwrap();
        let mut batch = RecvBatch::default();
        let mut lens = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while lens.len() < 2 && std::time::Instant::now() < deadline {
            let n = receive(&mut batch, &receiver);
            lens.extend((0..n).map(|i| batch.datagram(i).unwrap().1.len()));
        }
        assert_eq!(lens, vec![SLOT_BYTES, 4]);
    }

    #[test]
    fn ipv6_senders_keep_their_address() {
        let receiver = UdpSocket::bind("[::1]:0").expect("IPv6 loopback (::1) is up");
        receiver.set_nonblocking(true).unwrap();
        let sender = UdpSocket::bind("[::1]:0").unwrap();
        sender
            .send_to(b"six", receiver.local_addr().unwrap())
            .unwrap();
        let mut batch = RecvBatch::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if receive(&mut batch, &receiver) > 0 {
                let (from, bytes) = batch.datagram(0).unwrap();
                assert_eq!(from, sender.local_addr().unwrap());
                assert_eq!(bytes, b"six");
                return;
            }
        }
        panic!("nothing received");
    }
}
