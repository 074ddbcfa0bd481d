//! Tests of the partition senders' internals (sending, retrying) against
//! the fake broker; the producer's behaviour seen from outside is tested
//! in `client/src/client/tests/producer_tests.rs`.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::batching::{Enqueued, OpenBatch, ProducerBatch};
use super::context::SenderCtx;
use super::now_ms;
use super::retry::resend;
use super::sender::{drain, send_batch};
use super::{ProducerConfig, ProducerRecord};
use crate::batch::{BatchBuilder, ProducerStamp};
use crate::client::connection::Client;
use crate::client::error::ClientError;
use crate::client::session::Session;
use crate::client::tests::fake_broker::FakeBroker;
use crate::client::tests::{fast_client_config, fast_producer_config};
use crate::protocol::ErrorCode;

/// A fake broker with topic `t` (one partition) and the senders'
/// context of an idempotent producer connected to it, with its session.
async fn idempotent_sender(config: ProducerConfig) -> (FakeBroker, SenderCtx, Arc<Session>) {
    let broker = FakeBroker::start().await;
    broker.create_topic("t", 1);
    let client = Client::connect_with(broker.addr(), fast_client_config())
        .await
        .unwrap();
    let ctx = SenderCtx::new(
        client,
        ProducerConfig {
            idempotent: true,
            ..config
        },
    );
    let session = ctx.session.clone().unwrap();
    (broker, ctx, session)
}

/// The bug the crash loop found: a batch stamped under a session that
/// was then reset (another partition's batch had an unknown outcome)
/// is answered `ProducerFenced`; renumbered under the new session, it
/// must be sent again, not taken as proof that the *new* session is
/// fenced (which fenced the producer for good).
#[tokio::test]
async fn a_batch_renumbered_under_a_new_session_forgets_the_old_stamps_fenced_answer() {
    let (_broker, ctx, session) = idempotent_sender(fast_producer_config()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let old = ctx.registered(&session, deadline).await.unwrap();
    session.reset(old.generation).await;
    let new = ctx.registered(&session, deadline).await.unwrap();
    assert_ne!(old.epoch, new.epoch);
    let stamp = ProducerStamp {
        producer_id: old.producer_id,
        producer_epoch: old.epoch,
        base_sequence: 0,
    };
    let mut builder = BatchBuilder::new();
    builder.push(None, b"late", &[]);
    let (reply, stored) = oneshot::channel();
    let batch = ProducerBatch {
        topic: "t".into(),
        partition: 0,
        bytes: builder.build(stamp, now_ms()),
        stamp,
        session: Some(old),
        replies: vec![reply],
        _permits: None,
        created_at: Instant::now(),
    };
    let fenced = ClientError::Broker {
        code: ErrorCode::ProducerFenced,
        message: "a newer epoch of this producer exists".into(),
    };
    let mut sequence = Some((old.generation, 0));
    resend(&ctx, &mut sequence, batch, Some(fenced)).await;
    let stored = stored.await.unwrap().expect("stored under the new session");
    assert_eq!(stored.offset, 0);
    assert!(session.fenced().is_none(), "the producer fenced itself");
    assert_eq!(sequence, Some((new.generation, 1)));
}

/// A batch whose records waited past their delivery timeout (during
/// an outage) is never sent, so its outcome is known: not stored. It
/// fails without resetting the session (a reset after every outage
/// would also renumber every partition for nothing).
#[tokio::test]
async fn a_batch_too_late_to_send_fails_as_not_stored_without_a_session_reset() {
    let (broker, ctx, session) = idempotent_sender(ProducerConfig {
        delivery_timeout: Duration::from_millis(200),
        ..fast_producer_config()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = ctx.registered(&session, deadline).await.unwrap();
    let buffer = Arc::new(Semaphore::new(1024));
    let (reply, failed) = oneshot::channel();
    let enqueued = Enqueued {
        record: ProducerRecord::new("stale").partition(0),
        size: 16,
        permit: buffer.clone().try_acquire_many_owned(16).unwrap(),
        enqueued_at: Instant::now() - Duration::from_secs(1),
        reply,
    };
    let mut sequence = None;
    let mut in_flight = VecDeque::new();
    let open = OpenBatch::new(enqueued, 0);
    send_batch(&ctx, &mut sequence, &mut in_flight, open, "t".into(), 0).await;
    drain(&ctx, &mut sequence, &mut in_flight).await;
    let err = failed.await.unwrap().expect_err("too late");
    assert!(matches!(err, ClientError::DeliveryTimeout { .. }), "{err}");
    assert_eq!(broker.produce_requests(), 0, "sent anyway");
    let after = ctx.registered(&session, deadline).await.unwrap();
    assert_eq!(after, before, "the session was reset");
    assert_eq!(buffer.available_permits(), 1024, "buffer bytes released");
}
