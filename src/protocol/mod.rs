//! The NSQ TCP protocol V2, as pure parsing and encoding (no sockets, no tasks).
//!
//! * [`codec`]: streaming decoder of client commands (lines, length prefixes, bodies);
//! * [`command`]: command lines, parameter validation and the typed [`Command`];
//! * [`body`] / [`mpub`]: body length rules and the MPUB body layout;
//! * [`identify`]: IDENTIFY negotiation and its JSON reply;
//! * [`frame`]: server → client frames and message IDs;
//! * [`names`]: topic/channel name rules;
//! * [`error`]: [`ProtocolError`] and the error frame body;
//! * [`limits`]: the size/range limits parsing enforces.
//!
//! Error texts and the order of checks follow nsqd 1.3.0 (see
//! `docs/nsq-wire.md` §2 and §3).

pub mod body;
pub mod codec;
pub mod command;
pub mod error;
pub mod frame;
pub mod identify;
pub mod limits;
pub mod mpub;
pub mod names;
mod quote;

#[cfg(test)]
mod codec_proptest;

pub use body::Body;
pub use codec::{Admission, CommandCodec, CommandGate, OpenGate, MAGIC_V2, MAX_LINE_LENGTH_BYTES};
pub use command::{build, check_params, parse_line, ClientCommand, Line, Verb};
pub use error::ProtocolError;
pub use frame::{
    decode_frame, encode_error, encode_message, encode_response, message_id_hex, parse_message_id,
    FRAME_TYPE_ERROR, FRAME_TYPE_MESSAGE, FRAME_TYPE_RESPONSE,
};
pub use identify::{
    negotiate, IdentifyLimits, IdentifyRequest, Negotiated, ServerFeatures, Upgrades,
};
pub use limits::Limits;
pub use names::{is_ephemeral, is_valid_channel_name, is_valid_topic_name};
