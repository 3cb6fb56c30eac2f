//! `POST /pub` and `POST /mpub` (`docs/nsq-wire.md` §5.3), in nsqd's order of
//! checks. Both answer `OK` only once the messages are fsynced: they go
//! through [`Broker::publish`](crate::broker::Broker::publish).
//!
//! Both take an `Idempotency-Key` header (one per request, 1 to 256 bytes,
//! else 400 `INVALID_IDEMPOTENCY_KEY`, checked first): a request repeating a
//! key the topic saw within `--dedup-window` stores nothing and answers
//! `OK`, as the first did (`Broker::publish_keyed`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName};
use bytes::Bytes;
use ledgerq_storage::MAX_KEY_BYTES;

use super::query::Params;
use super::response::{HttpError, Reply, V1Result};
use super::topology::{broker_error, topic_param};
use super::{read_body, HttpState};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `POST /pub?topic=T[&defer=MS]`: the body is one message.
pub async fn publish(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> V1Result {
    let key = idempotency_key(&headers)?;
    let too_big = HttpError::too_large("MSG_TOO_BIG");
    if content_length(&headers).is_some_and(|length| length > state.max_msg_size) {
        return Err(too_big);
    }
    let read_max = limit_plus_one(state.max_msg_size);
    let message = read_body(body, read_max, state.read_timeout).await?;
    if message.len() == read_max {
        return Err(too_big);
    }
    if message.is_empty() {
        return Err(HttpError::bad_request("MSG_EMPTY"));
    }
    let params = Params::parse(query.as_deref())?;
    let topic = topic_param(&params)?;
    let defer_ms = match params.get("defer") {
        None => 0,
        Some(text) => match parse_defer(text, state.max_req_timeout_ms) {
            Some(defer_ms) => defer_ms,
            None => {
                // nsqd has created the topic by the time it checks `defer`.
                state
                    .broker
                    .ensure_topic(topic)
                    .await
                    .map_err(broker_error)?;
                return Err(HttpError::bad_request("INVALID_DEFER"));
            }
        },
    };
    state
        .broker
        .publish_keyed(topic, vec![message], defer_ms, key)
        .await
        .map_err(broker_error)?;
    Ok(Reply::Text("OK"))
}

/// `POST /mpub?topic=T[&binary=true]`: newline-separated messages, or the
/// binary MPUB layout without its leading size.
pub async fn multi_publish(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> V1Result {
    let key = idempotency_key(&headers)?;
    if content_length(&headers).is_some_and(|length| length > state.max_body_size) {
        return Err(HttpError::too_large("BODY_TOO_BIG"));
    }
    let params = Params::parse(query.as_deref())?;
    let topic = topic_param(&params)?;
    // nsqd creates the topic before it reads the body.
    state
        .broker
        .ensure_topic(topic)
        .await
        .map_err(broker_error)?;
    let read_max = limit_plus_one(state.max_body_size);
    let data = read_body(body, read_max, state.read_timeout).await?;
    let messages = if is_binary(params.get("binary")) {
        if data.len() == read_max {
            return Err(HttpError::too_large("BODY_TOO_BIG"));
        }
        split_binary(&data, state.max_msg_size, state.max_body_size)?
    } else {
        split_lines(&data, read_max, state.max_msg_size)?
    };
    if !messages.is_empty() {
        state
            .broker
            .publish_keyed(topic, messages, 0, key)
            .await
            .map_err(broker_error)?;
    }
    Ok(Reply::Text("OK"))
}

/// The request's `Idempotency-Key`, if any: exactly one header of 1 to
/// [`MAX_KEY_BYTES`] bytes.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<Bytes>, HttpError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if values.next().is_some() || key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(HttpError::bad_request("INVALID_IDEMPOTENCY_KEY"));
    }
    Ok(Some(Bytes::copy_from_slice(key)))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn limit_plus_one(limit: u64) -> usize {
    usize::try_from(limit).map_or(usize::MAX, |limit| limit.saturating_add(1))
}

/// A base-10 integer in `0..=max` (Go's `strconv.ParseInt` syntax).
fn parse_defer(text: &str, max_ms: u64) -> Option<u64> {
    let value: i64 = text.parse().ok()?;
    u64::try_from(value).ok().filter(|&value| value <= max_ms)
}

/// `binary`: absent, `false` or `0` is text mode; anything else is binary.
fn is_binary(value: Option<&str>) -> bool {
    !matches!(value, None | Some("false") | Some("0"))
}

/// Text mode: one message per `\n`-terminated line (only `\n` is removed),
/// empty lines skipped. `data` holds at most `read_max` bytes; reaching it
/// means the body exceeded max-body-size.
fn split_lines(data: &Bytes, read_max: usize, max_msg_size: u64) -> Result<Vec<Bytes>, HttpError> {
    let mut messages = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |newline| start + newline + 1);
        if end == read_max {
            return Err(HttpError::too_large("BODY_TOO_BIG"));
        }
        let line = data.slice(start..end);
        start = end;
        let line = match line.last() {
            Some(b'\n') => line.slice(..line.len() - 1),
            _ => line,
        };
        if line.is_empty() {
            continue;
        }
        if line.len() as u64 > max_msg_size {
            return Err(HttpError::too_large("MSG_TOO_BIG"));
        }
        messages.push(line);
    }
    Ok(messages)
}

/// Binary mode: `[i32 K]` then K × `[i32 n][n bytes]`; trailing bytes are
/// ignored. Failures are the TCP MPUB codes without `E_`.
fn split_binary(
    data: &Bytes,
    max_msg_size: u64,
    max_body_size: u64,
) -> Result<Vec<Bytes>, HttpError> {
    let bad_body = HttpError::too_large("BAD_BODY");
    let bad_message = HttpError::too_large("BAD_MESSAGE");
    let count = read_i32(data, 0).ok_or(bad_body.clone())?;
    let max_count = max_body_size.saturating_sub(4) / 5;
    let count = u64::try_from(count)
        .ok()
        .filter(|&count| count > 0 && count <= max_count)
        .ok_or(bad_body)?;
    let mut messages = Vec::new();
    let mut cursor = 4;
    for _ in 0..count {
        let size = read_i32(data, cursor).ok_or(bad_message.clone())?;
        let size = u64::try_from(size)
            .ok()
            .filter(|&size| size > 0 && size <= max_msg_size)
            .ok_or(bad_message.clone())?;
        let start = cursor + 4;
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| start.checked_add(size))
            .filter(|&end| end <= data.len())
            .ok_or(bad_message.clone())?;
        messages.push(data.slice(start..end));
        cursor = end;
    }
    Ok(messages)
}

fn read_i32(data: &[u8], offset: usize) -> Option<i32> {
    let bytes: [u8; 4] = data.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], read_max: usize) -> Result<Vec<Bytes>, HttpError> {
        split_lines(&Bytes::copy_from_slice(text), read_max, 4)
    }

    #[test]
    fn text_mode_splits_on_newlines_only() {
        let got = lines(b"a\n\nb\r\nc", 100).unwrap();
        assert_eq!(
            got,
            vec![Bytes::from("a"), Bytes::from("b\r"), Bytes::from("c")]
        );
        assert_eq!(lines(b"", 100).unwrap(), Vec::<Bytes>::new());
        assert_eq!(lines(b"abcde\n", 100).unwrap_err().message, "MSG_TOO_BIG");
        assert_eq!(lines(b"ab\ncd", 5).unwrap_err().message, "BODY_TOO_BIG");
    }

    fn binary(count: i32, items: &[&[u8]]) -> Bytes {
        let mut body = count.to_be_bytes().to_vec();
        for item in items {
            body.extend_from_slice(&(item.len() as i32).to_be_bytes());
            body.extend_from_slice(item);
        }
        Bytes::from(body)
    }

    #[test]
    fn binary_mode_follows_mpub_rules() {
        let ok = split_binary(&binary(2, &[b"a", b"bc"]), 4, 100).unwrap();
        assert_eq!(ok, vec![Bytes::from("a"), Bytes::from("bc")]);
        let mut trailing = binary(1, &[b"a"]).to_vec();
        trailing.extend_from_slice(b"junk");
        assert_eq!(
            split_binary(&Bytes::from(trailing), 4, 100).unwrap().len(),
            1
        );
        let error = |body: Bytes| split_binary(&body, 4, 100).unwrap_err().message;
        assert_eq!(error(Bytes::from_static(b"\0\0")), "BAD_BODY");
        assert_eq!(error(binary(0, &[])), "BAD_BODY");
        assert_eq!(error(binary(20, &[])), "BAD_BODY");
        assert_eq!(error(binary(2, &[b"a"])), "BAD_MESSAGE");
        assert_eq!(error(binary(1, &[b"abcde"])), "BAD_MESSAGE");
        assert_eq!(error(binary(1, &[b""])), "BAD_MESSAGE");
    }

    #[test]
    fn idempotency_keys_are_one_header_of_1_to_256_bytes() {
        let headers = |values: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for value in values {
                let value = axum::http::HeaderValue::from_bytes(value).unwrap();
                headers.append(IDEMPOTENCY_KEY, value);
            }
            headers
        };
        assert_eq!(idempotency_key(&headers(&[])).unwrap(), None);
        let key = idempotency_key(&headers(&[b"order-17"])).unwrap();
        assert_eq!(key, Some(Bytes::from_static(b"order-17")));
        let longest = vec![b'k'; 256];
        assert!(idempotency_key(&headers(&[&longest])).is_ok());
        let too_long = vec![b'k'; 257];
        for bad in [&[&too_long[..]][..], &[b""], &[b"a", b"b"]] {
            let error = idempotency_key(&headers(bad)).unwrap_err();
            assert_eq!(error.message, "INVALID_IDEMPOTENCY_KEY");
        }
    }

    #[test]
    fn defer_and_binary_values() {
        assert_eq!(parse_defer("0", 10), Some(0));
        assert_eq!(parse_defer("+10", 10), Some(10));
        assert_eq!(parse_defer("11", 10), None);
        assert_eq!(parse_defer("-1", 10), None);
        assert_eq!(parse_defer("1.5", 10), None);
        assert!(!is_binary(None));
        assert!(!is_binary(Some("0")));
        assert!(is_binary(Some("true")));
        assert!(is_binary(Some("yes")));
    }
}
