//! The request decoder: bytes from a client become [`Request`]s (a command
//! and its arguments).
//!
//! Clients send a request as a RESP array of bulk strings; a person at a
//! terminal may send an *inline* request (words on one line). Redis accepts
//! both, and so does this decoder:
//!
//! | form | bytes | limits |
//! | --- | --- | --- |
//! | multibulk | `*<n>\r\n` then n × (`$<len>\r\n` `<len bytes>` `\r\n`) | n ≤ [`MAX_ARGS`]; len ≤ the request limit; the whole request ≤ the request limit |
//! | inline | one line ending in `\n` (`\r\n`), words split on blanks, `"…"` (with `\n`, `\r`, `\t`, `\b`, `\a`, `\\`, `\"`, `\xhh` escapes) and `'…'` quoting | the line ≤ [`MAX_INLINE_BYTES`] |
//!
//! `*0`, `*-1` and empty lines are skipped, as Redis skips them.
//!
//! ## Invariants
//!
//! - Every length is checked against its limit before anything is
//!   allocated for it; the buffer never needs to hold more than one
//!   request's limit to make progress.
//! - The decoder is incremental: the arguments of a multibulk request are
//!   taken from the buffer as they arrive, so a request arriving in many
//!   reads is parsed once, not once per read.
//! - Malformed input is a [`ProtocolError`] carrying Redis's text for it;
//!   the connection answers it and closes, as Redis does. Nothing panics.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Most arguments in one request (Redis allows more; a million is far
/// beyond any stream command).
pub const MAX_ARGS: usize = 1024 * 1024;

/// Longest inline request line (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

/// Longest `*<n>` or `$<len>` header line accepted.
const MAX_HEADER_LINE: usize = 32;

/// A decoded request: the command name and its arguments, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Every word, the command name first. Never empty.
    pub args: Vec<Bytes>,
}

/// Input the decoder cannot accept: Redis's error text for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(what: &str) -> ProtocolError {
        ProtocolError(format!("ERR Protocol error: {what}"))
    }
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> ProtocolError {
        ProtocolError(format!("ERR connection error: {e}"))
    }
}

/// Decodes requests, one at a time, from a connection's read buffer.
#[derive(Debug)]
pub struct RequestDecoder {
    /// Largest request (and largest argument) in bytes.
    max_request_bytes: usize,
    /// A multibulk request being read: its arguments so far.
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    /// Arguments still to come.
    remaining: usize,
    args: Vec<Bytes>,
    /// Bytes of the request consumed so far.
    bytes: usize,
}

impl RequestDecoder {
    /// A decoder refusing requests over `max_request_bytes`.
    pub fn new(max_request_bytes: usize) -> RequestDecoder {
        RequestDecoder {
            max_request_bytes,
            partial: None,
        }
    }

    /// Whether part of a request has been read (for the slow-request
    /// timeout: a request must arrive whole once it has begun).
    pub fn in_request(&self, buf: &BytesMut) -> bool {
        self.partial.is_some() || !buf.is_empty()
    }

    /// The multibulk header `*<n>`: starts a partial request (or skips an
    /// empty one). `None`: the line is not complete yet.
    fn start_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<()>, ProtocolError> {
        let Some(line) = take_line(buf, MAX_HEADER_LINE, "invalid multibulk length")? else {
            return Ok(None);
        };
        let count =
            parse_len(&line[1..]).ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
        if count > MAX_ARGS as i64 {
            return Err(ProtocolError::new("invalid multibulk length"));
        }
        if count > 0 {
            let count = count as usize;
            self.partial = Some(Partial {
                remaining: count,
                args: Vec::with_capacity(count.min(64)),
                bytes: line.len(),
            });
        }
        Ok(Some(()))
    }

    /// Reads the arguments of the partial request that have arrived.
    fn continue_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let max = self.max_request_bytes;
        let Some(partial) = self.partial.as_mut() else {
            return Ok(None);
        };
        while partial.remaining > 0 {
            let Some(arg) = take_bulk(buf, max, &mut partial.bytes)? else {
                return Ok(None);
            };
            partial.args.push(arg);
            partial.remaining -= 1;
        }
        let done = self.partial.take().map(|p| Request { args: p.args });
        Ok(done)
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            if self.partial.is_some() {
                return self.continue_multibulk(buf);
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first == b'*' {
                if self.start_multibulk(buf)?.is_none() {
                    return Ok(None);
                }
                continue;
            }
            let Some(line) = take_line(buf, MAX_INLINE_BYTES, "too big inline request")? else {
                return Ok(None);
            };
            let words = split_inline(&line)?;
            if !words.is_empty() {
                return Ok(Some(Request { args: words }));
            }
        }
    }
}

/// One bulk string `$<len>\r\n<bytes>\r\n`, if it has arrived whole;
/// `used` counts the request's bytes against `max`.
fn take_bulk(
    buf: &mut BytesMut,
    max: usize,
    used: &mut usize,
) -> Result<Option<Bytes>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'$' {
        let got = String::from_utf8_lossy(&[first]).into_owned();
        return Err(ProtocolError::new(&format!("expected '$', got '{got}'")));
    }
    let Some(end) = find_crlf(buf, MAX_HEADER_LINE, "invalid bulk length")? else {
        return Ok(None);
    };
    let len = parse_len(&buf[1..end]).ok_or_else(|| ProtocolError::new("invalid bulk length"))?;
    if len < 0 || len as usize > max || *used + end + 2 + len as usize + 2 > max {
        return Err(ProtocolError::new("invalid bulk length"));
    }
    let len = len as usize;
    let whole = end + 2 + len + 2;
    if buf.len() < whole {
        // Room for the rest of this argument, once (bounded by `max`).
        buf.reserve(whole - buf.len());
        return Ok(None);
    }
    buf.advance(end + 2);
    let arg = buf.split_to(len).freeze();
    // Like Redis, the two bytes after the data are taken as the CRLF.
    buf.advance(2);
    *used += whole;
    Ok(Some(arg))
}

/// The position of the first `\r\n` (or `\n`) in the first `limit` bytes;
/// `too_long` when there is none there.
fn find_crlf(buf: &[u8], limit: usize, too_long: &str) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(limit + 2)];
    match window.iter().position(|b| *b == b'\n') {
        Some(nl) if nl > 0 && window[nl - 1] == b'\r' => Ok(Some(nl - 1)),
        Some(nl) => Ok(Some(nl)),
        None if buf.len() > limit => Err(ProtocolError::new(too_long)),
        None => Ok(None),
    }
}

/// Takes one line (without its line end) off `buf`.
fn take_line(
    buf: &mut BytesMut,
    limit: usize,
    too_long: &str,
) -> Result<Option<Bytes>, ProtocolError> {
    let Some(end) = find_crlf(buf, limit, too_long)? else {
        return Ok(None);
    };
    let line = buf.split_to(end).freeze();
    let ending = if buf.first() == Some(&b'\r') { 2 } else { 1 };
    buf.advance(ending.min(buf.len()));
    Ok(Some(line))
}

/// A decimal length as Redis reads it (optional `-`, digits only).
fn parse_len(digits: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(digits).ok()?;
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    text.parse::<i64>().ok()
}

/// Splits an inline request into words, as Redis's `sdssplitargs` does.
pub fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let (word, next) = match line[i] {
            b'"' => double_quoted(line, i + 1)?,
            b'\'' => single_quoted(line, i + 1)?,
            _ => {
                let end = (i..line.len())
                    .find(|&j| line[j].is_ascii_whitespace())
                    .unwrap_or(line.len());
                (line[i..end].to_vec(), end)
            }
        };
        words.push(Bytes::from(word));
        i = next;
    }
    Ok(words)
}

fn unbalanced() -> ProtocolError {
    ProtocolError::new("unbalanced quotes in request")
}

/// A `"…"` word from `start` (after the quote): its bytes and where the
/// scan goes on. The closing quote must end the word.
fn double_quoted(line: &[u8], start: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut out = Vec::new();
    let mut i = start;
    loop {
        match line.get(i) {
            None => return Err(unbalanced()),
            Some(b'"') => return closing(line, i, out),
            Some(b'\\') if i + 3 < line.len() && line[i + 1] == b'x' => {
                match hex_byte(line[i + 2], line[i + 3]) {
                    Some(b) => {
                        out.push(b);
                        i += 4;
                    }
                    None => {
                        out.push(b'x');
                        i += 2;
                    }
                }
            }
            Some(b'\\') if i + 1 < line.len() => {
                out.push(match line[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'a' => 7,
                    other => other,
                });
                i += 2;
            }
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// A `'…'` word from `start` (after the quote); only `\'` is an escape.
fn single_quoted(line: &[u8], start: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut out = Vec::new();
    let mut i = start;
    loop {
        match line.get(i) {
            None => return Err(unbalanced()),
            Some(b'\'') => return closing(line, i, out),
            Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// The closing quote at `at` must be followed by a blank or the end.
fn closing(line: &[u8], at: usize, word: Vec<u8>) -> Result<(Vec<u8>, usize), ProtocolError> {
    match line.get(at + 1) {
        Some(b) if !b.is_ascii_whitespace() => Err(unbalanced()),
        _ => Ok((word, at + 1)),
    }
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        decoder: &mut RequestDecoder,
        bytes: &[u8],
    ) -> Result<Vec<Vec<String>>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(request) = decoder.decode(&mut buf)? {
            let words = request
                .args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned());
            out.push(words.collect());
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline_requests_decode_as_redis_reads_them() {
        let mut decoder = RequestDecoder::new(1 << 20);
        let got = decode_all(
            &mut decoder,
            b"*1\r\n$4\r\nPING\r\n*0\r\n*-1\r\n\r\nECHO  \"a b\\x41\" 'c\\'d'\r\nPING\n",
        )
        .expect("decode");
        assert_eq!(
            got,
            vec![vec!["PING"], vec!["ECHO", "a bA", "c'd"], vec!["PING"]]
        );
    }

    #[test]
    fn a_request_arriving_byte_by_byte_decodes_once_whole() {
        let mut decoder = RequestDecoder::new(1 << 20);
        let bytes = b"*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$10\r\n0123456789\r\n";
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decoder.decode(&mut buf).expect("decode");
            assert_eq!(got.is_some(), i == bytes.len() - 1, "at byte {i}");
        }
        assert!(!decoder.in_request(&buf));
    }

    #[test]
    fn malformed_and_oversized_input_gets_redis_error_texts() {
        let cases: [(&[u8], &str); 6] = [
            (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
            (
                b"*3000000000\r\n",
                "ERR Protocol error: invalid multibulk length",
            ),
            (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
            (
                b"*1\r\n$2000\r\n",
                "ERR Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n+PING\r\n",
                "ERR Protocol error: expected '$', got '+'",
            ),
            (
                b"ECHO \"a\r\n",
                "ERR Protocol error: unbalanced quotes in request",
            ),
        ];
        for (bytes, text) in cases {
            let mut decoder = RequestDecoder::new(1024);
            let err = decode_all(&mut decoder, bytes).expect_err("refused");
            assert_eq!(err.0, text, "{:?}", String::from_utf8_lossy(bytes));
        }
        let mut decoder = RequestDecoder::new(1024);
        let long = vec![b'a'; MAX_INLINE_BYTES + 10];
        let err = decode_all(&mut decoder, &long).expect_err("too long");
        assert_eq!(err.0, "ERR Protocol error: too big inline request");
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: the decoder answers requests or a
        /// protocol error, never panics, and never holds more than the
        /// limit.
        #[test]
        fn arbitrary_input_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            cut in 0usize..512,
        ) {
            let mut decoder = RequestDecoder::new(256);
            let cut = cut.min(bytes.len());
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut failed = false;
            while let Ok(Some(_)) = decoder.decode(&mut buf) {}
            buf.extend_from_slice(&bytes[cut..]);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(request)) => proptest::prop_assert!(!request.args.is_empty()),
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            proptest::prop_assert!(failed || buf.len() <= 512);
        }

        /// Well-formed requests decode to what was sent, however they
        /// are split.
        #[test]
        fn multibulk_requests_round_trip(
            args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20), 1..8),
            cut in 0usize..400,
        ) {
            let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                bytes.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                bytes.extend_from_slice(a);
                bytes.extend_from_slice(b"\r\n");
            }
            let mut decoder = RequestDecoder::new(1 << 20);
            let cut = cut.min(bytes.len());
            let mut buf = BytesMut::from(&bytes[..cut]);
            let early = decoder.decode(&mut buf).expect("valid");
            buf.extend_from_slice(&bytes[cut..]);
            let request = match early {
                Some(r) => r,
                None => decoder.decode(&mut buf).expect("valid").expect("whole"),
            };
            let got: Vec<Vec<u8>> = request.args.iter().map(|a| a.to_vec()).collect();
            proptest::prop_assert_eq!(got, args);
        }
    }

    #[test]
    fn many_small_arguments_cannot_exceed_the_request_limit() {
        let mut decoder = RequestDecoder::new(100);
        let mut bytes = b"*50\r\n".to_vec();
        for _ in 0..50 {
            bytes.extend_from_slice(b"$1\r\na\r\n");
        }
        let err = decode_all(&mut decoder, &bytes).expect_err("over the limit");
        assert_eq!(err.0, "ERR Protocol error: invalid bulk length");
    }
}
