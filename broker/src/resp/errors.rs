//! The one place where a service-layer failure ([`BrokerError`]) becomes a
//! Redis error reply, and the fixed Redis error texts the commands share.
//!
//! A Redis error begins with a code word that clients branch on: `ERR`
//! for most, `NOGROUP` for a missing consumer group, `BUSYGROUP` for one
//! that exists already. Pigeon's sentence (what was wrong and what to do)
//! follows the code word unchanged.
//!
//! | `ErrorKind` | code word |
//! | --- | --- |
//! | `UnknownGroup` | `NOGROUP` |
//! | `GroupExists` | `BUSYGROUP Consumer Group name already exists` (Redis's exact text, which clients compare) |
//! | `ReadOnly`, `DiskFull`, `Storage`, `CorruptStoredData` | `ERR` (the partition's own message says what failed) |
//! | `ShuttingDown` | `ERR` |
//! | every other kind | `ERR` |

use crate::error::{BrokerError, ErrorKind};

use super::reply::Reply;

/// The error reply for a service-layer failure.
pub fn broker_error(e: &BrokerError) -> Reply {
    let code = match e.kind {
        ErrorKind::UnknownGroup => "NOGROUP",
        ErrorKind::GroupExists => {
            return Reply::error("BUSYGROUP Consumer Group name already exists");
        }
        ErrorKind::AuthenticationRequired => return noauth(),
        ErrorKind::NotAuthorized => "NOPERM",
        _ => "ERR",
    };
    Reply::error(format!("{code} {}", e.message))
}

/// Redis's answer to a command before the connection authenticated.
pub fn noauth() -> Reply {
    Reply::error("NOAUTH Authentication required.")
}

/// Redis's answer to a command it does not know.
pub fn unknown_command(name: &[u8], args: &[bytes::Bytes]) -> Reply {
    let mut listed = String::new();
    for arg in args {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        let text = String::from_utf8_lossy(arg);
        listed.push('\'');
        listed.push_str(truncated(&text, room));
        listed.push_str("' ");
    }
    let name = String::from_utf8_lossy(name);
    Reply::error(format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        truncated(&name, 128)
    ))
}

/// Redis's answer to an unknown subcommand of `command` (upper case).
pub fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    let sub = String::from_utf8_lossy(sub);
    Reply::error(format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        truncated(&sub, 128)
    ))
}

/// Redis's answer to a wrong number of arguments for `name` (lower case,
/// `container|sub` for a subcommand).
pub fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis's answer to a malformed option list.
pub fn syntax() -> Reply {
    Reply::error("ERR syntax error")
}

/// Redis's answer to an argument that should be an integer.
pub fn not_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

/// Redis's answer to a key holding something other than a stream (here:
/// a key that cannot name a stream).
pub fn wrong_type() -> Reply {
    Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value")
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn unknown_commands_are_answered_with_redis_text() {
        let reply = unknown_command(b"FOO", &[Bytes::from_static(b"bar")]);
        assert_eq!(
            reply,
            Reply::error("ERR unknown command 'FOO', with args beginning with: 'bar' ")
        );
        let reply = unknown_command(b"foo", &[]);
        assert_eq!(
            reply,
            Reply::error("ERR unknown command 'foo', with args beginning with: ")
        );
        let kind = broker_error(&BrokerError::new(ErrorKind::GroupExists, "x"));
        assert_eq!(
            kind,
            Reply::error("BUSYGROUP Consumer Group name already exists")
        );
    }
}
