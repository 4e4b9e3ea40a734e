//! `outbox healthcheck`: asks a running server's `GET /health/ready` and exits 0 when it
//! answers 200, else 1. A container built `FROM scratch` has no curl or shell, so its
//! HEALTHCHECK runs the binary itself; the address comes from the same settings the server
//! reads (`--admin-listen` when set, else `--listen`), so the check follows the configuration.
//! Plain HTTP/1.1 over std's TCP: a probe needs no runtime and no client pool.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the whole probe may take: a ready server answers in milliseconds, and a
/// container runtime's own healthcheck timeout is longer than this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Where the server answers /health/ready: the admin address when one is set, else the API
/// address. A wildcard address (0.0.0.0, ::) is reached on the loopback of its family.
pub fn target(listen: SocketAddr, admin_listen: Option<SocketAddr>) -> SocketAddr {
    let mut addr = admin_listen.unwrap_or(listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// The answer of a reachable server: its status code and body (the readiness reasons).
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// GET /health/ready at `addr` within [`TIMEOUT`].
pub fn probe(addr: SocketAddr) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let request = format!(
        "GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: outbox-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    // Bounded: a readiness answer is a few hundred bytes.
    s.take(64 * 1024).read_to_end(&mut buf)?;
    parse(&String::from_utf8_lossy(&buf)).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not HTTP: is another program listening there?",
        )
    })
}

/// Status code and body of a complete `Connection: close` response.
fn parse(text: &str) -> Option<Answer> {
    let status = text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_wins_and_wildcards_become_loopback() {
        let api: SocketAddr = "0.0.0.0:8001".parse().unwrap();
        assert_eq!(target(api, None), "127.0.0.1:8001".parse().unwrap());
        let admin: SocketAddr = "[::]:9091".parse().unwrap();
        assert_eq!(target(api, Some(admin)), "[::1]:9091".parse().unwrap());
        let fixed: SocketAddr = "10.0.0.5:8001".parse().unwrap();
        assert_eq!(target(fixed, None), fixed);
    }

    #[test]
    fn a_response_gives_its_status_and_body() {
        let a = parse("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\n{\"a\": 1}\n");
        assert_eq!(
            a,
            Some(Answer {
                status: 503,
                body: "{\"a\": 1}".into()
            })
        );
        assert_eq!(parse("SSH-2.0-OpenSSH"), None);
    }
}
