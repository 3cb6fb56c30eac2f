//! Message bodies the drain can check: numbered, incompressible, and
//! verified byte for byte on the way back; one bit per message seen.

use std::sync::atomic::{AtomicU64, Ordering};

/// Fills `body` with message `seq`: the sequence number (big-endian), then
/// pseudo-random bytes derived from it (incompressible, checkable).
pub(super) fn fill_body(seq: u64, body: &mut [u8]) {
    body[..8].copy_from_slice(&seq.to_be_bytes());
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in body[8..].chunks_mut(8) {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// The sequence number of a delivered body, if it is one of ours intact.
pub(super) fn check_body(body: &[u8], size: usize, scratch: &mut [u8]) -> Option<u64> {
    if body.len() != size {
        return None;
    }
    let seq = u64::from_be_bytes(body[..8].try_into().ok()?);
    fill_body(seq, scratch);
    (scratch == body).then_some(seq)
}

/// One bit per message: which sequence numbers were delivered.
pub(super) struct Seen {
    pub(super) words: Vec<AtomicU64>,
}

impl Seen {
    pub(super) fn new(n: u64) -> Seen {
        Seen {
            words: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Marks `seq`; true if it was not marked before.
    pub(super) fn mark(&self, seq: u64) -> bool {
        let bit = 1u64 << (seq % 64);
        self.words[(seq / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}
