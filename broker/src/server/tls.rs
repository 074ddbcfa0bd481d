//! The TLS handshake of a binary-protocol connection, before its first
//! frame.
//!
//! - The first bytes are looked at (without reading them) before the
//!   handshake: a TLS record starts `16 03 0x` (handshake, version 3.x),
//!   while a Pigeon frame starts with its little-endian length, whose third
//!   byte is 0 for any frame under 64 KiB (every first Handshake). A client
//!   that speaks plain Pigeon to a TLS listener is answered, in the clear,
//!   with the connection-level error `TlsRequired` saying how to connect,
//!   then closed, instead of failing with an unreadable TLS alert.
//! - The handshake must finish within `frame_timeout` of the accept (a
//!   client that stalls it holds one connection slot at most that long).
//! - A failed handshake (unknown CA, no client certificate where one is
//!   required, a protocol error) is logged at info with the peer and the
//!   reason; the client gets rustls's alert.
//! - The reverse mistake, a TLS client on a plain listener, is caught the
//!   same way ([`refuse_tls_on_plain`]): its ClientHello would read as the
//!   length of a 64 KiB+ frame and both sides would wait. It is answered
//!   with a plain `InvalidRequest` connection error, which the client's TLS
//!   layer reports at once as "not TLS". (A first frame that is not a
//!   Handshake and whose length is 66,326 bytes or more with `03 01`–`03 04`
//!   as its two low bytes would be taken for TLS; clients start with a
//!   Handshake, a few hundred bytes.)

use std::time::Duration;

use bytes::BytesMut;
use pigeon_protocol::{ErrorCode, Limits, encode_response};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::connection::connection_error;
use crate::metrics;
use crate::security::metrics::tls_handshake_failed;
use crate::security::tls::ServerTls;

/// Shakes hands with a new connection; `None` if it did not complete (the
/// reason is logged, and a plain client was told to use TLS).
pub async fn accept(
    tls: &ServerTls,
    stream: TcpStream,
    peer: &str,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match shake_hands(tls, stream, peer, timeout).await? {
        Ok(stream) => Some(stream),
        Err(plain) => {
            refuse_plain(plain, peer).await;
            None
        }
    }
}

/// The TLS handshake of any listener: `Some(Ok)` the TLS stream,
/// `Some(Err)` a client whose first bytes are not TLS (for the listener to
/// tell it, in its own protocol), `None` a failed or stalled handshake
/// (logged and counted) or a client that closed at once.
pub async fn shake_hands(
    tls: &ServerTls,
    stream: TcpStream,
    peer: &str,
    timeout: Duration,
) -> Option<Result<TlsStream<TcpStream>, TcpStream>> {
    let handshake = async {
        let mut first = [0u8; 3];
        let seen = stream.peek(&mut first).await.ok()?;
        if seen == 0 {
            return None;
        }
        if !looks_like_tls(&first[..seen]) {
            tls_handshake_failed();
            tracing::info!(%peer, "refusing a client that does not speak TLS on a TLS listener");
            return Some(Err(stream));
        }
        match tls.acceptor().accept(stream).await {
            Ok(stream) => Some(Ok(stream)),
            Err(e) => {
                tls_handshake_failed();
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(shaken) => shaken,
        Err(_) => {
            tls_handshake_failed();
            tracing::info!(%peer, "closing a connection whose TLS handshake did not finish within {timeout:?}");
            None
        }
    }
}

/// On a plain listener: `None` (after telling it) when the client speaks
/// TLS, else the stream to serve. Waits for the client's first bytes (or
/// the broker's shutdown).
pub async fn refuse_tls_on_plain(
    stream: TcpStream,
    peer: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<TcpStream> {
    let mut first = [0u8; 3];
    let seen = tokio::select! {
        seen = stream.peek(&mut first) => seen.ok()?,
        _ = shutdown.cancelled() => return Some(stream),
    };
    if seen < 3 || !looks_like_tls(&first) {
        return Some(stream);
    }
    tracing::info!(%peer, "refusing a TLS client on the plain listener (the broker runs without --tls-cert)");
    let message = "this listener of the broker is plain TCP, not TLS: connect without --tls-ca, or turn TLS on at the broker";
    refuse(stream, ErrorCode::InvalidRequest, message).await;
    None
}

/// Whether the first bytes a client sent (at least one) can start a TLS
/// record: `0x16` (handshake), then major version 3, then minor 1 to 4.
pub fn looks_like_tls(first: &[u8]) -> bool {
    match first {
        [0x16] | [0x16, 0x03] => true,
        [0x16, 0x03, minor, ..] => (1..=4).contains(minor),
        _ => false,
    }
}

/// Tells a plain client, in the clear, that this listener speaks TLS, and
/// closes after it had a moment to read it.
async fn refuse_plain(stream: TcpStream, peer: &str) {
    tracing::debug!(%peer, "telling a plain client to use TLS");
    let message = "this listener of the broker requires TLS; connect with TLS (pigeon --tls-ca FILE or PIGEON_TLS_CA, or ClientConfig::tls in the client library)";
    refuse(stream, ErrorCode::TlsRequired, message).await;
}

/// Sends a connection-level error and closes once the client read it (or
/// after [`REFUSAL_LINGER`](super::REFUSAL_LINGER)).
async fn refuse(mut stream: TcpStream, code: ErrorCode, message: &str) {
    metrics::error(code);
    let Some(bytes) = refusal(code, message) else {
        return;
    };
    super::close_with(&mut stream, &bytes).await;
}

/// The connection-level error frame, encoded.
fn refusal(code: ErrorCode, message: &str) -> Option<BytesMut> {
    let frame = connection_error(code, message.into());
    let mut bytes = BytesMut::new();
    encode_response(&frame, Limits::default(), &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_and_pigeon_frames_are_told_apart() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x03]));
        assert!(looks_like_tls(&[0x16]));
        // A Pigeon Handshake frame: a small little-endian length.
        assert!(!looks_like_tls(&[0xC6, 0x00, 0x00]));
        assert!(!looks_like_tls(&[0x16, 0x00, 0x00]));
        assert!(!looks_like_tls(b"GET"));
    }

    #[test]
    fn the_answer_to_a_tls_client_cannot_read_as_a_tls_record() {
        // Its first byte is a TLS client's "content type": 20-24 would be
        // taken for a record and waited on.
        let message = "this listener of the broker is plain TCP, not TLS: connect without --tls-ca, or turn TLS on at the broker";
        let bytes = refusal(ErrorCode::InvalidRequest, message).expect("encoded");
        assert!(!(0x14..=0x18).contains(&bytes[0]), "{:#x}", bytes[0]);
    }
}
