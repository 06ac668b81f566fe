//! Server-side request forgery guard for URLs users give Herald (webhook endpoints, media links):
//! https only, and every address the host resolves to must be public — no loopback, private,
//! link-local, unique-local, CGNAT, multicast or cloud-metadata address. The check runs inside
//! the HTTP client's DNS resolver, so the address connected to is the address checked (no DNS
//! rebinding between check and use), and redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether an address is reachable on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata included
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254 included)
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 can reach private v4
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks a URL's form before any network use: https (or http to loopback when allowed), a host,
/// and for an IP literal, a public address.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<url::Url, Refused> {
    let url = url::Url::parse(raw).map_err(|e| Refused(format!("{raw:?} is not a URL ({e})")))?;
    let host = url.host().ok_or_else(|| Refused("the URL has no host".into()))?;
    let literal: Option<IpAddr> = match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    };
    let loopback = literal.is_some_and(|ip| ip.is_loopback()) || url.host_str() == Some("localhost");
    if allow_loopback && loopback {
        return Ok(url);
    }
    if url.scheme() != "https" {
        return Err(Refused(format!("only https URLs are allowed, not {}", url.scheme())));
    }
    if let Some(ip) = literal {
        if !is_public(ip) {
            return Err(Refused(format!("{ip} is not a public address")));
        }
    }
    Ok(url)
}

/// Resolves the URL's host now and refuses it if any address is not public, so the caller can
/// say why; [`PublicResolver`] applies the same rule to the connection itself.
pub async fn check_resolved(url: &url::Url, allow_loopback: bool) -> Result<(), Refused> {
    let Some(url::Host::Domain(host)) = url.host() else { return Ok(()) };
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Refused(format!("{host} does not resolve ({e})")))?
        .collect();
    match addrs.iter().find(|a| !(is_public(a.ip()) || (allow_loopback && a.ip().is_loopback()))) {
        Some(bad) => Err(Refused(format!("{host} resolves to {}, which is not a public address", bad.ip()))),
        None if addrs.is_empty() => Err(Refused(format!("{host} does not resolve"))),
        None => Ok(()),
    }
}

/// A DNS resolver that hands the HTTP client only public addresses (loopback too when allowed).
pub struct PublicResolver {
    pub allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()) || (allow_loopback && a.ip().is_loopback()))
                .collect();
            if allowed.is_empty() || allowed.len() < addrs.len() {
                // A name that resolves to any non-public address is refused whole.
                let e: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to an address that is not public").into();
                return Err(e);
            }
            let iter: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad} counted as public");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(good.parse().unwrap()), "{good} counted as not public");
        }
    }

    #[test]
    fn urls_need_https_and_a_public_literal() {
        assert!(check_url("https://bot.example.com/hook", false).is_ok());
        assert!(check_url("http://bot.example.com/hook", false).unwrap_err().0.contains("https"));
        assert!(check_url("https://169.254.169.254/latest/meta-data", false).unwrap_err().0.contains("not a public"));
        assert!(check_url("https://[::1]/x", false).is_err());
        assert!(check_url("http://127.0.0.1:9000/hook", false).is_err(), "loopback only in local mode");
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_url("ftp://example.com", false).is_err());
        assert!(check_url("not a url", false).is_err());
    }
}
