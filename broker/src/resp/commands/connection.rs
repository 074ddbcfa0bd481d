//! Connection commands: `HELLO`, `AUTH`, `PING`, `SELECT`, `QUIT`,
//! `RESET` and the `CLIENT` family, answered as Redis answers them.
//!
//! ## Authentication
//!
//! - Without users (no `--users`), the listener behaves as a Redis server
//!   with only the passwordless `default` user: `AUTH default <anything>`
//!   succeeds, any other user is `WRONGPASS`, and `AUTH <password>` is
//!   Redis's "no password configured" error.
//! - With users, a Redis user is a Pigeon user: `AUTH user password` and
//!   `HELLO 3 AUTH user password` check the password against the users
//!   file (the same check, rate limit and audit trail as the binary
//!   protocol's SASL PLAIN), and `AUTH password` authenticates as a user
//!   called `default`. Redis sends passwords in clear, so they are
//!   accepted only on a TLS connection (`--tls-cert`): on plain TCP the
//!   answer says so and nothing is checked. A client certificate naming a
//!   user (`--tls-client-ca`) authenticates the connection at once.
//!   Until then every command but `AUTH`, `HELLO`, `QUIT` and `RESET` is
//!   answered `NOAUTH`, and a connection that has not authenticated within
//!   `auth_timeout_ms` is closed. `RESET` returns to the identity the
//!   connection had when it opened.

use bytes::Bytes;

use super::super::clients;
use super::super::errors;
use super::super::reply::Reply;
use super::super::session::Context;
use super::{integer, upper};

/// The Redis version this listener answers as (the stream commands of
/// Redis 7.0).
pub const REDIS_VERSION: &str = "7.0.0";

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
pub async fn hello(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let mut resp3 = ctx.session.resp3;
    if let Some(version) = args.get(1) {
        match integer(version) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(v) if (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&v) => {
                return Reply::error("NOPROTO unsupported protocol version");
            }
            _ => return Reply::error("ERR Protocol version is not an integer or out of range"),
        }
    }
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - i - 1;
        match upper(&args[i]).as_str() {
            "AUTH" if more >= 2 => {
                if let Err(refused) = authenticate(ctx, &args[i + 1], &args[i + 2]).await {
                    return refused;
                }
                i += 3;
            }
            "SETNAME" if more >= 1 => {
                if let Err(reply) = check_name(&args[i + 1], "Client names") {
                    return reply;
                }
                name = Some(String::from_utf8_lossy(&args[i + 1]).into_owned());
                i += 2;
            }
            _ => {
                let option = String::from_utf8_lossy(&args[i]);
                return Reply::error(format!("ERR Syntax error in HELLO option '{option}'"));
            }
        }
    }
    if !ctx.session.caller.is_authenticated() {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    ctx.session.resp3 = resp3;
    let id = ctx.session.id;
    ctx.listener.clients.update(id, |e| {
        e.resp = if resp3 { 3 } else { 2 };
        if let Some(name) = name {
            e.name = name;
        }
    });
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (
            Reply::bulk("proto"),
            Reply::Integer(if resp3 { 3 } else { 2 }),
        ),
        (Reply::bulk("id"), Reply::Integer(id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ])
}

/// Authenticates the connection as `user` with `password` (see the
/// module documentation); the error reply if that fails.
async fn authenticate(ctx: &mut Context<'_>, user: &[u8], password: &[u8]) -> Result<(), Reply> {
    let broker = &ctx.listener.broker;
    if !broker.requires_authentication() {
        // Only the passwordless `default` user exists.
        return if user == b"default" {
            Ok(())
        } else {
            Err(Reply::error(WRONGPASS))
        };
    }
    let current = &ctx.session.caller;
    let (peer, tls) = (current.peer, current.tls);
    let user = String::from_utf8_lossy(user);
    match broker
        .authenticate_password(peer, tls, &user, password)
        .await
    {
        Ok(caller) => {
            ctx.session.caller = caller;
            Ok(())
        }
        Err(e) if !tls => Err(Reply::error(format!("ERR {}", e.message))),
        Err(_) => Err(Reply::error(WRONGPASS)),
    }
}

/// `AUTH [user] password`.
pub async fn auth(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let requires = ctx.listener.broker.requires_authentication();
    let (user, password) = match args.len() {
        2 if !requires => {
            return Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        2 => (&b"default"[..], &args[1]),
        3 => (&args[1][..], &args[2]),
        _ => return errors::syntax(),
    };
    match authenticate(ctx, user, password).await {
        Ok(()) => Reply::ok(),
        Err(refused) => refused,
    }
}

/// `PING [message]`.
pub fn ping(args: &[Bytes]) -> Reply {
    match args.len() {
        1 => Reply::status("PONG"),
        2 => Reply::Bulk(args[1].clone()),
        _ => errors::wrong_arity("ping"),
    }
}

/// `SELECT index`: only database 0 exists.
pub fn select(args: &[Bytes]) -> Reply {
    match integer(&args[1]) {
        Some(0) => Reply::ok(),
        Some(_) => Reply::error("ERR DB index is out of range"),
        None => errors::not_integer(),
    }
}

/// `QUIT`: `+OK`, then the connection closes.
pub fn quit(ctx: &mut Context<'_>) -> Reply {
    ctx.session.quit = true;
    Reply::ok()
}

/// `RESET`: back to a fresh connection's state (RESP2, no name).
pub fn reset(ctx: &mut Context<'_>) -> Reply {
    ctx.session.caller = ctx.session.connected_as.clone();
    ctx.session.resp3 = false;
    ctx.session.multi = None;
    ctx.session.multi_failed = false;
    ctx.listener.clients.update(ctx.session.id, |e| {
        e.resp = 2;
        e.name.clear();
        e.multi = -1;
    });
    Reply::status("RESET")
}

/// `CLIENT ID|GETNAME|SETNAME|INFO|LIST|SETINFO`.
pub fn client(ctx: &mut Context<'_>, args: &[Bytes]) -> Reply {
    let sub = upper(&args[1]);
    let arity_ok = match sub.as_str() {
        "ID" | "GETNAME" | "INFO" => args.len() == 2,
        "SETNAME" => args.len() == 3,
        "SETINFO" => args.len() == 4,
        "LIST" => true,
        _ => return errors::unknown_subcommand(&args[1], "CLIENT"),
    };
    if !arity_ok {
        return errors::wrong_arity(&format!("client|{}", sub.to_ascii_lowercase()));
    }
    let id = ctx.session.id;
    let clients = &ctx.listener.clients;
    match sub.as_str() {
        "ID" => Reply::Integer(id as i64),
        "GETNAME" => match clients.get(id) {
            Some(e) if !e.name.is_empty() => Reply::bulk(e.name),
            _ => Reply::Null,
        },
        "SETNAME" => {
            if let Err(reply) = check_name(&args[2], "Client names") {
                return reply;
            }
            let name = String::from_utf8_lossy(&args[2]).into_owned();
            clients.update(id, |e| e.name = name);
            Reply::ok()
        }
        "SETINFO" => set_info(ctx, &args[2], &args[3]),
        "INFO" => match clients.get(id) {
            Some(e) => Reply::Verbatim(format!("{}\n", clients::describe(id, &e))),
            None => Reply::Null,
        },
        _ => list(ctx, &args[2..]),
    }
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`.
fn set_info(ctx: &mut Context<'_>, attr: &[u8], value: &[u8]) -> Reply {
    let attr = upper(attr);
    if attr != "LIB-NAME" && attr != "LIB-VER" {
        let attr = String::from_utf8_lossy(attr.as_bytes()).to_ascii_lowercase();
        return Reply::error(format!("ERR Unrecognized option '{attr}'"));
    }
    if let Err(reply) = check_name(
        value,
        &format!("{attr} cannot contain spaces, newlines or special characters."),
    ) {
        return reply;
    }
    let value = String::from_utf8_lossy(value).into_owned();
    ctx.listener.clients.update(ctx.session.id, |e| {
        if attr == "LIB-NAME" {
            e.lib_name = value;
        } else {
            e.lib_ver = value;
        }
    });
    Reply::ok()
}

/// `CLIENT LIST [TYPE normal] [ID id …]`.
fn list(ctx: &Context<'_>, options: &[Bytes]) -> Reply {
    let mut ids: Option<Vec<u64>> = None;
    match options.first().map(|o| upper(o)).as_deref() {
        None => {}
        Some("TYPE") if options.len() == 2 => {
            let kind = upper(&options[1]);
            if !matches!(kind.as_str(), "NORMAL" | "MASTER" | "REPLICA" | "PUBSUB") {
                let kind = String::from_utf8_lossy(&options[1]);
                return Reply::error(format!("ERR Unknown client type '{kind}'"));
            }
            if kind != "NORMAL" {
                ids = Some(Vec::new());
            }
        }
        Some("ID") if options.len() >= 2 => {
            let mut wanted = Vec::new();
            for id in &options[1..] {
                match integer(id).filter(|n| *n > 0) {
                    Some(n) => wanted.push(n as u64),
                    None => return Reply::error("ERR Invalid client ID"),
                }
            }
            ids = Some(wanted);
        }
        Some(_) => return errors::syntax(),
    }
    let mut text = String::new();
    for (id, entry) in ctx.listener.clients.list() {
        if ids.as_ref().is_none_or(|ids| ids.contains(&id)) {
            text.push_str(&clients::describe(id, &entry));
            text.push('\n');
        }
    }
    Reply::Verbatim(text)
}

/// Client names (and library names) are printable ASCII without blanks.
fn check_name(name: &[u8], what: &str) -> Result<(), Reply> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Ok(());
    }
    let text = if what == "Client names" {
        "ERR Client names cannot contain spaces, newlines or special characters.".to_owned()
    } else {
        format!("ERR {what}")
    };
    Err(Reply::error(text))
}
