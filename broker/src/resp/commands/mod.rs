//! Commands: the table of every command the listener knows (name, arity,
//! flags, key positions: what `COMMAND` reports and what the arity check
//! uses), and [`execute`], which checks a request against the table and
//! runs it.
//!
//! | file | commands |
//! | --- | --- |
//! | `connection.rs` | `HELLO`, `AUTH`, `PING`, `ECHO`, `SELECT`, `QUIT`, `RESET`, `CLIENT …` |
//! | `server.rs` | `COMMAND …`, `INFO`, `DBSIZE` |
//! | `keys.rs` | `EXISTS`, `TYPE`, `KEYS`, `SCAN`, `DEL`, `UNLINK` over streams, `FLUSHALL`, `FLUSHDB` |
//! | `streams.rs` | `XADD`, `XLEN`, `XRANGE`, `XREVRANGE`, `XDEL`, `XTRIM` |
//! | `appends.rs` | pipelined `XADD key * …`: consecutive ones to a key queued as one batch |
//! | `xread.rs` | `XREAD` (with `BLOCK`) |
//! | `groups.rs` | `XGROUP …`, `XINFO …` |
//! | `group_key.rs` | how a key names a group's topic or one partition of it; IDs ↔ offsets in a partition |
//! | `xinfo.rs` | the replies of `XINFO STREAM`, `GROUPS`, `CONSUMERS` |
//! | `xreadgroup.rs` | `XREADGROUP` (`>`, a consumer's history, `COUNT`, `BLOCK`, `NOACK`) |
//! | `pending.rs` | `XACK`, `XPENDING`, `XCLAIM`, `XAUTOCLAIM` |
//! | `multi.rs` | `MULTI`, `EXEC`, `DISCARD` |
//!
//! A command not in the table gets Redis's exact "unknown command" error;
//! a wrong number of arguments gets Redis's arity error before the command
//! runs. Commands never close the connection except `QUIT`.

pub mod appends;
mod connection;
mod group_key;
mod groups;
mod keys;
mod multi;
mod pending;
mod server;
mod streams;
mod xinfo;
mod xread;
mod xreadgroup;

pub use appends::{OpenBatch, PendingAppend, Submitted, pipelinable, submit_batch};

use bytes::Bytes;

use super::errors;
use super::reply::Reply;
use super::session::Context;

/// A command as `COMMAND INFO` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Arguments including the name: exactly this many if positive, at
    /// least `-arity` if negative.
    pub arity: i64,
    /// Redis's command flags (`write`, `readonly`, `blocking`, …).
    pub flags: &'static [&'static str],
    /// Position of the first key (0: none).
    pub first_key: i64,
    /// Position of the last key (−1: the last argument).
    pub last_key: i64,
    /// Step between keys.
    pub step: i64,
    /// Redis's command group, for `COMMAND DOCS`.
    pub group: &'static str,
    /// One line on what it does, for `COMMAND DOCS`.
    pub summary: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
    summary: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        group,
        summary,
    }
}

const NONE: (i64, i64, i64) = (0, 0, 0);

/// Every command the listener serves.
#[rustfmt::skip]
pub const COMMANDS: &[Spec] = &[
    spec("hello", -1, &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], NONE, "connection", "Handshakes with the server: protocol version, authentication, client name."),
    spec("auth", -2, &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], NONE, "connection", "Authenticates the connection."),
    spec("ping", -1, &["fast"], NONE, "connection", "Returns the server's liveliness response."),
    spec("echo", 2, &["fast"], NONE, "connection", "Returns the given string."),
    spec("select", 2, &["loading", "stale", "fast"], NONE, "connection", "Changes the selected database (only 0 exists)."),
    spec("quit", -1, &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], NONE, "connection", "Closes the connection."),
    spec("reset", 1, &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], NONE, "connection", "Resets the connection."),
    spec("client", -2, &[], NONE, "connection", "A container for client connection commands."),
    spec("command", -1, &["loading", "stale"], NONE, "server", "Returns detailed information about all commands."),
    spec("info", -1, &["loading", "stale"], NONE, "server", "Returns information and statistics about the server."),
    spec("dbsize", 1, &["readonly", "fast"], NONE, "server", "Returns the number of streams (topics)."),
    spec("exists", -2, &["readonly", "fast"], (1, -1, 1), "generic", "Determines whether one or more streams exist."),
    spec("type", 2, &["readonly", "fast"], (1, 1, 1), "generic", "Determines the type of value stored at a key."),
    spec("keys", 2, &["readonly"], NONE, "generic", "Returns all stream names that match a pattern."),
    spec("scan", -2, &["readonly"], NONE, "generic", "Iterates over the stream names."),
    spec("del", -2, &["write"], (1, -1, 1), "generic", "Deletes streams (topics, with their groups)."),
    spec("unlink", -2, &["write", "fast"], (1, -1, 1), "generic", "Deletes streams (topics, with their groups)."),
    spec("flushall", -1, &["write"], NONE, "server", "Deletes every stream (topic), when the broker's resp_allow_flush setting allows it."),
    spec("flushdb", -1, &["write"], NONE, "server", "Deletes every stream (topic), when the broker's resp_allow_flush setting allows it."),
    spec("xadd", -5, &["write", "denyoom", "fast"], (1, 1, 1), "stream", "Appends a new entry to a stream."),
    spec("xlen", 2, &["readonly", "fast"], (1, 1, 1), "stream", "Returns the number of entries in a stream."),
    spec("xrange", -4, &["readonly"], (1, 1, 1), "stream", "Returns the entries of a stream within a range of IDs."),
    spec("xrevrange", -4, &["readonly"], (1, 1, 1), "stream", "Returns the entries of a stream within a range of IDs, in reverse order."),
    spec("xread", -4, &["readonly", "blocking", "movablekeys"], NONE, "stream", "Returns entries from several streams with IDs greater than the ones given; blocks until one is available otherwise."),
    spec("xdel", -3, &["write", "fast"], (1, 1, 1), "stream", "Deletes entries from a stream (reads by entry skip them; the records stay in the log)."),
    spec("xtrim", -4, &["write"], (1, 1, 1), "stream", "Deletes the oldest whole segments of a stream (approximate trimming only)."),
    spec("xgroup", -2, &[], NONE, "stream", "A container for consumer group commands."),
    spec("xreadgroup", -7, &["write", "blocking", "movablekeys"], NONE, "stream", "Returns new or historical entries from a stream for a consumer in a group; blocks until an entry is available otherwise."),
    spec("xack", -4, &["write", "fast"], (1, 1, 1), "stream", "Acknowledges entries of a consumer group."),
    spec("xpending", -3, &["readonly"], (1, 1, 1), "stream", "Returns the pending entries of a consumer group."),
    spec("xclaim", -6, &["write", "fast"], (1, 1, 1), "stream", "Changes the owner of pending entries of a consumer group."),
    spec("xautoclaim", -6, &["write", "fast"], (1, 1, 1), "stream", "Changes the owner of pending entries that were idle long enough."),
    spec("xinfo", -2, &[], NONE, "stream", "A container for stream introspection commands."),
    spec("multi", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NONE, "transactions", "Starts a transaction."),
    spec("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], NONE, "transactions", "Runs the commands queued since MULTI."),
    spec("discard", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NONE, "transactions", "Discards the commands queued since MULTI."),
];

/// The table entry of `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `argc` arguments (the name included) fit `arity`.
pub fn arity_fits(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// Runs one request: unknown command and arity errors first, then the
/// command.
pub async fn execute(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let Some(spec) = lookup(&args[0]) else {
        ctx.session.multi_failed |= ctx.session.multi.is_some();
        return errors::unknown_command(&args[0], &args[1..]);
    };
    if !arity_fits(spec.arity, args.len()) {
        ctx.session.multi_failed |= ctx.session.multi.is_some();
        return errors::wrong_arity(spec.name);
    }
    if !ctx.session.caller.is_authenticated() && !spec.flags.contains(&"no_auth") {
        ctx.session.multi_failed |= ctx.session.multi.is_some();
        return errors::noauth();
    }
    ctx.note_command(spec.name, args);
    if let Some(queued) = ctx.session.multi.as_mut()
        && !matches!(spec.name, "exec" | "discard" | "multi" | "quit" | "reset")
    {
        queued.push(args.to_vec());
        return Reply::status("QUEUED");
    }
    run(ctx, spec.name, args).await
}

/// Runs the command `name` (checked against the table).
pub(super) async fn run(ctx: &mut Context<'_>, name: &str, args: &[Bytes]) -> Reply {
    match name {
        "hello" => connection::hello(ctx, args).await,
        "auth" => connection::auth(ctx, args).await,
        "ping" => connection::ping(args),
        "echo" => Reply::Bulk(args[1].clone()),
        "select" => connection::select(args),
        "quit" => connection::quit(ctx),
        "reset" => connection::reset(ctx),
        "client" => connection::client(ctx, args),
        "command" => server::command(args),
        "info" => server::info(ctx, args),
        "dbsize" => server::dbsize(ctx),
        "exists" => keys::exists(ctx, args),
        "type" => keys::key_type(ctx, args),
        "keys" => keys::keys(ctx, args),
        "scan" => keys::scan(ctx, args),
        "del" | "unlink" => keys::del(ctx, args).await,
        "flushall" | "flushdb" => keys::flush(ctx, args).await,
        "xadd" => streams::xadd(ctx, args).await,
        "xlen" => streams::xlen(ctx, args).await,
        "xrange" => streams::xrange(ctx, args, false).await,
        "xrevrange" => streams::xrange(ctx, args, true).await,
        "xdel" => streams::xdel(ctx, args).await,
        "xtrim" => streams::xtrim(ctx, args).await,
        "xread" => xread::xread(ctx, args).await,
        "xgroup" => groups::xgroup(ctx, args).await,
        "xinfo" => groups::xinfo(ctx, args).await,
        "xreadgroup" => xreadgroup::xreadgroup(ctx, args).await,
        "xack" => pending::xack(ctx, args).await,
        "xpending" => pending::xpending(ctx, args).await,
        "xclaim" => pending::xclaim(ctx, args).await,
        "xautoclaim" => pending::xautoclaim(ctx, args).await,
        "multi" => multi::begin(ctx),
        "exec" => multi::exec(ctx).await,
        "discard" => multi::discard(ctx),
        _ => errors::unknown_command(&args[0], &args[1..]),
    }
}

/// The upper-case text of an argument, for option matching.
pub fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

/// An argument read as an integer as Redis reads one.
pub fn integer(arg: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.starts_with('+') || text.starts_with("-0") || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// Whether the request may wait (a read with `BLOCK`): the replies before
/// it are written first.
pub fn may_block(args: &[Bytes]) -> bool {
    let name = upper(&args[0]);
    (name == "XREAD" || name == "XREADGROUP")
        && args.iter().any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}
