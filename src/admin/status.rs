//! The admin API's errors: name checks and broker failures as gRPC
//! statuses. The code is the gRPC one that fits; the message starts with
//! nsqd's error text (`INVALID_TOPIC`, `TOPIC_NOT_FOUND`, `NO_LEADER`, ...)
//! so scripts can match on it. Pure: no sockets, no broker.

use tonic::{Code, Status};

use crate::broker::BrokerError;
use crate::protocol::names::{is_valid_channel_name, is_valid_topic_name, MAX_NAME_LENGTH_BYTES};

fn name_rule() -> String {
    format!(
        "1 to {MAX_NAME_LENGTH_BYTES} characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral"
    )
}

/// `topic` if it is a valid topic name.
pub fn topic_name(topic: &str) -> Result<&str, Status> {
    if is_valid_topic_name(topic) {
        return Ok(topic);
    }
    Err(Status::invalid_argument(format!(
        "INVALID_TOPIC: topic name {topic:?} is not valid ({})",
        name_rule()
    )))
}

/// `topic` and `channel` if both are valid names.
pub fn channel_names<'a>(topic: &'a str, channel: &'a str) -> Result<(&'a str, &'a str), Status> {
    let topic = topic_name(topic)?;
    if is_valid_channel_name(channel) {
        return Ok((topic, channel));
    }
    Err(Status::invalid_argument(format!(
        "INVALID_CHANNEL: channel name {channel:?} is not valid ({})",
        name_rule()
    )))
}

/// A broker failure as the admin API reports it.
pub fn broker_status(error: BrokerError) -> Status {
    let (code, text) = match &error {
        BrokerError::TopicNotFound => (Code::NotFound, "TOPIC_NOT_FOUND".to_owned()),
        BrokerError::ChannelNotFound => (Code::NotFound, "CHANNEL_NOT_FOUND".to_owned()),
        BrokerError::NoLeader => (
            Code::Unavailable,
            "NO_LEADER: no leader committed the write in time; nothing was acknowledged".to_owned(),
        ),
        BrokerError::Exiting => (Code::Unavailable, "EXITING".to_owned()),
        BrokerError::Storage(detail) => (
            Code::Internal,
            format!("STORAGE_FAILED: nothing was written: {detail}"),
        ),
        BrokerError::Rejected(detail) => (Code::FailedPrecondition, format!("REJECTED: {detail}")),
        BrokerError::DeletedWhileSubscribing => (
            Code::Aborted,
            "DELETED: the topic or channel was deleted meanwhile".to_owned(),
        ),
        BrokerError::TooManyConsumers { limit } => (
            Code::ResourceExhausted,
            format!("TOO_MANY_CONSUMERS: the channel has {limit} consumers already"),
        ),
    };
    if code == Code::Internal {
        tracing::warn!(%error, "admin request failed");
    }
    Status::new(code, text)
}

/// A cluster operation asked of a node that runs alone.
pub fn not_replicated() -> Status {
    Status::failed_precondition("NOT_REPLICATED: this node runs in single-node mode")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_pass_and_invalid_ones_name_the_rule() {
        assert_eq!(topic_name("orders").unwrap(), "orders");
        assert_eq!(topic_name("a#ephemeral").unwrap(), "a#ephemeral");
        let error = topic_name("no spaces").unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().starts_with("INVALID_TOPIC: "));
        assert_eq!(topic_name("").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(
            topic_name(&"x".repeat(65)).unwrap_err().code(),
            Code::InvalidArgument
        );
        let error = channel_names("t", "c/1").unwrap_err();
        assert!(error.message().starts_with("INVALID_CHANNEL: "));
        let error = channel_names("t t", "c").unwrap_err();
        assert!(error.message().starts_with("INVALID_TOPIC: "));
        assert_eq!(channel_names("t", "c").unwrap(), ("t", "c"));
    }

    #[test]
    fn broker_errors_map_to_codes_with_nsqd_texts() {
        let cases = [
            (
                BrokerError::TopicNotFound,
                Code::NotFound,
                "TOPIC_NOT_FOUND",
            ),
            (
                BrokerError::ChannelNotFound,
                Code::NotFound,
                "CHANNEL_NOT_FOUND",
            ),
            (BrokerError::NoLeader, Code::Unavailable, "NO_LEADER"),
            (BrokerError::Exiting, Code::Unavailable, "EXITING"),
            (
                BrokerError::Storage("disk".into()),
                Code::Internal,
                "STORAGE_FAILED",
            ),
        ];
        for (error, code, text) in cases {
            let status = broker_status(error);
            assert_eq!(status.code(), code);
            assert!(status.message().starts_with(text), "{}", status.message());
        }
    }
}
