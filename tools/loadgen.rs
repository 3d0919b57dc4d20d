//! `icefall-loadgen`: produce deterministic sample records to a topic with rskafka.
//!
//! Keyed records go to Kafka's default partition (murmur2); records without a key are batched
//! to one partition at a time (sticky). Every record carries a `seq` header, so a reader can
//! re-derive its key, value and headers (see `tools/sample.rs`).

#[path = "sample.rs"]
mod sample;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::future::try_join_all;
use rskafka::BackoffConfig;
use rskafka::chrono::Utc;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

#[derive(Debug, Parser)]
#[command(
    name = "icefall-loadgen",
    about = "Produce deterministic sample records to a Kafka topic"
)]
struct Args {
    /// Bootstrap brokers, HOST:PORT[,..].
    #[arg(long, value_delimiter = ',', required = true)]
    brokers: Vec<String>,
    #[arg(long)]
    topic: String,
    /// Records to produce.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// First sequence number (to append more records to a stream).
    #[arg(long, default_value_t = 0)]
    first_seq: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Every n-th record has no key (0: never).
    #[arg(long, default_value_t = 20)]
    null_key_every: u64,
    /// Records per produce request.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Records per second over all partitions (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.keys == 0 || a.batch == 0 {
        bail!("--keys and --batch must be positive");
    }
    let shape = sample::Shape {
        keys: a.keys,
        value_bytes: a.value_bytes,
        null_key_every: a.null_key_every,
        ..Default::default()
    };
    let backoff = BackoffConfig {
        deadline: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let client = ClientBuilder::new(a.brokers.clone())
        .backoff_config(backoff)
        .build()
        .await
        .with_context(|| format!("cannot reach Kafka at {}", a.brokers.join(",")))?;
    let topics = client.list_topics().await.context("listing topics")?;
    let Some(topic) = topics.into_iter().find(|t| t.name == a.topic) else {
        bail!("topic {:?} does not exist", a.topic);
    };
    let partitions = topic.partitions.len() as u32;

    // Route every record, then produce each partition's records in order, partitions concurrently.
    let mut per_partition: Vec<Vec<u64>> = vec![Vec::new(); partitions as usize];
    let mut sticky = 0u32;
    let mut sticky_left = a.batch;
    for i in a.first_seq..a.first_seq + a.records {
        let p = match shape.key(i) {
            Some(k) => sample::kafka_partition(&k, partitions),
            None => {
                if sticky_left == 0 {
                    sticky = (sticky + 1) % partitions;
                    sticky_left = a.batch;
                }
                sticky_left -= 1;
                sticky
            }
        };
        per_partition[p as usize].push(i);
    }
    let started = Instant::now();
    let client = Arc::new(client);
    let shape = &shape;
    try_join_all(per_partition.into_iter().enumerate().map(|(p, seqs)| {
        let client = client.clone();
        let topic = a.topic.clone();
        async move {
            let pc = client
                .partition_client(topic, p as i32, UnknownTopicHandling::Retry)
                .await
                .with_context(|| format!("partition {p}"))?;
            // Each partition keeps its share of the rate: chunk i leaves at i * batch / share.
            let share = a.rate as f64 * seqs.len() as f64 / a.records.max(1) as f64;
            for (i, chunk) in seqs.chunks(a.batch).enumerate() {
                if share > 0.0 {
                    let due = started + Duration::from_secs_f64((i * a.batch) as f64 / share);
                    tokio::time::sleep_until(due.into()).await;
                }
                let records = chunk
                    .iter()
                    .map(|&i| Record {
                        key: shape.key(i),
                        value: shape.value(i),
                        headers: shape.headers(i).into_iter().collect(),
                        timestamp: Utc::now(),
                    })
                    .collect();
                pc.produce(records, Compression::NoCompression)
                    .await
                    .with_context(|| format!("producing to partition {p}"))?;
            }
            anyhow::Ok(())
        }
    }))
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced records={} partitions={} seconds={:.3} records_per_sec={:.0}",
        a.records,
        partitions,
        secs,
        a.records as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sample::{kafka_partition, murmur2};

    /// Vectors from the Java client's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key) as i32,
                want,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(
            kafka_partition(b"foobar", 8),
            ((-790_332_482i32 as u32) & 0x7fff_ffff) % 8
        );
    }
}
