//! nsqlookupd's TCP protocol "V1" (`docs/nsq-wire.md` §6.1), as pure parsing: bytes
//! in, requests out, and nsqlookupd's error texts. Every error is fatal: the
//! server answers it and closes the connection.
//!
//! After the 4-byte magic `"  V1"`, a command is a line
//! `NAME[ PARAM...]\n` (trimmed, split on single spaces). IDENTIFY is
//! followed by `[int32 size][JSON]`. Replies are `[int32 size][bytes]`,
//! with no frame type (unlike V2).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::protocol::names::{is_valid_channel_name, is_valid_topic_name};

/// The magic a V1 client sends first.
pub const MAGIC_V1: &[u8; 4] = b"  V1";
/// A command line longer than this closes the connection (nsqlookupd has no
/// limit; a valid line is far shorter).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// An IDENTIFY body larger than this is refused (`failed to read body`).
pub const MAX_IDENTIFY_BODY_BYTES: usize = 1024 * 1024;

/// A parsed V1 command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Identify(NodeInfo),
    Register {
        topic: String,
        channel: Option<String>,
    },
    Unregister {
        topic: String,
        channel: Option<String>,
    },
}

/// What a node says about itself in IDENTIFY (sent by `ledgerq serve`
/// and nsqd, kept by the lookupd). Field order is nsqlookupd's `PeerInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeInfo {
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
}

impl NodeInfo {
    /// `broadcast_address:http_port`, how nsqadmin and tombstones name a node.
    pub fn http_node(&self) -> String {
        format!("{}:{}", self.broadcast_address, self.http_port)
    }
}

/// A fatal V1 error: its code and text, sent as `"<code> <text>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    pub code: &'static str,
    pub text: String,
}

impl LookupError {
    fn new(code: &'static str, text: impl Into<String>) -> Self {
        LookupError {
            code,
            text: text.into(),
        }
    }

    pub fn invalid(text: impl Into<String>) -> Self {
        Self::new("E_INVALID", text)
    }

    fn bad_body(text: &str) -> Self {
        Self::new("E_BAD_BODY", text)
    }

    /// The reply bytes.
    pub fn to_reply(&self) -> Bytes {
        Bytes::from(format!("{} {}", self.code, self.text))
    }
}

/// Why decoding stopped: a client error to answer, or a failed read.
#[derive(Debug)]
pub enum DecodeError {
    Client(LookupError),
    Io(std::io::Error),
}

impl From<LookupError> for DecodeError {
    fn from(error: LookupError) -> Self {
        DecodeError::Client(error)
    }
}

impl From<std::io::Error> for DecodeError {
    fn from(error: std::io::Error) -> Self {
        DecodeError::Io(error)
    }
}

/// Decodes V1 commands. The connection tells it once the client has
/// identified, so that a second IDENTIFY fails before any body is read.
#[derive(Debug, Default)]
pub struct LookupCodec {
    pub identified: bool,
}

impl Decoder for LookupCodec {
    type Item = Request;
    type Error = DecodeError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        self.decode_command(buf).map_err(DecodeError::Client)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        // A partial command at EOF: the peer is gone; nothing to answer.
        self.decode(buf)
    }
}

impl LookupCodec {
    /// One command from the front of `buf`, if complete.
    pub fn decode_command(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, LookupError> {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_LINE_BYTES {
                return Err(LookupError::invalid("command line too long"));
            }
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
        let params: Vec<&str> = line.split(' ').collect();
        let request = match params[0] {
            "PING" => Request::Ping,
            "IDENTIFY" => {
                if self.identified {
                    return Err(LookupError::invalid("cannot IDENTIFY again"));
                }
                match identify_body(&buf[end + 1..])? {
                    Some((body, used)) => {
                        buf.advance(end + 1 + used);
                        return Ok(Some(Request::Identify(body)));
                    }
                    None => return Ok(None),
                }
            }
            "REGISTER" | "UNREGISTER" => {
                if !self.identified {
                    return Err(LookupError::invalid("client must IDENTIFY"));
                }
                let (topic, channel) = topic_channel(params[0], &params[1..])?;
                if params[0] == "REGISTER" {
                    Request::Register { topic, channel }
                } else {
                    Request::Unregister { topic, channel }
                }
            }
            other => return Err(LookupError::invalid(format!("invalid command {other}"))),
        };
        buf.advance(end + 1);
        Ok(Some(request))
    }
}

/// The IDENTIFY body after the command line: `Some((body, bytes used))`
/// once complete, `None` while more bytes are needed.
fn identify_body(rest: &[u8]) -> Result<Option<(NodeInfo, usize)>, LookupError> {
    let Some(size) = rest.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(size.try_into().expect("four bytes"));
    let size = usize::try_from(size)
        .ok()
        .filter(|&n| n <= MAX_IDENTIFY_BODY_BYTES)
        .ok_or_else(|| LookupError::bad_body("IDENTIFY failed to read body"))?;
    let Some(raw) = rest.get(4..4 + size) else {
        return Ok(None);
    };
    let body: NodeInfo = serde_json::from_slice(raw)
        .map_err(|_| LookupError::bad_body("IDENTIFY failed to decode JSON body"))?;
    if body.broadcast_address.is_empty()
        || body.tcp_port == 0
        || body.http_port == 0
        || body.version.is_empty()
    {
        return Err(LookupError::bad_body("IDENTIFY missing fields"));
    }
    Ok(Some((body, 4 + size)))
}

/// `topic [channel]` with nsqlookupd's checks and texts.
fn topic_channel(command: &str, params: &[&str]) -> Result<(String, Option<String>), LookupError> {
    let Some(&topic) = params.first() else {
        return Err(LookupError::invalid(format!(
            "{command} insufficient number of params"
        )));
    };
    let channel = params.get(1).copied().filter(|c| !c.is_empty());
    if !is_valid_topic_name(topic) {
        return Err(LookupError::new(
            "E_BAD_TOPIC",
            format!("{command} topic name '{topic}' is not valid"),
        ));
    }
    if let Some(channel) = channel {
        if !is_valid_channel_name(channel) {
            return Err(LookupError::new(
                "E_BAD_CHANNEL",
                format!("{command} channel name '{channel}' is not valid"),
            ));
        }
    }
    Ok((topic.to_owned(), channel.map(str::to_owned)))
}

/// Encodes replies as `[int32 size][bytes]`.
#[derive(Debug, Default)]
pub struct ReplyEncoder;

impl Encoder<Bytes> for ReplyEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, reply: Bytes, out: &mut BytesMut) -> Result<(), std::io::Error> {
        out.reserve(4 + reply.len());
        out.put_u32(reply.len() as u32);
        out.put_slice(&reply);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(codec: &mut LookupCodec, input: &[u8]) -> Result<Option<Request>, LookupError> {
        codec.decode_command(&mut BytesMut::from(input))
    }

    fn identify_frame(json: &str) -> Vec<u8> {
        let mut frame = b"IDENTIFY\n".to_vec();
        frame.extend_from_slice(&(json.len() as i32).to_be_bytes());
        frame.extend_from_slice(json.as_bytes());
        frame
    }

    const GOOD: &str = r#"{"version":"1.3.0","tcp_port":4150,"http_port":4151,"hostname":"h","broadcast_address":"b"}"#;

    #[test]
    fn ping_needs_no_identify_and_lines_are_trimmed() {
        let mut codec = LookupCodec::default();
        assert_eq!(decode(&mut codec, b"  PING \n"), Ok(Some(Request::Ping)));
        assert_eq!(decode(&mut codec, b"PING"), Ok(None));
    }

    #[test]
    fn identify_waits_for_its_body_then_parses_it() {
        let mut codec = LookupCodec::default();
        let frame = identify_frame(GOOD);
        for cut in 0..frame.len() {
            assert_eq!(decode(&mut codec, &frame[..cut]), Ok(None), "cut at {cut}");
        }
        let mut buf = BytesMut::from(&frame[..]);
        buf.extend_from_slice(b"PING\n");
        match codec.decode_command(&mut buf) {
            Ok(Some(Request::Identify(body))) => {
                assert_eq!(body.broadcast_address, "b");
                assert_eq!(body.tcp_port, 4150);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(&buf[..], b"PING\n");
    }

    #[test]
    fn identify_errors_match_nsqlookupd() {
        let mut codec = LookupCodec::default();
        let err = |r: Result<Option<Request>, LookupError>| {
            String::from_utf8(r.unwrap_err().to_reply().to_vec()).unwrap()
        };
        assert_eq!(
            err(decode(&mut codec, &identify_frame("{not json"))),
            "E_BAD_BODY IDENTIFY failed to decode JSON body"
        );
        assert_eq!(
            err(decode(&mut codec, &identify_frame(r#"{"tcp_port":1}"#))),
            "E_BAD_BODY IDENTIFY missing fields"
        );
        assert_eq!(
            err(decode(&mut codec, b"IDENTIFY\n\xff\xff\xff\xff")),
            "E_BAD_BODY IDENTIFY failed to read body"
        );
        codec.identified = true;
        assert_eq!(
            err(decode(&mut codec, b"IDENTIFY\n")),
            "E_INVALID cannot IDENTIFY again"
        );
    }

    #[test]
    fn register_checks_identify_params_and_names() {
        let mut codec = LookupCodec::default();
        let err = |r: Result<Option<Request>, LookupError>| {
            String::from_utf8(r.unwrap_err().to_reply().to_vec()).unwrap()
        };
        assert_eq!(
            err(decode(&mut codec, b"REGISTER t\n")),
            "E_INVALID client must IDENTIFY"
        );
        codec.identified = true;
        assert_eq!(
            err(decode(&mut codec, b"REGISTER\n")),
            "E_INVALID REGISTER insufficient number of params"
        );
        assert_eq!(
            err(decode(&mut codec, b"UNREGISTER bad!topic\n")),
            "E_BAD_TOPIC UNREGISTER topic name 'bad!topic' is not valid"
        );
        assert_eq!(
            err(decode(&mut codec, b"REGISTER t bad!chan\n")),
            "E_BAD_CHANNEL REGISTER channel name 'bad!chan' is not valid"
        );
        assert_eq!(
            decode(&mut codec, b"REGISTER t c\n"),
            Ok(Some(Request::Register {
                topic: "t".into(),
                channel: Some("c".into())
            }))
        );
        assert_eq!(
            decode(&mut codec, b"UNREGISTER t\n"),
            Ok(Some(Request::Unregister {
                topic: "t".into(),
                channel: None
            }))
        );
        assert_eq!(
            err(decode(&mut codec, b"NOPE x\n")),
            "E_INVALID invalid command NOPE"
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut codec = LookupCodec::default();
        assert!(decode(&mut codec, &vec![b'A'; MAX_LINE_BYTES + 1]).is_err());
    }

    #[test]
    fn replies_are_length_prefixed_without_frame_type() {
        let mut out = BytesMut::new();
        ReplyEncoder
            .encode(Bytes::from_static(b"OK"), &mut out)
            .unwrap();
        assert_eq!(&out[..], b"\x00\x00\x00\x02OK");
    }
}
