//! Re-reading exact offsets: the records of given offset ranges of one partition, in order.
//!
//! `replay-dropped` uses it to fetch what the drop ledger names. Only offsets inside the ranges
//! are returned; offsets the log no longer holds inside a range (compaction, transaction markers)
//! are skipped and show as a shortfall the caller reports. A range that starts below the log's
//! start fails with Kafka's offset-out-of-range error, naming the partition and offset.

use super::{SourceConfig, SourceError, read};
use crate::kafka::fetch::Want;
use crate::kafka::{Client, Decoded, Decoder};
use crate::offsets::Ranges;
use crate::record::Record;

/// Read from an earlier offset rather than jump when the next wanted offset is this close.
const NEAR: i64 = 16_384;
/// First step back when a fetch may have skipped the batch holding the wanted offset.
const FIRST_STEP_BACK: i64 = 1_024;

/// Reads one partition's ranges.
pub struct RangeReader {
    partition: i32,
    ranges: Vec<[i64; 2]>,
    /// The range being read.
    idx: usize,
    /// The next offset wanted.
    cursor: i64,
    /// The next offset to fetch from (at or below `cursor`).
    scan: i64,
    step_back: i64,
}

impl RangeReader {
    /// One reader per partition of `ranges`, and the client they share.
    pub async fn open_all(
        cfg: &SourceConfig,
        ranges: &Ranges,
    ) -> Result<(Client, Vec<RangeReader>), SourceError> {
        let client = cfg.connect().await?;
        let mut out = Vec::new();
        for (partition, rs) in ranges.partitions() {
            let first = rs.first().map_or(0, |r| r[0]);
            out.push(RangeReader {
                partition,
                ranges: rs.to_vec(),
                idx: 0,
                cursor: first,
                scan: first,
                step_back: FIRST_STEP_BACK,
            });
        }
        Ok((client, out))
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The next records inside the ranges, or `None` once every range is read.
    ///
    /// Kafka answers a fetch with the whole batch holding the offset asked for; some brokers
    /// (Tansu) answer with the batches starting at or after it, skipping the rest of that batch.
    /// So when a response starts past the wanted offset, the reader steps back (further each
    /// time, down to offset 0) until it sees the batch that holds it; records before the wanted
    /// offset are passed over.
    pub async fn next(
        &mut self,
        client: &mut Client,
        cfg: &SourceConfig,
    ) -> Result<Option<Vec<Record>>, SourceError> {
        let mut decoder: Decoder = read::decoder(cfg);
        let mut decoded = Decoded::default();
        loop {
            let Some(&[first, last]) = self.ranges.get(self.idx) else {
                return Ok(None);
            };
            self.cursor = self.cursor.max(first);
            if self.cursor > last {
                self.idx += 1;
                continue;
            }
            if self.scan > self.cursor || self.cursor - self.scan > NEAR {
                self.scan = self.cursor;
                self.step_back = FIRST_STEP_BACK;
            }
            let want = Want {
                partition: self.partition,
                offset: self.scan,
                leader_epoch: -1,
            };
            let answers = client
                .fetch_once(&cfg.topic, &[want], &cfg.fetch_now(1))
                .await
                .map_err(|e| {
                    cfg.partition_error("re-reading dropped records", self.partition, self.scan, e)
                })?;
            let Some(a) = answers.first() else {
                continue;
            };
            let high_watermark = a.high_watermark;
            read::decode(cfg, &mut decoder, a, self.scan, &mut decoded)?;
            let records = read::records(&decoded);
            if records.is_empty()
                && let Some(n) = decoded.next_offset.filter(|&n| n > self.cursor)
            {
                // Only markers or aborted records up to n: those offsets hold no data.
                self.scan = n;
                self.cursor = n;
                continue;
            }
            let head = records.first().map(|r| r.offset);
            if head.is_none_or(|h| h > self.cursor) && self.scan > 0 {
                if head.is_none() && high_watermark <= self.cursor {
                    return Err(SourceError::NotInKafka {
                        topic: cfg.topic.clone(),
                        partition: self.partition,
                        first: self.cursor,
                        last,
                        high_watermark,
                    });
                }
                self.scan = self.scan.saturating_sub(self.step_back).max(0);
                self.step_back = self.step_back.saturating_mul(4);
                continue;
            }
            let Some(tail) = records.last().map(|r| r.offset) else {
                // Read from offset 0 and still nothing: the rest of this range is gone.
                self.cursor = last + 1;
                continue;
            };
            self.scan = tail + 1;
            let mut out = Vec::new();
            let mut j = self.idx;
            for ro in records {
                if ro.offset < self.cursor {
                    continue;
                }
                self.cursor = ro.offset + 1;
                while self.ranges.get(j).is_some_and(|r| r[1] < ro.offset) {
                    j += 1;
                }
                if self.ranges.get(j).is_some_and(|r| r[0] <= ro.offset) {
                    out.push(ro);
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }
}
