//! Record values → Arrow columns of the table's declared fields, on the shard core, with Arrow's
//! batch JSON decoder (one tape for a whole fetch batch, no `serde_json::Value` per record).
//!
//! A bad record never fails its batch-mates: the fast path feeds every value of a batch to one
//! decoder and flushes once; if anything is off (a malformed value, not exactly one JSON value,
//! a wrong type, a missing required field) the batch is decoded again one record at a time, so
//! each bad record is named with its reason and the good ones are kept, in order.

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::SchemaRef;

use super::Rejected;
use super::fields::KnownFields;
use crate::record::{RecordRef, Records};

/// One shard core's JSON decoder for the value fields of its table.
pub struct JsonValues {
    schema: SchemaRef,
    decoder: Decoder,
    /// Rows the decoder's tape is sized for (the largest batch so far).
    capacity: usize,
    max_record_bytes: usize,
    known: KnownFields,
    /// Top-level fields the table has no column for, in values decoded so far.
    unknown: u64,
    /// Unknown names already logged (at most [`REPORTED`]).
    reported: ahash::AHashSet<Box<[u8]>>,
}

/// How many distinct unknown field names a core logs; the count goes on past it.
const REPORTED: usize = 64;

/// What disqualifies a value before decoding.
pub(super) fn precheck<'a>(max_record_bytes: usize, r: RecordRef<'a>) -> Result<&'a [u8], String> {
    let v = r.value.ok_or("the record has no value (null)")?;
    if v.len() > max_record_bytes {
        return Err(format!(
            "the value is {} bytes, over --max-record-bytes {max_record_bytes}",
            v.len()
        ));
    }
    Ok(v)
}

fn decoder(schema: &SchemaRef, rows: usize) -> Result<Decoder, String> {
    ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.max(1))
        .build_decoder()
        .map_err(|e| e.to_string())
}

impl JsonValues {
    /// A decoder for `schema` (the table's value fields). Fails, naming the reason, when a field
    /// has a type JSON cannot fill.
    pub fn new(schema: SchemaRef, max_record_bytes: usize) -> Result<Self, String> {
        Ok(Self {
            decoder: decoder(&schema, 1024)?,
            capacity: 1024,
            known: KnownFields::new(schema.fields().iter().map(|f| f.name().as_str())),
            schema,
            max_record_bytes,
            unknown: 0,
            reported: Default::default(),
        })
    }

    /// The value fields' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Top-level fields the table has no column for, met so far (ignored by the decoder).
    pub fn unknown_fields(&self) -> u64 {
        self.unknown
    }

    /// Takes over the counts of the decoder this one replaces.
    pub fn carry_counts(&mut self, old: &JsonValues) {
        self.unknown = old.unknown;
        self.reported.clone_from(&old.reported);
    }

    /// The distinct top-level field names of `records` the table has no column for (`--evolve`
    /// asks before decoding).
    pub fn new_fields(&self, records: Records<'_>) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for v in records
            .iter()
            .filter_map(|r| precheck(self.max_record_bytes, r).ok())
        {
            self.known.unknown(v, |raw| {
                if let Some(n) = super::fields::unescape(raw)
                    && !names.contains(&n)
                {
                    names.push(n);
                }
            });
        }
        names
    }

    /// Decodes the values of `records`: the decoded rows of the good ones (in order) and the
    /// bad ones, each with its reason. `good[i]` says whether record `i` was decoded. Fields the
    /// table has no column for are ignored and counted.
    pub fn decode(
        &mut self,
        records: Records<'_>,
        good: &mut Vec<bool>,
        rejected: &mut Vec<Rejected>,
    ) -> Option<RecordBatch> {
        self.count_unknown(records);
        self.decode_known(records, good, rejected)
    }

    /// [`Self::decode`] without looking for unknown fields (the caller just did).
    pub fn decode_known(
        &mut self,
        records: Records<'_>,
        good: &mut Vec<bool>,
        rejected: &mut Vec<Rejected>,
    ) -> Option<RecordBatch> {
        good.clear();
        if let Some(batch) = self.fast(records) {
            good.resize(records.len(), true);
            return batch;
        }
        self.one_by_one(records, good, rejected)
    }

    /// Every value into one tape, one flush. `None` when any record needs a closer look.
    fn fast(&mut self, records: Records<'_>) -> Option<Option<RecordBatch>> {
        if records.len() > self.capacity {
            self.capacity = records.len().next_power_of_two();
            self.decoder = decoder(&self.schema, self.capacity).ok()?;
        }
        let (max, d) = (self.max_record_bytes, &mut self.decoder);
        // Each value must be exactly one complete JSON value: one more buffered row, nothing left.
        let ok = records.iter().enumerate().all(|(i, r)| {
            precheck(max, r).is_ok_and(|v| {
                matches!(d.decode(v), Ok(n) if n == v.len())
                    && d.len() == i + 1
                    && !d.has_partial_record()
            })
        });
        if ok && let Ok(batch) = self.decoder.flush() {
            return Some(batch);
        }
        // The tape may hold half a value: start clean.
        self.decoder = decoder(&self.schema, self.capacity).ok()?;
        None
    }

    fn count_unknown(&mut self, records: Records<'_>) {
        let (known, reported) = (&self.known, &mut self.reported);
        for v in records
            .iter()
            .filter_map(|r| precheck(self.max_record_bytes, r).ok())
        {
            self.unknown += known.unknown(v, |raw| {
                if reported.len() < REPORTED && !reported.contains(raw) {
                    reported.insert(raw.into());
                    tracing::warn!(
                        field = %String::from_utf8_lossy(raw),
                        "a field the table has no column for: ignored and counted (icefall_unknown_fields_total); --evolve adds such fields as columns"
                    );
                }
            }) as u64;
        }
    }

    fn one_by_one(
        &mut self,
        records: Records<'_>,
        good: &mut Vec<bool>,
        rejected: &mut Vec<Rejected>,
    ) -> Option<RecordBatch> {
        let mut rows = Vec::new();
        for (index, r) in records.iter().enumerate() {
            match self.one(r) {
                Ok(b) => {
                    rows.push(b);
                    good.push(true);
                }
                Err(reason) => {
                    rejected.push(Rejected { index, reason });
                    good.push(false);
                    // A failed decode can leave the tape mid-value.
                    if let Ok(d) = decoder(&self.schema, self.capacity) {
                        self.decoder = d;
                    }
                }
            }
        }
        if rows.is_empty() {
            return None;
        }
        arrow_select::concat::concat_batches(&self.schema, &rows).ok()
    }

    fn one(&mut self, r: RecordRef<'_>) -> Result<RecordBatch, String> {
        let v = precheck(self.max_record_bytes, r)?;
        let n = self
            .decoder
            .decode(v)
            .map_err(|e| format!("malformed JSON: {e}"))?;
        if n != v.len() || self.decoder.len() != 1 || self.decoder.has_partial_record() {
            return Err(
                if self.decoder.is_empty() || self.decoder.has_partial_record() {
                    "malformed JSON: not one complete value".to_string()
                } else {
                    "more than one JSON value".to_string()
                },
            );
        }
        match self.decoder.flush() {
            Ok(Some(b)) if b.num_rows() == 1 => Ok(b),
            Ok(_) => Err("malformed JSON: no value".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The fields of the JSON objects among `values` (values that are not JSON objects are skipped:
/// they will be rejected when decoded). `Err` when none is an object.
pub fn infer_fields(values: &[&[u8]]) -> Result<arrow_schema::Schema, String> {
    let objects: Vec<serde_json::Value> = values
        .iter()
        .filter_map(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    if objects.is_empty() {
        return Err(format!(
            "none of the {} records sampled holds a JSON object",
            values.len()
        ));
    }
    arrow_json::reader::infer_json_schema_from_iterator(objects.iter().map(Ok))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn rec(value: Option<&str>) -> Record {
        Record {
            offset: 0,
            timestamp_ms: 0,
            shard: 0,
            key: None,
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: Default::default(),
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn good_batches_decode_in_one_pass() {
        let mut d = JsonValues::new(schema(), 1 << 20).unwrap();
        let records = [
            rec(Some(r#"{"id":1,"name":"a"}"#)),
            rec(Some(r#" {"id":2} "#)),
        ];
        let (b, good, bad) = crate::decode::decode_all(&records, |r, g, x| d.decode(r, g, x));
        assert_eq!(good, [true, true]);
        assert!(bad.is_empty());
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert!(b.column(1).is_null(1));
    }

    #[test]
    fn each_bad_record_is_named_and_its_batch_mates_kept() {
        let mut d = JsonValues::new(schema(), 40).unwrap();
        let big = format!(r#"{{"id":9,"name":"{}"}}"#, "x".repeat(64));
        let records = [
            rec(Some(r#"{"id":1}"#)),
            rec(Some(r#"{"id":"two"}"#)),
            rec(Some(r#"{"name":"no id"}"#)),
            rec(Some(r#"{"id":4"#)),
            rec(None),
            rec(Some(&big)),
            rec(Some(r#"{"id":7}{"id":8}"#)),
            rec(Some(r#"{"id":10,"name":"j"}"#)),
        ];
        let (b, good, bad) = crate::decode::decode_all(&records, |r, g, x| d.decode(r, g, x));
        assert_eq!(good, [true, false, false, false, false, false, false, true]);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 10]);
        let reasons: Vec<&str> = bad.iter().map(|r| r.reason.as_str()).collect();
        assert!(reasons[0].contains("two"), "{reasons:?}");
        assert!(
            reasons[1].contains("id"),
            "missing required field: {reasons:?}"
        );
        assert!(reasons[2].contains("malformed"), "{reasons:?}");
        assert!(reasons[3].contains("no value"), "{reasons:?}");
        assert!(reasons[4].contains("--max-record-bytes 40"), "{reasons:?}");
        assert!(reasons[5].contains("more than one"), "{reasons:?}");
        // The decoder is clean again afterwards.
        let again = [rec(Some(r#"{"id":11}"#))];
        let (b, ..) = crate::decode::decode_all(&again, |r, g, x| d.decode(r, g, x));
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[11]);
    }
}
