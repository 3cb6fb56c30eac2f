//! HTTPS side of the harness: one request over rustls (blocking, as the
//! plain HTTP helpers), the response kept exactly as sent.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::http::{parse_response, Response};
use super::DEADLINE;

/// A TLS connection to `address` (server name `localhost`), handshake done;
/// Err with the reason if the server refuses it.
pub fn connect(
    address: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let tcp = TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(stream)
}

/// One request (`Connection: close`) over TLS; Err if the handshake or
/// the exchange fails (a refused client certificate shows here: with TLS
/// 1.3 the server's verdict arrives after the client's handshake is done).
pub fn https_request(
    address: SocketAddr,
    config: Arc<ClientConfig>,
    method: &str,
    target: &str,
) -> Result<Response, String> {
    let mut stream = connect(address, config)?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut data = Vec::new();
    match stream.read_to_end(&mut data) {
        Ok(_) => {}
        // A peer that closes without close_notify, after a whole answer.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !data.is_empty() => {}
        Err(e) => return Err(format!("receive: {e}")),
    }
    if data.is_empty() {
        return Err("the server closed the connection without an answer".into());
    }
    Ok(parse_response(&data))
}
