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
mod read;

use std::time::Duration;

use crate::config::StartAt;
use crate::kafka::fetch::{FetchParams, Want};
use crate::kafka::{Client, ClientConfig, ConnConfig, Isolation, KafkaError, OffsetAt, Security};
use crate::record::Offsets;

/// Kafka failures, each naming what it was about. All are fatal for the run; the client has
/// already retried transient ones with backoff up to `--kafka-timeout`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
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
    #[error("{what} of {topic:?} failed")]
    Topic {
        what: &'static str,
        topic: String,
        #[source]
        source: Box<KafkaError>,
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
    #[error(transparent)]
    Group(#[from] crate::kafka::group::GroupError),
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

/// How to talk to Kafka.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    /// Per partition, per fetch.
    pub fetch_max_bytes: i32,
    pub fetch_max_wait: Duration,
    pub timeout: Duration,
    pub isolation: Isolation,
    /// TLS and SASL, for every connection (the dead-letter producer's too).
    pub security: Security,
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

/// The most a response may carry: every partition's limit, within 64 MiB (at least one).
const RESPONSE_MAX_BYTES: i64 = 64 << 20;

impl SourceConfig {
    fn brokers_str(&self) -> String {
        self.brokers.join(",")
    }

    pub fn client_config(&self) -> ClientConfig {
        let response = RESPONSE_MAX_BYTES.max(i64::from(self.fetch_max_bytes));
        ClientConfig {
            bootstrap: self.brokers.clone(),
            conn: ConnConfig {
                client_id: "icefall".into(),
                timeout: self.timeout,
                // A broker returns at least one whole batch past the limit: leave room for it.
                max_frame: (response as usize)
                    .saturating_mul(2)
                    .saturating_add(16 << 20),
                security: self.security.clone(),
            },
            retry_for: self.timeout,
        }
    }

    /// What a fetch loop asks for, for `partitions` partitions on one broker.
    pub fn fetch_params(&self, partitions: usize) -> FetchParams {
        let total = (i64::from(self.fetch_max_bytes) * partitions.max(1) as i64).clamp(
            i64::from(self.fetch_max_bytes),
            RESPONSE_MAX_BYTES.max(i64::from(self.fetch_max_bytes)),
        );
        FetchParams {
            max_wait: self.fetch_max_wait,
            min_bytes: 1,
            max_bytes: total as i32,
            partition_max_bytes: self.fetch_max_bytes,
            isolation: self.isolation,
        }
    }

    /// A fetch that returns what is there now, without waiting.
    pub fn fetch_now(&self, partitions: usize) -> FetchParams {
        FetchParams {
            max_wait: Duration::ZERO,
            min_bytes: 0,
            ..self.fetch_params(partitions)
        }
    }

    pub(crate) async fn connect(&self) -> Result<Client, SourceError> {
        Client::connect(self.client_config())
            .await
            .map_err(|source| SourceError::Connect {
                brokers: self.brokers_str(),
                source: Box::new(source),
            })
    }

    /// Names the topic in a client error (or says the topic does not exist).
    pub(crate) fn topic_error(&self, what: &'static str, e: KafkaError) -> SourceError {
        match e {
            KafkaError::UnknownTopic { topic, .. } => SourceError::UnknownTopic {
                topic,
                brokers: self.brokers_str(),
            },
            e => SourceError::Topic {
                what,
                topic: self.topic.clone(),
                source: Box::new(e),
            },
        }
    }

    /// Names the partition and offset in a client error.
    pub(crate) fn partition_error(
        &self,
        what: &'static str,
        partition: i32,
        offset: i64,
        e: KafkaError,
    ) -> SourceError {
        SourceError::Partition {
            what,
            topic: self.topic.clone(),
            partition,
            offset,
            source: Box::new(e),
        }
    }

    /// The topic's partitions, sorted; fails naming the topic when it does not exist.
    pub(crate) async fn partitions(&self, client: &mut Client) -> Result<Vec<i32>, SourceError> {
        client
            .partitions(&self.topic)
            .await
            .map_err(|e| self.topic_error("reading the partitions", e))
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
    let (mut client, readers) = ranges::RangeReader::open_all(cfg, &want).await?;
    for mut reader in readers {
        while let Some(records) = reader.next(&mut client, cfg).await? {
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
    let mut client = cfg.connect().await?;
    let mut partitions = cfg.partitions(&mut client).await?;
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
    let earliest = client
        .list_offsets(&cfg.topic, &partitions, OffsetAt::Earliest, cfg.isolation)
        .await
        .map_err(|e| cfg.topic_error("listing the earliest offsets", e))?;
    let ends = ends(cfg, &mut client, &earliest).await?;
    partitions
        .into_iter()
        .map(|p| {
            let earliest = earliest.get(&p).copied().unwrap_or(0);
            let hwm = ends.get(&p).copied().unwrap_or(earliest);
            plan_one(
                cfg,
                p,
                earliest,
                hwm,
                start,
                stop_at_end,
                committed.get(&p).copied(),
            )
        })
        .collect()
}

fn plan_one(
    cfg: &SourceConfig,
    p: i32,
    earliest: i64,
    hwm: i64,
    start: StartAt,
    stop_at_end: bool,
    committed: Option<i64>,
) -> Result<PartitionPlan, SourceError> {
    let out_of_range = |committed: i64, why| SourceError::CommittedOutOfRange {
        topic: cfg.topic.clone(),
        partition: p,
        committed,
        earliest,
        high_watermark: hwm,
        why,
    };
    let start = match (committed, start) {
        (Some(c), _) if c < earliest => {
            return Err(out_of_range(
                c,
                "below the earliest offset Kafka still holds: records were deleted before icefall read them",
            ));
        }
        (Some(c), _) if c > hwm => {
            return Err(out_of_range(
                c,
                "above the high watermark: was the topic recreated?",
            ));
        }
        (Some(c), _) => c,
        (None, StartAt::Earliest) => earliest,
        (None, StartAt::Latest) => hwm,
        (None, StartAt::Offset(o)) if (earliest..=hwm).contains(&o) => o,
        (None, StartAt::Offset(o)) => {
            return Err(SourceError::StartOutOfRange {
                topic: cfg.topic.clone(),
                partition: p,
                offset: o,
                earliest,
                high_watermark: hwm,
            });
        }
    };
    Ok(PartitionPlan {
        partition: p,
        start,
        stop_at: stop_at_end.then_some(hwm),
        high_watermark: hwm,
    })
}

/// Each partition's end (the high watermark, or the last stable offset under
/// `read_committed`), from one fetch per leader at `from` that does not wait.
async fn ends(
    cfg: &SourceConfig,
    client: &mut Client,
    from: &std::collections::BTreeMap<i32, i64>,
) -> Result<std::collections::BTreeMap<i32, i64>, SourceError> {
    let wants: Vec<Want> = from
        .iter()
        .map(|(&partition, &offset)| Want {
            partition,
            offset,
            leader_epoch: -1,
        })
        .collect();
    let mut params = cfg.fetch_now(wants.len());
    params.partition_max_bytes = 1;
    let answers = client
        .fetch_once(&cfg.topic, &wants, &params)
        .await
        .map_err(|e| cfg.topic_error("reading the high watermarks", e))?;
    Ok(answers
        .iter()
        .map(|a| (a.partition, a.end(cfg.isolation)))
        .collect())
}
