//! Size and range limits that command parsing enforces (nsqd flag defaults).

/// Limits applied while parsing commands; `Default` gives nsqd's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-msg-size`: one message body (PUB, DPUB, each MPUB item).
    pub max_msg_size_bytes: u64,
    /// `--max-body-size`: one command body (IDENTIFY, AUTH, whole MPUB).
    pub max_body_size_bytes: u64,
    /// `--max-rdy-count`: upper bound of `RDY <count>` (inclusive).
    pub max_rdy_count: u64,
    /// `--max-req-timeout`: upper bound of the DPUB defer (inclusive); REQ is clamped elsewhere.
    pub max_req_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_msg_size_bytes: 1_048_576,
            max_body_size_bytes: 5_242_880,
            max_rdy_count: 2500,
            max_req_timeout_ms: 3_600_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;

    #[test]
    fn defaults_match_nsqd() {
        let limits = Limits::default();
        assert_eq!(limits.max_msg_size_bytes, 1_048_576);
        assert_eq!(limits.max_body_size_bytes, 5_242_880);
        assert_eq!(limits.max_rdy_count, 2500);
        assert_eq!(limits.max_req_timeout_ms, 3_600_000);
    }
}
