//! Which address a request comes from. Normally the TCP peer; behind a reverse proxy that the
//! operator trusts, the client the proxy names in `X-Forwarded-For`. Join limits and the dev-mode
//! loopback check go by this address, so one proxy does not make all its clients one client, and
//! nobody else can pick their own address by sending the header.

use axum::http::HeaderMap;
use std::net::IpAddr;

/// `X-Forwarded-For` hops looked at, from the right; a longer chain is cut there.
const MAX_HOPS: usize = 16;

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = addr.trim().parse().ok()?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix {
            Some(p) => p.trim().parse().ok().filter(|p| *p <= bits)?,
            None => bits,
        };
        // Clients are compared in canonical form (IPv4 clients of a dual-stack listener arrive
        // as `::ffff:a.b.c.d`), so a range inside ::ffff:0:0/96 is an IPv4
        // range; a wider one cannot hold a canonical client and stays IPv6.
        Some(match base {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => Network {
                base: base.to_canonical(),
                prefix: prefix - 96,
            },
            _ => Network { base, prefix },
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed. Empty (the default): the header is
/// ignored.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

impl TrustedProxies {
    /// Parses addresses and CIDR ranges; the error names the first entry that is neither.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        let networks = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                Network::parse(entry).ok_or_else(|| {
                    format!("`{entry}` is not an IP address or CIDR range (e.g. 10.0.0.0/8)")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { networks })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the TCP peer unless it is a trusted proxy; then, walking
    /// `X-Forwarded-For` from the right (each proxy appends the address it was reached from),
    /// the first hop that is not a trusted proxy. Only the part of the chain that trusted proxies
    /// wrote is believed; an unreadable hop ends the walk at the last trusted one.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let mut ip = peer.to_canonical();
        if !self.trusts(ip) {
            return Client { ip, named: true };
        }
        // Split as bytes: a client's own non-ASCII junk earlier in a line the proxy appended to
        // must spoil only its own hop, not hide the hop the proxy wrote.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','));
        for hop in hops.rev().take(MAX_HOPS) {
            let Some(hop) = parse_hop(hop) else {
                break;
            };
            ip = hop;
            if !self.trusts(ip) {
                return Client { ip, named: true };
            }
        }
        Client { ip, named: false }
    }
}

/// Where a request comes from, as far as the relay can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address, or the last trusted proxy's when the chain does not name one.
    pub ip: IpAddr,
    /// False when trusted proxies did not name the client (no header, an unreadable hop, or a
    /// chain of trusted proxies only): `ip` is then a proxy's, and anything that grants by
    /// address (the dev-token loopback check) must refuse.
    pub named: bool,
}

/// `192.0.2.1`, `2001:db8::1`, and the forms with a port some proxies write
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn named(text: &str) -> Client {
        Client {
            ip: ip(text),
            named: true,
        }
    }

    fn unnamed(text: &str) -> Client {
        Client {
            ip: ip(text),
            named: false,
        }
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let headers = forwarded(&[b"198.51.100.7"]);
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("203.0.113.9"), &headers),
            named("203.0.113.9")
        );
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            some.client(ip("203.0.113.9"), &headers),
            named("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&[b"198.51.100.7"]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), named("198.51.100.7"));
        // Without the header the proxy itself is all there is, and it is not a client.
        assert_eq!(
            p.client(ip("10.1.2.3"), &HeaderMap::new()),
            unnamed("10.1.2.3")
        );
    }

    #[test]
    fn what_the_client_wrote_itself_is_not_believed() {
        // The client sent "X-Forwarded-For: 1.1.1.1"; the trusted proxy appended the real one.
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&[b"1.1.1.1, 198.51.100.7"]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), named("198.51.100.7"));
        // The same over two header lines.
        let headers = forwarded(&[b"1.1.1.1", b"198.51.100.7"]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), named("198.51.100.7"));
        // Bytes that are not text in the client's part cannot hide the proxy's part.
        let headers = forwarded(&[b"\xff\xfe, 198.51.100.7"]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), named("198.51.100.7"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked() {
        let p = proxies(&["10.0.0.0/8", "192.168.0.10"]);
        let headers = forwarded(&[b"1.1.1.1, 198.51.100.7, 192.168.0.10, 10.9.9.9"]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), named("198.51.100.7"));
    }

    #[test]
    fn an_unreadable_hop_names_nobody() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&[b"198.51.100.7, unknown, 10.9.9.9"]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), unnamed("10.9.9.9"));
        let headers = forwarded(&[b""]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), unnamed("10.1.2.3"));
        let headers = forwarded(&[b"198.51.100.7, \xff"]);
        assert_eq!(p.client(ip("10.1.2.3"), &headers), unnamed("10.1.2.3"));
    }

    #[test]
    fn ports_ipv6_and_mapped_addresses() {
        let p = proxies(&["fd00::/8", "127.0.0.1"]);
        let headers = forwarded(&[b"[2001:db8::1]:4711"]);
        assert_eq!(p.client(ip("fd00::1"), &headers), named("2001:db8::1"));
        let headers = forwarded(&[b"198.51.100.7:4711"]);
        assert_eq!(
            p.client(ip("::ffff:127.0.0.1"), &headers),
            named("198.51.100.7")
        );
        let headers = forwarded(&[b"::ffff:198.51.100.7"]);
        assert_eq!(p.client(ip("127.0.0.1"), &headers), named("198.51.100.7"));
    }

    #[test]
    fn a_long_chain_is_cut() {
        let p = proxies(&["10.0.0.0/8"]);
        let mut chain = vec!["198.51.100.7".to_owned()];
        chain.extend((0..40).map(|i| format!("10.0.0.{i}")));
        let headers = forwarded(&[chain.join(",").as_bytes()]);
        let client = p.client(ip("10.1.2.3"), &headers);
        assert!(!client.named && p.trusts(client.ip), "{client:?}");
    }

    #[test]
    fn ranges_parse_and_match_exactly() {
        let contains = |net: &str, addr: &str| Network::parse(net).unwrap().contains(ip(addr));
        assert!(contains("10.0.0.0/8", "10.255.0.1"));
        assert!(!contains("10.0.0.0/8", "11.0.0.1"));
        assert!(contains("0.0.0.0/0", "203.0.113.1"));
        assert!(contains("2001:db8::/32", "2001:db8:1::1"));
        assert!(!contains("2001:db8::/32", "2001:db9::1"));
        // Ranges written in IPv4-mapped form are IPv4 ranges, as clients are compared.
        assert!(contains("::ffff:10.0.0.0/104", "10.1.2.3"));
        assert!(!contains("::ffff:10.0.0.0/104", "11.1.2.3"));
        assert!(contains("::ffff:0:0/96", "192.0.2.1"));
        assert!(contains("::ffff:10.0.0.1", "10.0.0.1"));
        assert_eq!(
            proxies(&["10.0.0.0/8", "2001:db8::/32", "::/0"])
                .networks
                .len(),
            3
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/",
            "/8",
            "",
        ] {
            let err = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
