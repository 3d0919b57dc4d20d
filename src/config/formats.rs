//! The decoding flags (`--format`, `--schema`, `--infer-schema`, `--schema-registry`) and the
//! dead-letter destination (`--dlq-table`, `--dlq-topic`), checked together: each of them only
//! makes sense with some of the others.

use std::num::NonZeroUsize;

use super::{ConfigError, DeadLetterDest, RunArgs, TableIdent, ValueFormat, field};

impl RunArgs {
    /// `--format` and where the value's fields come from.
    pub(super) fn value_format(&self) -> Result<(ValueFormat, Option<NonZeroUsize>), ConfigError> {
        let format: ValueFormat = field("--format", &self.format)?;
        let infer_schema: Option<NonZeroUsize> = self
            .infer_schema
            .as_deref()
            .map(|n| field("--infer-schema", n))
            .transpose()?;
        if self.evolve && (format != ValueFormat::Json || infer_schema.is_none()) {
            return Err(ConfigError::invalid(
                "--evolve",
                "true",
                "applies to --format json --infer-schema N (a declared --schema is the table's contract)",
            ));
        }
        match (format, &self.schema, &self.infer_schema) {
            (ValueFormat::Json, None, None) => Err(ConfigError::invalid(
                "--format",
                &self.format,
                "needs --schema FILE (the value's fields as an Iceberg struct in JSON) or --infer-schema N",
            )),
            (ValueFormat::Json, Some(p), Some(_)) => Err(ConfigError::invalid(
                "--schema",
                p.display(),
                "give --schema or --infer-schema, not both",
            )),
            (ValueFormat::Raw, Some(p), _) => Err(ConfigError::invalid(
                "--schema",
                p.display(),
                "applies to --format json or avro only",
            )),
            (ValueFormat::Raw | ValueFormat::Avro, _, Some(n)) => Err(ConfigError::invalid(
                "--infer-schema",
                n,
                "applies to --format json only",
            )),
            (ValueFormat::Avro, None, _) if self.schema_registry.is_none() => {
                Err(ConfigError::invalid(
                    "--format",
                    &self.format,
                    "needs --schema FILE.avsc (plain Avro) or --schema-registry URL (Confluent wire format)",
                ))
            }
            (ValueFormat::Avro, Some(p), _) if self.schema_registry.is_some() => {
                Err(ConfigError::invalid(
                    "--schema",
                    p.display(),
                    "give --schema or --schema-registry, not both",
                ))
            }
            (ValueFormat::Raw | ValueFormat::Json, _, _) if self.schema_registry.is_some() => {
                Err(ConfigError::invalid(
                    "--schema-registry",
                    crate::secret::url_shown(self.schema_registry.as_deref().unwrap_or_default()),
                    "applies to --format avro only",
                ))
            }
            (ValueFormat::Avro, None, _)
                if !self
                    .schema_registry
                    .as_deref()
                    .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://")) =>
            {
                Err(ConfigError::invalid(
                    "--schema-registry",
                    crate::secret::url_shown(self.schema_registry.as_deref().unwrap_or_default()),
                    "expected an http:// or https:// URL",
                ))
            }
            _ => Ok((format, infer_schema)),
        }
    }

    /// `--dlq-table` or `--dlq-topic`, if given.
    pub(super) fn dead_letters(
        &self,
        format: ValueFormat,
        table: &str,
        topic: &str,
    ) -> Result<Option<DeadLetterDest>, ConfigError> {
        let (flag, value) = match (&self.dlq_table, &self.dlq_topic) {
            (None, None) => return Ok(None),
            (Some(t), Some(_)) => {
                return Err(ConfigError::invalid(
                    "--dlq-table",
                    t,
                    "give --dlq-table or --dlq-topic, not both",
                ));
            }
            (Some(t), None) => ("--dlq-table", t),
            (None, Some(t)) => ("--dlq-topic", t),
        };
        if format == ValueFormat::Raw {
            return Err(ConfigError::invalid(
                flag,
                value,
                "applies to --format json or avro only (raw records are never rejected)",
            ));
        }
        match (&self.dlq_table, &self.dlq_topic) {
            (Some(t), _) => {
                let ident: TableIdent = field("--dlq-table", t)?;
                let main: TableIdent = field("--table", table)?;
                if ident == main {
                    return Err(ConfigError::invalid(
                        "--dlq-table",
                        t,
                        "must differ from --table",
                    ));
                }
                Ok(Some(DeadLetterDest::Table(ident)))
            }
            (None, Some(t)) if t.is_empty() || t == topic => Err(ConfigError::invalid(
                "--dlq-topic",
                t,
                "must be a topic other than --topic",
            )),
            (None, Some(t)) => Ok(Some(DeadLetterDest::Topic(t.clone()))),
            (None, None) => Ok(None),
        }
    }
}
