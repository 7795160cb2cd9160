//! Which addresses a webhook may reach: not this machine, its network or a
//! cloud's metadata service (server-side request forgery), unless the
//! operator allows a network (`WEBHOOK_ALLOWED_NETS`).
//!
//! The check is made on the addresses a connection will use: literal hosts
//! before any request, names in the HTTP client's resolver
//! ([`PolicyResolver`]), which hands the connector only the permitted
//! addresses of each lookup, so a name cannot be re-pointed between the
//! check and the connection (DNS rebinding). Uploads check their
//! `callback_url` the same way ([`AddressPolicy::check_url`]) to refuse at
//! once what no delivery could reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

/// A callback's host is, or resolves only to, addresses it may not reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host} is not a public address ({address}): callbacks may not reach loopback, private, link-local, metadata or reserved addresses"
)]
pub struct Blocked {
    /// The host as written.
    pub host: String,
    /// The (first) address refused.
    pub address: IpAddr,
}

/// Whether `ip` is in a range no webhook may reach by default: unspecified,
/// loopback, private (RFC 1918, unique local), shared (CGNAT), link-local
/// (cloud metadata at 169.254.169.254), documentation, benchmarking,
/// multicast, broadcast and reserved ranges; IPv6 forms that embed an IPv4
/// address (mapped, NAT64, 6to4) are judged by that address.
#[must_use]
pub fn is_reserved(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_reserved_v4(v4),
        IpAddr::V6(v6) => is_reserved_v6(v6),
    }
}

fn is_reserved_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

fn is_reserved_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_reserved_v4(v4);
    }
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 metadata too)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || s[0] == 0x0100 && s[1..4] == [0, 0, 0] // discard-only
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4
/// IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail(s[6], s[7])); // IPv4-compatible (deprecated)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return Some(tail(s[1], s[2])); // 6to4
    }
    None
}

/// The addresses webhooks may reach: every public address, and reserved
/// ones inside the operator's allowed networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// Public addresses, and `allowed` networks besides.
    #[must_use]
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Whether a webhook may connect to `ip`.
    #[must_use]
    pub fn permits(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allowed.iter().any(|n| n.contains(&ip));
        !is_reserved(ip) || allowed(ip) || mapped.is_some_and(allowed)
    }

    /// Checks a literal host; `Ok(false)` for a name (to be resolved).
    ///
    /// # Errors
    /// [`Blocked`] for an address it does not permit.
    pub fn check_literal(&self, url: &url::Url) -> Result<bool, Blocked> {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(false),
        };
        if self.permits(ip) {
            Ok(true)
        } else {
            Err(Blocked {
                host: url.host_str().unwrap_or_default().to_owned(),
                address: ip,
            })
        }
    }

    /// The permitted addresses of `host`'s lookup.
    ///
    /// # Errors
    /// A lookup failure, or [`Blocked`] when no address is permitted.
    pub async fn resolve(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            found.into_iter().partition(|a| self.permits(a.ip()));
        match (permitted.is_empty(), refused.first()) {
            (false, _) => Ok(permitted),
            (true, Some(first)) => Err(Box::new(Blocked {
                host: host.to_owned(),
                address: first.ip(),
            })),
            (true, None) => Err(format!("{host} has no address").into()),
        }
    }

    /// Checks that a delivery to `url` could connect: a literal address
    /// permitted, or a name with a permitted address (looked up within
    /// `timeout`).
    ///
    /// # Errors
    /// A message for the client: the address refused, or the name not
    /// resolving.
    pub async fn check_url(&self, url: &url::Url, timeout: Duration) -> Result<(), String> {
        if self.check_literal(url).map_err(|e| e.to_string())? {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        match tokio::time::timeout(timeout, self.resolve(host)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is::<Blocked>() => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("{host} could not be resolved: {e}")),
            Err(_) => Err(format!("{host} could not be resolved in time")),
        }
    }
}

/// The HTTP client's resolver under an [`AddressPolicy`]: a lookup gives
/// the connector only permitted addresses, and fails with [`Blocked`] when
/// there are none.
#[derive(Debug, Clone)]
pub struct PolicyResolver(pub Arc<AddressPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `error` (or what caused it) is a [`Blocked`].
#[must_use]
pub fn blocked_in<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Blocked> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(b) = e.downcast_ref::<Blocked>() {
            return Some(b);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_private_link_local_metadata_and_reserved_addresses_are_refused() {
        let policy = AddressPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
        ] {
            assert!(!policy.permits(ip(bad)), "{bad} was permitted");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(policy.permits(ip(good)), "{good} was refused");
        }
    }

    #[test]
    fn allowed_networks_open_reserved_addresses_and_only_those() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(
            policy.permits(ip("::ffff:127.0.0.1")),
            "a mapped form follows its IPv4 address"
        );
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("169.254.169.254")));
    }

    #[test]
    fn literal_hosts_are_checked_and_names_left_to_the_resolver() {
        let policy = AddressPolicy::default();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(policy.check_literal(&url("https://10.0.0.1/x")).is_err());
        assert!(policy.check_literal(&url("https://[::1]/x")).is_err());
        assert_eq!(policy.check_literal(&url("https://1.1.1.1/x")), Ok(true));
        assert_eq!(
            policy.check_literal(&url("https://hooks.example.com/x")),
            Ok(false)
        );
    }

    #[tokio::test]
    async fn a_name_resolving_only_to_refused_addresses_is_blocked_unless_allowed() {
        let policy = AddressPolicy::default();
        let err = policy.resolve("localhost").await.unwrap_err();
        assert!(blocked_in(err.as_ref()).is_some(), "{err}");
        let message = policy
            .check_url(
                &url::Url::parse("https://localhost:9/hook").unwrap(),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(message.contains("not a public address"), "{message}");
        let open = AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let addrs = open.resolve("localhost").await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
