//! Kafka: the only module that imports `rskafka`.
//!
//! Owns connecting to the brokers, resolving the topic's partitions, start positions and high
//! watermarks ([`plan`]), the fetch loop of one fetch core ([`fetch::FetchCore`]), which
//! hands fetched records to the [`emit::Emitter`] that routes them to shard cores (the same
//! emitter serves [`memory::MemorySource`], the in-memory source of the pipeline bench), and
//! re-reading exact offset ranges for `replay-dropped` ([`ranges::RangeReader`]). It knows the
//! router and the bridge's `Sender`, but not what shards do with records, nor any storage.

pub mod dead_letters;
pub mod emit;
pub mod fetch;
pub mod memory;
pub mod ranges;

use std::time::Duration;

use futures_util::future::join_all;
use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use crate::config::StartAt;
use crate::record::Offsets;

type KafkaError = rskafka::client::error::Error;

/// Kafka failures, each naming what it was about. All are fatal for the run; rskafka has already
/// retried transient ones with backoff up to `--kafka-timeout`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach Kafka at {brokers} within {timeout:?}")]
    Unreachable { brokers: String, timeout: Duration },
    #[error("cannot reach Kafka at {brokers}")]
    Connect {
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("topic {topic:?} does not exist on {brokers}")]
    UnknownTopic { topic: String, brokers: String },
    #[error("--partitions: topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: usize,
    },
    #[error(
        "--start {offset}: partition {partition} of {topic:?} holds offsets {earliest}..{high_watermark}"
    )]
    StartOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        earliest: i64,
        high_watermark: i64,
    },
    #[error(
        "partition {partition} of {topic:?}: the table's committed offset {committed} is {why} (Kafka holds {earliest}..{high_watermark})"
    )]
    CommittedOutOfRange {
        topic: String,
        partition: i32,
        committed: i64,
        earliest: i64,
        high_watermark: i64,
        why: &'static str,
    },
    #[error("{what} for {topic}/{partition} at offset {offset} failed")]
    Partition {
        what: &'static str,
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("{what} for {topic}/{partition} got no answer within {timeout:?}")]
    Timeout {
        what: &'static str,
        topic: String,
        partition: i32,
        timeout: Duration,
    },
    #[error(
        "replay: offsets {first}..={last} of {topic}/{partition} are not in Kafka (it holds offsets below {high_watermark})"
    )]
    NotInKafka {
        topic: String,
        partition: i32,
        first: i64,
        last: i64,
        high_watermark: i64,
    },
    #[error("fetch core {fetch_core}: shard core {shard_core} stopped taking records")]
    ShardGone {
        fetch_core: usize,
        shard_core: usize,
    },
}

impl SourceError {
    /// True when this error only reports that another role failed first.
    pub fn is_secondary(&self) -> bool {
        matches!(self, Self::ShardGone { .. })
    }
}

/// The client library's record as icefall's.
impl emit::Fetched for rskafka::record::RecordAndOffset {
    fn key(&self) -> Option<&[u8]> {
        self.record.key.as_deref()
    }

    fn into_record(self, shard: u32) -> crate::record::Record {
        let r = self.record;
        crate::record::Record {
            offset: self.offset,
            timestamp_ms: r.timestamp.timestamp_millis(),
            shard,
            key: r.key,
            value: r.value,
            headers: r.headers,
        }
    }
}

/// How to talk to Kafka.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    pub fetch_max_bytes: i32,
    pub fetch_max_wait: Duration,
    pub timeout: Duration,
}

/// Where one partition starts and (with `--stop-at-end`) where it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPlan {
    pub partition: i32,
    pub start: i64,
    /// Stop once the position reaches this offset (the high watermark taken at start).
    pub stop_at: Option<i64>,
    pub high_watermark: i64,
}

impl PartitionPlan {
    pub fn is_done(&self, position: i64) -> bool {
        self.stop_at.is_some_and(|s| position >= s)
    }
}

impl SourceConfig {
    fn brokers_str(&self) -> String {
        self.brokers.join(",")
    }

    pub(crate) async fn connect(&self) -> Result<Client, SourceError> {
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            deadline: Some(self.timeout),
        };
        let build = ClientBuilder::new(self.brokers.clone())
            .client_id("icefall")
            .backoff_config(backoff)
            .build();
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), build).await {
            Err(_) => Err(SourceError::Unreachable {
                brokers: self.brokers_str(),
                timeout: self.timeout,
            }),
            Ok(Err(source)) => Err(SourceError::Connect {
                brokers: self.brokers_str(),
                source: Box::new(source),
            }),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// The topic's partitions, sorted; fails naming the topic when it does not exist.
    pub(crate) async fn partitions(&self, client: &Client) -> Result<Vec<i32>, SourceError> {
        let topics = client
            .list_topics()
            .await
            .map_err(|source| SourceError::Connect {
                brokers: self.brokers_str(),
                source: Box::new(source),
            })?;
        let Some(topic) = topics.into_iter().find(|t| t.name == self.topic) else {
            return Err(SourceError::UnknownTopic {
                topic: self.topic.clone(),
                brokers: self.brokers_str(),
            });
        };
        let mut partitions: Vec<i32> = topic.partitions.into_iter().collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    pub(crate) async fn partition_client(
        &self,
        client: &Client,
        partition: i32,
    ) -> Result<PartitionClient, SourceError> {
        let fut =
            client.partition_client(self.topic.clone(), partition, UnknownTopicHandling::Retry);
        self.bounded("connecting to the leader", partition, 0, fut)
            .await
    }

    /// Runs a Kafka call under `--kafka-timeout`, naming the partition on failure.
    pub(crate) async fn bounded<T>(
        &self,
        what: &'static str,
        partition: i32,
        offset: i64,
        fut: impl Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(SourceError::Timeout {
                what,
                topic: self.topic.clone(),
                partition,
                timeout: self.timeout,
            }),
            Ok(r) => r.map_err(|source| SourceError::Partition {
                what,
                topic: self.topic.clone(),
                partition,
                offset,
                source: Box::new(source),
            }),
        }
    }
}

/// Resolves the partitions to read and where each starts (and stops, with `stop_at_end`).
/// A partition with a committed offset resumes there; `start` applies to the others.
///
/// The high watermark is taken from a Fetch response, not from ListOffsets(latest), which some
/// Kafka-compatible brokers answer wrongly.
/// Up to `n` records from the planned start of each partition, in partition order (for
/// `--infer-schema`). Reads what the topic holds now; never waits for more.
pub async fn sample(
    cfg: &SourceConfig,
    plans: &[PartitionPlan],
    n: usize,
) -> Result<Vec<crate::record::Record>, SourceError> {
    let mut want = crate::offsets::Ranges::new();
    let mut budget = n as i64;
    for p in plans {
        let take = (p.high_watermark - p.start).min(budget);
        if take > 0 {
            want.push_range(p.partition, p.start, p.start + take - 1);
            budget -= take;
        }
    }
    let mut out = Vec::new();
    if want.is_empty() {
        return Ok(out);
    }
    for mut reader in ranges::RangeReader::open_all(cfg, &want).await? {
        while let Some(records) = reader.next(cfg).await? {
            out.extend(records);
        }
    }
    Ok(out)
}

pub async fn plan(
    cfg: &SourceConfig,
    start: StartAt,
    only: Option<&[i32]>,
    stop_at_end: bool,
    committed: &Offsets,
) -> Result<Vec<PartitionPlan>, SourceError> {
    let client = cfg.connect().await?;
    let mut partitions = cfg.partitions(&client).await?;
    if let Some(only) = only {
        if let Some(&missing) = only.iter().find(|p| partitions.binary_search(p).is_err()) {
            return Err(SourceError::UnknownPartition {
                topic: cfg.topic.clone(),
                partition: missing,
                count: partitions.len(),
            });
        }
        partitions = only.to_vec();
    }
    let client = &client;
    // Ask every partition at once; report the lowest partition's failure, whichever came first.
    join_all(partitions.into_iter().map(|p| async move {
        let pc = cfg.partition_client(client, p).await?;
        let earliest = cfg
            .bounded(
                "listing the earliest offset",
                p,
                0,
                pc.get_offset(OffsetAt::Earliest),
            )
            .await?;
        let hwm = high_watermark(cfg, &pc, earliest).await?;
        let out_of_range = |committed: i64, why| SourceError::CommittedOutOfRange {
            topic: cfg.topic.clone(),
            partition: p,
            committed,
            earliest,
            high_watermark: hwm,
            why,
        };
        let start = match (committed.get(&p), start) {
            (Some(&c), _) if c < earliest => {
                return Err(out_of_range(c, "below the earliest offset Kafka still holds: records were deleted before icefall read them"));
            }
            (Some(&c), _) if c > hwm => {
                return Err(out_of_range(c, "above the high watermark: was the topic recreated?"));
            }
            (Some(&c), _) => c,
            (None, start) => match start {
            StartAt::Earliest => earliest,
            StartAt::Latest => hwm,
            StartAt::Offset(o) if (earliest..=hwm).contains(&o) => o,
            StartAt::Offset(o) => {
                return Err(SourceError::StartOutOfRange {
                    topic: cfg.topic.clone(),
                    partition: p,
                    offset: o,
                    earliest,
                    high_watermark: hwm,
                });
            }
            },
        };
        Ok(PartitionPlan {
            partition: p,
            start,
            stop_at: stop_at_end.then_some(hwm),
            high_watermark: hwm,
        })
    }))
    .await
    .into_iter()
    .collect()
}

/// The partition's high watermark, from a fetch that asks for almost nothing and does not wait.
async fn high_watermark(
    cfg: &SourceConfig,
    pc: &PartitionClient,
    at: i64,
) -> Result<i64, SourceError> {
    let (_, hwm) = cfg
        .bounded(
            "reading the high watermark",
            pc.partition(),
            at,
            pc.fetch_records(at, 0..1, 0),
        )
        .await?;
    Ok(hwm)
}
