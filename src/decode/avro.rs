//! `--format avro`: record values → the table's value columns with arrow-avro's streaming
//! decoder, on the shard cores.
//!
//! Values are Avro binary bodies, either bare (`--schema FILE.avsc`) or in Confluent's wire
//! format (magic 0, a 4-byte big-endian schema id, the body; `--schema-registry`). Every writer
//! schema resolves to one reader schema (the file's, or the subject's latest version), so each
//! batch comes out in one Arrow shape, then is cast column by column into the table's types. A
//! value that does not decode (unknown schema id, malformed or truncated body, trailing bytes) is
//! rejected alone: the decoder is rebuilt and the batch's good values since the last flush are
//! decoded again, so the error path costs a batch and the good path nothing extra.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, CONFLUENT_MAGIC, Fingerprint, FingerprintAlgorithm, SchemaStore,
};
use arrow_schema::SchemaRef;

use super::Rejected;
use super::json::precheck;
use crate::record::{RecordRef, Records};

/// The id bare bodies are framed with (they carry none).
const PLAIN_ID: u32 = 0;
/// Confluent's prefix naming [`PLAIN_ID`].
const PLAIN_PREFIX: [u8; 5] = [0, 0, 0, 0, 0];
/// Rows the decoder holds before a flush.
const BATCH: usize = 8192;

/// The writer schemas values may come in, by id, and the reader schema they resolve to.
#[derive(Debug, Clone)]
pub struct AvroSchemas {
    store: SchemaStore,
    reader: AvroSchema,
    reader_id: u32,
    /// Values carry Confluent's prefix (registry) rather than being bare bodies (.avsc).
    framed: bool,
}

impl AvroSchemas {
    /// Bare Avro bodies of one schema (an `.avsc` file's text).
    pub fn plain(avsc: &str) -> Result<Self, String> {
        Self::build(vec![(PLAIN_ID, avsc.to_string())], false)
    }

    /// Confluent wire format: the registry's `(id, schema)` pairs, the reader schema last.
    pub fn registry(versions: Vec<(u32, String)>) -> Result<Self, String> {
        Self::build(versions, true)
    }

    fn build(versions: Vec<(u32, String)>, framed: bool) -> Result<Self, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        let (reader_id, reader) = versions.last().cloned().ok_or("no schema")?;
        for (id, text) in versions {
            store
                .set(Fingerprint::Id(id), AvroSchema::new(text))
                .map_err(|e| format!("schema id {id}: {e}"))?;
        }
        let s = Self {
            store,
            reader: AvroSchema::new(reader),
            reader_id,
            framed,
        };
        s.decoder(1)?;
        Ok(s)
    }

    fn decoder(&self, rows: usize) -> Result<Decoder, String> {
        ReaderBuilder::new()
            .with_batch_size(rows)
            .with_reader_schema(self.reader.clone())
            .with_writer_schema_store(self.store.clone())
            .with_active_fingerprint(Fingerprint::Id(self.reader_id))
            .build_decoder()
            .map_err(|e| e.to_string())
    }

    /// The Arrow form of the reader schema: the value fields of a new table.
    pub fn arrow_schema(&self) -> Result<SchemaRef, String> {
        Ok(self.decoder(1)?.schema())
    }
}

/// One shard core's Avro decoder for the value fields of its table.
pub struct AvroValues {
    /// The table's value fields.
    schema: SchemaRef,
    schemas: AvroSchemas,
    decoder: Decoder,
    max_record_bytes: usize,
    /// Records decoded since the last flush (replayed after a failure).
    pending: Vec<usize>,
    /// The writer schema id of the open batch's rows.
    active: Option<u32>,
    out: Vec<RecordBatch>,
}

impl AvroValues {
    pub fn new(
        schema: SchemaRef,
        schemas: AvroSchemas,
        max_record_bytes: usize,
    ) -> Result<Self, String> {
        let decoder = schemas.decoder(BATCH)?;
        // Every reader field must land in a table column and every required column be filled.
        conform(&RecordBatch::new_empty(decoder.schema()), &schema)?;
        Ok(Self {
            schema,
            decoder,
            schemas,
            max_record_bytes,
            pending: Vec::new(),
            active: None,
            out: Vec::new(),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Same contract as [`super::json::JsonValues::decode`].
    pub fn decode(
        &mut self,
        records: Records<'_>,
        good: &mut Vec<bool>,
        rejected: &mut Vec<Rejected>,
    ) -> Option<RecordBatch> {
        good.clear();
        self.pending.clear();
        for (index, r) in records.iter().enumerate() {
            let id = self.id_of(r);
            // Rows of one writer schema per flush; a full decoder flushes too.
            if (id != self.active && !self.pending.is_empty()) || self.decoder.batch_is_full() {
                self.flush(good, rejected);
            }
            match self.one(r) {
                Ok(()) => {
                    good.push(true);
                    self.pending.push(index);
                    self.active = id;
                }
                Err(reason) => {
                    good.push(false);
                    rejected.push(Rejected { index, reason });
                    self.recover(records);
                }
            }
        }
        self.flush(good, rejected);
        let out = std::mem::take(&mut self.out);
        match out.len() {
            0 => None,
            1 => out.into_iter().next(),
            _ => arrow_select::concat::concat_batches(&self.schema, &out).ok(),
        }
    }

    /// The writer schema id a value names, if it names one.
    fn id_of(&self, r: RecordRef<'_>) -> Option<u32> {
        if !self.schemas.framed {
            return Some(PLAIN_ID);
        }
        match r.value {
            Some([0, a, b, c, d, ..]) => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// Decodes one value into the decoder's open batch.
    fn one(&mut self, r: RecordRef<'_>) -> Result<(), String> {
        let v = precheck(self.max_record_bytes, r)?;
        let room = self.decoder.capacity();
        if self.schemas.framed {
            if v.len() < 5 || v[..1] != CONFLUENT_MAGIC {
                return Err("not Confluent's wire format (magic byte 0 and a schema id)".into());
            }
            let id = u32::from_be_bytes([v[1], v[2], v[3], v[4]]);
            if self.schemas.store.lookup(&Fingerprint::Id(id)).is_none() {
                return Err(format!("unknown schema id {id}"));
            }
        } else {
            // A bare body: the decoder takes a prefix naming the one schema, then the body as it
            // lies in the record (no copy).
            self.decode_all(&PLAIN_PREFIX)?;
        }
        self.decode_all(v)?;
        // Exactly one row: an empty body decodes nothing and leaves the decoder waiting.
        if self.decoder.capacity() + 1 != room {
            return Err("malformed Avro: the value holds no complete record".into());
        }
        Ok(())
    }

    fn decode_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        let n = self
            .decoder
            .decode(bytes)
            .map_err(|e| format!("malformed Avro: {e}"))?;
        if n != bytes.len() {
            return Err(format!(
                "malformed Avro: {n} of {} bytes decoded",
                bytes.len()
            ));
        }
        Ok(())
    }

    /// After a failure the decoder may hold half a row: rebuild it and decode again the good
    /// values of the open batch (one writer schema; they decoded a moment ago).
    fn recover(&mut self, records: Records<'_>) {
        let Ok(d) = self.schemas.decoder(BATCH) else {
            return;
        };
        self.decoder = d;
        self.active = None;
        let pending = std::mem::take(&mut self.pending);
        for &i in &pending {
            if let Some(r) = records.get(i)
                && self.one(r).is_ok()
            {
                self.active = self.id_of(r);
            }
        }
        self.pending = pending;
    }

    /// The open batch, in the table's types, onto the output; if that fails, its records are
    /// rejected with the reason.
    fn flush(&mut self, good: &mut [bool], rejected: &mut Vec<Rejected>) {
        let result = match self.decoder.flush() {
            Ok(None) => Ok(None),
            Ok(Some(b)) => conform(&b, &self.schema).map(Some),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(b) => self.out.extend(b),
            Err(reason) => {
                for &index in &self.pending {
                    good[index] = false;
                    rejected.push(Rejected {
                        index,
                        reason: reason.clone(),
                    });
                }
            }
        }
        self.pending.clear();
    }
}

/// `batch` in the table's value schema: columns matched by name and cast to the table's types;
/// a table column the batch lacks is null (an error if it is required).
fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, String> {
    let columns = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => {
                arrow_cast::cast(c, f.data_type()).map_err(|e| format!("field {}: {e}", f.name()))
            }
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
            None => Err(format!(
                "required field {} is not in the Avro schema",
                f.name()
            )),
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(target), columns, &options)
        .map_err(|e| e.to_string())
}

/// The sample stream's Avro helpers (shared with the integration tests and benches).
#[cfg(test)]
#[path = "../../tools/sample.rs"]
mod sample;

#[cfg(test)]
mod tests {
    use super::sample::{avro_framed as framed, avro_long, avro_string};
    use super::*;
    use crate::record::Record;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};

    const V1: &str = r#"{"type":"record","name":"Event","fields":[
        {"name":"seq","type":"long"},{"name":"user","type":"string"},
        {"name":"amount","type":["null","double"],"default":null}]}"#;
    const V2: &str = r#"{"type":"record","name":"Event","fields":[
        {"name":"seq","type":"long"},{"name":"user","type":"string"},
        {"name":"amount","type":["null","double"],"default":null},
        {"name":"note","type":"string","default":"-"}]}"#;

    /// An Avro body of V1 (and of V2 with `note`).
    fn body(seq: i64, user: &str, amount: Option<f64>, note: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        avro_long(seq, &mut b);
        avro_string(user, &mut b);
        match amount {
            None => avro_long(0, &mut b),
            Some(a) => {
                avro_long(1, &mut b);
                b.extend_from_slice(&a.to_le_bytes());
            }
        }
        if let Some(n) = note {
            avro_string(n, &mut b);
        }
        b
    }

    fn rec(value: Option<Vec<u8>>) -> Record {
        Record {
            offset: 0,
            timestamp_ms: 0,
            shard: 0,
            key: None,
            value,
            headers: Default::default(),
        }
    }

    fn table_schema(schemas: &AvroSchemas) -> SchemaRef {
        let shape =
            crate::sink::schema::Shape::from_arrow(&schemas.arrow_schema().unwrap()).unwrap();
        let all = crate::sink::schema::arrow_schema(&shape.iceberg_schema().unwrap()).unwrap();
        Arc::new(arrow_schema::Schema::new(all.fields()[5..].to_vec()))
    }

    #[test]
    fn bare_bodies_decode_and_bad_ones_are_rejected_alone() {
        let schemas = AvroSchemas::plain(V1).unwrap();
        let mut d = AvroValues::new(table_schema(&schemas), schemas, 1_000).unwrap();
        let mut truncated = body(3, "carol", Some(1.5), None);
        truncated.truncate(4);
        let mut trailing = body(4, "dave", None, None);
        trailing.extend_from_slice(b"xx");
        let records = vec![
            rec(Some(body(1, "alice", Some(2.5), None))),
            rec(Some(truncated)),
            rec(Some(body(2, "bob", None, None))),
            rec(Some(trailing)),
            rec(None),
            rec(Some(body(5, &"e".repeat(2_000), None, None))),
            rec(Some(body(6, "frank", Some(-1.0), None))),
        ];
        let (b, good, rejected) = crate::decode::decode_all(&records, |r, g, x| d.decode(r, g, x));
        assert_eq!(good, [true, false, true, false, false, false, true]);
        let reasons: Vec<(usize, &str)> = rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].1.contains("malformed Avro"), "{reasons:?}");
        assert!(reasons[1].1.contains("bytes"), "{reasons:?}");
        assert!(reasons[2].1.contains("null"), "{reasons:?}");
        assert!(reasons[3].1.contains("max-record-bytes"), "{reasons:?}");
        let seq = b.column_by_name("seq").unwrap().as_primitive::<Int64Type>();
        assert_eq!(seq.values(), &[1, 2, 6]);
        let amount = b
            .column_by_name("amount")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(
            (amount.value(0), amount.is_null(1), amount.value(2)),
            (2.5, true, -1.0)
        );
        let user = b.column_by_name("user").unwrap().as_string::<i32>();
        assert_eq!(user.value(1), "bob");
    }

    #[test]
    fn registry_ids_resolve_every_version_to_the_latest_and_unknown_ids_are_named() {
        let schemas = AvroSchemas::registry(vec![(11, V1.into()), (12, V2.into())]).unwrap();
        let mut d = AvroValues::new(table_schema(&schemas), schemas, 1 << 20).unwrap();
        let records = vec![
            rec(Some(framed(11, body(1, "a", None, None)))),
            rec(Some(framed(12, body(2, "b", Some(1.0), Some("new"))))),
            rec(Some(framed(99, body(3, "c", None, None)))),
            rec(Some(b"{\"json\":1}".to_vec())),
            rec(Some(framed(11, body(4, "d", None, None)))),
        ];
        let (b, good, rejected) = crate::decode::decode_all(&records, |r, g, x| d.decode(r, g, x));
        assert_eq!(good, [true, true, false, false, true]);
        assert_eq!(rejected[0].reason, "unknown schema id 99");
        assert!(
            rejected[1].reason.contains("wire format"),
            "{}",
            rejected[1].reason
        );
        let seq = b.column_by_name("seq").unwrap().as_primitive::<Int64Type>();
        assert_eq!(seq.values(), &[1, 2, 4]);
        let note = b.column_by_name("note").unwrap().as_string::<i32>();
        assert_eq!(
            (note.value(0), note.value(1), note.value(2)),
            ("-", "new", "-")
        );
    }
}
