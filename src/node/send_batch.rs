//! Sending many datagrams with one system call (`sendmmsg`).
//!
//! One publisher packet becomes a copy per subscriber, each to another address. Sent one
//! `sendto` at a time, a third of the relay's CPU went into system calls (BENCHMARKS.md); one
//! `sendmmsg` per batch pays the kernel entry once. The buffers for the call (addresses, iovecs,
//! headers) are kept and reused, so a batch allocates nothing.

use super::output::Transmit;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams handed to the kernel per call (Linux takes at most `UIO_MAXIOV`, 1024).
pub const BATCH: usize = 64;

/// What happened to each datagram of a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    pub bytes: usize,
    /// The socket's send buffer was full: dropped.
    pub busy: usize,
    /// The kernel refused them (no route, bad address): dropped.
    pub failed: usize,
}

/// Reusable space for `sendmmsg`.
pub struct SendBatch {
    addrs: Vec<socket2::SockAddr>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Send IPv4 destinations as v4-mapped IPv6 (the socket is dual-stack IPv6).
    dual_stack: bool,
}

// SAFETY: the raw pointers inside the iovecs and headers only ever point into `addrs` and the
// caller's buffers during one `send` call, and are rebuilt at the start of each.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(dual_stack: bool) -> Self {
        SendBatch {
            addrs: Vec::with_capacity(BATCH),
            iovecs: Vec::with_capacity(BATCH),
            headers: Vec::with_capacity(BATCH),
            dual_stack,
        }
    }

    /// Sends every transmit of `transmits` on `fd` (non-blocking), `BATCH` per system call.
    pub fn send(&mut self, fd: RawFd, transmits: &[Transmit]) -> Sent {
        let mut sent = Sent::default();
        for chunk in transmits.chunks(BATCH) {
            self.fill(chunk);
            let count = chunk.len();
            let mut start = 0;
            while start < count {
                // SAFETY: `headers[start..count]` are initialised by `fill` and point into
                // `addrs`, `iovecs` and `chunk`, all alive and unmoved for this call.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.headers[start..count].as_mut_ptr(),
                        (count - start) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    let n = n as usize;
                    sent.datagrams += n;
                    sent.bytes += self.headers[start..start + n]
                        .iter()
                        .map(|h| h.msg_len as usize)
                        .sum::<usize>();
                    start += n;
                    continue;
                }
                // The first datagram of the rest failed: count it, go on with the next.
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        // The send buffer is full: so is it for the rest of this batch.
                        sent.busy += count - start;
                        start = count;
                    }
                    _ => {
                        sent.failed += 1;
                        start += 1;
                    }
                }
            }
        }
        sent
    }

    fn fill(&mut self, chunk: &[Transmit]) {
        self.addrs.clear();
        self.iovecs.clear();
        self.headers.clear();
        for transmit in chunk {
            let to = match transmit.to {
                SocketAddr::V4(v4) if self.dual_stack => {
                    SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
                }
                other => other,
            };
            self.addrs.push(socket2::SockAddr::from(to));
            self.iovecs.push(libc::iovec {
                iov_base: transmit.bytes.as_ptr() as *mut libc::c_void,
                iov_len: transmit.bytes.len(),
            });
        }
        // Pointers are taken only once both vectors are complete (no reallocation after).
        for (addr, iovec) in self.addrs.iter().zip(self.iovecs.iter_mut()) {
            // SAFETY: an all-zero msghdr is a valid empty header; the fields set below point
            // at live data.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            header.msg_hdr.msg_namelen = addr.len();
            header.msg_hdr.msg_iov = iovec as *mut libc::iovec;
            header.msg_hdr.msg_iovlen = 1;
            self.headers.push(header);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::output::Carrier;
    use bytes::BytesMut;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn udp(to: SocketAddr, bytes: &[u8]) -> Transmit {
        Transmit {
            to,
            carrier: Carrier::Udp,
            bytes: BytesMut::from(bytes),
        }
    }

    #[test]
    fn a_batch_reaches_every_destination_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let payloads: Vec<Vec<u8>> = (0..150u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let transmits: Vec<Transmit> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| udp(receivers[i % 3].local_addr().unwrap(), p))
            .collect();
        let mut batch = SendBatch::new(false);
        let sent = batch.send(sender.as_raw_fd(), &transmits);
        assert_eq!(sent.datagrams, 150);
        assert_eq!(sent.bytes, payloads.iter().map(Vec::len).sum::<usize>());
        assert_eq!((sent.busy, sent.failed), (0, 0));
        let mut buf = [0u8; 256];
        for (i, payload) in payloads.iter().enumerate() {
            let (n, _) = receivers[i % 3].recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], payload.as_slice());
        }
    }

    #[test]
    fn a_refused_datagram_costs_only_itself() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        // An IPv6 destination on an IPv4 socket is refused by the kernel.
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let transmits = [udp(to, b"one"), udp(bad, b"two"), udp(to, b"three")];
        let sent = SendBatch::new(false).send(sender.as_raw_fd(), &transmits);
        assert_eq!((sent.datagrams, sent.failed), (2, 1));
        let mut buf = [0u8; 16];
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"three");
    }
}
