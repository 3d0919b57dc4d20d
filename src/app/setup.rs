//! Start-up helpers of a run: the settings each role takes from the config, the table's shape
//! (declared, read from the table, or inferred from Kafka), the HTTP listener, and the
//! dead-letter destination with what an earlier run already set aside.

use crate::config::{CatalogKind, ConfigError, RunConfig, ValueFormat, WarehouseLocation};
use crate::decode::avro::AvroSchemas;
use crate::runtime::RuntimeError;
use crate::sink::commit::CatalogSpec;
use crate::sink::encode::EncodeOptions;
use crate::sink::schema::Shape;
use crate::source::{self, PartitionPlan, SourceConfig};

use super::Error;

/// Binds `--http-addr` before anything starts, so a taken port fails the run at once.
pub(super) fn listen(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, Error> {
    let bad = |e: std::io::Error| {
        ConfigError::invalid("--http-addr", addr, format!("cannot listen: {e}"))
    };
    let l = std::net::TcpListener::bind(addr).map_err(bad)?;
    l.set_nonblocking(true).map_err(bad)?;
    let bound = l.local_addr().map_err(bad)?;
    tracing::info!(addr = %bound, "http: serving /metrics /health /ready /status");
    Ok(l)
}

/// What the table holds besides the Kafka columns, from `--format` and `--schema`; `None` when
/// it is to be inferred (`--infer-schema`): from the table if it exists, else from Kafka.
pub(crate) fn table_shape(
    cfg: &RunConfig,
    avro: Option<&AvroSchemas>,
) -> Result<Option<Shape>, Error> {
    if cfg.format == ValueFormat::Raw {
        return Ok(Some(Shape::Raw));
    }
    if let Some(schemas) = avro {
        let (flag, value) = match (&cfg.schema, &cfg.schema_registry) {
            (Some(p), _) => ("--schema", p.display().to_string()),
            (None, r) => (
                "--schema-registry",
                r.as_ref().map(|r| r.url.clone()).unwrap_or_default(),
            ),
        };
        let bad = |reason: String| ConfigError::invalid(flag, &value, reason);
        let fields = schemas.arrow_schema().map_err(bad)?;
        return Ok(Some(Shape::from_arrow(&fields).map_err(bad)?));
    }
    let Some(path) = &cfg.schema else {
        return Ok(None);
    };
    let bad = |reason: String| ConfigError::invalid("--schema", path.display(), reason);
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    Ok(Some(Shape::parse_typed(&text).map_err(bad)?))
}

/// `--format avro`: the writer schemas, from the `.avsc` file or the registry.
pub(crate) fn avro_schemas(
    cfg: &RunConfig,
    setup: &tokio::runtime::Runtime,
) -> Result<Option<AvroSchemas>, Error> {
    if cfg.format != ValueFormat::Avro {
        return Ok(None);
    }
    let schemas = match (&cfg.schema, &cfg.schema_registry) {
        (Some(path), _) => {
            let bad = |reason: String| ConfigError::invalid("--schema", path.display(), reason);
            let text =
                std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
            AvroSchemas::plain(&text).map_err(bad)?
        }
        (None, Some(registry)) => setup
            .block_on(crate::decode::registry::subject_versions(
                registry, &cfg.topic,
            ))
            .map_err(|reason| ConfigError::invalid("--schema-registry", &registry.url, reason))?,
        (None, None) => {
            return Err(ConfigError::invalid(
                "--format",
                "avro",
                "needs --schema or --schema-registry",
            )
            .into());
        }
    };
    Ok(Some(schemas))
}

/// `--infer-schema N`: the value fields of the first N records (all optional).
pub(super) fn infer_shape(
    setup: &tokio::runtime::Runtime,
    source_cfg: &SourceConfig,
    plans: &[PartitionPlan],
    n: usize,
) -> Result<Shape, Error> {
    let records = setup.block_on(source::sample(source_cfg, plans, n))?;
    let values: Vec<&[u8]> = records.iter().filter_map(|r| r.value.as_deref()).collect();
    let bad = |reason: String| ConfigError::invalid("--infer-schema", n, reason);
    let fields = crate::decode::json::infer_fields(&values).map_err(bad)?;
    let shape = Shape::from_arrow(&fields).map_err(bad)?;
    tracing::info!(records = records.len(), fields = ?fields.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>(), "inferred the value's fields");
    Ok(shape)
}

pub(crate) fn setup_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::Runtime(RuntimeError::Spawn {
                role: "setup",
                core: 0,
                reason: e.to_string(),
            })
        })
}

/// Kafka settings of a run.
pub(crate) fn source_config(cfg: &RunConfig) -> SourceConfig {
    SourceConfig {
        brokers: cfg.brokers.clone(),
        topic: cfg.topic.clone(),
        fetch_max_bytes: cfg.fetch_max_bytes.0 as i32,
        fetch_max_wait: cfg.fetch_max_wait,
        timeout: cfg.kafka_timeout,
        isolation: cfg.isolation,
        security: cfg.kafka_security.clone(),
    }
}

/// The catalog a run uses: `--catalog`, or SQLite in a local warehouse.
pub(crate) fn catalog_spec(cfg: &RunConfig, warehouse_url: String) -> Result<CatalogSpec, Error> {
    let uri = match (&cfg.catalog, &cfg.warehouse) {
        (Some(CatalogKind::Sqlite(u) | CatalogKind::Postgres(u) | CatalogKind::Rest(u)), _) => {
            u.clone()
        }
        (None, WarehouseLocation::Local(_)) => {
            let dir = warehouse_url.trim_start_matches("file://");
            format!("sqlite://{dir}/catalog.db?mode=rwc")
        }
        (None, WarehouseLocation::S3 { .. } | WarehouseLocation::Memory) => {
            return Err(ConfigError::invalid(
                "--catalog",
                "",
                "an s3:// or memory:// warehouse needs --catalog",
            )
            .into());
        }
    };
    Ok(CatalogSpec { uri, warehouse_url })
}

pub(crate) fn encode_options(cfg: &RunConfig, avro: Option<AvroSchemas>) -> EncodeOptions {
    EncodeOptions {
        zstd_level: cfg.zstd_level,
        row_group_rows: usize::try_from(cfg.file_max_rows.get())
            .unwrap_or(usize::MAX)
            .min(cfg.row_group_rows.get()),
        max_record_bytes: usize::try_from(cfg.max_record_bytes.0).unwrap_or(usize::MAX),
        avro,
        arrow_writer: false,
    }
}
