//! The client address of a request.
//!
//! Forwarded headers are only believed when the socket peer is a trusted proxy, and only the
//! ONE header that the proxy maintains (`--client-ip-header`, default `X-Forwarded-For`, as
//! Express, Traefik and Caddy read by default). Reading a second header would let a client
//! choose its address: a proxy appends to, or overwrites, the header it owns, but passes the
//! others on as the client wrote them. The chosen header's chain of hops (then the peer
//! itself) is walked from the right, skipping trusted proxies; the first address not in the
//! trusted set is the client. A hop that cannot be parsed ends the walk: the last trusted proxy
//! before it is the best address we can vouch for. The old proxy took the *leftmost*
//! X-Forwarded-For entry, which any client can set.

use axum::http::HeaderMap;
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

/// The one header a trusted proxy maintains with the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// RFC 7239 `Forwarded`: the `for=` node of each element.
    Forwarded,
    /// Any other header (lowercase name), read as a comma-separated list of addresses:
    /// `X-Forwarded-For`, or a one-address header such as `X-Real-IP`.
    List(String),
}

impl Default for ForwardedHeader {
    fn default() -> Self {
        ForwardedHeader::List("x-forwarded-for".into())
    }
}

impl ForwardedHeader {
    /// Parses a header name (any case), e.g. `x-forwarded-for`, `forwarded`, `x-real-ip`.
    pub fn parse(name: &str) -> Result<ForwardedHeader, String> {
        let lower = name.trim().to_ascii_lowercase();
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if lower.is_empty() || !lower.chars().all(token) {
            return Err(format!(
                "{name:?} is not a header name; use the header your proxy sets, e.g. x-forwarded-for, forwarded or x-real-ip"
            ));
        }
        Ok(match lower.as_str() {
            "forwarded" => ForwardedHeader::Forwarded,
            _ => ForwardedHeader::List(lower),
        })
    }

    /// The header's name, lowercase.
    pub fn name(&self) -> &str {
        match self {
            ForwardedHeader::Forwarded => "forwarded",
            ForwardedHeader::List(n) => n,
        }
    }
}

/// Which peers are believed, and which header of theirs is read.
#[derive(Debug, Clone)]
pub struct ClientIpRule {
    pub trusted: TrustedProxies,
    pub header: ForwardedHeader,
}

impl ClientIpRule {
    /// The client address of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let values: Vec<Option<&str>> = headers
            .get_all(self.header.name())
            .iter()
            .map(|v| v.to_str().ok())
            .collect();
        resolve(peer, &self.header, &values, &self.trusted)
    }
}

/// Resolves the client IP from every instance of the one consulted `header`, in order;
/// non-UTF-8 values are passed as `None`.
pub fn resolve(
    peer: IpAddr,
    header: &ForwardedHeader,
    values: &[Option<&str>],
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = values
        .iter()
        .flat_map(|h| match (h, header) {
            (Some(v), ForwardedHeader::Forwarded) => {
                v.split(',').map(forwarded_for).collect::<Vec<_>>()
            }
            (Some(v), ForwardedHeader::List(_)) => v
                .split(',')
                .map(|s| parse_node(s.trim()))
                .collect::<Vec<_>>(),
            (None, _) => vec![None],
        })
        .collect();
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

    fn xff() -> ForwardedHeader {
        ForwardedHeader::default()
    }

    fn rule(header: &str) -> ClientIpRule {
        ClientIpRule {
            trusted: trusted(),
            header: ForwardedHeader::parse(header).unwrap(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let got = resolve(ip("203.0.113.9"), &xff(), &[Some("1.1.1.1")], &trusted());
        assert_eq!(got, ip("203.0.113.9"));
        let f = ForwardedHeader::Forwarded;
        let got = resolve(ip("203.0.113.9"), &f, &[Some("for=1.1.1.1")], &trusted());
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let got = resolve(
            ip("127.0.0.1"),
            &xff(),
            &[Some("6.6.6.6, 198.51.100.7, 10.1.2.3")],
            &trusted(),
        );
        assert_eq!(got, ip("198.51.100.7"));
        let got = resolve(
            ip("127.0.0.1"),
            &xff(),
            &[Some("6.6.6.6"), Some("198.51.100.7:4711")],
            &trusted(),
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn the_forwarded_header_is_parsed_when_it_is_the_one_chosen() {
        let got = resolve(
            ip("127.0.0.1"),
            &ForwardedHeader::Forwarded,
            &[Some(
                r#"for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https"#,
            )],
            &trusted(),
        );
        assert_eq!(got, ip("2001:db8:cafe::17"));
    }

    #[test]
    fn only_the_chosen_header_is_read() {
        // What a client sends through a proxy that appends to X-Forwarded-For only: its own
        // Forwarded and X-Real-IP pass through unchanged and must not count.
        let h = headers(&[
            ("forwarded", "for=203.0.113.66"),
            ("x-real-ip", "203.0.113.77"),
            ("x-forwarded-for", "203.0.113.88, 198.51.100.7"),
        ]);
        let peer = ip("127.0.0.1");
        assert_eq!(rule("X-Forwarded-For").client(peer, &h), ip("198.51.100.7"));
        assert_eq!(rule("forwarded").client(peer, &h), ip("203.0.113.66"));
        assert_eq!(rule("x-real-ip").client(peer, &h), ip("203.0.113.77"));

        // The chosen header absent: the peer, whatever the other headers say.
        let spoof = headers(&[("forwarded", "for=203.0.113.66"), ("x-real-ip", "1.2.3.4")]);
        assert_eq!(rule("x-forwarded-for").client(peer, &spoof), peer);
        let spoof = headers(&[("x-forwarded-for", "203.0.113.88")]);
        assert_eq!(rule("forwarded").client(peer, &spoof), peer);
        assert_eq!(rule("x-real-ip").client(peer, &spoof), peer);
    }

    #[test]
    fn every_instance_of_the_header_counts_in_order() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.9"),
        ]);
        assert_eq!(
            rule("x-forwarded-for").client(ip("127.0.0.1"), &h),
            ip("198.51.100.7")
        );
        let h = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        assert_eq!(rule("forwarded").client(ip("127.0.0.1"), &h), ip("6.6.6.6"));
    }

    #[test]
    fn header_names_parse_in_any_case_and_junk_is_refused() {
        assert_eq!(
            ForwardedHeader::parse("X-Forwarded-For"),
            Ok(ForwardedHeader::default())
        );
        assert_eq!(
            ForwardedHeader::parse("Forwarded"),
            Ok(ForwardedHeader::Forwarded)
        );
        assert_eq!(
            ForwardedHeader::parse(" X-Real-IP ").map(|h| h.name().to_owned()),
            Ok("x-real-ip".to_owned())
        );
        for bad in [
            "",
            "x forwarded for",
            "x-forwarded-for:",
            "x-real-ip,forwarded",
        ] {
            let e = ForwardedHeader::parse(bad).expect_err(bad);
            assert!(e.contains("x-forwarded-for"), "{e}");
        }
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let got = resolve(
            ip("127.0.0.1"),
            &xff(),
            &[Some("1.1.1.1, not-an-ip, 10.0.0.5")],
            &trusted(),
        );
        assert_eq!(got, ip("10.0.0.5"));
        let got = resolve(ip("127.0.0.1"), &xff(), &[None], &trusted());
        assert_eq!(got, ip("127.0.0.1"));
        let got = resolve(
            ip("127.0.0.1"),
            &ForwardedHeader::Forwarded,
            &[Some("for=unknown")],
            &trusted(),
        );
        assert_eq!(got, ip("127.0.0.1"));
    }

    #[test]
    fn all_trusted_chain_yields_the_leftmost_and_mapped_v4_is_canonical() {
        let got = resolve(
            ip("127.0.0.1"),
            &xff(),
            &[Some("10.9.9.9, 10.0.0.1")],
            &trusted(),
        );
        assert_eq!(got, ip("10.9.9.9"));
        let got = resolve(ip("::ffff:203.0.113.5"), &xff(), &[], &trusted());
        assert_eq!(got, ip("203.0.113.5"));
    }
}
