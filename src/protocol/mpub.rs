//! The MPUB body: `[i32 count K]` then K × `[i32 size n_i][n_i bytes]`, validated incrementally.
//!
//! [`MpubScanner`] checks the count and every item header as soon as their bytes arrive, so an
//! invalid count or item size is answered without waiting for the rest of the body, in nsqd's
//! order and with its texts. Unlike nsqd, the items are confined to the declared total size B:
//! an item crossing B fails as nsqd's matching "failed to read" error, and items ending before B
//! fail as `E_BAD_BODY MPUB invalid body size <B>` (nsqd would silently desynchronise instead).

use std::ops::Range;

use bytes::Bytes;

use super::body::exceeds;
use super::error::ProtocolError;
use super::limits::Limits;

const LENGTH_PREFIX_BYTES: usize = 4;

/// Incremental validator of one MPUB body of a known total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpubScanner {
    total_bytes: usize,
    count: Option<usize>,
    cursor_bytes: usize,
    items: Vec<Range<usize>>,
}

impl MpubScanner {
    /// A scanner for a body of `total_bytes` (already checked against max-body-size).
    pub fn new(total_bytes: usize) -> Self {
        Self {
            total_bytes,
            count: None,
            cursor_bytes: 0,
            items: Vec::new(),
        }
    }

    /// The declared total body size.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Validate what `available` (a prefix of the body) allows; `Ok(true)` once the whole body
    /// is present and valid.
    pub fn advance(&mut self, available: &[u8], limits: &Limits) -> Result<bool, ProtocolError> {
        let count = match self.count {
            Some(count) => count,
            None => match self.read_count(available, limits)? {
                Some(count) => count,
                None => return Ok(false),
            },
        };
        while self.items.len() < count {
            match self.read_item(available, limits)? {
                Some(item) => self.accept(item),
                None => return Ok(false),
            }
        }
        if self.cursor_bytes != self.total_bytes {
            let text = format!("MPUB invalid body size {}", self.total_bytes);
            return Err(ProtocolError::bad_body(text));
        }
        Ok(available.len() >= self.total_bytes)
    }

    /// Slice the validated messages out of the complete `body`.
    pub fn into_bodies(self, body: &Bytes) -> Vec<Bytes> {
        let in_bounds = |range: &Range<usize>| range.end <= body.len();
        self.items
            .into_iter()
            .filter(in_bounds)
            .map(|range| body.slice(range))
            .collect()
    }

    /// The error nsqd reports if the stream ends now, given `available` body bytes buffered.
    pub fn read_failure(&self, available_bytes: usize) -> ProtocolError {
        match self.count {
            None => ProtocolError::bad_body("MPUB failed to read message count"),
            Some(count) if available_bytes >= self.cursor_bytes && self.items.len() < count => {
                let index = self.items.len();
                let text = format!("MPUB failed to read message({index}) body size");
                ProtocolError::bad_message(text)
            }
            Some(_) => ProtocolError::bad_message("MPUB failed to read message body"),
        }
    }

    fn read_count(
        &mut self,
        available: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, ProtocolError> {
        if self.total_bytes < LENGTH_PREFIX_BYTES {
            return Err(ProtocolError::bad_body("MPUB failed to read message count"));
        }
        let Some(raw_count) = read_i32(available, 0) else {
            return Ok(None);
        };
        let max_count = limits.max_body_size_bytes.saturating_sub(4) / 5;
        let count = usize::try_from(raw_count)
            .ok()
            .filter(|&count| count > 0 && !exceeds_u64(count, max_count))
            .ok_or_else(|| {
                ProtocolError::bad_body(format!("MPUB invalid message count {raw_count}"))
            })?;
        self.count = Some(count);
        self.cursor_bytes = LENGTH_PREFIX_BYTES;
        Ok(Some(count))
    }

    fn read_item(
        &self,
        available: &[u8],
        limits: &Limits,
    ) -> Result<Option<Range<usize>>, ProtocolError> {
        let index = self.items.len();
        let start = self.cursor_bytes;
        if start.saturating_add(LENGTH_PREFIX_BYTES) > self.total_bytes {
            let text = format!("MPUB failed to read message({index}) body size");
            return Err(ProtocolError::bad_message(text));
        }
        let Some(size) = read_i32(available, start) else {
            return Ok(None);
        };
        check_item_size(index, size, limits.max_msg_size_bytes)?;
        let body_start = start + LENGTH_PREFIX_BYTES;
        let end = usize::try_from(size)
            .ok()
            .and_then(|size_bytes| body_start.checked_add(size_bytes))
            .filter(|&end| end <= self.total_bytes)
            .ok_or_else(|| ProtocolError::bad_message("MPUB failed to read message body"))?;
        Ok(Some(body_start..end))
    }

    fn accept(&mut self, item: Range<usize>) {
        self.cursor_bytes = item.end;
        self.items.push(item);
    }
}

fn check_item_size(index: usize, size: i32, max_bytes: u64) -> Result<(), ProtocolError> {
    if size <= 0 {
        let text = format!("MPUB invalid message({index}) body size {size}");
        return Err(ProtocolError::bad_message(text));
    }
    if exceeds(size, max_bytes) {
        let text = format!("MPUB message too big {size} > {max_bytes}");
        return Err(ProtocolError::bad_message(text));
    }
    Ok(())
}

fn exceeds_u64(value: usize, max: u64) -> bool {
    u64::try_from(value).map_or(true, |value| value > max)
}

/// Read a big-endian i32 at `offset`, if those four bytes are present.
pub(crate) fn read_i32(buf: &[u8], offset: usize) -> Option<i32> {
    let end = offset.checked_add(LENGTH_PREFIX_BYTES)?;
    let bytes: [u8; 4] = buf.get(offset..end)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

/// Split a complete MPUB body (count and items, without the total-size prefix).
pub fn parse_mpub_body(body: &Bytes, limits: &Limits) -> Result<Vec<Bytes>, ProtocolError> {
    let mut scanner = MpubScanner::new(body.len());
    if scanner.advance(body, limits)? {
        Ok(scanner.into_bodies(body))
    } else {
        Err(scanner.read_failure(body.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mpub_body(count: i32, items: &[&[u8]]) -> Vec<u8> {
        let mut body = count.to_be_bytes().to_vec();
        for item in items {
            let size = i32::try_from(item.len()).expect("small item");
            body.extend_from_slice(&size.to_be_bytes());
            body.extend_from_slice(item);
        }
        body
    }

    fn parse(body: &[u8]) -> Result<Vec<Bytes>, String> {
        let body = Bytes::copy_from_slice(body);
        parse_mpub_body(&body, &Limits::default()).map_err(|err| err.frame_body())
    }

    #[test]
    fn splits_messages() {
        let body = mpub_body(2, &[b"a", b"bc"]);
        assert_eq!(parse(&body), Ok(vec![Bytes::from("a"), Bytes::from("bc")]));
    }

    #[test]
    fn count_errors() {
        let err = "E_BAD_BODY MPUB invalid message count 0";
        assert_eq!(parse(&mpub_body(0, &[])), Err(err.into()));
        let err = "E_BAD_BODY MPUB invalid message count -1";
        assert_eq!(parse(&mpub_body(-1, &[])), Err(err.into()));
        let err = "E_BAD_BODY MPUB invalid message count 1048576";
        assert_eq!(parse(&mpub_body(1_048_576, &[])), Err(err.into()));
        let err = "E_BAD_BODY MPUB failed to read message count";
        assert_eq!(parse(b"\x00\x00\x01"), Err(err.into()));
    }

    #[test]
    fn max_count_is_accepted_then_fails_on_items() {
        let err = "E_BAD_MESSAGE MPUB failed to read message(0) body size";
        assert_eq!(parse(&mpub_body(1_048_575, &[])), Err(err.into()));
    }

    #[test]
    fn item_size_errors() {
        let mut body = mpub_body(2, &[b"a"]);
        body.extend_from_slice(&0i32.to_be_bytes());
        let err = "E_BAD_MESSAGE MPUB invalid message(1) body size 0";
        assert_eq!(parse(&body), Err(err.into()));

        let mut body = mpub_body(1, &[]);
        body.extend_from_slice(&1_048_577i32.to_be_bytes());
        let err = "E_BAD_MESSAGE MPUB message too big 1048577 > 1048576";
        assert_eq!(parse(&body), Err(err.into()));
    }

    #[test]
    fn items_overrunning_the_total_fail() {
        let mut body = mpub_body(1, &[]);
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        let err = "E_BAD_MESSAGE MPUB failed to read message body";
        assert_eq!(parse(&body), Err(err.into()));

        let mut body = mpub_body(2, &[b"a"]);
        body.extend_from_slice(b"\x00\x00");
        let err = "E_BAD_MESSAGE MPUB failed to read message(1) body size";
        assert_eq!(parse(&body), Err(err.into()));
    }

    #[test]
    fn leftover_bytes_are_a_bad_body_size() {
        let mut body = mpub_body(1, &[b"a"]);
        body.push(b'x');
        let err = format!("E_BAD_BODY MPUB invalid body size {}", body.len());
        assert_eq!(parse(&body), Err(err));
    }

    #[test]
    fn incremental_scan_reports_errors_early() {
        let mut scanner = MpubScanner::new(100);
        let limits = Limits::default();
        assert_eq!(scanner.advance(b"\x00\x00", &limits), Ok(false));
        let err = scanner.read_failure(2).frame_body();
        assert_eq!(err, "E_BAD_BODY MPUB failed to read message count");
        assert_eq!(scanner.advance(b"\x00\x00\x00\x02", &limits), Ok(false));
        let err = scanner.read_failure(4).frame_body();
        assert_eq!(
            err,
            "E_BAD_MESSAGE MPUB failed to read message(0) body size"
        );
        let partial = b"\x00\x00\x00\x02\x00\x00\x00\x03ab";
        assert_eq!(scanner.advance(partial, &limits), Ok(false));
        let err = scanner.read_failure(partial.len()).frame_body();
        assert_eq!(err, "E_BAD_MESSAGE MPUB failed to read message body");
        let bad = b"\x00\x00\x00\x02\x00\x00\x00\x03abc\xff\xff\xff\xff";
        let err = scanner
            .advance(bad, &limits)
            .map_err(|err| err.frame_body());
        assert_eq!(
            err,
            Err("E_BAD_MESSAGE MPUB invalid message(1) body size -1".into())
        );
    }
}
