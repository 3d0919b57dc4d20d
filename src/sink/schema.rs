//! The table schema. The Iceberg schema is the source of truth; the Arrow schema the encoder
//! writes is derived from it (with the table's own field ids as `PARQUET:field_id`), so files
//! always match the table they are committed to.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, SchemaRef};
use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type,
};

pub const PARTITION: &str = "_kafka_partition";
pub const OFFSET: &str = "_kafka_offset";
pub const TIMESTAMP: &str = "_kafka_timestamp";
pub const KEY: &str = "_kafka_key";
pub const HEADERS: &str = "_kafka_headers";
pub const VALUE: &str = "value";
/// The dead-letter table's reason column.
pub const ERROR: &str = "error";

/// What a table holds besides the Kafka columns: the value's bytes, or its decoded fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A binary `value` column.
    Raw,
    /// The value's fields, decoded (`--format json` with `--schema`).
    Typed(StructType),
    /// A dead-letter table (`--dlq-table`): the raw columns and why the record was set aside.
    DeadLetters,
}

impl Shape {
    /// The Iceberg schema of a table of this shape.
    pub fn iceberg_schema(&self) -> Result<Schema, iceberg::Error> {
        match self {
            Shape::Raw => Ok(iceberg_schema()),
            Shape::Typed(value) => typed_iceberg_schema(value),
            Shape::DeadLetters => {
                let mut fields = iceberg_schema().as_struct().fields().to_vec();
                // After the headers' element and its fields (7, 8, 9).
                let error =
                    NestedField::required(10, ERROR, Type::Primitive(PrimitiveType::String));
                fields.push(error.into());
                Schema::builder().with_fields(fields).build()
            }
        }
    }

    /// An Iceberg struct in the spec's JSON form: `{"type":"struct","fields":[{"id":1,
    /// "name":"id","required":true,"type":"long"},…]}`. Ids are renumbered after the Kafka columns.
    pub fn parse_typed(json: &str) -> Result<Self, String> {
        let st: StructType = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Self::typed(st)
    }

    /// A typed shape, checked: some fields, none named like a Kafka column, a valid schema.
    fn typed(value: StructType) -> Result<Self, String> {
        if value.fields().is_empty() {
            return Err("the struct has no fields".into());
        }
        if let Some(f) = value.fields().iter().find(|f| kafka_column(&f.name)) {
            return Err(format!("field {:?} collides with a Kafka column", f.name));
        }
        let shape = Shape::Typed(value);
        shape.iceberg_schema().map_err(|e| e.to_string())?;
        Ok(shape)
    }

    /// The shape of an existing table: raw if it has a `value` column, else its non-Kafka columns.
    pub fn of_table(schema: &Schema) -> Self {
        if schema.field_by_name(VALUE).is_some() {
            return match schema.field_by_name(ERROR) {
                Some(_) => Shape::DeadLetters,
                None => Shape::Raw,
            };
        }
        let fields: Vec<NestedFieldRef> = schema
            .as_struct()
            .fields()
            .iter()
            .filter(|f| !kafka_column(&f.name))
            .cloned()
            .collect();
        Shape::Typed(StructType::new(fields))
    }

    /// Inferred fields (Arrow types from JSON inference) as optional Iceberg fields.
    pub fn from_arrow(schema: &arrow_schema::Schema) -> Result<Self, String> {
        let mut next = 1;
        let fields = schema
            .fields()
            .iter()
            .map(|f| inferred_field(f, &mut next))
            .collect::<Result<Vec<_>, String>>()?;
        Self::typed(StructType::new(fields))
    }
}

/// An inferred Arrow field as an optional Iceberg field: its id is `next`, then its children's,
/// depth first (the order Iceberg's schema update assigns ids in).
pub(super) fn inferred_field(f: &Field, next: &mut i32) -> Result<NestedFieldRef, String> {
    let id = *next;
    *next += 1;
    let t = inferred_type(f.data_type(), next).map_err(|t| format!("field {:?}: {t}", f.name()))?;
    Ok(NestedField::optional(id, f.name(), t).into())
}

fn inferred_type(t: &DataType, next: &mut i32) -> Result<Type, String> {
    Ok(match t {
        DataType::Boolean => Type::Primitive(PrimitiveType::Boolean),
        DataType::Int32 => Type::Primitive(PrimitiveType::Int),
        DataType::Int64 => Type::Primitive(PrimitiveType::Long),
        DataType::Float32 => Type::Primitive(PrimitiveType::Float),
        DataType::Float64 => Type::Primitive(PrimitiveType::Double),
        DataType::Date32 => Type::Primitive(PrimitiveType::Date),
        DataType::Timestamp(_, Some(_)) => Type::Primitive(PrimitiveType::Timestamptz),
        DataType::Timestamp(_, None) => Type::Primitive(PrimitiveType::Timestamp),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            Type::Primitive(PrimitiveType::Binary)
        }
        // A field only ever null in the sample: a string takes whatever comes. Avro enums
        // arrive as dictionaries of their symbols.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Type::Primitive(PrimitiveType::String)
        }
        DataType::Dictionary(_, v) if v.as_ref() == &DataType::Utf8 => {
            Type::Primitive(PrimitiveType::String)
        }
        DataType::List(item) => {
            let id = *next;
            *next += 1;
            let e = inferred_type(item.data_type(), next)?;
            Type::List(ListType {
                element_field: NestedField::list_element(id, e, false).into(),
            })
        }
        DataType::Struct(children) => Type::Struct(StructType::new(
            children
                .iter()
                .map(|c| inferred_field(c, next))
                .collect::<Result<Vec<_>, String>>()?,
        )),
        other => return Err(format!("inferred type {other} has no Iceberg counterpart")),
    })
}

fn kafka_column(name: &str) -> bool {
    [PARTITION, OFFSET, TIMESTAMP, KEY, HEADERS].contains(&name)
}

/// Gives `field` and everything nested in it fresh ids from `next`, top-level fields first.
fn renumber(fields: &[NestedFieldRef], next: &mut i32) -> Vec<NestedFieldRef> {
    let top: Vec<NestedField> = fields
        .iter()
        .map(|f| {
            let mut f = (**f).clone();
            f.id = *next;
            *next += 1;
            f
        })
        .collect();
    top.into_iter()
        .map(|mut f| {
            let t = renumber_type(&f.field_type, next);
            f.field_type = Box::new(t);
            Arc::new(f)
        })
        .collect()
}

fn renumber_type(t: &Type, next: &mut i32) -> Type {
    match t {
        Type::Primitive(_) => t.clone(),
        Type::Struct(s) => Type::Struct(StructType::new(renumber(s.fields(), next))),
        Type::List(l) => {
            let e = renumber(std::slice::from_ref(&l.element_field), next);
            Type::List(ListType {
                element_field: e[0].clone(),
            })
        }
        Type::Map(m) => {
            let kv = renumber(&[m.key_field.clone(), m.value_field.clone()], next);
            Type::Map(MapType {
                key_field: kv[0].clone(),
                value_field: kv[1].clone(),
            })
        }
    }
}

/// The Kafka columns, then the value's decoded fields in place of `value`.
pub fn typed_iceberg_schema(value: &StructType) -> Result<Schema, iceberg::Error> {
    let raw = iceberg_schema();
    let mut fields: Vec<NestedFieldRef> = raw
        .as_struct()
        .fields()
        .iter()
        .filter(|f| f.name != VALUE)
        .cloned()
        .collect();
    // After the headers' element (7) and its key (8) and value (9).
    let mut next = 10;
    fields.extend(renumber(value.fields(), &mut next));
    Schema::builder().with_fields(fields).build()
}

/// The headers column as Kafka has them (what Spark's Kafka source gives): in order, keys may
/// repeat, values may be null. Ids: the list element, then its fields.
pub fn headers_type(first_id: i32) -> Type {
    let entry = StructType::new(vec![
        NestedField::required(first_id + 1, "key", Type::Primitive(PrimitiveType::String)).into(),
        NestedField::optional(
            first_id + 2,
            "value",
            Type::Primitive(PrimitiveType::Binary),
        )
        .into(),
    ]);
    Type::List(ListType {
        element_field: NestedField::list_element(first_id, Type::Struct(entry), true).into(),
    })
}

/// The headers column of tables made before icefall kept repeated keys and null values: a map
/// (a repeated key keeps one value; a null value is written as empty bytes).
pub fn legacy_headers_type() -> Type {
    Type::Map(MapType::new(
        NestedField::map_key_element(7, Type::Primitive(PrimitiveType::String)).into(),
        NestedField::map_value_element(8, Type::Primitive(PrimitiveType::Binary), false).into(),
    ))
}

/// The raw-record table: Kafka metadata columns plus the value bytes. Ids are what a fresh
/// Iceberg table assigns (top-level fields first, then the headers' element and its fields).
pub fn iceberg_schema() -> Schema {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, PARTITION, Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::required(2, OFFSET, Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(3, TIMESTAMP, Type::Primitive(PrimitiveType::Timestamptz)).into(),
            NestedField::optional(4, KEY, Type::Primitive(PrimitiveType::Binary)).into(),
            NestedField::optional(5, HEADERS, headers_type(7)).into(),
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

/// How a table's headers column is laid out in Arrow, exactly as the schema declares it.
#[derive(Debug, Clone)]
pub enum HeaderLayout {
    /// `list<struct<key, value>>`: the list's item field and the struct's fields.
    List {
        item: FieldRef,
        fields: arrow_schema::Fields,
    },
    /// A legacy `map<string, binary>`: the entries' name, key and value fields.
    Map {
        entries: String,
        key: FieldRef,
        value: FieldRef,
    },
}

pub fn header_layout(schema: &SchemaRef) -> Option<HeaderLayout> {
    let field = schema.field_with_name(HEADERS).ok()?;
    match field.data_type() {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => Some(HeaderLayout::List {
                item: item.clone(),
                fields: fields.clone(),
            }),
            _ => None,
        },
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return None;
            };
            Some(HeaderLayout::Map {
                entries: entries.name().clone(),
                key: kv.first()?.clone(),
                value: kv.get(1)?.clone(),
            })
        }
        _ => None,
    }
}

/// Why a table's schema cannot take icefall's records of `want`'s shape, or `None` when it can:
/// every column icefall writes must exist with the same type (ids may differ; extra optional
/// columns are fine).
pub fn incompatibility(table: &Schema, want: &Schema) -> Option<String> {
    for f in want.as_struct().fields() {
        match table.field_by_name(&f.name) {
            None => return Some(format!("column {} is missing", f.name)),
            // A table made by an earlier icefall keeps its map of headers.
            Some(t) if f.name == HEADERS && same_type(&t.field_type, &legacy_headers_type()) => {}
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

fn same_field(a: &NestedField, b: &NestedField) -> bool {
    a.name == b.name && a.required == b.required && same_type(&a.field_type, &b.field_type)
}

fn same_type(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::Map(x), Type::Map(y)) => {
            same_type(&x.key_field.field_type, &y.key_field.field_type)
                && same_type(&x.value_field.field_type, &y.value_field.field_type)
        }
        (Type::List(x), Type::List(y)) => same_field(&x.element_field, &y.element_field),
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len()
                && x.fields()
                    .iter()
                    .zip(y.fields())
                    .all(|(p, q)| same_field(p, q))
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
        let Some(HeaderLayout::List { item, fields }) = header_layout(&a) else {
            panic!("headers are a list")
        };
        assert_eq!(field_id(&item), Some(7));
        let ids: Vec<_> = fields
            .iter()
            .map(|f| (f.name().as_str(), field_id(f), f.is_nullable()))
            .collect();
        assert_eq!(ids, [("key", Some(8), false), ("value", Some(9), true)]);
        assert_eq!(
            a.field_with_name(VALUE).unwrap().data_type(),
            &DataType::Binary
        );
        assert_eq!(fields[1].data_type(), &DataType::Binary);
    }

    /// A table made by an earlier icefall (headers as a map) still takes icefall's records.
    #[test]
    fn a_legacy_map_of_headers_is_compatible() {
        let mut fields: Vec<NestedFieldRef> = iceberg_schema().as_struct().fields().to_vec();
        let mut h = (*fields[4]).clone();
        h.field_type = Box::new(legacy_headers_type());
        fields[4] = Arc::new(h);
        let legacy = Schema::builder().with_fields(fields).build().unwrap();
        assert_eq!(incompatibility(&legacy, &iceberg_schema()), None);
        let a = arrow_schema(&legacy).unwrap();
        assert!(matches!(header_layout(&a), Some(HeaderLayout::Map { .. })));
    }

    pub(super) fn top_names(schema: &Schema) -> Vec<&str> {
        let fields = schema.as_struct().fields();
        fields.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn the_dead_letter_table_is_the_raw_table_and_a_required_error() {
        let schema = Shape::DeadLetters.iceberg_schema().unwrap();
        let names = top_names(&schema);
        assert_eq!(
            names,
            [PARTITION, OFFSET, TIMESTAMP, KEY, HEADERS, VALUE, ERROR]
        );
        assert!(schema.field_by_name(ERROR).unwrap().required);
        assert_eq!(Shape::of_table(&schema), Shape::DeadLetters);
        assert_eq!(Shape::of_table(&iceberg_schema()), Shape::Raw);
        let a = arrow_schema(&schema).unwrap();
        assert_eq!(field_id(a.field_with_name(ERROR).unwrap()), Some(10));
    }

    #[test]
    fn incompatible_tables_are_named() {
        let raw = iceberg_schema();
        assert_eq!(incompatibility(&raw, &raw), None);
        let wrong = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, PARTITION, Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        assert_eq!(
            incompatibility(&wrong, &raw).unwrap(),
            "column _kafka_partition is long, expected int"
        );
    }
}

#[cfg(test)]
mod typed_tests {
    use super::*;

    const ORDERS: &str = r#"{"type":"struct","fields":[
        {"id":1,"name":"id","required":true,"type":"long"},
        {"id":2,"name":"at","required":false,"type":"timestamptz"},
        {"id":3,"name":"customer","required":false,"type":{"type":"struct","fields":[
            {"id":4,"name":"name","required":true,"type":"string"}]}},
        {"id":5,"name":"tags","required":false,"type":{"type":"list","element-id":6,
            "element":"string","element-required":false}},
        {"id":7,"name":"attrs","required":false,"type":{"type":"map","key-id":8,"key":"string",
            "value-id":9,"value":"long","value-required":false}}]}"#;

    #[test]
    fn a_declared_struct_replaces_value_with_fresh_unique_ids() {
        let shape = Shape::parse_typed(ORDERS).unwrap();
        let schema = shape.iceberg_schema().unwrap();
        let names = super::tests::top_names(&schema);
        assert_eq!(
            names,
            [
                PARTITION, OFFSET, TIMESTAMP, KEY, HEADERS, "id", "at", "customer", "tags", "attrs"
            ]
        );
        assert!(schema.field_by_name(VALUE).is_none());
        assert_eq!(schema.field_by_name("id").unwrap().id, 10);
        assert_eq!(schema.field_by_name("customer.name").unwrap().id, 15);
        assert_eq!(incompatibility(&schema, &schema), None);
        let raw = iceberg_schema();
        assert_eq!(
            incompatibility(&raw, &schema).unwrap(),
            "column id is missing"
        );
        arrow_schema(&schema).expect("converts to Arrow");
    }

    #[test]
    fn inferred_arrow_fields_become_optional_iceberg_fields() {
        let values: Vec<&[u8]> = vec![
            br#"{"id":1,"price":2.5,"tags":["a"],"user":{"name":"x","vip":true}}"#,
            br#"{"id":2,"gone":null}"#,
            b"not json",
        ];
        let arrow = crate::decode::json::infer_fields(&values).unwrap();
        let shape = Shape::from_arrow(&arrow).unwrap();
        let schema = shape.iceberg_schema().unwrap();
        let t = |n: &str| schema.field_by_name(n).unwrap().field_type.to_string();
        assert_eq!(t("id"), "long");
        assert_eq!(t("price"), "double");
        assert_eq!(t("gone"), "string");
        assert_eq!(t("user.vip"), "boolean");
        assert!(t("tags").starts_with("list"), "{}", t("tags"));
        assert!(
            schema
                .as_struct()
                .fields()
                .iter()
                .filter(|f| !kafka_column(&f.name))
                .all(|f| !f.required)
        );
        assert_eq!(Shape::of_table(&schema), shape_without_ids(&schema));
        assert_eq!(Shape::of_table(&iceberg_schema()), Shape::Raw);
        let none: Vec<&[u8]> = vec![b"[1,2]", b"oops"];
        assert!(
            crate::decode::json::infer_fields(&none)
                .unwrap_err()
                .contains("none of the 2")
        );
    }

    fn shape_without_ids(schema: &Schema) -> Shape {
        Shape::Typed(StructType::new(
            schema
                .as_struct()
                .fields()
                .iter()
                .filter(|f| !kafka_column(&f.name))
                .cloned()
                .collect(),
        ))
    }

    #[test]
    fn bad_declared_schemas_are_named() {
        assert!(Shape::parse_typed("{").is_err());
        let e = Shape::parse_typed(r#"{"type":"struct","fields":[]}"#).unwrap_err();
        assert!(e.contains("no fields"), "{e}");
        let e = Shape::parse_typed(
            r#"{"type":"struct","fields":[{"id":1,"name":"_kafka_key","required":false,"type":"string"}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("collides"), "{e}");
    }
}
