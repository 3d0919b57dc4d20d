//! Catalog and storage failures: a clear one-line error and exit code, and nothing partial
//! committed.

mod common;

use common::{Broker, assert_clean_failure, base_args, icefall, table_view};

#[test]
fn unreachable_catalog_incompatible_table_and_failing_store() {
    let broker = Broker::start();
    broker.create_topic("events", 2);
    broker.produce("events", 5_000, 50);

    // A catalog database in a directory that does not exist.
    let wh = tempfile::tempdir().unwrap();
    let w = wh.path().to_str().unwrap();
    let mut args = base_args(&broker.addr, "events", w);
    args.extend([
        "--stop-at-end",
        "--catalog",
        "sqlite:///no/such/dir/catalog.db?mode=rwc",
    ]);
    assert_clean_failure(&icefall(&args), 5, &["cannot open catalog", "/no/such/dir"]);

    // A table that exists with columns icefall cannot write.
    let wh2 = tempfile::tempdir().unwrap();
    create_foreign_table(wh2.path());
    let mut args = base_args(&broker.addr, "events", wh2.path().to_str().unwrap());
    args.push("--stop-at-end");
    assert_clean_failure(
        &icefall(&args),
        5,
        &["ns.events", "_kafka_partition is long, expected int"],
    );

    // A store that fails writes: the first run commits; then the data directory is replaced by a
    // file, so the next run's uploads fail. The table must be left exactly as it was.
    let wh3 = tempfile::tempdir().unwrap();
    let w3 = wh3.path().to_str().unwrap();
    let mut args = base_args(&broker.addr, "events", w3);
    args.extend(["--stop-at-end", "--commit-interval", "200ms"]);
    let out = icefall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = table_view(wh3.path(), "ns.events");
    assert!(before.snapshots > 0);
    broker.produce("events", 5_000, 50);
    let data = wh3.path().join("ns/events/data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, b"in the way").unwrap();
    assert_clean_failure(&icefall(&args), 4, &["uploading", "ns/events/data/"]);
    let after = table_view(wh3.path(), "ns.events");
    assert_eq!(
        after.snapshots, before.snapshots,
        "nothing partial was committed"
    );
    assert_eq!(after.summary, before.summary);
}

/// Creates `ns.events` with an incompatible schema through the same catalog icefall uses.
fn create_foreign_table(warehouse: &std::path::Path) {
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
    use iceberg::{NamespaceIdent, TableCreation};
    use icefall::sink::commit::{CatalogSpec, open_catalog};
    use icefall::sink::storage::ObjectStoreStorage;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let abs = std::fs::canonicalize(warehouse).unwrap();
        let spec = CatalogSpec {
            uri: format!("sqlite://{}?mode=rwc", abs.join("catalog.db").display()),
            warehouse_url: format!("file://{}", abs.display()),
        };
        let catalog = open_catalog(&spec, ObjectStoreStorage::local())
            .await
            .unwrap();
        let ns = NamespaceIdent::new("ns".into());
        catalog
            .create_namespace(&ns, Default::default())
            .await
            .unwrap();
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "_kafka_partition", Type::Primitive(PrimitiveType::Long))
                    .into(),
            ])
            .build()
            .unwrap();
        let creation = TableCreation::builder()
            .name("events".into())
            .schema(schema)
            .build();
        catalog.create_table(&ns, creation).await.unwrap();
    });
}
