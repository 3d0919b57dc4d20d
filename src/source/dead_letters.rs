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

use super::{SourceConfig, SourceError, read};
use crate::kafka::fetch::Want;
use crate::kafka::{Codec, Decoded, OffsetAt, ProduceRecord, Producer, ProducerConfig};
use crate::record::{DeadLetter, Offsets};

pub const ERROR: &str = "icefall.error";
pub const SOURCE_TOPIC: &str = "icefall.source.topic";
pub const SOURCE_PARTITION: &str = "icefall.source.partition";
pub const SOURCE_OFFSET: &str = "icefall.source.offset";

/// Bytes of dead letters per produce request (a broker refuses requests over its limit).
const REQUEST_BYTES: usize = 512 * 1024;

/// The dead-letter topic of a run, through one idempotent producer: a request resent after a
/// lost acknowledgement is written once.
pub struct DeadLetterTopic {
    /// `topic` is the dead-letter topic.
    cfg: SourceConfig,
    source_topic: String,
    producer: tokio::sync::Mutex<Producer>,
}

impl DeadLetterTopic {
    /// Connects to `topic`; fails naming it when it does not exist.
    pub async fn open(source: &SourceConfig, topic: &str) -> Result<DeadLetterTopic, SourceError> {
        let cfg = SourceConfig {
            topic: topic.to_owned(),
            ..source.clone()
        };
        let client = cfg.connect().await?;
        let pc = ProducerConfig {
            idempotent: true,
            codec: Codec::None,
            request_timeout: cfg.timeout,
        };
        let producer = Producer::open(client, topic, pc)
            .await
            .map_err(|e| cfg.topic_error("opening a producer", e))?;
        Ok(DeadLetterTopic {
            cfg,
            source_topic: source.topic.clone(),
            producer: tokio::sync::Mutex::new(producer),
        })
    }

    pub fn topic(&self) -> &str {
        &self.cfg.topic
    }

    /// Produces `letters` (acknowledged by all in-sync replicas); returns the end offset each
    /// dead-letter partition written to has reached.
    pub async fn produce(&self, letters: Vec<DeadLetter>) -> Result<Offsets, SourceError> {
        let mut producer = self.producer.lock().await;
        let targets = producer.partitions().to_vec();
        // Source partition p goes to the dead-letter topic's partition p mod n, in order.
        let n = targets.len().max(1) as i32;
        let mut by_target: BTreeMap<i32, Vec<Letter>> = BTreeMap::new();
        for l in letters {
            let target = targets
                .get(l.partition.rem_euclid(n) as usize)
                .copied()
                .ok_or_else(|| SourceError::UnknownTopic {
                    topic: self.cfg.topic.clone(),
                    brokers: self.cfg.brokers.join(","),
                })?;
            by_target
                .entry(target)
                .or_default()
                .push(Letter::of(l, &self.source_topic));
        }
        let mut ends = Offsets::new();
        for (target, letters) in by_target {
            let mut start = 0;
            while start < letters.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < letters.len()
                    && (end == start || bytes + letters[end].size() <= REQUEST_BYTES)
                {
                    bytes += letters[end].size();
                    end += 1;
                }
                let chunk = &letters[start..end];
                let headers: Vec<Vec<crate::kafka::HeaderRef<'_>>> =
                    chunk.iter().map(Letter::headers).collect();
                let recs: Vec<ProduceRecord<'_>> = chunk
                    .iter()
                    .zip(&headers)
                    .map(|(l, h)| ProduceRecord {
                        timestamp_ms: l.letter.timestamp_ms,
                        key: l.letter.key.as_deref(),
                        value: l.letter.value.as_deref(),
                        headers: h,
                    })
                    .collect();
                let bases = producer.send(&[(target, &recs)]).await.map_err(|e| {
                    self.cfg
                        .partition_error("producing dead letters", target, -1, e)
                })?;
                // -1: the broker already had this batch (a resend); its end stays unknown and
                // the restart scan simply starts earlier.
                if let Some(&base) = bases.get(&target).filter(|&&b| b >= 0) {
                    ends.insert(target, base + recs.len() as i64);
                }
                start = end;
            }
        }
        Ok(ends)
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
        let mut producer = self.producer.lock().await;
        let parts = producer.partitions().to_vec();
        let client = &mut producer.client;
        let earliest = client
            .list_offsets(
                &self.cfg.topic,
                &parts,
                OffsetAt::Earliest,
                self.cfg.isolation,
            )
            .await
            .map_err(|e| self.cfg.topic_error("listing the earliest offsets", e))?;
        let mut decoder = read::decoder(&self.cfg);
        let mut d = Decoded::default();
        for p in parts {
            let mut at = from.get(&p).or(earliest.get(&p)).copied().unwrap_or(0);
            loop {
                let want = Want {
                    partition: p,
                    offset: at,
                    leader_epoch: -1,
                };
                let answers = client
                    .fetch_once(&self.cfg.topic, &[want], &self.cfg.fetch_now(1))
                    .await
                    .map_err(|e| self.cfg.partition_error("scanning dead letters", p, at, e))?;
                let Some(a) = answers.first() else { break };
                read::decode(&self.cfg, &mut decoder, a, at, &mut d)?;
                for r in &d.records {
                    let hs = d
                        .headers
                        .get(r.headers.start as usize..)
                        .and_then(|h| h.get(..r.headers.len as usize))
                        .unwrap_or_default();
                    let header = |k: &str| {
                        hs.iter()
                            .rev()
                            .find(|h| h.key.get(&d.buf) == Some(k.as_bytes()))
                            .and_then(|h| h.value.get(&d.buf))
                    };
                    let num = |k: &str| {
                        header(k)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|s| s.parse::<i64>().ok())
                    };
                    if header(SOURCE_TOPIC) != Some(source_topic) {
                        continue;
                    }
                    if let (Some(sp), Some(so)) = (num(SOURCE_PARTITION), num(SOURCE_OFFSET))
                        && let Ok(sp) = i32::try_from(sp)
                        && committed.get(&sp).is_none_or(|&c| so >= c)
                    {
                        found.insert((sp, so));
                    }
                }
                let next = d.next_offset.unwrap_or(at).max(at);
                if next >= a.high_watermark || next == at {
                    break;
                }
                at = next;
            }
        }
        Ok(found)
    }
}

/// A dead letter with its icefall headers rendered.
struct Letter {
    letter: DeadLetter,
    partition: String,
    offset: String,
    source_topic: String,
}

impl Letter {
    fn of(letter: DeadLetter, source_topic: &str) -> Self {
        Self {
            partition: letter.partition.to_string(),
            offset: letter.offset.to_string(),
            source_topic: source_topic.to_owned(),
            letter,
        }
    }

    /// The record's own headers, in order, then icefall's four.
    fn headers(&self) -> Vec<(&[u8], Option<&[u8]>)> {
        let l = &self.letter;
        let mut h: Vec<(&[u8], Option<&[u8]>)> = l
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        h.push((ERROR.as_bytes(), Some(l.error.as_bytes())));
        h.push((SOURCE_TOPIC.as_bytes(), Some(self.source_topic.as_bytes())));
        h.push((SOURCE_PARTITION.as_bytes(), Some(self.partition.as_bytes())));
        h.push((SOURCE_OFFSET.as_bytes(), Some(self.offset.as_bytes())));
        h
    }

    /// Roughly the bytes it takes in a request.
    fn size(&self) -> usize {
        let l = &self.letter;
        64 + l.key.as_ref().map_or(0, Vec::len)
            + l.value.as_ref().map_or(0, Vec::len)
            + l.error.len()
            + l.headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 4)
                .sum::<usize>()
    }
}
