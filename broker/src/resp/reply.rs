//! [`Reply`]: what a command answers, and its encoding in RESP2 or RESP3
//! (the connection's protocol, chosen with `HELLO`).
//!
//! | reply | RESP3 | RESP2 |
//! | --- | --- | --- |
//! | `Status(s)` | `+s\r\n` | same |
//! | `Error(e)` | `-e\r\n` (e begins with a code such as `ERR`) | same |
//! | `Integer(n)` | `:n\r\n` | same |
//! | `Bulk(b)` | `$len\r\n b \r\n` | same |
//! | `Null` | `_\r\n` | `$-1\r\n` |
//! | `NullArray` | `_\r\n` | `*-1\r\n` |
//! | `Array(v)` | `*n\r\n` then each | same |
//! | `Map(v)` | `%n\r\n` then key, value … | `*2n\r\n` then key, value … |
//! | `Set(v)` | `~n\r\n` then each | `*n\r\n` then each |
//! | `Verbatim(s)` | `=len\r\ntxt:s\r\n` | `$len\r\n s \r\n` |
//!
//! Error and status texts have their `\r` and `\n` replaced by blanks, so a
//! message can never break the framing.

use bytes::{BufMut, Bytes, BytesMut};

/// A command's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A simple string (`+OK`).
    Status(String),
    /// An error, its code word first (`ERR …`, `WRONGTYPE …`).
    Error(String),
    /// An integer.
    Integer(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// Nothing (a missing value).
    Null,
    /// A missing array (RESP2's `*-1`).
    NullArray,
    /// An ordered list.
    Array(Vec<Reply>),
    /// Key/value pairs (a flat array in RESP2).
    Map(Vec<(Reply, Reply)>),
    /// An unordered collection (an array in RESP2).
    Set(Vec<Reply>),
    /// Text meant for people (`INFO`, `CLIENT LIST`).
    Verbatim(String),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    /// A status reply.
    pub fn status(text: &str) -> Reply {
        Reply::Status(text.to_owned())
    }

    /// An error reply of `text` (which starts with its code word).
    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    /// A bulk string from text or bytes.
    pub fn bulk(bytes: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(bytes.as_ref()))
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the reply to `out` in RESP3 (`resp3`) or RESP2.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        match self {
            Reply::Status(s) => line(out, b'+', s),
            Reply::Error(e) => line(out, b'-', e),
            Reply::Integer(n) => header(out, b':', *n),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Null if resp3 => out.put_slice(b"_\r\n"),
            Reply::Null => out.put_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Reply::NullArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', items.len() as i64);
                items.iter().for_each(|i| i.encode(resp3, out));
            }
            Reply::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len() as i64);
                items.iter().for_each(|i| i.encode(resp3, out));
            }
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode(resp3, out);
                    v.encode(resp3, out);
                }
            }
            Reply::Verbatim(text) if resp3 => {
                header(out, b'=', text.len() as i64 + 4);
                out.put_slice(b"txt:");
                out.put_slice(text.as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Verbatim(text) => bulk(out, text.as_bytes()),
        }
    }
}

/// `<kind><n>\r\n`.
fn header(out: &mut BytesMut, kind: u8, n: i64) {
    out.put_u8(kind);
    out.put_slice(n.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

/// `$<len>\r\n<bytes>\r\n`.
fn bulk(out: &mut BytesMut, bytes: &[u8]) {
    header(out, b'$', bytes.len() as i64);
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

/// `<kind><text>\r\n` with line breaks in `text` turned into blanks.
fn line(out: &mut BytesMut, kind: u8, text: &str) {
    out.put_u8(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, resp3: bool) -> String {
        let mut out = BytesMut::new();
        reply.encode(resp3, &mut out);
        String::from_utf8(out.to_vec()).expect("text")
    }

    #[test]
    fn replies_encode_in_both_protocols() {
        let map = Reply::Map(vec![(Reply::bulk("proto"), Reply::Integer(3))]);
        assert_eq!(encoded(&map, true), "%1\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(encoded(&map, false), "*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(encoded(&Reply::Null, false), "$-1\r\n");
        assert_eq!(encoded(&Reply::NullArray, false), "*-1\r\n");
        assert_eq!(encoded(&Reply::NullArray, true), "_\r\n");
        assert_eq!(
            encoded(&Reply::Verbatim("a".into()), true),
            "=5\r\ntxt:a\r\n"
        );
        assert_eq!(encoded(&Reply::Verbatim("a".into()), false), "$1\r\na\r\n");
        assert_eq!(
            encoded(&Reply::Set(vec![Reply::Integer(1)]), true),
            "~1\r\n:1\r\n"
        );
        assert_eq!(encoded(&Reply::error("ERR a\r\nb"), true), "-ERR a  b\r\n");
    }
}
