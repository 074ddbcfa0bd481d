//! Server commands: `COMMAND` (`COUNT`, `INFO`, `DOCS`, `LIST`: what
//! client libraries probe), `INFO` (sections `server`, `clients`,
//! `keyspace`) and `DBSIZE`.

use bytes::Bytes;

use super::super::errors;
use super::super::keyspace::stream_names;
use super::super::reply::Reply;
use super::super::session::Context;
use super::connection::REDIS_VERSION;
use super::{COMMANDS, Spec, lookup, upper};

/// `COMMAND [COUNT | INFO name … | DOCS name … | LIST]`.
pub fn command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(COMMANDS.iter().map(info_of).collect());
    };
    match upper(sub).as_str() {
        "COUNT" if args.len() == 2 => Reply::Integer(COMMANDS.len() as i64),
        "LIST" => Reply::Array(COMMANDS.iter().map(|s| Reply::bulk(s.name)).collect()),
        "INFO" => {
            let names = &args[2..];
            if names.is_empty() {
                return Reply::Array(COMMANDS.iter().map(info_of).collect());
            }
            let infos = names
                .iter()
                .map(|n| lookup(n).map_or(Reply::NullArray, info_of));
            Reply::Array(infos.collect())
        }
        "DOCS" => {
            let names = &args[2..];
            let specs: Vec<&Spec> = if names.is_empty() {
                COMMANDS.iter().collect()
            } else {
                names.iter().filter_map(|n| lookup(n)).collect()
            };
            Reply::Map(
                specs
                    .into_iter()
                    .map(|s| (Reply::bulk(s.name), docs_of(s)))
                    .collect(),
            )
        }
        "COUNT" => errors::wrong_arity("command|count"),
        _ => errors::unknown_subcommand(sub, "COMMAND"),
    }
}

/// A command's `COMMAND INFO` entry (Redis 7's ten fields).
fn info_of(spec: &Spec) -> Reply {
    let flags = spec.flags.iter().map(|f| Reply::status(f)).collect();
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Integer(spec.arity),
        Reply::Set(flags),
        Reply::Integer(spec.first_key),
        Reply::Integer(spec.last_key),
        Reply::Integer(spec.step),
        Reply::Set(vec![Reply::status(&format!("@{}", spec.group))]),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// A command's `COMMAND DOCS` entry.
fn docs_of(spec: &Spec) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("summary"), Reply::bulk(spec.summary)),
        (Reply::bulk("since"), Reply::bulk("1.0.0")),
        (Reply::bulk("group"), Reply::bulk(spec.group)),
    ])
}

/// `INFO [section …]`: `server`, `clients`, `keyspace` (or `all`,
/// `default`, `everything`: all three); other sections are empty.
pub fn info(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| upper(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let mut sections = Vec::new();
    for name in ["server", "clients", "keyspace"] {
        if all || wanted.iter().any(|w| w == name) {
            sections.push(section(ctx, name));
        }
    }
    Reply::Verbatim(sections.join("\r\n"))
}

/// One `INFO` section, each line ending in `\r\n`.
fn section(ctx: &Context<'_>, name: &str) -> String {
    let listener = ctx.listener;
    let lines: Vec<String> = match name {
        "server" => {
            let up = listener.started.elapsed().as_secs();
            vec![
                "# Server".into(),
                format!("redis_version:{REDIS_VERSION}"),
                "redis_mode:standalone".into(),
                format!("os:{}", std::env::consts::OS),
                format!("arch_bits:{}", usize::BITS),
                format!("process_id:{}", std::process::id()),
                format!("tcp_port:{}", listener.port),
                format!("uptime_in_seconds:{up}"),
                format!("uptime_in_days:{}", up / 86_400),
                format!("pigeon_version:{}", env!("CARGO_PKG_VERSION")),
            ]
        }
        "clients" => vec![
            "# Clients".into(),
            format!("connected_clients:{}", listener.clients.connected()),
            format!("blocked_clients:{}", listener.clients.blocked()),
            format!("maxclients:{}", ctx.broker().config.max_connections),
        ],
        _ => {
            let streams = stream_names(&ctx.broker()).len();
            let mut lines = vec!["# Keyspace".to_owned()];
            if streams > 0 {
                lines.push(format!("db0:keys={streams},expires=0,avg_ttl=0"));
            }
            lines
        }
    };
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

/// `DBSIZE`: the number of streams.
pub fn dbsize(ctx: &Context<'_>) -> Reply {
    Reply::Integer(stream_names(&ctx.broker()).len() as i64)
}
