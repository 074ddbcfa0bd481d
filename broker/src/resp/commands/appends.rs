//! Pipelined appends: the plain `XADD key * field value …` that a
//! connection does not answer one by one. Consecutive such requests to
//! the same key are gathered into an [`OpenBatch`] and queued at the
//! partition's writer as **one record batch** ([`submit_batch`]): one
//! produce, one commit, consecutive offsets and one append time, so the
//! entry IDs of a batch of n are `<append time>-<base offset + i>` for
//! i in 0..n, exactly the IDs the records read back with. Its commit is
//! awaited later ([`PendingAppend::finish`]), together with the next
//! batches, so a pipeline shares fsyncs; no reply is written before its
//! entry is durable.
//!
//! A batch succeeds or fails as a whole (the partition appends it
//! atomically): on failure every `XADD` of it gets the same error reply.
//! A batch holds at most [`MAX_BATCH_ENTRIES`] entries and
//! [`MAX_BATCH_BYTES`] of field and value bytes (well under the broker's
//! smallest `max_batch_bytes`).

use bytes::Bytes;
use tokio::sync::OwnedRwLockReadGuard;

use super::super::reply::Reply;
use super::super::session::Context;
use super::super::stream::entry::to_record;
use super::super::stream::ids::StreamId;
use super::streams::{committed, ensure_stream, resolve, submit_records};
use crate::service::SubmittedProduce;

/// Entries one batch holds at most.
pub const MAX_BATCH_ENTRIES: usize = 1024;

/// Field and value bytes one batch holds at most.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Whether a request is the plain `XADD key * field value …` that a
/// connection pipelines (queues, and awaits with the next ones).
pub fn pipelinable(args: &[Bytes]) -> bool {
    args.len() >= 5
        && args.len() % 2 == 1
        && args[0].eq_ignore_ascii_case(b"xadd")
        && args[2].as_ref() == b"*"
}

/// Consecutive pipelinable `XADD`s to one key, not yet queued.
#[derive(Debug)]
pub struct OpenBatch {
    key: Bytes,
    /// Each entry's field/value pairs.
    entries: Vec<Vec<Bytes>>,
    bytes: usize,
}

fn size_of(pairs: &[Bytes]) -> usize {
    pairs.iter().map(|p| p.len()).sum()
}

impl OpenBatch {
    /// A batch of the one [`pipelinable`] request `args`.
    pub fn new(args: Vec<Bytes>) -> OpenBatch {
        let mut batch = OpenBatch {
            key: args[1].clone(),
            entries: Vec::new(),
            bytes: 0,
        };
        batch.push(args);
        batch
    }

    /// Adds `args` if it is to the same key and fits; else gives it back.
    pub fn add(&mut self, args: Vec<Bytes>) -> Result<(), Vec<Bytes>> {
        let fits = self.entries.len() < MAX_BATCH_ENTRIES
            && self.bytes + size_of(&args[3..]) <= MAX_BATCH_BYTES;
        if args[1] != self.key || !fits {
            return Err(args);
        }
        self.push(args);
        Ok(())
    }

    fn push(&mut self, mut args: Vec<Bytes>) {
        self.bytes += size_of(&args[3..]);
        self.entries.push(args.split_off(3));
    }

    /// How many `XADD`s it answers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A batch of `XADD`s queued at its partition's writer whose commit has
/// not been awaited yet. It holds the partition's append lock (shared)
/// until it is finished.
pub struct PendingAppend {
    submitted: SubmittedProduce,
    entries: usize,
    _shared: OwnedRwLockReadGuard<()>,
}

impl PendingAppend {
    /// How many `XADD`s it answers.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether it answers none (never: a batch has at least one entry).
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Waits until the batch is durable; the reply of each `XADD`, in
    /// order.
    pub async fn finish(self) -> Vec<Reply> {
        match committed(self.submitted).await {
            Ok(a) => {
                let time = a.append_time_ms.max(0) as u64;
                (0..self.entries as u64)
                    .map(|i| Reply::bulk(StreamId::new(time, a.base_offset + i).to_string()))
                    .collect()
            }
            Err(reply) => vec![reply; self.entries],
        }
    }
}

/// What [`submit_batch`] did.
pub enum Submitted {
    /// The batch is queued; its replies come with [`PendingAppend::finish`].
    Queued(PendingAppend),
    /// The partition's lock is wanted exclusively: finish the appends
    /// this connection has pending, then submit again.
    Busy(OpenBatch),
    /// Answered at once (an error for every entry).
    Done(Vec<Reply>),
}

/// Queues `batch` without waiting for its commit. With `holding` (this
/// connection has appends pending), it does not wait for the partition's
/// lock, which an `XADD <id>` elsewhere may be waiting for behind this
/// connection's own pending appends.
pub async fn submit_batch(ctx: &Context<'_>, batch: OpenBatch, holding: bool) -> Submitted {
    let broker = &ctx.broker();
    ctx.note_command("xadd", &[]);
    let failed = |reply: Reply, n: usize| Submitted::Done(vec![reply; n]);
    let n = batch.len();
    if let Err(reply) = ensure_stream(broker, &batch.key, false).await {
        return failed(reply, n);
    }
    let (key, partition) = match resolve(broker, &batch.key) {
        Ok(found) => found,
        Err(reply) => return failed(reply, n),
    };
    let lock = ctx.listener.appends.of(&key.topic, partition);
    let shared = if holding {
        match lock.try_read_owned() {
            Ok(guard) => guard,
            Err(_) => return Submitted::Busy(batch),
        }
    } else {
        lock.read_owned().await
    };
    let records = batch.entries.iter().map(|pairs| to_record(pairs, None));
    match submit_records(broker, &key.topic, partition, records).await {
        Ok(submitted) => Submitted::Queued(PendingAppend {
            submitted,
            entries: n,
            _shared: shared,
        }),
        Err(reply) => failed(reply, n),
    }
}
