//! The client address of a request.
//!
//! Forwarded headers are only believed when the socket peer is a trusted proxy. Then the
//! chain of hops (`Forwarded: for=` if present, else `X-Forwarded-For`, then the peer itself)
//! is walked from the right, skipping trusted proxies; the first address not in the trusted set
//! is the client. A hop that cannot be parsed ends the walk: the last trusted proxy before it is
//! the best address we can vouch for. The old proxy took the *leftmost* X-Forwarded-For entry,
//! which any client can set.

use ipnet::IpNet;
use std::net::IpAddr;

/// The configured set of trusted proxy networks.
#[derive(Debug, Clone)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn loopback() -> Self {
        TrustedProxies(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Resolves the client IP. `forwarded` and `x_forwarded_for` are every instance of each header,
/// in order; non-UTF-8 values are passed as `None`.
pub fn resolve(
    peer: IpAddr,
    forwarded: &[Option<&str>],
    x_forwarded_for: &[Option<&str>],
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if !forwarded.is_empty() {
        forwarded
            .iter()
            .flat_map(|h| match h {
                Some(v) => v.split(',').map(forwarded_for).collect::<Vec<_>>(),
                None => vec![None],
            })
            .collect()
    } else {
        x_forwarded_for
            .iter()
            .flat_map(|h| match h {
                Some(v) => v
                    .split(',')
                    .map(|s| parse_node(s.trim()))
                    .collect::<Vec<_>>(),
                None => vec![None],
            })
            .collect()
    };
    let mut best = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            None => return best,
            Some(ip) if trusted.contains(ip) => best = ip,
            Some(ip) => return ip,
        }
    }
    best
}

/// The `for=` node of one `Forwarded` element (RFC 7239), if it is an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_node(v.trim().trim_matches('"'))
    })
}

/// Parses `1.2.3.4`, `1.2.3.4:port`, `::1`, `[::1]` or `[::1]:port`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']')?;
        if !(tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok()))
        {
            return None;
        }
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ])
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let got = resolve(ip("203.0.113.9"), &[], &[Some("1.1.1.1")], &trusted());
        assert_eq!(got, ip("203.0.113.9"));
        let got = resolve(ip("203.0.113.9"), &[Some("for=1.1.1.1")], &[], &trusted());
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let got = resolve(
            ip("127.0.0.1"),
            &[],
            &[Some("6.6.6.6, 198.51.100.7, 10.1.2.3")],
            &trusted(),
        );
        assert_eq!(got, ip("198.51.100.7"));
        let got = resolve(
            ip("127.0.0.1"),
            &[],
            &[Some("6.6.6.6"), Some("198.51.100.7:4711")],
            &trusted(),
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_header_is_preferred_and_parsed() {
        let got = resolve(
            ip("127.0.0.1"),
            &[Some(
                r#"for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https"#,
            )],
            &[Some("6.6.6.6")],
            &trusted(),
        );
        assert_eq!(got, ip("2001:db8:cafe::17"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let got = resolve(
            ip("127.0.0.1"),
            &[],
            &[Some("1.1.1.1, not-an-ip, 10.0.0.5")],
            &trusted(),
        );
        assert_eq!(got, ip("10.0.0.5"));
        let got = resolve(ip("127.0.0.1"), &[], &[None], &trusted());
        assert_eq!(got, ip("127.0.0.1"));
    }

    #[test]
    fn all_trusted_chain_yields_the_leftmost_and_mapped_v4_is_canonical() {
        let got = resolve(
            ip("127.0.0.1"),
            &[],
            &[Some("10.9.9.9, 10.0.0.1")],
            &trusted(),
        );
        assert_eq!(got, ip("10.9.9.9"));
        let got = resolve(ip("::ffff:203.0.113.5"), &[], &[], &trusted());
        assert_eq!(got, ip("203.0.113.5"));
    }
}
