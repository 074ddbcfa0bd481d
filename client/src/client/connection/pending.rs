//! Request matching: request ids, the table of the callers waiting for
//! answers on one connection ([`ConnShared`]), and [`PendingRequest`], a
//! request queued and waiting for its answer.
//!
//! The connection's reader completes the caller waiting on each
//! `request_id`, so any number of requests are in flight on a connection
//! and answers may come in any order.
//!
//! ## Invariants
//!
//! - Request ids are unique among a connection's requests in flight; they
//!   count up, wrap, and never take `u32::MAX` (reserved by the protocol for
//!   connection-level errors).
//! - Once a connection is dead, every request in flight on it has failed
//!   with the reason ([`ConnShared::fail_all`]), and no request is ever
//!   registered on it again.
//! - A request that is cancelled or times out leaves nothing behind: its
//!   entry in the table is removed, and a late answer is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lock;
use crate::client::error::ClientError;
use crate::protocol::{CONNECTION_ERROR_REQUEST_ID, Response};

/// What the connection's tasks share with callers.
#[derive(Debug)]
pub(super) struct ConnShared {
    /// The broker's address, for errors.
    pub(super) addr: String,
    pending: Mutex<Pending>,
    /// Cancelled when the connection dies or its client is dropped: its
    /// tasks stop.
    pub(super) shutdown: CancellationToken,
}

/// Where the answer to one request goes.
type Reply = oneshot::Sender<Result<Response, ClientError>>;

/// A request in flight: where its answer goes, and its in-flight slot,
/// freed when the answer arrives (or the request fails or is forgotten),
/// whether or not its caller has read the answer yet.
#[derive(Debug)]
struct Waiter {
    reply: Reply,
    _slot: OwnedSemaphorePermit,
}

/// The callers waiting for answers, by request id.
#[derive(Debug, Default)]
struct Pending {
    waiting: HashMap<u32, Waiter>,
    /// Set once the connection is dead: why.
    dead: Option<ClientError>,
}

/// Takes the next request id after `counter`: wrapping, never `u32::MAX`.
pub(super) fn next_request_id(counter: &AtomicU32) -> u32 {
    loop {
        let id = counter.fetch_add(1, Ordering::Relaxed);
        if id != CONNECTION_ERROR_REQUEST_ID {
            return id;
        }
    }
}

impl ConnShared {
    /// The table of a new connection to `addr`, alive, with no request.
    pub(super) fn new(addr: String) -> ConnShared {
        ConnShared {
            addr,
            pending: Mutex::new(Pending::default()),
            shutdown: CancellationToken::new(),
        }
    }

    /// Whether the connection is not known to be dead.
    pub(super) fn is_alive(&self) -> bool {
        lock(&self.pending).dead.is_none()
    }

    /// Why the connection died (or that it closed).
    pub(super) fn dead_error(&self) -> ClientError {
        lock(&self.pending)
            .dead
            .clone()
            .unwrap_or_else(|| ClientError::connection(&self.addr, "connection closed"))
    }

    /// Registers a waiter under a fresh id (skipping ids still in flight),
    /// holding its in-flight `slot` until the answer arrives.
    pub(super) fn register(
        &self,
        counter: &AtomicU32,
        reply: Reply,
        slot: OwnedSemaphorePermit,
    ) -> Result<u32, ClientError> {
        let mut pending = lock(&self.pending);
        if let Some(err) = &pending.dead {
            return Err(err.clone());
        }
        let id = loop {
            let id = next_request_id(counter);
            if !pending.waiting.contains_key(&id) {
                break id;
            }
        };
        pending.waiting.insert(id, Waiter { reply, _slot: slot });
        Ok(id)
    }

    /// Forgets a request nobody waits for any more.
    fn forget(&self, id: u32) {
        lock(&self.pending).waiting.remove(&id);
    }

    /// Hands a request's answer to its caller, if still waiting.
    pub(super) fn complete(&self, id: u32, result: Result<Response, ClientError>) {
        let waiter = lock(&self.pending).waiting.remove(&id);
        match waiter {
            // The caller may have given up (timeout): nothing to do.
            Some(waiter) => drop(waiter.reply.send(result)),
            None => tracing::debug!(request_id = id, "response to a request nobody waits for"),
        }
    }

    /// Marks the connection dead and fails every request in flight.
    pub(super) fn fail_all(&self, err: ClientError) {
        let waiting = {
            let mut pending = lock(&self.pending);
            if pending.dead.is_none() {
                tracing::warn!(addr = %self.addr, error = %err, "connection lost");
                pending.dead = Some(err.clone());
            }
            std::mem::take(&mut pending.waiting)
        };
        for (_, waiter) in waiting {
            drop(waiter.reply.send(Err(err.clone())));
        }
        self.shutdown.cancel();
    }
}

/// Removes a request's waiter if the caller stops waiting (timeout or
/// cancellation) before the answer arrives.
#[derive(Debug)]
struct PendingGuard {
    shared: Arc<ConnShared>,
    id: u32,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

/// A request queued on a connection by [`Client::send_request`], waiting
/// for its answer. Its in-flight slot is freed as soon as the answer
/// arrives (before it is read here), or when the request fails or is
/// dropped. Dropping it forgets the request (a late answer is dropped).
///
/// [`Client::send_request`]: super::Client::send_request
#[derive(Debug)]
pub struct PendingRequest {
    answer: oneshot::Receiver<Result<Response, ClientError>>,
    guard: PendingGuard,
    /// When the answer is due, and the timeout that set it.
    deadline: Option<(Instant, Duration)>,
}

impl PendingRequest {
    /// The request registered as `id` on `shared` (which holds its
    /// in-flight slot), with no deadline yet.
    pub(super) fn new(
        shared: Arc<ConnShared>,
        id: u32,
        answer: oneshot::Receiver<Result<Response, ClientError>>,
    ) -> PendingRequest {
        PendingRequest {
            answer,
            guard: PendingGuard { shared, id },
            deadline: None,
        }
    }

    /// Sets when the answer is due (`at`) and the timeout that set it
    /// (reported if it passes).
    pub(super) fn set_deadline(&mut self, at: Instant, timeout: Duration) {
        self.deadline = Some((at, timeout));
    }

    /// The answer, as [`Client::request`] gives it (a top-level error
    /// answer becomes [`ClientError::Broker`]), or a timeout once the
    /// deadline set by [`Client::send_request`] passes.
    ///
    /// [`Client::request`]: super::Client::request
    /// [`Client::send_request`]: super::Client::send_request
    pub async fn answer(self) -> Result<Response, ClientError> {
        let PendingRequest {
            answer,
            guard,
            deadline,
        } = self;
        let dead = || guard.shared.dead_error();
        let result = match deadline {
            Some((at, timeout)) => match tokio::time::timeout_at(at, answer).await {
                Ok(answer) => answer.unwrap_or_else(|_| Err(dead())),
                Err(_) => Err(ClientError::Timeout { after: timeout }),
            },
            None => answer.await.unwrap_or_else(|_| Err(dead())),
        };
        drop(guard);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_wrap_and_skip_the_reserved_id() {
        let counter = AtomicU32::new(u32::MAX - 1);
        assert_eq!(next_request_id(&counter), u32::MAX - 1);
        assert_eq!(next_request_id(&counter), 0);
        assert_eq!(next_request_id(&counter), 1);
    }

    #[test]
    fn register_skips_ids_in_flight() {
        let shared = ConnShared {
            addr: "a:1".into(),
            pending: Mutex::new(Pending::default()),
            shutdown: CancellationToken::new(),
        };
        let counter = AtomicU32::new(5);
        let slots = Arc::new(tokio::sync::Semaphore::new(3));
        let slot = || slots.clone().try_acquire_owned().expect("a slot");
        let (a, _ra) = oneshot::channel();
        assert_eq!(shared.register(&counter, a, slot()).ok(), Some(5));
        counter.store(5, Ordering::Relaxed);
        let (b, _rb) = oneshot::channel();
        assert_eq!(shared.register(&counter, b, slot()).ok(), Some(6));
        assert_eq!(slots.available_permits(), 1);
        shared.complete(5, Err(ClientError::connection("a:1", "test")));
        assert_eq!(slots.available_permits(), 2, "an answer frees its slot");
        shared.fail_all(ClientError::connection("a:1", "gone"));
        assert_eq!(slots.available_permits(), 3, "a failure frees every slot");
        let (c, _rc) = oneshot::channel();
        assert!(matches!(
            shared.register(&counter, c, slot()),
            Err(ClientError::Connection { .. })
        ));
    }
}
