//! One partition's answer turned into records: the batch decoder run over the answer's bytes,
//! its failures named by topic, partition and offset.

use super::{SourceConfig, SourceError};
use crate::kafka::fetch::Answer;
use crate::kafka::{Decoded, Decoder, KafkaError};
use crate::record::{Record, Records};

/// Decodes `a` (fetched at `fetch_offset`) into `out`.
pub(crate) fn decode(
    cfg: &SourceConfig,
    decoder: &mut Decoder,
    a: &Answer,
    fetch_offset: i64,
    out: &mut Decoded,
) -> Result<(), SourceError> {
    decoder
        .decode(&a.records, fetch_offset, cfg.isolation, &a.aborted, out)
        .map_err(|source| {
            let offset = source.offset;
            cfg.partition_error(
                "reading a record batch",
                a.partition,
                offset,
                KafkaError::Batch {
                    topic: cfg.topic.clone(),
                    partition: a.partition,
                    source,
                },
            )
        })
}

/// The decoded records as owned [`Record`]s (cold paths: replay, schema inference).
pub(crate) fn records(d: &Decoded) -> Vec<Record> {
    let r = Records {
        buf: &d.buf,
        headers: &d.headers,
        views: &d.records,
    };
    r.iter().map(|r| r.to_owned()).collect()
}

/// The most one partition's records may decompress to in one answer.
pub(crate) fn decoder(cfg: &SourceConfig) -> Decoder {
    let per_partition = usize::try_from(cfg.fetch_max_bytes).unwrap_or(1 << 20);
    // Compressed batches expand; allow generous room but never unbounded.
    Decoder::new(per_partition.saturating_mul(16).clamp(16 << 20, 1 << 30))
}
