//! The table schema. The Iceberg schema is the source of truth; the Arrow schema the encoder
//! writes is derived from it (with the table's own field ids as `PARQUET:field_id`), so files
//! always match the table they are committed to.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, SchemaRef};
use iceberg::spec::{MapType, NestedField, PrimitiveType, Schema, Type};

pub const PARTITION: &str = "_kafka_partition";
pub const OFFSET: &str = "_kafka_offset";
pub const TIMESTAMP: &str = "_kafka_timestamp";
pub const KEY: &str = "_kafka_key";
pub const HEADERS: &str = "_kafka_headers";
pub const VALUE: &str = "value";

/// The raw-record table: Kafka metadata columns plus the value bytes. Ids are what a fresh
/// Iceberg table assigns (top-level fields first, then the map's key and value).
pub fn iceberg_schema() -> Schema {
    let headers = MapType::new(
        NestedField::map_key_element(7, Type::Primitive(PrimitiveType::String)).into(),
        NestedField::map_value_element(8, Type::Primitive(PrimitiveType::Binary), false).into(),
    );
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, PARTITION, Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::required(2, OFFSET, Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(3, TIMESTAMP, Type::Primitive(PrimitiveType::Timestamptz)).into(),
            NestedField::optional(4, KEY, Type::Primitive(PrimitiveType::Binary)).into(),
            NestedField::optional(5, HEADERS, Type::Map(headers)).into(),
            NestedField::optional(6, VALUE, Type::Primitive(PrimitiveType::Binary)).into(),
        ])
        .build()
        .expect("the built-in schema is valid")
}

/// The schema of the table in Arrow terms, with the table's field ids. Iceberg's mapping uses
/// `LargeBinary` for `binary`; icefall keeps 32-bit offsets (`Binary`): batches are far below
/// 2 GiB and the Parquet bytes are the same.
pub fn arrow_schema(schema: &Schema) -> Result<SchemaRef, iceberg::Error> {
    let a = iceberg::arrow::schema_to_arrow_schema(schema)?;
    let fields: Vec<FieldRef> = a
        .fields()
        .iter()
        .map(|f| Arc::new(small_offsets(f)))
        .collect();
    Ok(Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        a.metadata().clone(),
    )))
}

fn small_offsets(f: &Field) -> Field {
    let dt = match f.data_type() {
        DataType::LargeBinary => DataType::Binary,
        DataType::LargeUtf8 => DataType::Utf8,
        DataType::Map(entries, sorted) => DataType::Map(Arc::new(small_offsets(entries)), *sorted),
        DataType::Struct(children) => DataType::Struct(
            children
                .iter()
                .map(|c| Arc::new(small_offsets(c)))
                .collect(),
        ),
        DataType::List(item) => DataType::List(Arc::new(small_offsets(item))),
        other => other.clone(),
    };
    f.clone().with_data_type(dt)
}

/// The raw-record schema in Arrow terms, for encoders built without a table (tests, benches).
pub fn raw_arrow_schema() -> SchemaRef {
    arrow_schema(&iceberg_schema()).expect("the built-in schema converts")
}

/// The map's entries, key and value fields, exactly as the schema declares them.
pub fn header_fields(schema: &SchemaRef) -> Option<(String, FieldRef, FieldRef)> {
    let field = schema.field_with_name(HEADERS).ok()?;
    let DataType::Map(entries, _) = field.data_type() else {
        return None;
    };
    let DataType::Struct(kv) = entries.data_type() else {
        return None;
    };
    Some((
        entries.name().clone(),
        kv.first()?.clone(),
        kv.get(1)?.clone(),
    ))
}

/// Why a table's schema cannot take icefall's records, or `None` when it can: every icefall
/// column must exist with the same type (ids may differ; extra optional columns are fine).
pub fn incompatibility(table: &Schema) -> Option<String> {
    let want = iceberg_schema();
    for f in want.as_struct().fields() {
        match table.field_by_name(&f.name) {
            None => return Some(format!("column {} is missing", f.name)),
            Some(t) if !same_type(&t.field_type, &f.field_type) => {
                return Some(format!(
                    "column {} is {}, expected {}",
                    f.name, t.field_type, f.field_type
                ));
            }
            Some(t) if t.required && !f.required => {
                return Some(format!(
                    "column {} is required, but icefall writes nulls there",
                    f.name
                ));
            }
            Some(_) => {}
        }
    }
    for f in table.as_struct().fields() {
        if f.required && want.field_by_name(&f.name).is_none() {
            return Some(format!(
                "required column {} is not one icefall writes",
                f.name
            ));
        }
    }
    None
}

fn same_type(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::Map(x), Type::Map(y)) => {
            same_type(&x.key_field.field_type, &y.key_field.field_type)
                && same_type(&x.value_field.field_type, &y.value_field.field_type)
        }
        _ => false,
    }
}

/// The field id Parquet writers carry for a top-level Arrow field, if any.
pub fn field_id(field: &Field) -> Option<i32> {
    field
        .metadata()
        .get(parquet::arrow::PARQUET_FIELD_ID_META_KEY)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_schema_carries_the_iceberg_ids() {
        let a = raw_arrow_schema();
        let ids: Vec<Option<i32>> = a.fields().iter().map(|f| field_id(f)).collect();
        assert_eq!(ids, (1..=6).map(Some).collect::<Vec<_>>());
        let (entries, k, v) = header_fields(&a).unwrap();
        assert_eq!(entries, "key_value");
        assert_eq!((field_id(&k), field_id(&v)), (Some(7), Some(8)));
        assert_eq!(
            a.field_with_name(VALUE).unwrap().data_type(),
            &DataType::Binary
        );
        assert_eq!(v.data_type(), &DataType::Binary);
    }

    #[test]
    fn incompatible_tables_are_named() {
        assert_eq!(incompatibility(&iceberg_schema()), None);
        let wrong = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, PARTITION, Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        assert_eq!(
            incompatibility(&wrong).unwrap(),
            "column _kafka_partition is long, expected int"
        );
    }
}
