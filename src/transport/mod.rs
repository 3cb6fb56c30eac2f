//! The bytes under the NSQ protocol: a plain TCP socket until an IDENTIFY
//! negotiates upgrades, then TLS (rustls) and/or one compression layer —
//! snappy's framing format or raw DEFLATE — in nsqd's order: TLS first,
//! each step answered with an `OK` frame sent through the new layer.
//!
//! A plain connection never goes through here, so compression costs it
//! nothing; an upgraded one is a boxed reader and writer.

pub mod snappy;

use std::io;
use std::time::Duration;

use async_compression::tokio::bufread::DeflateDecoder;
use async_compression::tokio::write::DeflateEncoder;
use async_compression::Level;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::tls::{PeerTls, ServerTls};
use snappy::{SnappyReader, SnappyWriter};

/// nsqd's deadline for a client's TLS handshake.
pub const TLS_HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The compression a client negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    /// Raw DEFLATE (RFC 1951) at this level (1-9).
    Deflate {
        level: u32,
    },
}

/// The upgrades an IDENTIFY negotiated, applied after its reply is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade {
    pub tls: bool,
    pub compression: Compression,
}

impl Upgrade {
    pub fn is_needed(&self) -> bool {
        self.tls || self.compression != Compression::None
    }
}

pub type BoxedReader = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection after its upgrades.
pub struct Upgraded {
    pub reader: BoxedReader,
    pub writer: BoxedWriter,
    /// The TLS session, when TLS is on.
    pub tls: Option<PeerTls>,
}

/// Applies `upgrade` to `socket`, sending `ok_frame` after each step.
/// An error means the client cannot be talked to any more: the caller
/// closes the connection.
pub async fn apply(
    socket: TcpStream,
    upgrade: Upgrade,
    server_tls: Option<&ServerTls>,
    ok_frame: &[u8],
) -> io::Result<Upgraded> {
    if !upgrade.tls {
        let (reader, writer) = socket.into_split();
        return compress(Box::new(reader), Box::new(writer), upgrade, ok_frame).await;
    }
    let config = server_tls
        .ok_or_else(|| io::Error::other("tls_v1 negotiated without a certificate"))?
        .config
        .clone();
    let handshake = TlsAcceptor::from(config).accept(socket);
    let mut stream = tokio::time::timeout(TLS_HANDSHAKE_DEADLINE, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let peer = PeerTls::of(stream.get_ref().1);
    send(&mut stream, ok_frame).await?;
    let (reader, writer) = tokio::io::split(stream);
    let mut upgraded = compress(Box::new(reader), Box::new(writer), upgrade, ok_frame).await?;
    upgraded.tls = Some(peer);
    Ok(upgraded)
}

/// The compression layer over `reader` and `writer` (TLS or TCP).
async fn compress(
    reader: BoxedReader,
    writer: BoxedWriter,
    upgrade: Upgrade,
    ok_frame: &[u8],
) -> io::Result<Upgraded> {
    let (reader, mut writer): (BoxedReader, BoxedWriter) = match upgrade.compression {
        Compression::None => {
            return Ok(Upgraded {
                reader,
                writer,
                tls: None,
            })
        }
        Compression::Snappy => (
            Box::new(SnappyReader::new(reader)),
            Box::new(SnappyWriter::new(writer)),
        ),
        Compression::Deflate { level } => (
            Box::new(DeflateDecoder::new(BufReader::new(reader))),
            Box::new(DeflateEncoder::with_quality(
                writer,
                Level::Precise(level as i32),
            )),
        ),
    };
    send(&mut writer, ok_frame).await?;
    Ok(Upgraded {
        reader,
        writer,
        tls: None,
    })
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}
