//! The client's IP address, for rate limits and logs.
//!
//! Forwarding headers are trivially forged, so they are believed only when
//! the TCP peer is one of `TRUSTED_PROXIES`: then `CF-Connecting-IP` (set by
//! Cloudflare) wins, else the right-most `X-Forwarded-For` entry that is not
//! itself a trusted proxy (entries to its left were written by the client and
//! prove nothing). Otherwise the TCP peer is the client.

use std::net::IpAddr;

use ipnet::IpNet;
use poem::Request;
use poem::web::RemoteAddr;

/// A request's client IP, resolved once by the request gate and kept in the
/// request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Decides the client IP from the peer and headers.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    /// A resolver believing forwarding headers only from `trusted` peers.
    #[must_use]
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client IP of a request: the one the request gate resolved (its
    /// [`ClientIp`]), else resolved now.
    #[must_use]
    pub fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        match req.extensions().get::<ClientIp>() {
            Some(ClientIp(ip)) => Some(*ip),
            None => self.resolve(req),
        }
    }

    /// The client IP of a request; `None` when the peer is not an IP socket.
    #[must_use]
    pub fn resolve(&self, req: &Request) -> Option<IpAddr> {
        let peer = peer_ip(req.remote_addr())?;
        Some(
            self.resolve_from(
                peer,
                req.headers()
                    .get("cf-connecting-ip")
                    .and_then(|v| v.to_str().ok()),
                req.headers()
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            ),
        )
    }

    /// The decision itself, from plain values (see the module docs).
    pub fn resolve_from<'a>(
        &self,
        peer: IpAddr,
        cf_connecting_ip: Option<&str>,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        if let Some(ip) = cf_connecting_ip.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
            return canonical(ip);
        }
        let entries: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
        for entry in entries.iter().rev() {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if self.is_trusted(ip) => {}
                Ok(ip) => return canonical(ip),
                // A malformed entry: nothing to its left can be trusted.
                Err(_) => return peer,
            }
        }
        peer
    }
}

fn peer_ip(addr: &RemoteAddr) -> Option<IpAddr> {
    addr.as_socket_addr().map(std::net::SocketAddr::ip)
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> ClientIpResolver {
        ClientIpResolver::new(vec!["10.0.0.0/8".parse().unwrap()])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let got =
            resolver().resolve_from(ip("203.0.113.9"), Some("1.2.3.4"), ["5.6.7.8"].into_iter());
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_passes_cf_connecting_ip() {
        let got = resolver().resolve_from(ip("10.0.0.2"), Some("198.51.100.7"), std::iter::empty());
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn the_right_most_untrusted_forwarded_entry_wins() {
        let got = resolver().resolve_from(
            ip("10.0.0.2"),
            None,
            ["6.6.6.6, 198.51.100.7", "10.1.1.1"].into_iter(),
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_networks() {
        let got = resolver().resolve_from(
            ip("::ffff:10.0.0.2"),
            Some("198.51.100.7"),
            std::iter::empty(),
        );
        assert_eq!(got, ip("198.51.100.7"));
    }
}
