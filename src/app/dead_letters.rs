//! The dead-letter destination of a run (`--dlq-table` or `--dlq-topic`): what an earlier run
//! already set aside, what each shard core writes to, and what the io role commits or produces.
//! The only place that joins the Kafka producer (`source/`) to the io role (`sink/`).

use std::sync::Arc;

use arrow_schema::SchemaRef;
use iceberg::Catalog;
use iceberg::table::Table;

use crate::config::{DeadLetterDest, RunConfig, TableIdent};
use crate::offsets::{self, SetAside};
use crate::record::{DeadLetter, Offsets};
use crate::shard::driver::{DeadLetterOut, FileNames};
use crate::sink::SinkError;
use crate::sink::commit::{self, Committer, RetryPolicy};
use crate::sink::encode::{EncodeOptions, FileEncoder};
use crate::sink::schema::Shape;
use crate::sink::storage::ObjectStoreStorage;
use crate::sink::upload::{
    DeadLetterSink, DeadLetterTable, DeadLetterTopic as TopicSink, LetterBox, TableFiles,
};
use crate::source::SourceConfig;
use crate::source::dead_letters::DeadLetterTopic;

use super::{Error, one_line};

/// Where the run's dead letters go, as the shard cores and the io role need it.
pub(super) enum Plan {
    Table {
        ident: TableIdent,
        files: Box<TableFiles>,
        schema: SchemaRef,
    },
    Topic {
        topic: String,
        /// The topic's end offsets the main table recorded last.
        ends: Offsets,
    },
}

/// Creates the dead-letter table or finds the topic, and reads what an earlier run already set
/// aside: below the dead-letter table's offsets; or, for a topic, the source offsets named by its
/// records past the end offsets the main table recorded (an epoch produced but not committed).
pub(super) fn prepare(
    cfg: &RunConfig,
    setup: &tokio::runtime::Runtime,
    catalog: &dyn Catalog,
    storage: &ObjectStoreStorage,
    table: &Table,
    source: &SourceConfig,
    committed: &Offsets,
) -> Result<Option<(Plan, Arc<SetAside>)>, Error> {
    match &cfg.dead_letters {
        None => Ok(None),
        Some(DeadLetterDest::Table(ident)) => {
            let t = setup.block_on(commit::ensure_table(catalog, ident, &Shape::DeadLetters))?;
            let below = commit::checkpoint(&t, &cfg.topic)?
                .map(|c| c.offsets)
                .unwrap_or_default();
            let (files, schema) = TableFiles::for_table(&t, ident, storage)?;
            let set_aside = SetAside {
                below,
                ..SetAside::default()
            };
            let plan = Plan::Table {
                ident: ident.clone(),
                files: Box::new(files),
                schema,
            };
            Ok(Some((plan, Arc::new(set_aside))))
        }
        Some(DeadLetterDest::Topic(topic)) => {
            let key = offsets::dead_letter_offsets_key(topic);
            let ends = match commit::newest_summary(table, &key) {
                Some(json) => offsets::decode_offsets(&json).map_err(|e| {
                    SinkError::Checkpoint(format!("{key} of table {}: {e}", cfg.table))
                })?,
                None => Offsets::new(),
            };
            let exact = setup.block_on(async {
                let t = DeadLetterTopic::open(source, topic).await?;
                t.written(&ends, committed).await
            })?;
            if !exact.is_empty() {
                tracing::info!(
                    topic,
                    dead_letters = exact.len(),
                    "dead letters produced by a run that stopped before its commit: not produced again"
                );
            }
            let set_aside = SetAside {
                exact,
                ..SetAside::default()
            };
            let plan = Plan::Topic {
                topic: topic.clone(),
                ends,
            };
            Ok(Some((plan, Arc::new(set_aside))))
        }
    }
}

/// What shard core `core` writes its dead letters to.
pub(super) fn shard_out(
    plan: &Plan,
    core: usize,
    encode: &EncodeOptions,
    names: &FileNames,
) -> Result<DeadLetterOut, Error> {
    Ok(match plan {
        Plan::Table { schema, .. } => DeadLetterOut::Table {
            encoder: Box::new(FileEncoder::new(core, schema.clone(), encode)?),
            names: names.clone(),
        },
        Plan::Topic { .. } => DeadLetterOut::Topic(Vec::new()),
    })
}

/// The io role's side, opened on its own runtime (connections belong to the runtime).
pub(super) async fn io_sink(
    plan: Plan,
    catalog: Arc<dyn Catalog>,
    source: &SourceConfig,
    retry: RetryPolicy,
    die_after: bool,
) -> Result<DeadLetterSink, SinkError> {
    Ok(match plan {
        Plan::Table { ident, files, .. } => {
            let t = commit::ensure_table(catalog.as_ref(), &ident, &Shape::DeadLetters).await?;
            DeadLetterSink::Table(Box::new(DeadLetterTable {
                files: *files,
                committer: Committer::new(catalog, ident, source.topic.clone(), retry, t),
                die_after_commit: die_after,
            }))
        }
        Plan::Topic { topic, ends } => {
            let producer = DeadLetterTopic::open(source, &topic).await.map_err(|e| {
                SinkError::DeadLetterTopic {
                    topic: topic.clone(),
                    reason: one_line(&e),
                }
            })?;
            DeadLetterSink::Topic(TopicSink {
                producer: Box::new(Producer(producer)),
                ends,
                die_after_produce: die_after,
            })
        }
    })
}

struct Producer(DeadLetterTopic);

#[async_trait::async_trait(?Send)]
impl LetterBox for Producer {
    fn topic(&self) -> &str {
        self.0.topic()
    }

    async fn produce(&self, letters: Vec<DeadLetter>) -> Result<Offsets, String> {
        self.0.produce(letters).await.map_err(|e| one_line(&e))
    }
}
