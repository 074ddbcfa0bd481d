//! The idempotent session of a [`Producer`](super::Producer): its name, the
//! producer id and epoch the broker gave it, and what happens when a batch's
//! fate is unknown.
//!
//! ## Rules
//!
//! - The session registers its name lazily, before the first batch is
//!   built (RegisterProducer), retrying retriable failures like any send.
//! - Each partition numbers its batches from 0 within a session
//!   *generation* (one registration). A batch keeps its stamp (producer id,
//!   epoch, base sequence) across every retry, so the broker appends it once
//!   and answers a retry with the original offsets.
//! - When a batch fails and the broker may or may not have appended it
//!   (delivery timeout after lost answers), reusing its sequence numbers
//!   could make the broker drop a *different* batch as a duplicate, and
//!   skipping them leaves a gap the broker refuses. So the session is
//!   *reset*: the next batch re-registers (a new epoch) and every partition
//!   starts again at sequence 0.
//! - When the broker answers `ProducerFenced` for the current epoch, a newer
//!   instance registered the same name: the producer is fenced for good and
//!   every later send fails at once.

use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use super::connection::{Client, expect_response};
use super::error::ClientError;
use crate::protocol::{ErrorCode, RegisterProducerRequest};

/// One registration of the producer: the identity its batches carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionId {
    pub producer_id: i64,
    pub epoch: i16,
    /// Counts registrations of this producer object; partitions restart
    /// their sequences when it changes.
    pub generation: u64,
}

#[derive(Debug, Default)]
struct SessionState {
    current: Option<SessionId>,
    /// The next batch must register again (after an unknown outcome).
    reset: bool,
    generation: u64,
}

/// The idempotent session shared by a producer's partition senders.
#[derive(Debug)]
pub(crate) struct Session {
    name: String,
    state: AsyncMutex<SessionState>,
    /// `state.current` while it needs no new registration (`None` when
    /// reset), readable without waiting for `state`: after a registration,
    /// thousands of partition senders take it at once instead of passing
    /// through the lock one per scheduler turn. Written only under `state`.
    usable: std::sync::Mutex<Option<SessionId>>,
    fenced: std::sync::Mutex<Option<ClientError>>,
}

impl Session {
    pub fn new(name: String) -> Session {
        Session {
            name,
            state: AsyncMutex::new(SessionState::default()),
            usable: std::sync::Mutex::new(None),
            fenced: std::sync::Mutex::new(None),
        }
    }

    /// The producer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error every send gets once a newer instance fenced this one.
    pub fn fenced(&self) -> Option<ClientError> {
        self.fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current session, registering first if needed; retries
    /// retriable failures until `deadline`.
    pub async fn current(
        &self,
        client: &Client,
        backoff: &super::Backoff,
        deadline: Instant,
    ) -> Result<SessionId, ClientError> {
        if let Some(err) = self.fenced() {
            return Err(err);
        }
        if let Some(id) = *self.usable() {
            return Ok(id);
        }
        let mut state = self.state.lock().await;
        if let (Some(id), false) = (state.current, state.reset) {
            return Ok(id);
        }
        let mut attempt = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let request = RegisterProducerRequest {
                name: self.name.clone(),
            };
            let answer = client
                .request_with_timeout(request.into(), remaining.max(Duration::from_millis(1)))
                .await
                .and_then(|r| expect_response!(r, RegisterProducer));
            match answer {
                Ok(registered) => {
                    state.generation += 1;
                    let id = SessionId {
                        producer_id: registered.producer_id,
                        epoch: registered.producer_epoch,
                        generation: state.generation,
                    };
                    tracing::debug!(name = %self.name, producer_id = id.producer_id, epoch = id.epoch, "producer registered");
                    state.current = Some(id);
                    state.reset = false;
                    *self.usable() = Some(id);
                    return Ok(id);
                }
                Err(err)
                    if err.is_retriable() && Instant::now() + backoff.delay(attempt) < deadline =>
                {
                    tokio::time::sleep(backoff.delay(attempt)).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Asks the next batch to register again, unless a newer generation
    /// than `generation` already exists.
    pub async fn reset(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation == generation {
            state.reset = true;
            *self.usable() = None;
        }
    }

    fn usable(&self) -> std::sync::MutexGuard<'_, Option<SessionId>> {
        self.usable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles `ProducerFenced` for a batch of session `id`: if `id` is the
    /// current session, another instance took over and the producer is
    /// fenced for good. Returns the error to report for the batch.
    pub async fn on_fenced(&self, id: SessionId, err: ClientError) -> ClientError {
        let state = self.state.lock().await;
        if state.current.is_some_and(|c| c.generation == id.generation) {
            let fenced = ClientError::Broker {
                code: ErrorCode::ProducerFenced,
                message: format!(
                    "producer {} is fenced: another instance registered the same name, so this one can no longer send ({err})",
                    self.name
                ),
            };
            *self.fenced.lock().unwrap_or_else(|e| e.into_inner()) = Some(fenced.clone());
            fenced
        } else {
            ClientError::Broker {
                code: ErrorCode::ProducerFenced,
                message: format!(
                    "this batch was sent in an earlier session of producer {} that was reset after a failure; it was not appended ({err})",
                    self.name
                ),
            }
        }
    }
}

/// A default producer name: the host name and the process id.
pub(crate) fn default_producer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pigeon".into());
    let mut name = format!("{host}-{}", std::process::id());
    name.truncate(255);
    name
}
