//! `MULTI`, `EXEC`, `DISCARD`: a connection queues commands after
//! `MULTI` (each checked for its name and arity as it is queued, answered
//! `+QUEUED`) and runs them in order at `EXEC`, answering an array of
//! their replies. A command refused while queuing makes `EXEC` abort, as
//! Redis does. Reads inside `EXEC` do not block.
//!
//! The commands run one after another on the connection, with nothing of
//! this connection in between; commands of other connections may run in
//! between (Pigeon has no global lock), so `EXEC` is not isolated from
//! them. `WATCH` is not supported.

use super::super::reply::Reply;
use super::super::session::Context;

/// `MULTI`.
pub fn begin(ctx: &mut Context<'_>) -> Reply {
    if ctx.session.multi.is_some() {
        return Reply::error("ERR MULTI calls can not be nested");
    }
    ctx.session.multi = Some(Vec::new());
    ctx.session.multi_failed = false;
    Reply::ok()
}

/// `DISCARD`.
pub fn discard(ctx: &mut Context<'_>) -> Reply {
    if ctx.session.multi.take().is_none() {
        return Reply::error("ERR DISCARD without MULTI");
    }
    ctx.session.multi_failed = false;
    Reply::ok()
}

/// `EXEC`.
pub async fn exec(ctx: &mut Context<'_>) -> Reply {
    let Some(queued) = ctx.session.multi.take() else {
        return Reply::error("ERR EXEC without MULTI");
    };
    if std::mem::take(&mut ctx.session.multi_failed) {
        return Reply::error("EXECABORT Transaction discarded because of previous errors.");
    }
    ctx.session.in_exec = true;
    let mut replies = Vec::with_capacity(queued.len());
    for args in queued {
        let name = super::lookup(&args[0]).map_or("", |s| s.name);
        replies.push(Box::pin(super::run(ctx, name, &args)).await);
    }
    ctx.session.in_exec = false;
    Reply::Array(replies)
}
