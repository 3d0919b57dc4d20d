//! The Arrow builders of one batch: the Kafka columns, the headers in either layout, and the
//! value bytes (or a typed table's decoded fields). Sized from the previous batch so that no
//! buffer regrows while a batch is appended. Knows nothing of Parquet or files.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, SchemaRef};

use super::schema::{self, HeaderLayout};
use crate::record::RecordRef;

pub(super) struct Columns {
    pub(super) partition: Int32Builder,
    pub(super) offset: Int64Builder,
    pub(super) timestamp: TimestampMicrosecondBuilder,
    pub(super) key: BinaryBuilder,
    pub(super) headers: Headers,
    pub(super) value: BinaryBuilder,
    /// Typed tables: the decoded value fields, one batch per appended run of records.
    pub(super) decoded: Vec<RecordBatch>,
    /// Dead-letter tables: why each record was set aside.
    pub(super) error: StringBuilder,
}

/// Sizes of one batch, used to pre-size the next one's builders: `finish()` hands the buffers
/// over and leaves the builders empty, and regrowing an 800 KB value buffer by doubling on every
/// batch costs a copy of everything each time.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) rows: usize,
    pub(super) key_bytes: usize,
    pub(super) value_bytes: usize,
    pub(super) header_entries: usize,
    pub(super) header_key_bytes: usize,
    pub(super) header_value_bytes: usize,
}

/// How the schema shapes the builders: the timestamp's zone and the headers' layout.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) time_zone: Option<Arc<str>>,
    pub(super) headers: HeaderLayout,
}

impl Layout {
    pub(super) fn of(schema: &SchemaRef) -> Option<Self> {
        let ts = schema.field_with_name(schema::TIMESTAMP).ok()?;
        let DataType::Timestamp(_, tz) = ts.data_type() else {
            return None;
        };
        Some(Self {
            time_zone: tz.clone(),
            headers: schema::header_layout(schema)?,
        })
    }
}

/// The headers column being built: Kafka's list of (key, value) pairs, or a legacy map.
pub(super) enum Headers {
    List {
        layout: HeaderLayout,
        keys: StringBuilder,
        values: BinaryBuilder,
        offsets: Vec<i32>,
    },
    Map(MapBuilder<StringBuilder, BinaryBuilder>),
}

impl Headers {
    pub(super) fn with_capacity(s: Sizes, layout: &HeaderLayout) -> Self {
        let keys = StringBuilder::with_capacity(s.header_entries, s.header_key_bytes);
        let values = BinaryBuilder::with_capacity(s.header_entries, s.header_value_bytes);
        match layout {
            HeaderLayout::List { .. } => {
                let mut offsets = Vec::with_capacity(s.rows.max(1) + 1);
                offsets.push(0);
                Headers::List {
                    layout: layout.clone(),
                    keys,
                    values,
                    offsets,
                }
            }
            HeaderLayout::Map {
                entries,
                key,
                value,
            } => {
                let names = MapFieldNames {
                    entry: entries.clone(),
                    key: key.name().clone(),
                    value: value.name().clone(),
                };
                Headers::Map(
                    MapBuilder::with_capacity(Some(names), keys, values, s.rows.max(1))
                        .with_keys_field(key.clone())
                        .with_values_field(value.clone()),
                )
            }
        }
    }

    /// One record's headers, in order (a map keeps them too; readers may keep one per key).
    pub(super) fn push(
        &mut self,
        r: RecordRef<'_>,
        z: &mut Sizes,
    ) -> Result<(), arrow_schema::ArrowError> {
        for (k, v) in r.headers() {
            // Kafka header keys are strings; bytes that are not UTF-8 are replaced, not lost.
            // `from_utf8` first: its ASCII fast path is what nearly every key takes.
            let key = match std::str::from_utf8(k) {
                Ok(key) => std::borrow::Cow::Borrowed(key),
                Err(_) => String::from_utf8_lossy(k),
            };
            match self {
                Headers::List { keys, values, .. } => {
                    keys.append_value(key);
                    values.append_option(v);
                }
                Headers::Map(m) => {
                    m.keys().append_value(key);
                    m.values().append_value(v.unwrap_or_default());
                }
            }
            z.header_key_bytes += k.len();
            z.header_value_bytes += v.map_or(0, <[u8]>::len);
        }
        z.header_entries += r.header_count();
        match self {
            Headers::List { keys, offsets, .. } => {
                offsets.push(keys.len() as i32);
                Ok(())
            }
            Headers::Map(m) => m.append(true),
        }
    }

    pub(super) fn finish(&mut self) -> Result<ArrayRef, arrow_schema::ArrowError> {
        match self {
            Headers::Map(m) => Ok(Arc::new(m.finish())),
            Headers::List {
                layout: HeaderLayout::List { item, fields },
                keys,
                values,
                offsets,
            } => {
                let entries = StructArray::try_new(
                    fields.clone(),
                    vec![Arc::new(keys.finish()), Arc::new(values.finish())],
                    None,
                )?;
                let ends = std::mem::replace(offsets, vec![0]);
                let list = ListArray::try_new(
                    item.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(ends)),
                    Arc::new(entries),
                    None,
                )?;
                Ok(Arc::new(list))
            }
            Headers::List { .. } => Err(arrow_schema::ArrowError::SchemaError(
                "the headers' layout is not a list".into(),
            )),
        }
    }
}

impl Columns {
    pub(super) fn with_capacity(s: Sizes, l: &Layout) -> Self {
        let rows = s.rows.max(1);
        Self {
            partition: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            timestamp: TimestampMicrosecondBuilder::with_capacity(rows)
                .with_timezone_opt(l.time_zone.clone()),
            key: BinaryBuilder::with_capacity(rows, s.key_bytes),
            headers: Headers::with_capacity(s, &l.headers),
            value: BinaryBuilder::with_capacity(rows, s.value_bytes),
            decoded: Vec::new(),
            error: StringBuilder::with_capacity(0, 0),
        }
    }

    /// Appends one record's Kafka columns and, unless `typed`, its value bytes.
    pub(super) fn push(
        &mut self,
        z: &mut Sizes,
        partition: i32,
        r: RecordRef<'_>,
        typed: bool,
    ) -> Result<(), arrow_schema::ArrowError> {
        self.partition.append_value(partition);
        self.offset.append_value(r.offset);
        self.timestamp
            .append_value(r.timestamp_ms.saturating_mul(1_000));
        self.key.append_option(r.key);
        if !typed {
            self.value.append_option(r.value);
        }
        z.key_bytes += r.key.map_or(0, <[u8]>::len);
        z.value_bytes += r.value.map_or(0, <[u8]>::len);
        self.headers.push(r, z)
    }

    /// The columns in table order: the Kafka columns, then the value bytes or decoded fields,
    /// then (dead-letter tables) the reasons.
    pub(super) fn finish(
        &mut self,
        typed: Option<&SchemaRef>,
        dead_letters: bool,
    ) -> Result<Vec<ArrayRef>, arrow_schema::ArrowError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.key.finish()),
            self.headers.finish()?,
        ];
        match typed {
            None => cols.push(Arc::new(self.value.finish())),
            Some(schema) => {
                let values = arrow_select::concat::concat_batches(schema, &self.decoded)?;
                self.decoded.clear();
                cols.extend(values.columns().iter().cloned());
            }
        }
        if dead_letters {
            cols.push(Arc::new(self.error.finish()));
        }
        Ok(cols)
    }
}
