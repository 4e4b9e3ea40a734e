//! What one delivery attempt means for the record, decided in one pure function so the whole
//! policy reads as a table (and is tested as one).
//!
//! | reply                                       | verdict   | why                                  |
//! |---------------------------------------------|-----------|--------------------------------------|
//! | 2xx                                         | Delivered |                                      |
//! | connect error, timeout, other transport     | Retry     | the dashboard may be back soon       |
//! | 408, 425, 429, 500, 502, 503, 504           | Retry     | temporary by definition              |
//! | other 5xx (507, Cloudflare 52x, ...)        | Retry     | server-side, usually temporary       |
//! | 3xx                                         | Retry     | never followed: a redirect means a   |
//! |                                             |           | misconfigured URL, which an operator |
//! |                                             |           | fixes without losing records         |
//! | 401, 403                                    | Pause     | the credentials are wrong: no record |
//! |                                             |           | can succeed until they are fixed     |
//! | other 4xx, 501, 505                         | Dead      | retrying the same request cannot help|
//! | anything else (1xx, >= 600)                 | Retry     | unknown: keep the record             |

/// How an attempt ended, before interpretation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The dashboard answered with this status code.
    Status(u16),
    /// No answer: the request could not be sent or the reply did not arrive.
    Transport(Transport),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Connect,
    Timeout,
    Other,
}

/// What to do with the record (and the worker) after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry,
    /// Credentials rejected: pause all delivery; the attempt does not count.
    Pause,
    Dead,
}

pub fn classify(reply: Reply) -> Verdict {
    match reply {
        Reply::Transport(_) => Verdict::Retry,
        Reply::Status(code) => match code {
            200..=299 => Verdict::Delivered,
            401 | 403 => Verdict::Pause,
            408 | 425 | 429 => Verdict::Retry,
            501 | 505 => Verdict::Dead,
            400..=499 => Verdict::Dead,
            300..=399 | 500..=599 => Verdict::Retry,
            _ => Verdict::Retry,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[test]
    fn every_kind_of_reply_has_the_documented_verdict() {
        let table: &[(Reply, Verdict)] = &[
            (Reply::Status(200), Delivered),
            (Reply::Status(201), Delivered),
            (Reply::Status(202), Delivered),
            (Reply::Status(204), Delivered),
            (Reply::Status(299), Delivered),
            (Reply::Transport(Transport::Connect), Retry),
            (Reply::Transport(Transport::Timeout), Retry),
            (Reply::Transport(Transport::Other), Retry),
            (Reply::Status(408), Retry),
            (Reply::Status(425), Retry),
            (Reply::Status(429), Retry),
            (Reply::Status(500), Retry),
            (Reply::Status(502), Retry),
            (Reply::Status(503), Retry),
            (Reply::Status(504), Retry),
            (Reply::Status(507), Retry),
            (Reply::Status(522), Retry),
            (Reply::Status(301), Retry),
            (Reply::Status(302), Retry),
            (Reply::Status(307), Retry),
            (Reply::Status(308), Retry),
            (Reply::Status(401), Pause),
            (Reply::Status(403), Pause),
            (Reply::Status(400), Dead),
            (Reply::Status(404), Dead),
            (Reply::Status(405), Dead),
            (Reply::Status(409), Dead),
            (Reply::Status(410), Dead),
            (Reply::Status(413), Dead),
            (Reply::Status(415), Dead),
            (Reply::Status(422), Dead),
            (Reply::Status(451), Dead),
            (Reply::Status(501), Dead),
            (Reply::Status(505), Dead),
            (Reply::Status(100), Retry),
            (Reply::Status(600), Retry),
        ];
        for (reply, want) in table {
            assert_eq!(classify(*reply), *want, "{reply:?}");
        }
    }
}
