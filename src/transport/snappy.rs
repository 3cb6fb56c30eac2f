//! Snappy's framing format, as nsqd speaks it after an IDENTIFY `snappy`
//! upgrade: a stream identifier chunk (`ff 06 00 00 sNaPpY`), then chunks
//! of at most 64 KiB of data each, compressed (`00`) or not (`01`), each
//! with the masked CRC-32C of its uncompressed bytes.
//!
//! [`decode_chunk`] is the pure parser (bytes in, data out); [`SnappyReader`]
//! runs it over a socket. [`SnappyWriter`] uses the `snap` crate's own frame
//! encoder into memory and writes what it produced. Memory is bounded per
//! connection: a chunk longer than the largest valid data chunk is refused
//! before it is buffered.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest uncompressed data in one chunk (the format's limit).
pub const MAX_CHUNK_DATA_BYTES: usize = 65_536;
const STREAM_IDENTIFIER: &[u8] = b"sNaPpY";
const HEADER_BYTES: usize = 4;
const CRC_BYTES: usize = 4;

/// The largest chunk body accepted: a checksum and a compressed 64 KiB.
pub fn max_chunk_body_bytes() -> usize {
    CRC_BYTES + snap::raw::max_compress_len(MAX_CHUNK_DATA_BYTES)
}

/// A damaged or hostile snappy stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnappyError {
    #[error("snappy: stream does not start with the stream identifier")]
    MissingStreamIdentifier,
    #[error("snappy: bad stream identifier")]
    BadStreamIdentifier,
    #[error("snappy: chunk of {0} bytes exceeds the limit")]
    ChunkTooLong(usize),
    #[error("snappy: reserved unskippable chunk type {0:#04x}")]
    ReservedChunk(u8),
    #[error("snappy: corrupt compressed data")]
    Corrupt,
    #[error("snappy: checksum mismatch")]
    Checksum,
}

impl From<SnappyError> for io::Error {
    fn from(error: SnappyError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

/// What one chunk carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Data for the reader (possibly empty).
    Data(Bytes),
    /// The stream identifier, padding or a skippable chunk: nothing to read.
    Skip,
}

/// Parses the chunk at the front of `input`. `Ok(None)`: more bytes are
/// needed. `Ok(Some((chunk, consumed)))`: `consumed` bytes made one chunk.
/// `started` says whether the stream identifier has been seen; the first
/// chunk of a stream must be it.
pub fn decode_chunk(input: &[u8], started: bool) -> Result<Option<(Chunk, usize)>, SnappyError> {
    let Some(header) = input.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    let kind = header[0];
    let body_bytes =
        usize::from(header[1]) | usize::from(header[2]) << 8 | usize::from(header[3]) << 16;
    if !started && kind != 0xff {
        return Err(SnappyError::MissingStreamIdentifier);
    }
    if (0x02..=0x7f).contains(&kind) {
        return Err(SnappyError::ReservedChunk(kind));
    }
    if body_bytes > max_chunk_body_bytes() {
        return Err(SnappyError::ChunkTooLong(body_bytes));
    }
    let Some(body) = input.get(HEADER_BYTES..HEADER_BYTES + body_bytes) else {
        return Ok(None);
    };
    let chunk = match kind {
        0xff if body == STREAM_IDENTIFIER => Chunk::Skip,
        0xff => return Err(SnappyError::BadStreamIdentifier),
        0x00 => Chunk::Data(decompressed(body)?),
        0x01 => Chunk::Data(verified(body)?),
        // 0x80..=0xfe: padding and reserved skippable chunks.
        _ => Chunk::Skip,
    };
    Ok(Some((chunk, HEADER_BYTES + body_bytes)))
}

fn split_checksum(body: &[u8]) -> Result<(u32, &[u8]), SnappyError> {
    if body.len() < CRC_BYTES {
        return Err(SnappyError::Corrupt);
    }
    let (crc, data) = body.split_at(CRC_BYTES);
    Ok((u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]), data))
}

fn decompressed(body: &[u8]) -> Result<Bytes, SnappyError> {
    let (crc, compressed) = split_checksum(body)?;
    let length = snap::raw::decompress_len(compressed).map_err(|_| SnappyError::Corrupt)?;
    if length > MAX_CHUNK_DATA_BYTES {
        return Err(SnappyError::Corrupt);
    }
    let mut data = vec![0u8; length];
    let written = snap::raw::Decoder::new()
        .decompress(compressed, &mut data)
        .map_err(|_| SnappyError::Corrupt)?;
    assert_eq!(written, length, "snap wrote what decompress_len promised");
    check(crc, &data)?;
    Ok(Bytes::from(data))
}

fn verified(body: &[u8]) -> Result<Bytes, SnappyError> {
    let (crc, data) = split_checksum(body)?;
    if data.len() > MAX_CHUNK_DATA_BYTES {
        return Err(SnappyError::Corrupt);
    }
    check(crc, data)?;
    Ok(Bytes::copy_from_slice(data))
}

fn check(expected_masked_crc: u32, data: &[u8]) -> Result<(), SnappyError> {
    if masked_crc(data) == expected_masked_crc {
        Ok(())
    } else {
        Err(SnappyError::Checksum)
    }
}

/// The framing format's checksum: CRC-32C, rotated and offset.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Reads a snappy framed stream, yielding the data it carries.
pub struct SnappyReader<R> {
    inner: R,
    input: BytesMut,
    output: Bytes,
    started: bool,
}

impl<R> SnappyReader<R> {
    pub fn new(inner: R) -> Self {
        SnappyReader {
            inner,
            input: BytesMut::with_capacity(8 << 10),
            output: Bytes::new(),
            started: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SnappyReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.output.is_empty() {
            match decode_chunk(&this.input, this.started)? {
                Some((chunk, consumed)) => {
                    this.input.advance(consumed);
                    this.started = true;
                    if let Chunk::Data(data) = chunk {
                        this.output = data;
                    }
                }
                None => {
                    if !ready!(this.fill(cx))? {
                        return Poll::Ready(if this.input.is_empty() {
                            Ok(())
                        } else {
                            Err(io::ErrorKind::UnexpectedEof.into())
                        });
                    }
                }
            }
        }
        let n = this.output.len().min(buf.remaining());
        buf.put_slice(&this.output[..n]);
        this.output.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> SnappyReader<R> {
    /// Reads more input; `false` at end of stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.input.reserve(8 << 10);
        let spare = self.input.spare_capacity_mut();
        let mut read_buf = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read_buf))?;
        let n = read_buf.filled().len();
        // SAFETY: poll_read initialised the first `n` bytes of the spare capacity.
        unsafe { self.input.set_len(self.input.len() + n) };
        Poll::Ready(Ok(n > 0))
    }
}

/// Bytes the encoder may hold before a write waits for the socket.
const MAX_PENDING_BYTES: usize = 2 * MAX_CHUNK_DATA_BYTES;

/// Writes a snappy framed stream: the `snap` crate's frame encoder fills a
/// buffer in memory; every flush sends it, so a flush point of the protocol
/// is a chunk boundary on the wire.
pub struct SnappyWriter<W> {
    inner: W,
    encoder: snap::write::FrameEncoder<Vec<u8>>,
    sent: usize,
}

impl<W> SnappyWriter<W> {
    pub fn new(inner: W) -> Self {
        SnappyWriter {
            inner,
            encoder: snap::write::FrameEncoder::new(Vec::new()),
            sent: 0,
        }
    }
}

impl<W: AsyncWrite + Unpin> SnappyWriter<W> {
    /// Writes out what the encoder has produced.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pending = &self.encoder.get_ref()[self.sent..];
            if pending.is_empty() {
                self.encoder.get_mut().clear();
                self.sent = 0;
                return Poll::Ready(Ok(()));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SnappyWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.encoder.get_ref().len() >= MAX_PENDING_BYTES {
            ready!(this.poll_send(cx))?;
        }
        let n = data.len().min(MAX_CHUNK_DATA_BYTES);
        io::Write::write_all(&mut this.encoder, &data[..n])?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        io::Write::flush(&mut this.encoder)?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stream made by the `snap` crate's own encoder.
    fn framed(data: &[u8]) -> Vec<u8> {
        let mut encoder = snap::write::FrameEncoder::new(Vec::new());
        encoder.write_all(data).unwrap();
        encoder.into_inner().unwrap()
    }

    /// The data of the whole chunks at the front of `input`, and how many
    /// bytes are left over (an incomplete chunk).
    fn decode_prefix(mut input: &[u8]) -> Result<(Vec<u8>, usize), SnappyError> {
        let mut out = Vec::new();
        let mut started = false;
        while let Some((chunk, consumed)) = decode_chunk(input, started)? {
            started = true;
            if let Chunk::Data(data) = chunk {
                out.extend_from_slice(&data);
            }
            input = &input[consumed..];
        }
        Ok((out, input.len()))
    }

    fn decode_all(input: &[u8]) -> Result<Vec<u8>, SnappyError> {
        let (data, left_over) = decode_prefix(input)?;
        assert_eq!(left_over, 0, "whole chunks");
        Ok(data)
    }

    #[test]
    fn decodes_what_snap_encodes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(decode_all(&framed(&data)).unwrap(), data);
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        let stream = framed(b"hello hello hello");
        for cut in 0..stream.len() {
            // Whole chunks are decoded, the rest waits for more; never an error.
            let (data, _) = decode_prefix(&stream[..cut]).unwrap();
            assert!(
                data.is_empty(),
                "cut at {cut}: the one data chunk is incomplete"
            );
        }
        assert_eq!(decode_all(&stream).unwrap(), b"hello hello hello");
    }

    #[test]
    fn refuses_streams_without_identifier_reserved_chunks_and_bad_checksums() {
        assert_eq!(
            decode_chunk(&[0x00, 0x04, 0, 0, 1, 2, 3, 4], false),
            Err(SnappyError::MissingStreamIdentifier)
        );
        assert_eq!(
            decode_chunk(&[0x05, 0, 0, 0], true),
            Err(SnappyError::ReservedChunk(0x05))
        );
        let mut stream = framed(b"payload payload payload");
        let last = stream.len() - 1;
        stream[last] ^= 0x40;
        assert!(decode_all(&stream).is_err());
        let mut bad_crc = framed(b"x");
        bad_crc[14] ^= 1; // inside the first data chunk's checksum
        assert_eq!(decode_all(&bad_crc), Err(SnappyError::Checksum));
    }

    #[test]
    fn a_huge_chunk_length_is_refused_before_buffering() {
        let header = [0x00, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_chunk(&header, true),
            Err(SnappyError::ChunkTooLong(0xff_ffff))
        );
    }

    #[test]
    fn padding_and_skippable_chunks_carry_nothing() {
        let mut stream = b"\xff\x06\x00\x00sNaPpY".to_vec();
        stream.extend_from_slice(&[0xfe, 2, 0, 0, 0, 0, 0x80, 1, 0, 0, 9]);
        stream.extend_from_slice(&framed(b"after")[10..]);
        assert_eq!(decode_all(&stream).unwrap(), b"after");
    }

    #[tokio::test]
    async fn writer_and_reader_round_trip_over_a_pipe_and_snap_reads_the_writer() {
        let (client, server) = tokio::io::duplex(1024);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let expected = data.clone();
        let write = tokio::spawn(async move {
            let mut writer = SnappyWriter::new(client);
            for piece in data.chunks(10_000) {
                writer.write_all(piece).await.unwrap();
                writer.flush().await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        let mut raw = Vec::new();
        let mut server = server;
        server.read_to_end(&mut raw).await.unwrap();
        write.await.unwrap();
        let mut by_snap = Vec::new();
        snap::read::FrameDecoder::new(&raw[..])
            .read_to_end(&mut by_snap)
            .unwrap();
        assert_eq!(by_snap, expected);
        let mut ours = Vec::new();
        SnappyReader::new(&raw[..])
            .read_to_end(&mut ours)
            .await
            .unwrap();
        assert_eq!(ours, expected);
    }

    #[tokio::test]
    async fn garbage_is_an_invalid_data_error_and_a_cut_stream_an_eof_error() {
        let mut out = Vec::new();
        let garbage = SnappyReader::new(&b"GARBAGE GARBAGE"[..])
            .read_to_end(&mut out)
            .await;
        assert_eq!(garbage.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let stream = framed(b"some data that is cut");
        let cut = SnappyReader::new(&stream[..stream.len() - 3])
            .read_to_end(&mut out)
            .await;
        assert_eq!(cut.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512), started: bool) {
            let _ = decode_chunk(&input, started);
        }

        #[test]
        fn round_trips_arbitrary_data(data in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            prop_assert_eq!(decode_all(&framed(&data)).unwrap(), data);
        }
    }
}
