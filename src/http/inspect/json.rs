//! The JSON shapes of the inspection endpoints: messages (ID, attempts,
//! times, the body as base64 and as text, its size and whether it was cut)
//! and each channel's state of one message.

use base64::Engine;
use serde::Serialize;

use crate::broker::inspect::{ChannelPosition, Holder, Inspected, MessageReport, Peeked, Position};

/// A message body as inspection shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct BodyJson {
    /// Base64 (standard alphabet, padded) of the body, or of its first
    /// `BODY_LIMIT_BYTES`.
    body: String,
    /// The same bytes as text, when they are UTF-8 (a character cut by the
    /// truncation is left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    body_text: Option<String>,
    body_size: usize,
    body_truncated: bool,
}

#[derive(Debug, Serialize)]
struct PeekedJson {
    id: String,
    offset: u64,
    /// Deliveries so far; the next one carries one more.
    attempts: u16,
    /// Publish time, ns since the epoch.
    timestamp: i64,
    /// "ready", "deferred" or "in_topic".
    state: &'static str,
    /// Deferred: not delivered before this time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<u64>,
    #[serde(flatten)]
    body: BodyJson,
}

#[derive(Debug, Serialize)]
pub(super) struct PeekJson<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    messages: Vec<PeekedJson>,
}

#[derive(Debug, Serialize)]
struct ChannelJson {
    channel: String,
    /// "in_topic", "ready", "deferred", "in_flight" or "finished".
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<u64>,
    /// In flight: when it times out, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_address: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct MessageJson<'a> {
    topic: &'a str,
    id: String,
    offset: u64,
    timestamp: i64,
    /// Published deferred (DPUB): not before this time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<u64>,
    #[serde(flatten)]
    body: BodyJson,
    channels: Vec<ChannelJson>,
}

/// A peek's answer.
pub(super) fn peek<'a>(
    topic: &'a str,
    channel: Option<&'a str>,
    peeked: Vec<Peeked>,
) -> PeekJson<'a> {
    let messages = peeked.into_iter().map(peeked_json).collect();
    PeekJson {
        topic,
        channel,
        messages,
    }
}

fn peeked_json(peeked: Peeked) -> PeekedJson {
    let Peeked { message, position } = peeked;
    let (state, attempts, deliver_at) = match position {
        Position::InTopic => ("in_topic", 0, None),
        Position::Ready { attempts } => ("ready", attempts, None),
        Position::Deferred {
            attempts,
            deliver_at_ms,
        } => ("deferred", attempts, Some(deliver_at_ms)),
        Position::InFlight { .. } | Position::Finished => {
            unreachable!("a peek lists only what is still to be delivered")
        }
    };
    PeekedJson {
        id: id_text(&message),
        offset: message.offset,
        attempts,
        timestamp: message.timestamp_ns,
        state,
        deliver_at,
        body: body_json(&message),
    }
}

/// `/message`'s answer.
pub(super) fn message(topic: &str, report: MessageReport) -> MessageJson<'_> {
    let MessageReport {
        message,
        published_deliver_at_ms,
        channels,
    } = report;
    MessageJson {
        topic,
        id: id_text(&message),
        offset: message.offset,
        timestamp: message.timestamp_ns,
        deliver_at: (published_deliver_at_ms != 0).then_some(published_deliver_at_ms),
        body: body_json(&message),
        channels: channels.into_iter().map(channel_json).collect(),
    }
}

fn channel_json(found: ChannelPosition) -> ChannelJson {
    let ChannelPosition {
        channel,
        position,
        holder,
    } = found;
    let mut json = ChannelJson {
        channel,
        state: "in_topic",
        attempts: None,
        deliver_at: None,
        deadline: None,
        client_id: None,
        hostname: None,
        remote_address: None,
    };
    match position {
        Position::InTopic => {}
        Position::Finished => json.state = "finished",
        Position::Ready { attempts } => (json.state, json.attempts) = ("ready", Some(attempts)),
        Position::Deferred {
            attempts,
            deliver_at_ms,
        } => {
            (json.state, json.attempts) = ("deferred", Some(attempts));
            json.deliver_at = Some(deliver_at_ms);
        }
        Position::InFlight {
            attempts,
            deadline_ms,
            ..
        } => {
            (json.state, json.attempts) = ("in_flight", Some(attempts));
            json.deadline = Some(deadline_ms);
        }
    }
    if let Some(Holder {
        client_id,
        hostname,
        remote_address,
    }) = holder
    {
        json.client_id = Some(client_id);
        json.hostname = Some(hostname);
        json.remote_address = Some(remote_address);
    }
    json
}

fn id_text(message: &Inspected) -> String {
    String::from_utf8_lossy(&message.id).into_owned()
}

fn body_json(message: &Inspected) -> BodyJson {
    let truncated = message.body_truncated();
    BodyJson {
        body: base64::engine::general_purpose::STANDARD.encode(&message.body),
        body_text: body_text(&message.body, truncated).map(str::to_owned),
        body_size: message.body_size_bytes,
        body_truncated: truncated,
    }
}

/// `bytes` as text if they are UTF-8; when `truncated`, a character cut at
/// the end does not count against them (it is left out).
fn body_text(bytes: &[u8], truncated: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(error) if truncated && error.error_len().is_none() => {
            std::str::from_utf8(&bytes[..error.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::broker::inspect::BODY_LIMIT_BYTES;

    #[test]
    fn body_text_only_for_utf8_and_a_cut_character_is_left_out() {
        assert_eq!(body_text(b"invoice 4711", false), Some("invoice 4711"));
        assert_eq!(body_text(&[0xff, 0x00], false), None);
        let euro = "a€".as_bytes();
        assert_eq!(body_text(&euro[..2], true), Some("a"));
        assert_eq!(
            body_text(&euro[..2], false),
            None,
            "whole bodies must be UTF-8"
        );
        assert_eq!(body_text(&[b'a', 0xff, b'b'], true), None);
    }

    #[test]
    fn big_bodies_are_cut_with_their_size() {
        let body = bytes::Bytes::from(vec![b'x'; BODY_LIMIT_BYTES + 10]);
        let message = crate::broker::message::Message::new(1, 2, 3, 0, body);
        let json = body_json(&Inspected::new(&message));
        assert_eq!(json.body_size, BODY_LIMIT_BYTES + 10);
        assert!(json.body_truncated);
        assert_eq!(json.body_text.map(|t| t.len()), Some(BODY_LIMIT_BYTES));
        let decoded = base64::engine::general_purpose::STANDARD.decode(&json.body);
        assert_eq!(decoded.unwrap().len(), BODY_LIMIT_BYTES);
    }
}
