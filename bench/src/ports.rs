//! Loopback ports for processes whose addresses must be known before they
//! start (a replica group's members name each other's gRPC addresses in
//! `--replicas`), safe against other processes binding `:0` meanwhile.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports handed out by [`free_address`]: below the kernel's ephemeral
/// range (32768..61000 by default), so that no `:0` bind or outgoing
/// connection of another process can take one between our check and the
/// member's own bind (CI once lost a test's member that way).
const RESERVED_PORTS: std::ops::Range<u16> = 12_000..32_000;

/// A loopback address nobody listens on, for a listener that has to be
/// known before its process starts. A process-wide counter, started at a
/// pid-derived offset, keeps the callers of one process (and processes run
/// one after another) on distinct ports; the bind check skips ports
/// something else holds.
pub fn free_address() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(RESERVED_PORTS.end - RESERVED_PORTS.start);
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = RESERVED_PORTS.start + ((offset + step) % span) as u16;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(address).is_ok() {
            return address;
        }
    }
    panic!("no free port in {RESERVED_PORTS:?}");
}
