//! One RESP connection: read requests, run them in order, write the
//! replies in order.
//!
//! ## Pipelining
//!
//! A client may send many requests without waiting. The connection decodes
//! every complete request in its read buffer and runs each in turn,
//! appending its reply to an output buffer; it writes the output once the
//! buffer holds no further complete request (or the output passes
//! [`FLUSH_BYTES`], or a command may block), so a pipeline of N requests
//! costs about one write, and replies always come back in request order.
//!
//! ## Pipelined appends
//!
//! Consecutive plain `XADD key * field value …` requests to one key are
//! gathered into one batch (`commands/appends.rs`), queued at the
//! partition's writer as one record batch when the pipeline read so far
//! ends (or another command comes, or the batch is full), and their
//! commit is awaited later, together with the next batches: a pipeline of
//! appends costs one produce per batch and shares fsyncs (group commit)
//! instead of paying one each, and no reply is written before its entry
//! is durable. Before any other command runs, and before the output is
//! written, the pending appends are awaited in order, so replies keep the
//! request order. At most [`MAX_PENDING_APPENDS`] entries wait at once.
//!
//! ## Bounds
//!
//! - A request is at most `max_frame_bytes` (checked by the decoder before
//!   allocating), and must arrive whole within `frame_timeout_ms` of its
//!   first byte; between requests a connection may idle.
//! - Malformed input gets Redis's protocol error and the connection is
//!   closed, as Redis does. A command's failure is an error reply; the
//!   connection stays open.
//! - With users, a connection that has not authenticated within
//!   `auth_timeout_ms` of its accept is closed (see `commands/connection.rs`).
//! - At shutdown the connection finishes the command it is running (a
//!   blocking read returns at once) and closes.
//!
//! ## Quotas
//!
//! The broker's byte-rate quotas (`broker/src/service/quota.rs`) apply here
//! as on the binary protocol, through the same buckets: per user with
//! users (a user's RESP and binary connections share them; `AUTH` and
//! `HELLO … AUTH` move the connection to the user's buckets), per
//! connection otherwise. Every `XADD` request is charged whole (its RESP
//! encoding as read) to the produce bucket; every other command's reply
//! is charged whole to the fetch bucket. Nothing is refused: when a bucket
//! is in debt, the connection writes the replies it has and then runs no
//! further request until the debt is paid.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::Listener;
use super::commands;
use super::reply::Reply;
use super::request::{Request, RequestDecoder};
use super::session::{Context, Session};
use crate::service::quota::{Direction, Throttle};

/// Output written at once when a pipeline's replies reach this size.
const FLUSH_BYTES: usize = 64 * 1024;

/// Appended entries queued and not yet awaited, at most.
const MAX_PENDING_APPENDS: usize = 16 * 1024;

/// Room made in the input buffer before each read: how much of a
/// pipeline one read may take.
const READ_BYTES: usize = 64 * 1024;

/// Serves one connection until the client closes it, sends `QUIT` or
/// malformed input, or the broker shuts down.
pub async fn serve<R, W>(listener: Arc<Listener>, read: R, write: W, link: Link)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let addr = link.peer;
    let registration = listener.clients.register(addr, link.local);
    let caller = listener
        .broker
        .new_caller(link.peer, link.tls, link.certificate_user.as_deref());
    let auth_deadline =
        (!caller.is_authenticated()).then(|| Instant::now() + listener.broker.config.auth_timeout);
    let session = Session {
        id: registration.id,
        resp3: false,
        quit: false,
        multi: None,
        multi_failed: false,
        in_exec: false,
        connected_as: caller.clone(),
        caller,
    };
    let max = listener.broker.config.max_frame_bytes as usize;
    let throttle = Throttle::new(listener.broker.connection_quota(&session.caller));
    let mut connection = Connection {
        throttle,
        listener,
        session,
        read,
        write,
        decoder: RequestDecoder::new(max),
        input: BytesMut::with_capacity(16 * 1024),
        output: BytesMut::with_capacity(16 * 1024),
        deadline: None,
        auth_deadline,
        open: None,
        pending: Vec::new(),
        pending_entries: 0,
        read_full: false,
    };
    if let Err(why) = connection.run().await {
        tracing::debug!(%addr, why, "RESP connection closed");
    }
    drop(registration);
}

struct Connection<R, W> {
    /// The quota buckets this connection charges, and its mute.
    throttle: Throttle,
    listener: Arc<Listener>,
    session: Session,
    read: R,
    write: W,
    decoder: RequestDecoder,
    input: BytesMut,
    output: BytesMut,
    /// When the request being read must be complete (set at its first
    /// byte, cleared when it is whole).
    deadline: Option<Instant>,
    /// When a connection that has not authenticated is closed.
    auth_deadline: Option<Instant>,
    /// Pipelined `XADD`s gathered and not queued yet (after `pending`).
    open: Option<commands::OpenBatch>,
    /// Appends queued whose commits are not awaited yet, in request order.
    pending: Vec<commands::PendingAppend>,
    /// The entries of `pending`.
    pending_entries: usize,
    /// The last read filled the input buffer's room (a client is
    /// pipelining): the next one makes [`READ_BYTES`] of room.
    read_full: bool,
}

/// How a connection reached the listener.
#[derive(Debug)]
pub struct Link {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's address it connected to.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The user a verified client certificate names, if any.
    pub certificate_user: Option<String>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    /// Serves requests until the connection ends; `Err` says why it ended
    /// early.
    async fn run(&mut self) -> Result<(), String> {
        loop {
            while let Some((request, size)) = self.next_request().await? {
                self.wait_out_mute().await?;
                self.serve(request, size).await?;
                if self.session.quit {
                    return self.flush().await;
                }
            }
            self.flush().await?;
            if !self.fill().await? {
                return Ok(());
            }
        }
    }

    /// The next complete request in the input, if one is there. Malformed
    /// input is answered and ends the connection.
    async fn next_request(&mut self) -> Result<Option<(Request, usize)>, String> {
        let before = self.input.len();
        match self.decoder.decode(&mut self.input) {
            Ok(Some(request)) => {
                self.deadline = None;
                Ok(Some((request, before - self.input.len())))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.resolve().await;
                Reply::error(e.0.clone()).encode(self.session.resp3, &mut self.output);
                self.flush().await?;
                Err(e.0)
            }
        }
    }

    /// When a quota bucket this connection charged is in debt: writes the
    /// replies queued so far, then waits until the debt is paid (or the
    /// broker shuts down).
    async fn wait_out_mute(&mut self) -> Result<(), String> {
        let Some(until) = self.throttle.take_mute() else {
            return Ok(());
        };
        self.flush().await?;
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = self.listener.broker.shutdown.cancelled() => {}
        }
        Ok(())
    }

    /// Runs one request (`size` bytes as read) and queues its reply.
    async fn serve(&mut self, request: Request, size: usize) -> Result<(), String> {
        let is_append = request
            .args
            .first()
            .is_some_and(|name| name.eq_ignore_ascii_case(b"XADD"));
        if is_append {
            self.throttle.charge(Direction::Produce, size as u64);
        }
        if self.session.multi.is_none() && commands::pipelinable(&request.args) {
            self.append(request.args).await;
            return Ok(());
        }
        self.resolve().await;
        if commands::may_block(&request.args) {
            // What the client waits for before this must not wait with it.
            self.flush().await?;
        }
        let caller_before = self.session.caller.clone();
        let mut ctx = Context {
            listener: &self.listener,
            session: &mut self.session,
        };
        let reply = commands::execute(&mut ctx, &request.args).await;
        let before = self.output.len();
        reply.encode(self.session.resp3, &mut self.output);
        if !is_append {
            let reply_bytes = self.output.len() - before;
            self.throttle.charge(Direction::Fetch, reply_bytes as u64);
        }
        if !same_caller(&self.session.caller, &caller_before) {
            // AUTH, HELLO … AUTH or RESET: charge the new caller's buckets.
            let quota = self.listener.broker.connection_quota(&self.session.caller);
            self.throttle.set(quota);
        }
        if self.output.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Gathers a plain `XADD` into the open batch; its reply waits.
    async fn append(&mut self, args: Vec<bytes::Bytes>) {
        let args = match self.open.as_mut() {
            Some(open) => match open.add(args) {
                Ok(()) => return,
                Err(args) => args,
            },
            None => args,
        };
        self.submit_open().await;
        self.open = Some(commands::OpenBatch::new(args));
    }

    /// Queues the open batch at its partition's writer (its replies wait
    /// in `pending`).
    async fn submit_open(&mut self) {
        let Some(mut batch) = self.open.take() else {
            return;
        };
        loop {
            let ctx = Context {
                listener: &self.listener,
                session: &mut self.session,
            };
            let holding = !self.pending.is_empty();
            match commands::submit_batch(&ctx, batch, holding).await {
                commands::Submitted::Queued(append) => {
                    self.pending_entries += append.len();
                    self.pending.push(append);
                    if self.pending_entries >= MAX_PENDING_APPENDS {
                        self.await_pending().await;
                    }
                    return;
                }
                commands::Submitted::Busy(back) => {
                    self.await_pending().await;
                    batch = back;
                }
                commands::Submitted::Done(replies) => {
                    self.await_pending().await;
                    for reply in replies {
                        reply.encode(self.session.resp3, &mut self.output);
                    }
                    return;
                }
            }
        }
    }

    /// Awaits the queued appends in order and queues their replies.
    async fn await_pending(&mut self) {
        for append in std::mem::take(&mut self.pending) {
            for reply in append.finish().await {
                reply.encode(self.session.resp3, &mut self.output);
            }
        }
        self.pending_entries = 0;
    }

    /// Queues the open batch, then awaits every pending append: every
    /// request before this point is answered in `output`.
    async fn resolve(&mut self) {
        self.submit_open().await;
        self.await_pending().await;
    }

    /// Writes the queued replies (after awaiting the pending appends).
    async fn flush(&mut self) -> Result<(), String> {
        self.resolve().await;
        if self.output.is_empty() {
            return Ok(());
        }
        let written = self.write.write_all(&self.output).await;
        written.map_err(|e| format!("write failed: {e}"))?;
        self.output.clear();
        if self.output.capacity() > 4 * FLUSH_BYTES {
            self.output = BytesMut::with_capacity(16 * 1024);
        }
        Ok(())
    }

    /// Reads more input; `false` once the client closed the connection or
    /// the broker shuts down. A request begun must arrive whole within the
    /// frame timeout.
    async fn fill(&mut self) -> Result<bool, String> {
        let broker = &self.listener.broker;
        let timeout = broker.config.frame_timeout;
        let deadline = if self.decoder.in_request(&self.input) {
            Some(
                *self
                    .deadline
                    .get_or_insert_with(|| Instant::now() + timeout),
            )
        } else {
            self.deadline = None;
            None
        };
        let auth_deadline = match self.auth_deadline {
            Some(_) if self.session.caller.is_authenticated() => None,
            other => other,
        };
        let deadline = match (deadline, auth_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.read_full {
            // A pipeline is coming: take more of it at once.
            self.input.reserve(READ_BYTES);
        }
        let room = self.input.capacity() - self.input.len();
        let read = self.read.read_buf(&mut self.input);
        let read = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, read).await.ok(),
                None => Some(read.await),
            }
        };
        tokio::select! {
            got = read => match got {
                None if auth_deadline.is_some_and(|at| Instant::now() >= at) => Err(format!(
                    "the connection did not authenticate within auth_timeout_ms ({} ms)",
                    broker.config.auth_timeout.as_millis()
                )),
                None => Err(too_slow(timeout)),
                Some(Ok(0)) => Ok(false),
                Some(Ok(n)) => {
                    self.read_full = n >= room;
                    Ok(true)
                }
                Some(Err(e)) => Err(format!("read failed: {e}")),
            },
            _ = broker.shutdown.cancelled() => Ok(false),
        }
    }
}

/// Whether two callers are the same user (or both anonymous, or both
/// unauthenticated).
fn same_caller(a: &crate::service::Caller, b: &crate::service::Caller) -> bool {
    a.name() == b.name()
}

fn too_slow(timeout: Duration) -> String {
    format!(
        "a request did not arrive whole within frame_timeout_ms ({} ms)",
        timeout.as_millis()
    )
}
