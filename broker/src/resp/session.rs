//! [`Session`]: the state of one RESP connection that commands read and
//! change (protocol version, name, a quit request), and [`Context`], what
//! a command runs with (the listener's shared state and the session).

use std::sync::Arc;

use bytes::Bytes;

use super::Listener;
use crate::service::{Caller, Checked};

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// The connection's id (`CLIENT ID`), unique while the broker runs.
    pub id: u64,
    /// Replies in RESP3 (after `HELLO 3`), else RESP2.
    pub resp3: bool,
    /// The connection ends once this command's reply is written (`QUIT`).
    pub quit: bool,
    /// Inside `MULTI`: the commands queued for `EXEC`.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A command queued inside `MULTI` was refused: `EXEC` aborts.
    pub multi_failed: bool,
    /// Running `EXEC`'s commands: reads do not block.
    pub in_exec: bool,
    /// Who runs the commands: set at connect (anyone without users; the
    /// user a client certificate names; else nobody), changed by `AUTH`
    /// and `HELLO … AUTH`.
    pub caller: Caller,
    /// The caller the connection opened as (`RESET` returns to it).
    pub connected_as: Caller,
}

/// What a command runs with.
pub struct Context<'a> {
    /// The listener's shared state (the broker, the clients).
    pub listener: &'a Arc<Listener>,
    /// This connection's state.
    pub session: &'a mut Session,
}

impl Context<'_> {
    /// Records the command about to run, for `CLIENT LIST`.
    pub fn note_command(&self, name: &str, args: &[Bytes]) {
        let cmd = match (name, args.get(1)) {
            ("client" | "command" | "xgroup" | "xinfo", Some(sub)) => {
                format!(
                    "{name}|{}",
                    String::from_utf8_lossy(sub).to_ascii_lowercase()
                )
            }
            _ => name.to_owned(),
        };
        self.listener.clients.update(self.session.id, |e| {
            e.cmd = cmd;
            e.last = std::time::Instant::now();
        });
    }

    /// The broker's operations, as this connection's caller may do them.
    pub fn broker(&self) -> Checked<'_> {
        self.listener.broker.checked(&self.session.caller)
    }
}
