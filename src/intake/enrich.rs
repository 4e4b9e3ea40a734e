//! Enrichment: what the service knows about a submission that the form did not send.
//!
//! Stored beside the payload, never merged into it, so a form field named `client_ip` can
//! never overwrite (or be overwritten by) the address the service observed.

use serde::{Deserialize, Serialize};

/// Longest `User-Agent` kept, in bytes (cut on a character boundary).
pub const MAX_USER_AGENT: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrichment {
    /// RFC 3339, UTC, millisecond precision ([`crate::time::format_time`]).
    pub received_at: String,
    pub client_ip: String,
    pub user_agent: Option<String>,
    pub trace_id: String,
    pub src: String,
    pub form_type: String,
}

/// Cuts a user agent to [`MAX_USER_AGENT`] bytes without splitting a character.
pub fn cut_user_agent(ua: &str) -> String {
    if ua.len() <= MAX_USER_AGENT {
        return ua.to_owned();
    }
    let mut end = MAX_USER_AGENT;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    ua[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_is_cut_on_a_char_boundary() {
        let ua = "é".repeat(400); // 800 bytes
        let cut = cut_user_agent(&ua);
        assert!(cut.len() <= MAX_USER_AGENT && cut.len() >= MAX_USER_AGENT - 1);
        assert_eq!(cut_user_agent("curl/8"), "curl/8");
    }
}
