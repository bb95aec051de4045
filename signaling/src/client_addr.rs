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
        let base = canonical(addr.trim().parse().ok()?);
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse().ok().filter(|p| *p <= bits)?,
            None => bits,
        };
        Some(Network { base, prefix })
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

/// IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`; they are IPv4 clients.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
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

    fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the TCP peer unless it is a trusted proxy; then, walking
    /// `X-Forwarded-For` from the right (each proxy appends the address it was reached from),
    /// the first hop that is not a trusted proxy. Only the part of the chain that trusted proxies
    /// wrote is believed; an unreadable hop ends the walk at the last trusted one.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// `192.0.2.1`, `2001:db8::1`, and the forms with a port some proxies write
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
    Some(canonical(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let none = TrustedProxies::default();
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            none.client_ip(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            some.client_ip(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &headers), ip("198.51.100.7"));
        // Without the header the proxy itself is all there is.
        assert_eq!(
            p.client_ip(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn what_the_client_wrote_itself_is_not_believed() {
        // The client sent "X-Forwarded-For: 1.1.1.1"; the trusted proxy appended the real one.
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&["1.1.1.1, 198.51.100.7"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &headers), ip("198.51.100.7"));
        // The same over two header lines.
        let headers = forwarded(&["1.1.1.1", "198.51.100.7"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &headers), ip("198.51.100.7"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked() {
        let p = proxies(&["10.0.0.0/8", "192.168.0.10"]);
        let headers = forwarded(&["1.1.1.1, 198.51.100.7, 192.168.0.10, 10.9.9.9"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &headers), ip("198.51.100.7"));
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_last_trusted_one() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&["198.51.100.7, unknown, 10.9.9.9"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &headers), ip("10.9.9.9"));
        let headers = forwarded(&[""]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &headers), ip("10.1.2.3"));
    }

    #[test]
    fn ports_ipv6_and_mapped_addresses() {
        let p = proxies(&["fd00::/8", "127.0.0.1"]);
        let headers = forwarded(&["[2001:db8::1]:4711"]);
        assert_eq!(p.client_ip(ip("fd00::1"), &headers), ip("2001:db8::1"));
        let headers = forwarded(&["198.51.100.7:4711"]);
        assert_eq!(
            p.client_ip(ip("::ffff:127.0.0.1"), &headers),
            ip("198.51.100.7")
        );
        let headers = forwarded(&["::ffff:198.51.100.7"]);
        assert_eq!(p.client_ip(ip("127.0.0.1"), &headers), ip("198.51.100.7"));
    }

    #[test]
    fn a_long_chain_is_cut() {
        let p = proxies(&["10.0.0.0/8"]);
        let mut chain = vec!["198.51.100.7".to_owned()];
        chain.extend((0..40).map(|i| format!("10.0.0.{i}")));
        let headers = forwarded(&[&chain.join(",")]);
        let client = p.client_ip(ip("10.1.2.3"), &headers);
        assert!(
            p.trusts(client),
            "{client}: the walk stopped inside the proxies"
        );
    }

    #[test]
    fn ranges_parse_and_match_exactly() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0"]);
        assert_eq!(p.networks.len(), 3);
        assert!(
            Network::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("10.255.0.1"))
        );
        assert!(
            !Network::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("11.0.0.1"))
        );
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("203.0.113.1"))
        );
        assert!(
            Network::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::1"))
        );
        assert!(
            !Network::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db9::1"))
        );
        assert!(
            !Network::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("::ffff:10.0.0.1"))
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
