//! `--dlq-topic`: producing dead letters to a Kafka topic, and finding the ones already there.
//!
//! A dead letter keeps the record's key, value, headers and timestamp and gains four headers
//! ([`ERROR`], [`SOURCE_TOPIC`], [`SOURCE_PARTITION`], [`SOURCE_OFFSET`]). The records of source
//! partition `p` go to partition `p mod n` of the dead-letter topic, in offset order. The io role
//! produces an epoch's dead letters before it commits the epoch to the table and records the
//! topic's end offsets in that snapshot; a run that starts again scans the topic from those
//! offsets to its end ([`DeadLetterTopic::written`]) and skips the source offsets it finds there,
//! so a crash between the produce and the commit writes no dead letter twice.

use std::collections::BTreeMap;

use ahash::AHashSet;
use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient};

use super::{SourceConfig, SourceError};
use crate::record::{DeadLetter, Offsets};

pub const ERROR: &str = "icefall.error";
pub const SOURCE_TOPIC: &str = "icefall.source.topic";
pub const SOURCE_PARTITION: &str = "icefall.source.partition";
pub const SOURCE_OFFSET: &str = "icefall.source.offset";

/// Bytes of dead letters per produce request (a broker refuses requests over its limit).
const REQUEST_BYTES: usize = 512 * 1024;

/// The dead-letter topic of a run, one client per partition.
pub struct DeadLetterTopic {
    /// `topic` is the dead-letter topic.
    cfg: SourceConfig,
    source_topic: String,
    partitions: Vec<PartitionClient>,
}

impl DeadLetterTopic {
    /// Connects to every partition of `topic`; fails naming it when it does not exist.
    pub async fn open(source: &SourceConfig, topic: &str) -> Result<DeadLetterTopic, SourceError> {
        let cfg = SourceConfig {
            topic: topic.to_owned(),
            ..source.clone()
        };
        let client = cfg.connect().await?;
        let ids = cfg.partitions(&client).await?;
        let mut partitions = Vec::with_capacity(ids.len());
        for p in ids {
            partitions.push(cfg.partition_client(&client, p).await?);
        }
        Ok(DeadLetterTopic {
            cfg,
            source_topic: source.topic.clone(),
            partitions,
        })
    }

    pub fn topic(&self) -> &str {
        &self.cfg.topic
    }

    /// Produces `letters` (acknowledged by all in-sync replicas); returns the end offset each
    /// dead-letter partition written to has reached.
    pub async fn produce(&self, letters: Vec<DeadLetter>) -> Result<Offsets, SourceError> {
        // Source partition p goes to the dead-letter topic's partition p mod n, in order.
        let n = self.partitions.len().max(1) as i32;
        let mut by_target: BTreeMap<usize, Vec<rskafka::record::Record>> = BTreeMap::new();
        for l in letters {
            let target = l.partition.rem_euclid(n) as usize;
            by_target.entry(target).or_default().push(self.record(l));
        }
        let mut ends = Offsets::new();
        for (index, records) in by_target {
            // Only a topic without partitions has none to take them.
            let pc = self
                .partitions
                .get(index)
                .ok_or_else(|| SourceError::UnknownTopic {
                    topic: self.cfg.topic.clone(),
                    brokers: self.cfg.brokers_str(),
                })?;
            let target = pc.partition();
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut rest = records.into_iter().peekable();
            while let Some(r) = rest.next() {
                bytes += r.approximate_size();
                batch.push(r);
                let full = rest
                    .peek()
                    .is_none_or(|n| bytes + n.approximate_size() > REQUEST_BYTES);
                if full {
                    let sent = std::mem::take(&mut batch);
                    bytes = 0;
                    let fut = pc.produce(sent, Compression::NoCompression);
                    let offsets = self
                        .cfg
                        .bounded("producing dead letters", target, -1, fut)
                        .await?;
                    if let Some(last) = offsets.last() {
                        ends.insert(target, last + 1);
                    }
                }
            }
        }
        Ok(ends)
    }

    fn record(&self, l: DeadLetter) -> rskafka::record::Record {
        let mut headers = l.headers;
        headers.insert(ERROR.into(), l.error.into_bytes());
        headers.insert(SOURCE_TOPIC.into(), self.source_topic.clone().into_bytes());
        headers.insert(
            SOURCE_PARTITION.into(),
            l.partition.to_string().into_bytes(),
        );
        headers.insert(SOURCE_OFFSET.into(), l.offset.to_string().into_bytes());
        rskafka::record::Record {
            key: l.key,
            value: l.value,
            headers,
            timestamp: Utc
                .timestamp_millis_opt(l.timestamp_ms)
                .single()
                .unwrap_or_default(),
        }
    }

    /// The (partition, offset) of every source record of this run's topic that the dead-letter
    /// topic holds from `from` (per dead-letter partition; its earliest offset where absent) to
    /// its end, at or past the table's `committed` offsets: dead letters of epochs whose commit
    /// did not happen.
    pub async fn written(
        &self,
        from: &Offsets,
        committed: &Offsets,
    ) -> Result<AHashSet<(i32, i64)>, SourceError> {
        let mut found = AHashSet::new();
        let source_topic = self.source_topic.as_bytes();
        for pc in &self.partitions {
            let p = pc.partition();
            let mut at = match from.get(&p) {
                Some(&o) => o,
                None => {
                    let fut = pc.get_offset(OffsetAt::Earliest);
                    self.cfg
                        .bounded("listing the earliest offset", p, 0, fut)
                        .await?
                }
            };
            loop {
                let fut = pc.fetch_records(at, 1..self.cfg.fetch_max_bytes.max(1), 0);
                let (records, high_watermark) = self
                    .cfg
                    .bounded("scanning dead letters", p, at, fut)
                    .await?;
                for r in &records {
                    let h = &r.record.headers;
                    let num = |k: &str| {
                        h.get(k)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|s| s.parse::<i64>().ok())
                    };
                    if h.get(SOURCE_TOPIC).map(Vec::as_slice) != Some(source_topic) {
                        continue;
                    }
                    if let (Some(sp), Some(so)) = (num(SOURCE_PARTITION), num(SOURCE_OFFSET))
                        && let Ok(sp) = i32::try_from(sp)
                        && committed.get(&sp).is_none_or(|&c| so >= c)
                    {
                        found.insert((sp, so));
                    }
                }
                let next = records.iter().map(|r| r.offset + 1).max().unwrap_or(at);
                if next >= high_watermark || next == at {
                    break;
                }
                at = next;
            }
        }
        Ok(found)
    }
}
