//! Decoding: record values → Arrow columns of a typed table's declared fields, on the shard core.
//!
//! Owns `--format json` ([`json`], Arrow's tape decoder, one tape per fetch batch), `--format
//! avro` ([`avro`], plain or Confluent-framed), the schema registry client ([`registry`]) and the
//! walk that finds top-level JSON fields a table has no column for ([`fields`], for `--evolve` and
//! the unknown-field counter). A record that does not decode never fails its batch-mates: it comes
//! back as a [`Rejected`] with its index and reason. It does not know files, tables, Kafka or
//! where a rejected record goes (the sink and the shard decide: dead letters or the run's error).

pub mod avro;
pub mod fields;
pub mod json;
pub mod registry;

/// Why a record could not be decoded; its partition and offset are the caller's to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the record in the batch given to the decoder.
    pub index: usize,
    pub reason: String,
}

/// Tests: runs a decoder (`decode(records, good, rejected)`) over `records` and returns the
/// batch it made, which records were good, and the rejected ones.
#[cfg(test)]
pub(crate) fn decode_all(
    records: &[crate::record::Record],
    decode: impl FnOnce(
        crate::record::Records<'_>,
        &mut Vec<bool>,
        &mut Vec<Rejected>,
    ) -> Option<arrow_array::RecordBatch>,
) -> (arrow_array::RecordBatch, Vec<bool>, Vec<Rejected>) {
    let (mut good, mut rejected) = (Vec::new(), Vec::new());
    let batch = crate::record::Batch::of_records(0, records);
    let b = decode(batch.records(), &mut good, &mut rejected).expect("a batch");
    (b, good, rejected)
}
