//! Typed configuration: the command line parsed into values that cannot be wrong later.
//!
//! Owns the CLI surface (clap), the value types (`CoreList`, `ByteSize`, `Duration`, `StartAt`,
//! `TableIdent`) and `validate()`, which turns raw flags into a `RunConfig` or a `ConfigError` that
//! names the flag and the bad value. It does not know which cores are online (see `runtime`), nor
//! anything about Kafka, shards or storage beyond the shapes of their settings.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::routing::overload::OverloadMode;

mod formats;
pub mod group;
pub mod kafka;
pub mod layers;
pub mod maintain;
pub mod registry;
mod values;

pub use values::{
    ByteSize, CatalogKind, CoreList, LogFormat, StartAt, TableIdent, ValueFormat,
    WarehouseLocation, fmt_cores, parse_duration,
};

/// A flag or value the user gave that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{flag} is required: give the flag, {env}, or `{key}` in the --config file", env = env_name(flag), key = flag.trim_start_matches('-'))]
    Missing { flag: &'static str },
    #[error("{path}: {}", if key.is_empty() { reason.clone() } else { format!("key `{key}`: {reason}") })]
    File {
        path: String,
        key: String,
        reason: String,
    },
    /// A Kafka client setting (`--kafka-option`, `[kafka]`, `ICEFALL_KAFKA_*`); never its value
    /// when that is a secret.
    #[error("{source_name}: {reason}")]
    Kafka {
        source_name: String,
        key: String,
        reason: String,
    },
    #[error("{var} {value:?}: {reason}")]
    Env {
        var: String,
        value: String,
        reason: String,
    },
}

/// The environment variable that sets `flag`: `--commit-interval` → `ICEFALL_COMMIT_INTERVAL`.
pub fn env_name(flag: &str) -> String {
    format!(
        "ICEFALL_{}",
        flag.trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase()
    )
}

impl ConfigError {
    pub fn invalid(
        flag: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            flag,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "icefall",
    version,
    about = "Thread-per-core Kafka to Parquet/Iceberg processor"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a topic and land its records as Parquet files in the warehouse.
    Run(RunArgs),
    /// Re-read from Kafka every record the table's drop ledger names and no replay has appended
    /// yet, and append them as one snapshot that records them as replayed. Takes the same flags
    /// as `run` (placement and overload flags are ignored).
    ReplayDropped(RunArgs),
    /// Expire old snapshots and delete the files no kept snapshot reaches, keeping what resume and
    /// `replay-dropped` read. Takes the same flags as `run`; needs only --warehouse, --table (and
    /// --catalog where `run` needs it).
    Maintain(RunArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

impl Command {
    /// The settings every command takes.
    pub fn run_args(&self) -> &RunArgs {
        match self {
            Command::Run(a) | Command::ReplayDropped(a) | Command::Maintain(a) => a,
            Command::Config(ConfigCommand::Check(a)) => a,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (flags, ICEFALL_* variables, --config file) and print the
    /// effective settings with where each came from; exit 2 naming the bad key otherwise.
    Check(RunArgs),
}

/// Raw `icefall run` flags. `validate()` turns them into a [`RunConfig`].
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A TOML file of settings: keys are these flags' long names (`commit-interval = "10s"`).
    /// ICEFALL_* environment variables (`ICEFALL_COMMIT_INTERVAL`) override it; flags override
    /// both.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT..]. Required.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The topic to read. Required.
    #[arg(long)]
    pub topic: Option<String>,
    /// Warehouse: a directory, or s3://BUCKET[/PREFIX] (AWS_* environment variables, endpoint
    /// override included), or memory:// (this process's memory, gone at exit: for benchmarks).
    /// Data files go under <warehouse>/<namespace>/<table>/data/. Required.
    #[arg(long)]
    pub warehouse: Option<PathBuf>,
    /// Table as NAMESPACE.NAME. Required.
    #[arg(long)]
    pub table: Option<String>,
    /// Only these partitions (e.g. 0-3,7); default: all of the topic's partitions.
    #[arg(long)]
    pub partitions: Option<String>,
    /// Where to start: earliest, latest or an offset applied to every partition.
    #[arg(long, default_value = "earliest")]
    pub start: String,
    /// Cores for the fetch role (e.g. 0 or 0-1). Default: the first allowed core.
    #[arg(long)]
    pub fetch_cores: Option<String>,
    /// Cores for shard executors (e.g. 1-7). Default: every other allowed core (all on one core).
    #[arg(long)]
    pub shard_cores: Option<String>,
    /// Core for the io role (uploads). Default: the first fetch core.
    #[arg(long)]
    pub io_core: Option<String>,
    /// Number of hash shards, spread over the shard cores. Default: one per shard core.
    #[arg(long)]
    pub shards: Option<String>,
    /// Take each partition's high watermark at start, stop when every partition reaches it.
    #[arg(long)]
    pub stop_at_end: bool,
    /// Most bytes one fetch request may return per partition (fetch memory is at most twice
    /// partitions × this: the answer being routed and the next one arriving).
    #[arg(long, default_value = "4MiB")]
    pub fetch_max_bytes: String,
    /// Longest time the broker may hold a fetch waiting for data.
    #[arg(long, default_value = "500ms")]
    pub fetch_max_wait: String,
    /// Give up on a broker that does not answer for this long.
    #[arg(long, default_value = "30s")]
    pub kafka_timeout: String,
    /// read_committed: records of aborted transactions are skipped and a partition is read up to
    /// its last stable offset; read_uncommitted: every record is read.
    #[arg(long, default_value = "read_committed")]
    pub isolation: String,
    /// A Kafka client setting by librdkafka's name, KEY=VALUE (repeatable): security.protocol,
    /// ssl.ca.location, ssl.certificate.location, ssl.key.location, ssl.key.password,
    /// ssl.endpoint.identification.algorithm, sasl.mechanism, sasl.username, sasl.password,
    /// sasl.oauthbearer.token, sasl.oauthbearer.token.file. Also a [kafka] table in the config
    /// file and ICEFALL_KAFKA_<KEY> variables (sasl.password: ICEFALL_KAFKA_SASL_PASSWORD). A
    /// secret may be @/path to read it from a file
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
    pub kafka_option: Vec<String>,
    /// Capacity of each fetch→shard ring, in batches.
    #[arg(long, default_value = "64")]
    pub ring_batches: String,
    /// Capacity of each fetch→shard ring, in records (barriers always get in).
    #[arg(long, default_value = "65536")]
    pub queue_capacity: String,
    /// What a fetch core does with records bound for a full ring: block (wait; the data stays in
    /// Kafka), drop (drop them, name them in the snapshot's drop ledger), auto (block while any
    /// of its partitions is backfilling, drop once all are caught up).
    #[arg(long, default_value = "auto")]
    pub overload: String,
    /// Records behind the high watermark a caught-up partition may fall before it counts as
    /// backfilling again (it is caught up once a fetch reaches the high watermark).
    #[arg(long, default_value = "10000")]
    pub live_threshold: String,
    /// Test hook: SHARD:DURATION makes the core running SHARD sleep that long before each batch
    /// holding one of its records.
    #[arg(long, hide = true)]
    pub debug_slow_shard: Option<String>,
    /// Test hook: the process exits (code 137, as if killed) right after its first commit to the
    /// dead-letter table, before the main table's commit of the same epoch.
    #[arg(long, hide = true)]
    pub debug_die_after_dlq_commit: bool,
    /// How record values land: raw (a binary `value` column), json or avro (decoded into the
    /// fields `--schema` declares or the registry gives, in place of `value`).
    #[arg(long, default_value = "raw")]
    pub format: String,
    /// `--format json`: the value's fields as an Iceberg struct in the spec's JSON form,
    /// `{"type":"struct","fields":[{"id":1,"name":"id","required":true,"type":"long"},…]}`.
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// `--format json` without `--schema`: infer the value's fields from the first N records of
    /// the topic (all optional) when the table does not exist yet; an existing table's columns
    /// are used as they are.
    #[arg(long)]
    pub infer_schema: Option<String>,
    /// With --infer-schema: a top-level JSON field the table has no column for becomes an
    /// optional column (its type inferred from the records that carry it), added in the same
    /// commit as the first files holding it. Without it such fields are ignored and counted
    /// (icefall_unknown_fields_total).
    #[arg(long)]
    pub evolve: bool,
    /// `--format avro` with Confluent's wire format (magic byte, 4-byte schema id): the schema
    /// registry to fetch writer schemas from, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    pub schema_registry: Option<String>,
    /// Values larger than this are not decoded (the record is rejected, naming its offset).
    #[arg(long, default_value = "1MiB")]
    pub max_record_bytes: String,
    /// Set records that cannot be decoded aside in this Iceberg table (NAMESPACE.NAME; created
    /// on first use), committed with the main table. Without --dlq-table or --dlq-topic such a
    /// record fails the run (exit 7).
    #[arg(long)]
    pub dlq_table: Option<String>,
    /// Set records that cannot be decoded aside in this Kafka topic (key, value and headers as
    /// they were, plus icefall.error and icefall.source.{topic,partition,offset} headers).
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Rows per Arrow record batch handed to the Parquet encoder.
    #[arg(long, default_value = "8192")]
    pub batch_rows: String,
    /// Roll a data file once its encoded size reaches this.
    #[arg(long, default_value = "128MiB")]
    pub file_max_bytes: String,
    /// Roll a data file once it holds this many rows.
    #[arg(long, default_value = "10000000")]
    pub file_max_rows: String,
    /// Rows per Parquet row group. A written row group is uploaded while its file goes on, so
    /// this (not --file-max-bytes) bounds what a shard core holds of an open file.
    #[arg(long, default_value = "131072")]
    pub row_group_rows: String,
    /// zstd level for Parquet pages (1-22).
    #[arg(long, default_value = "1")]
    pub zstd_level: String,
    /// Iceberg catalog: sqlite://PATH, postgres://USER:PASS@HOST/DB or http(s)://REST-ENDPOINT.
    /// Default: the SQL catalog on SQLite at <warehouse>/catalog.db (local warehouses).
    #[arg(long)]
    pub catalog: Option<String>,
    /// Commit one Iceberg snapshot (files and offsets) this often.
    #[arg(long, default_value = "10s")]
    pub commit_interval: String,
    /// First wait before retrying a failed commit (doubles each time, with full jitter).
    #[arg(long, default_value = "100ms")]
    pub commit_retry_base: String,
    /// Longest wait between commit attempts.
    #[arg(long, default_value = "10s")]
    pub commit_retry_cap: String,
    /// Attempts per commit before the run fails.
    #[arg(long, default_value = "10")]
    pub commit_retries: String,
    /// After SIGINT/SIGTERM, how long fetching may drain into a final commit before icefall
    /// gives up and exits 5 (nothing is lost: Kafka still holds what was not committed).
    #[arg(long, default_value = "30s")]
    pub drain_timeout: String,
    /// HOST:PORT for /metrics, /health, /ready and /status (port 0 picks a free port, logged),
    /// or `off`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http_addr: String,
    /// Logs on stderr as `text` or `json` (one object per line).
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// How often the progress line is logged when stderr is not a terminal (on a terminal, a
    /// status line is redrawn every second); `0s` turns it off.
    #[arg(long, default_value = "10s")]
    pub progress_interval: String,
    #[command(flatten)]
    pub group: group::GroupArgs,
    #[command(flatten)]
    pub maintain: maintain::MaintainArgs,
}

/// Everything `icefall run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    pub warehouse: WarehouseLocation,
    pub table: TableIdent,
    pub partitions: Option<Vec<i32>>,
    pub start: StartAt,
    pub fetch_cores: Option<CoreList>,
    pub shard_cores: Option<CoreList>,
    pub io_core: Option<usize>,
    pub shards: Option<NonZeroU32>,
    pub stop_at_end: bool,
    pub fetch_max_bytes: ByteSize,
    pub fetch_max_wait: Duration,
    pub kafka_timeout: Duration,
    pub isolation: crate::kafka::Isolation,
    /// TLS and SASL to the brokers (`--kafka-option`).
    pub kafka_security: crate::kafka::Security,
    pub ring_batches: NonZeroUsize,
    pub queue_capacity: NonZeroUsize,
    pub overload: OverloadMode,
    pub live_threshold: u64,
    pub slow_shard: Option<(u32, Duration)>,
    pub die_after_dlq_commit: bool,
    pub batch_rows: NonZeroUsize,
    pub file_max_bytes: ByteSize,
    pub file_max_rows: NonZeroU64,
    pub row_group_rows: NonZeroUsize,
    pub zstd_level: i32,
    pub catalog: Option<CatalogKind>,
    pub commit_interval: Duration,
    pub commit_retry_base: Duration,
    pub commit_retry_cap: Duration,
    pub commit_retries: std::num::NonZeroU32,
    pub format: ValueFormat,
    /// `--format json`: the declared value fields (Iceberg struct JSON).
    pub schema: Option<PathBuf>,
    pub infer_schema: Option<NonZeroUsize>,
    /// `--evolve`: new JSON fields become columns.
    pub evolve: bool,
    /// `--format avro` in Confluent's wire format: the registry, its URL without credentials.
    pub schema_registry: Option<crate::decode::registry::Registry>,
    pub max_record_bytes: ByteSize,
    /// `--dlq-table` or `--dlq-topic`: where undecodable records go; `None`: they fail the run.
    pub dead_letters: Option<DeadLetterDest>,
    pub drain_timeout: Duration,
    /// `None`: no HTTP endpoint.
    pub http_addr: Option<std::net::SocketAddr>,
    pub log_format: LogFormat,
    /// `None`: no periodic progress line.
    pub progress_interval: Option<Duration>,
    /// `--group`: the consumer-group member's settings; `None`: the static mode.
    pub group: Option<crate::kafka::group::GroupConfig>,
    /// `icefall maintain`'s settings.
    pub maintain: maintain::MaintainConfig,
}

/// Where records that cannot be decoded go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterDest {
    /// `--dlq-table`: an Iceberg table, committed before the main table each epoch.
    Table(TableIdent),
    /// `--dlq-topic`: a Kafka topic, produced to before the main table's commit each epoch.
    Topic(String),
}

/// Most shards a run may have; shard ids travel as `u32` but per-shard state is kept per id.
pub const MAX_SHARDS: u32 = 65_536;

fn field<T: FromStr>(flag: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value
        .parse::<T>()
        .map_err(|e| ConfigError::invalid(flag, value, e.to_string()))
}

/// `Err` naming the flag and value unless `ok`.
fn ensure(
    ok: bool,
    flag: &'static str,
    value: impl fmt::Display,
    reason: impl Into<String>,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(flag, value, reason))
    }
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).map_err(|e| ConfigError::invalid(flag, value, e))
}

fn positive_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = duration(flag, value)?;
    ensure(!d.is_zero(), flag, value, "must be positive")?;
    Ok(d)
}

impl RunArgs {
    /// Checks every flag once; the error names the flag and its bad value.
    pub fn validate(&self) -> Result<RunConfig, ConfigError> {
        self.validate_for(true)
    }

    /// [`RunArgs::validate`] for `maintain`, which reads no topic: `--brokers` and `--topic` may be
    /// absent (then empty).
    pub fn validate_for_maintain(&self) -> Result<RunConfig, ConfigError> {
        self.validate_for(false)
    }

    fn validate_for(&self, kafka: bool) -> Result<RunConfig, ConfigError> {
        let required =
            |v: &Option<String>, flag: &'static str| v.clone().ok_or(ConfigError::Missing { flag });
        let optional = |v: &Option<String>, flag| match kafka {
            true => required(v, flag),
            false => Ok(v.clone().unwrap_or_default()),
        };
        let brokers_list = optional(&self.brokers, "--brokers")?;
        let topic = optional(&self.topic, "--topic")?;
        let table = required(&self.table, "--table")?;
        let warehouse_path = self.warehouse.clone().ok_or(ConfigError::Missing {
            flag: "--warehouse",
        })?;
        let mut brokers = Vec::new();
        for b in brokers_list
            .split(',')
            .filter(|b| kafka || !b.trim().is_empty())
        {
            let b = b.trim();
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            ensure(ok, "--brokers", b, "expected HOST:PORT")?;
            brokers.push(b.to_string());
        }
        ensure(
            !kafka || !topic.is_empty(),
            "--topic",
            "",
            "the topic name is empty",
        )?;
        ensure(
            !warehouse_path.as_os_str().is_empty(),
            "--warehouse",
            "",
            "the path is empty",
        )?;
        let partitions = match &self.partitions {
            None => None,
            Some(s) => {
                let list: CoreList = field("--partitions", s)?;
                let mut ps = Vec::with_capacity(list.len());
                for &p in list.cores() {
                    let p = i32::try_from(p).map_err(|_| {
                        ConfigError::invalid("--partitions", s, "partition number too large")
                    })?;
                    ps.push(p);
                }
                Some(ps)
            }
        };
        let shards = match &self.shards {
            None => None,
            Some(s) => {
                let n: NonZeroU32 = field("--shards", s)?;
                ensure(
                    n.get() <= MAX_SHARDS,
                    "--shards",
                    s,
                    format!("at most {MAX_SHARDS}"),
                )?;
                Some(n)
            }
        };
        let io_core = self
            .io_core
            .as_deref()
            .map(|s| field::<usize>("--io-core", s))
            .transpose()?;
        let fetch_max_bytes: ByteSize = field("--fetch-max-bytes", &self.fetch_max_bytes)?;
        ensure(
            fetch_max_bytes.0 > 0 && fetch_max_bytes.0 <= i32::MAX as u64,
            "--fetch-max-bytes",
            &self.fetch_max_bytes,
            "must be between 1B and 2GiB",
        )?;
        let fetch_max_wait = duration("--fetch-max-wait", &self.fetch_max_wait)?;
        ensure(
            fetch_max_wait <= Duration::from_secs(60),
            "--fetch-max-wait",
            &self.fetch_max_wait,
            "at most 60s",
        )?;
        let kafka_timeout = positive_duration("--kafka-timeout", &self.kafka_timeout)?;
        let file_max_bytes: ByteSize = field("--file-max-bytes", &self.file_max_bytes)?;
        ensure(
            file_max_bytes.0 >= 1024,
            "--file-max-bytes",
            &self.file_max_bytes,
            "at least 1KiB",
        )?;
        let commit_interval = positive_duration("--commit-interval", &self.commit_interval)?;
        let commit_retry_base = positive_duration("--commit-retry-base", &self.commit_retry_base)?;
        let commit_retry_cap = positive_duration("--commit-retry-cap", &self.commit_retry_cap)?;
        ensure(
            commit_retry_cap >= commit_retry_base,
            "--commit-retry-cap",
            &self.commit_retry_cap,
            format!(
                "must be at least --commit-retry-base {}",
                self.commit_retry_base
            ),
        )?;
        let warehouse = WarehouseLocation::parse(&warehouse_path)
            .map_err(|e| ConfigError::invalid("--warehouse", warehouse_path.display(), e))?;
        let catalog: Option<CatalogKind> = self
            .catalog
            .as_deref()
            .map(|c| field("--catalog", c))
            .transpose()?;
        ensure(
            catalog.is_some() || matches!(warehouse, WarehouseLocation::Local(_)),
            "--warehouse",
            warehouse_path.display(),
            "an s3:// or memory:// warehouse needs --catalog (sqlite://PATH, postgres://… or http(s)://…)",
        )?;
        let slow_shard = match &self.debug_slow_shard {
            None => None,
            Some(s) => {
                let (shard, d) = s.split_once(':').ok_or_else(|| {
                    ConfigError::invalid("--debug-slow-shard", s, "expected SHARD:DURATION")
                })?;
                Some((
                    field("--debug-slow-shard", shard)?,
                    duration("--debug-slow-shard", d)?,
                ))
            }
        };
        let zstd_level: i32 = field("--zstd-level", &self.zstd_level)?;
        ensure(
            (1..=22).contains(&zstd_level),
            "--zstd-level",
            &self.zstd_level,
            "must be 1 to 22",
        )?;
        let http_addr = match self.http_addr.as_str() {
            "off" => None,
            a => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
                ConfigError::invalid(
                    "--http-addr",
                    a,
                    "expected HOST:PORT with an IP (e.g. 127.0.0.1:9464) or off",
                )
            })?),
        };
        let progress_interval = duration("--progress-interval", &self.progress_interval)?;
        let (format, infer_schema) = self.value_format()?;
        let dead_letters = self.dead_letters(format, &table, &topic)?;
        let max_record_bytes: ByteSize = field("--max-record-bytes", &self.max_record_bytes)?;
        ensure(
            max_record_bytes.0 > 0,
            "--max-record-bytes",
            &self.max_record_bytes,
            "must be positive",
        )?;
        let group = self.group_config(&topic)?;
        Ok(RunConfig {
            brokers,
            topic,
            warehouse,
            table: field("--table", &table)?,
            partitions,
            start: field("--start", &self.start)?,
            fetch_cores: self
                .fetch_cores
                .as_deref()
                .map(|s| field("--fetch-cores", s))
                .transpose()?,
            shard_cores: self
                .shard_cores
                .as_deref()
                .map(|s| field("--shard-cores", s))
                .transpose()?,
            io_core,
            shards,
            stop_at_end: self.stop_at_end,
            fetch_max_bytes,
            fetch_max_wait,
            kafka_timeout,
            isolation: field("--isolation", &self.isolation)?,
            kafka_security: kafka::security(&self.kafka_option)?,
            ring_batches: field("--ring-batches", &self.ring_batches)?,
            queue_capacity: field("--queue-capacity", &self.queue_capacity)?,
            overload: field("--overload", &self.overload)?,
            live_threshold: field("--live-threshold", &self.live_threshold)?,
            slow_shard,
            die_after_dlq_commit: self.debug_die_after_dlq_commit,
            batch_rows: field("--batch-rows", &self.batch_rows)?,
            file_max_bytes,
            file_max_rows: field("--file-max-rows", &self.file_max_rows)?,
            row_group_rows: field("--row-group-rows", &self.row_group_rows)?,
            zstd_level,
            catalog,
            commit_interval,
            commit_retry_base,
            commit_retry_cap,
            commit_retries: field("--commit-retries", &self.commit_retries)?,
            format,
            schema: self.schema.clone(),
            infer_schema,
            evolve: self.evolve,
            schema_registry: registry::registry(
                &self.kafka_option,
                self.schema_registry.as_deref(),
            )?,
            max_record_bytes,
            dead_letters,
            drain_timeout: positive_duration("--drain-timeout", &self.drain_timeout)?,
            http_addr,
            log_format: field("--log-format", &self.log_format)?,
            progress_interval: (!progress_interval.is_zero()).then_some(progress_interval),
            group,
            maintain: self.maintain.validate()?,
        })
    }
}

#[cfg(test)]
mod tests;
