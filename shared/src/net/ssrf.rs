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
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => public_v4(v4) && public_v6(v6),
            None => public_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 address carries, for the forms a host or a relay may route to that
/// IPv4 address: mapped `::ffff:a.b.c.d`, translated `::ffff:0:a.b.c.d`, compatible `::a.b.c.d`
/// and 6to4 `2002:aabb:ccdd::/48`. So `[::127.0.0.1]` is judged as 127.0.0.1.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(v4(hi, lo)),
        // `::` and `::1` are the v6 unspecified and loopback addresses, judged as such.
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) > (0, 1) => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
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
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 (64:ff9b::/96 and /48) can reach private v4
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks a URL's form before any network use: https (or, when `allow_loopback`, http to this
/// machine), a host, and for an IP literal, a public address. The scheme is checked first, so no
/// allowance lets `ftp://localhost/` through.
pub fn check_url(raw: &str, allow_loopback: bool) -> Result<url::Url, Refused> {
    let url = url::Url::parse(raw).map_err(|e| Refused(format!("\"{raw}\" is not a URL ({e})")))?;
    let host = url.host().ok_or_else(|| Refused("the URL has no host".into()))?;
    let literal: Option<IpAddr> = match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    };
    let named_local = url.host_str().is_some_and(|h| h == "localhost" || h.ends_with(".localhost"));
    let loopback = literal.is_some_and(|ip| ip.is_loopback()) || named_local;
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback && loopback => {}
        "http" if allow_loopback => {
            return Err(Refused("only https URLs are allowed (http only to this machine)".into()))
        }
        other => return Err(Refused(format!("only https URLs are allowed, not {other}"))),
    }
    if allow_loopback && loopback {
        return Ok(url);
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

/// The check for a link a provider fetches (`media.link`, a template's `header.link`): its form
/// as [`check_url`], then where it resolves. A name that does not resolve here is let through:
/// the provider resolves it from its own network, and a broadcast should not fail on this
/// machine's DNS; one that resolves to any non-public address is refused.
pub async fn check_fetch_url(raw: &str, allow_loopback: bool) -> Result<(), Refused> {
    let url = check_url(raw, allow_loopback)?;
    let Some(url::Host::Domain(host)) = url.host() else { return Ok(()) };
    let local = host == "localhost" || host.ends_with(".localhost");
    if local && !allow_loopback {
        return Err(Refused(format!("{host} is this machine, not a public address")));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let Ok(addrs) = tokio::net::lookup_host((host, port)).await else { return Ok(()) };
    for a in addrs {
        if !(is_public(a.ip()) || (allow_loopback && a.ip().is_loopback())) {
            return Err(Refused(format!("{host} resolves to {}, which is not a public address", a.ip())));
        }
    }
    Ok(())
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
            "::127.0.0.1",
            "::a9fe:a9fe",
            "::ffff:0:a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad} counted as public");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2002:5db8:d822::1"] {
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
        assert!(check_url("ftp://localhost/x", true).unwrap_err().0.contains("https"), "scheme before allowance");
        assert!(check_url("http://bot.example.com/hook", true).is_err(), "http only to this machine");
        assert!(check_url("https://[::127.0.0.1]/x", true).is_err(), "embedded v4 is not loopback v6");
        assert!(check_url("not a url", false).is_err());
    }
}
