//! The table's Arrow schema. Every field carries its Iceberg field id (`PARQUET:field_id`) so any
//! Iceberg reader resolves the columns by id, not by name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

/// Metadata key Parquet writers turn into the column's field id.
pub const FIELD_ID_KEY: &str = "PARQUET:field_id";

pub const PARTITION: &str = "_kafka_partition";
pub const OFFSET: &str = "_kafka_offset";
pub const TIMESTAMP: &str = "_kafka_timestamp";
pub const KEY: &str = "_kafka_key";
pub const HEADERS: &str = "_kafka_headers";
pub const VALUE: &str = "value";

fn with_id(field: Field, id: i32) -> Field {
    field.with_metadata(HashMap::from([(FIELD_ID_KEY.to_string(), id.to_string())]))
}

/// The map's key field (`string`, required, id 7).
pub fn header_key_field() -> FieldRef {
    Arc::new(with_id(Field::new("key", DataType::Utf8, false), 7))
}

/// The map's value field (`binary`, optional, id 8).
pub fn header_value_field() -> FieldRef {
    Arc::new(with_id(Field::new("value", DataType::Binary, true), 8))
}

fn headers_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![header_key_field(), header_value_field()])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The raw-record table: Kafka metadata columns plus the value bytes.
pub fn raw_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        with_id(Field::new(PARTITION, DataType::Int32, false), 1),
        with_id(Field::new(OFFSET, DataType::Int64, false), 2),
        with_id(
            Field::new(
                TIMESTAMP,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            3,
        ),
        with_id(Field::new(KEY, DataType::Binary, true), 4),
        with_id(Field::new(HEADERS, headers_type(), true), 5),
        with_id(Field::new(VALUE, DataType::Binary, true), 6),
    ]))
}
