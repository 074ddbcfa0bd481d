//! TEMPORARY stand-in for `pigeon_client::bench`'s harness (`Workload`,
//! `run`, `Report`, `PigeonTarget`) until that lands; only good enough to
//! check the peer drivers. Removed when the harness is merged.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
pub use pigeon_client::bench::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Produce,
    Consume,
    E2e,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub messages: u64,
    pub duration: Option<Duration>,
    pub value_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub partitions: u32,
    pub publish: PublishSettings,
    pub subscribe: SubscribeSettings,
    pub rate: Option<u64>,
    pub progress: bool,
}

impl Workload {
    pub fn new(kind: WorkloadKind) -> Workload {
        Workload {
            kind,
            messages: 100_000,
            duration: None,
            value_size: 100,
            producers: 1,
            consumers: 1,
            partitions: 1,
            publish: PublishSettings {
                batch_bytes: 1 << 20,
                linger: Duration::from_millis(5),
            },
            subscribe: SubscribeSettings {
                max_messages: 1000,
                ack_timeout: Duration::from_secs(30),
            },
            rate: None,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub workload: String,
    pub target: String,
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub ack_p50_us: Option<u64>,
    pub ack_p99_us: Option<u64>,
    pub ack_p999_us: Option<u64>,
    pub ack_max_us: Option<u64>,
}

pub struct PigeonTarget;

impl PigeonTarget {
    pub async fn connect(_addr: &str) -> anyhow::Result<PigeonTarget> {
        anyhow::bail!("the harness is not merged yet")
    }
}

impl Target for PigeonTarget {
    type Publisher = crate::peers::redis::RedisPublisher;
    type Subscriber = crate::peers::redis::RedisSubscriber;
    fn name(&self) -> &str {
        "pigeon"
    }
    async fn create_topic(&self, _: &str, _: u32) -> anyhow::Result<()> {
        unreachable!()
    }
    async fn publisher(&self, _: &str, _: &PublishSettings) -> anyhow::Result<Self::Publisher> {
        unreachable!()
    }
    async fn subscriber(
        &self,
        _: &str,
        _: &str,
        _: &SubscribeSettings,
    ) -> anyhow::Result<Self::Subscriber> {
        unreachable!()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn value(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(8));
    b.put_u64(now_us());
    b.resize(size.max(8), 0x61);
    b.freeze()
}

fn pct(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub async fn run<T: Target>(target: &T, topic: &str, w: &Workload) -> anyhow::Result<Report> {
    target.create_topic(topic, w.partitions).await?;
    let mut report = Report {
        workload: format!("{:?}", w.kind),
        target: target.name().to_string(),
        ..Report::default()
    };
    let produce = async {
        let mut p = target.publisher(topic, &w.publish).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let waiter = tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Some((sent, ack)) = rx.recv().await {
                let ack: <T::Publisher as Publisher>::Ack = ack;
                ack.await?;
                lat.push(now_us().saturating_sub(sent));
            }
            anyhow::Ok(lat)
        });
        let start = Instant::now();
        for i in 0..w.messages {
            if let Some(rate) = w.rate {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let sent = now_us();
            let ack = p.publish(value(w.value_size)).await?;
            tx.send((sent, ack)).map_err(|_| anyhow::anyhow!("waiter"))?;
        }
        drop(tx);
        let lat = waiter.await??;
        p.close().await?;
        anyhow::Ok((start.elapsed(), lat))
    };
    let consume = async {
        let mut s = target.subscriber(topic, "g", &w.subscribe).await?;
        let mut lat = Vec::new();
        let start = Instant::now();
        while (lat.len() as u64) < w.messages {
            let batch = s
                .receive(w.subscribe.max_messages, Duration::from_millis(100))
                .await?;
            let now = now_us();
            for m in &batch {
                let sent = u64::from_be_bytes(m.value[..8].try_into()?);
                anyhow::ensure!(m.value.len() == w.value_size.max(8), "value changed");
                lat.push(now.saturating_sub(sent));
            }
            s.ack().await?;
        }
        s.close().await?;
        anyhow::Ok((start.elapsed(), lat))
    };
    let (elapsed, mut lat, ack_lat) = match w.kind {
        WorkloadKind::Produce => {
            let (e, l) = produce.await?;
            (e, l, None)
        }
        WorkloadKind::Consume => {
            produce.await?;
            let (e, l) = consume.await?;
            (e, l, None)
        }
        WorkloadKind::E2e => {
            let (p, c) = tokio::join!(produce, consume);
            let (_, ack) = p?;
            let (e, l) = c?;
            (e, l, Some(ack))
        }
    };
    report.messages = w.messages;
    report.bytes = w.messages * w.value_size as u64;
    report.seconds = elapsed.as_secs_f64();
    report.msgs_per_sec = w.messages as f64 / report.seconds;
    report.mb_per_sec = report.bytes as f64 / report.seconds / 1e6;
    report.p50_us = pct(&mut lat, 0.5);
    report.p99_us = pct(&mut lat, 0.99);
    report.p999_us = pct(&mut lat, 0.999);
    report.max_us = pct(&mut lat, 1.0);
    if let Some(mut a) = ack_lat {
        report.ack_p50_us = Some(pct(&mut a, 0.5));
        report.ack_p99_us = Some(pct(&mut a, 0.99));
        report.ack_p999_us = Some(pct(&mut a, 0.999));
        report.ack_max_us = Some(pct(&mut a, 1.0));
    }
    Ok(report)
}
