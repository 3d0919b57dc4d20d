//! `--evolve`: a JSON field the table lacks becomes an optional column.
//!
//! One [`Evolution`] is shared by the shard cores and the io core. A shard core that meets new
//! fields infers their types, calls [`Evolution::extend`] and gets the table's next schema: the
//! fields another core added first keep that core's type, new ones get the next field ids in the
//! order Iceberg's schema update assigns them (after the table's `last-column-id`, each field
//! before its children). The shard core then closes its open file and writes the next one in the
//! new schema. The io core commits each epoch with [`Evolution::schema`]: columns the table lacks
//! are added in the same transaction as the epoch's files (so no snapshot ever references a
//! column its schema lacks, and a crash leaves neither), and the ids the catalog assigned are
//! checked against the ones the files carry. Taken rarely (once per new field per core), so a
//! mutex is enough.

use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use iceberg::spec::{NestedFieldRef, Schema};

use super::SinkError;
use super::schema::{arrow_schema, inferred_field};

#[derive(Debug)]
struct State {
    schema: Arc<Schema>,
    arrow: SchemaRef,
    last_column_id: i32,
}

/// The table's schema as the run extends it.
#[derive(Debug)]
pub struct Evolution {
    state: Mutex<State>,
}

/// What [`Evolution::extend`] did.
#[derive(Debug)]
pub struct Extended {
    /// The table's schema in Arrow terms, every field added so far included.
    pub arrow: SchemaRef,
    /// Fields this call added: name and Iceberg type.
    pub added: Vec<(String, String)>,
}

impl Evolution {
    /// Starts from the table's current schema and its `last-column-id`.
    pub fn new(schema: Schema, last_column_id: i32) -> Result<Self, SinkError> {
        let arrow = arrow_schema(&schema).map_err(|e| SinkError::Schema {
            reason: format!("the table's schema has no Arrow form: {e}"),
        })?;
        Ok(Self {
            state: Mutex::new(State {
                schema: Arc::new(schema),
                arrow,
                last_column_id,
            }),
        })
    }

    /// The schema every file written so far fits in.
    pub fn schema(&self) -> Arc<Schema> {
        self.lock().schema.clone()
    }

    /// The current schema in Arrow terms.
    pub fn arrow(&self) -> SchemaRef {
        self.lock().arrow.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock left valid data (every update is one store).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the `fields` the schema lacks (by name) as optional columns. A field whose type has
    /// no Iceberg counterpart is not added (`Err` names it); nothing else is added then either.
    pub fn extend(&self, fields: &arrow_schema::Schema) -> Result<Extended, SinkError> {
        let mut s = self.lock();
        let mut next = s.last_column_id + 1;
        let mut added_fields: Vec<NestedFieldRef> = Vec::new();
        for f in fields.fields() {
            if s.schema.field_by_name(f.name()).is_some()
                || added_fields.iter().any(|a| &a.name == f.name())
            {
                continue;
            }
            let field = inferred_field(f, &mut next).map_err(|reason| SinkError::Schema {
                reason: format!("--evolve cannot add a column: {reason}"),
            })?;
            added_fields.push(field);
        }
        if added_fields.is_empty() {
            return Ok(Extended {
                arrow: s.arrow.clone(),
                added: Vec::new(),
            });
        }
        let mut all = s.schema.as_struct().fields().to_vec();
        all.extend(added_fields.iter().cloned());
        let schema = Schema::builder()
            .with_schema_id(s.schema.schema_id() + 1)
            .with_identifier_field_ids(s.schema.identifier_field_ids())
            .with_fields(all)
            .build()
            .and_then(|schema| Ok((arrow_schema(&schema)?, schema)));
        let (arrow, schema) = schema.map_err(|e| SinkError::Schema {
            reason: format!("--evolve cannot add a column: {e}"),
        })?;
        s.schema = Arc::new(schema);
        s.arrow = arrow.clone();
        s.last_column_id = next - 1;
        Ok(Extended {
            arrow,
            added: added_fields
                .iter()
                .map(|f| (f.name.clone(), f.field_type.to_string()))
                .collect(),
        })
    }
}

/// The top-level fields of `want` that `table` lacks (by id), in id order: the columns a commit
/// of files written in `want` adds.
pub fn missing(table: &Schema, want: &Schema) -> Vec<NestedFieldRef> {
    let mut out: Vec<NestedFieldRef> = want
        .as_struct()
        .fields()
        .iter()
        .filter(|f| table.field_by_id(f.id).is_none())
        .cloned()
        .collect();
    out.sort_by_key(|f| f.id);
    out
}

/// Checks that the committed schema holds every field of `want` as the files carry it (same id,
/// name, type, nested ids): the catalog assigns ids itself.
pub fn check_ids(committed: &Schema, want: &Schema) -> Result<(), String> {
    for f in want.as_struct().fields() {
        match committed.field_by_id(f.id) {
            Some(c) if c == f => {}
            Some(c) => {
                return Err(format!(
                    "column {:?} was committed as {:?} with id {}, but the files carry {:?} with that id",
                    f.name, c.name, f.id, f.name
                ));
            }
            None => {
                return Err(format!(
                    "column {:?} (id {}) is missing after the schema update",
                    f.name, f.id
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::schema::Shape;
    use arrow_schema::{DataType, Field, Fields};

    fn start() -> Evolution {
        let shape = Shape::parse_typed(
            r#"{"type":"struct","fields":[{"id":1,"name":"seq","required":false,"type":"long"}]}"#,
        )
        .unwrap();
        let schema = shape.iceberg_schema().unwrap();
        let last = schema.highest_field_id();
        Evolution::new(schema, last).unwrap()
    }

    #[test]
    fn new_fields_take_the_next_ids_depth_first_and_the_first_type_wins() {
        let e = start();
        assert_eq!(e.schema().highest_field_id(), 10);
        let first = arrow_schema::Schema::new(vec![
            Field::new("seq", DataType::Utf8, true),
            Field::new(
                "geo",
                DataType::Struct(Fields::from(vec![Field::new(
                    "lat",
                    DataType::Float64,
                    true,
                )])),
                true,
            ),
            Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
        ]);
        let x = e.extend(&first).unwrap();
        let names: Vec<&str> = x.added.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["geo", "tags"], "seq is known: not added again");
        let s = e.schema();
        // geo 11, its lat 12, tags 13, its element 14: what Iceberg's update assigns.
        assert_eq!(s.field_by_name("geo").unwrap().id, 11);
        assert_eq!(s.field_by_name("geo.lat").unwrap().id, 12);
        assert_eq!(s.field_by_name("tags").unwrap().id, 13);
        assert_eq!(s.highest_field_id(), 14);
        assert_eq!(
            x.arrow.fields().len(),
            5 + 3,
            "Kafka columns, seq, geo, tags"
        );
        // Another core saw `tags` as numbers: the first type stays.
        let again = arrow_schema::Schema::new(vec![Field::new(
            "tags",
            DataType::new_list(DataType::Int64, true),
            true,
        )]);
        assert!(e.extend(&again).unwrap().added.is_empty());
        let before = start().schema();
        let m: Vec<i32> = missing(&before, &s).iter().map(|f| f.id).collect();
        assert_eq!(m, [11, 13]);
        assert!(check_ids(&s, &s).is_ok());
        assert!(check_ids(&before, &s).unwrap_err().contains("geo"));
    }

    #[test]
    fn a_type_without_an_iceberg_counterpart_adds_nothing() {
        let e = start();
        let bad = arrow_schema::Schema::new(vec![
            Field::new("ok", DataType::Int64, true),
            Field::new(
                "d",
                DataType::Duration(arrow_schema::TimeUnit::Second),
                true,
            ),
        ]);
        let err = e.extend(&bad).unwrap_err().to_string();
        assert!(err.contains("\"d\""), "{err}");
        assert!(e.schema().field_by_name("ok").is_none());
    }
}
