//! The two rewrites of a maintenance pass, each one `replace` snapshot (`replace::commit`):
//! merging the current snapshot's small manifests (`maintain::plan_merge`; every entry kept as
//! EXISTING with its snapshot id and sequence numbers) and compacting small data files
//! (`maintain::plan_compaction`; inputs marked DELETED with their sequence numbers, outputs added
//! with the starting snapshot's). A lost compare-and-swap is tried again on the writer's new head
//! (`replace::commit_on_head`: writers only add manifests). When another rewrite took a replaced
//! manifest, a merge plans again from scratch, and a compaction keeps only the bins whose
//! inputs are all still live (the outputs of the others are deleted; they were certainly never
//! committed).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use iceberg::Catalog;
use iceberg::spec::{DataFile, ManifestContentType, ManifestEntryRef, ManifestFile};
use iceberg::table::Table;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::SinkError;
use super::chunks::Chunks;
use super::commit::catalog_err;
use super::files::TableFiles;
use super::replace::{self, Change, Pointer, Rebased};
use super::storage::ObjectStoreStorage;
use crate::config::TableIdent;
use crate::maintain::{CompactPolicy, Item, MergePolicy, plan_compaction, plan_merge};

/// Attempts of a rewrite whose swap loses to writers.
const ATTEMPTS: u32 = 5;
/// Rows per batch read back from a compacted input.
const READ_BATCH_ROWS: usize = 8 * 1024;
/// Rows per row group of a compacted file.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Multipart parts in flight per compacted file.
const PARTS_IN_FLIGHT: usize = 2;

/// The current snapshot's manifests and their entries.
struct Current {
    table: Table,
    manifests: Vec<ManifestFile>,
    entries: HashMap<String, Vec<ManifestEntryRef>>,
}

async fn load(catalog: &dyn Catalog, ident: &TableIdent) -> Result<Option<Current>, SinkError> {
    let table = super::commit::load(catalog, ident).await?;
    if !replace::rewritable(&table) {
        tracing::info!(table = %ident, "not a format version 2 table: no rewrites");
        return Ok(None);
    }
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(None);
    };
    let what = || format!("reading the manifests of {ident}");
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(catalog_err(what()))?;
    let manifests = list.entries().to_vec();
    let mut entries = HashMap::new();
    for m in &manifests {
        let loaded = m
            .load_manifest(table.file_io())
            .await
            .map_err(catalog_err(what()))?;
        entries.insert(m.manifest_path.clone(), loaded.entries().to_vec());
    }
    Ok(Some(Current {
        table,
        manifests,
        entries,
    }))
}

fn broken(ident: &TableIdent, reason: String) -> SinkError {
    SinkError::Maintain {
        table: ident.to_string(),
        reason,
    }
}

/// The sequence numbers an EXISTING or DELETED copy of `e` keeps.
fn numbers(ident: &TableIdent, e: &ManifestEntryRef) -> Result<(i64, i64, Option<i64>), SinkError> {
    let path = e.file_path();
    let snapshot = e
        .snapshot_id()
        .ok_or_else(|| broken(ident, format!("manifest entry {path} has no snapshot id")))?;
    let seq = e.sequence_number().ok_or_else(|| {
        broken(
            ident,
            format!("manifest entry {path} has no sequence number"),
        )
    })?;
    Ok((snapshot, seq, e.file_sequence_number.or(Some(seq))))
}

/// Merges the current snapshot's small data manifests (`dry`: plans only; the pass's line
/// reports the manifests the table has).
pub async fn merge_manifests(
    catalog: &dyn Catalog,
    pointer: &Pointer,
    ident: &TableIdent,
    policy: MergePolicy,
    dry: bool,
) -> Result<(), SinkError> {
    for attempt in 1..=ATTEMPTS {
        let Some(cur) = load(catalog, ident).await? else {
            return Ok(());
        };
        let items: Vec<Item> = cur
            .manifests
            .iter()
            .map(|m| Item {
                bytes: m.manifest_length.max(0) as u64,
                group: match m.content {
                    ManifestContentType::Data => m.partition_spec_id as u64,
                    ManifestContentType::Deletes => u64::MAX,
                },
            })
            .collect();
        let default_spec = cur.table.metadata().default_partition_spec_id() as u64;
        let bins: Vec<Vec<usize>> = plan_merge(&items, policy)
            .into_iter()
            .filter(|b| items[b[0]].group == default_spec)
            .collect();
        if bins.is_empty() || dry {
            return Ok(());
        }
        let sid = replace::new_snapshot_id(&cur.table);
        let mut written: Vec<ManifestFile> = Vec::new();
        let mut replaced = BTreeSet::new();
        for (n, bin) in bins.iter().enumerate() {
            let mut w = replace::manifest_writer(&cur.table, sid, n)?;
            for &i in bin {
                replaced.insert(cur.manifests[i].manifest_path.clone());
                let entries = &cur.entries[&cur.manifests[i].manifest_path];
                for e in entries.iter().filter(|e| e.is_alive()) {
                    let (snapshot, seq, file_seq) = numbers(ident, e)?;
                    w.add_existing_file(e.data_file().clone(), snapshot, seq, file_seq)
                        .map_err(catalog_err("cannot merge manifests"))?;
                }
            }
            let m = w
                .write_manifest_file()
                .await
                .map_err(catalog_err("cannot write a merged manifest"))?;
            written.push(m);
        }
        let change = Change {
            replaced: &replaced,
            manifests: &written,
            added: &[],
            deleted: &[],
            what: "merge-manifests",
        };
        match replace::commit_on_head(catalog, pointer, ident, sid, change).await? {
            Rebased::Done => return Ok(()),
            Rebased::Gone => {
                let paths: Vec<String> = written.iter().map(|m| m.manifest_path.clone()).collect();
                replace::delete_quietly(&cur.table, &paths).await;
                tracing::info!(
                    attempt,
                    "another rewrite took these manifests: merging again"
                );
            }
        }
    }
    Ok(())
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub files: usize,
    pub into: usize,
    pub bytes_read: u64,
}

/// One rewritten bin: its inputs (with the numbers their DELETED entries keep) and its output.
struct Done {
    inputs: Vec<ManifestEntryRef>,
    output: DataFile,
}

/// The group of files that may share a bin: same partition, same columns (icefall's tables
/// have one partition spec).
fn file_group(f: &DataFile) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", f.partition()).hash(&mut h);
    let mut cols: Vec<i32> = f.column_sizes().keys().copied().collect();
    cols.sort_unstable();
    cols.hash(&mut h);
    h.finish()
}

/// Compacts the current snapshot's small data files into files of about `target_bytes`.
pub async fn compact(
    catalog: &dyn Catalog,
    pointer: &Pointer,
    storage: &ObjectStoreStorage,
    ident: &TableIdent,
    target_bytes: u64,
    dry: bool,
) -> Result<Compacted, SinkError> {
    let Some(cur) = load(catalog, ident).await? else {
        return Ok(Compacted::default());
    };
    // Rewriting a data file that delete files point at would bring deleted rows back.
    if cur
        .manifests
        .iter()
        .any(|m| m.content == ManifestContentType::Deletes)
    {
        tracing::info!(table = %ident, "the table has delete files: no compaction");
        return Ok(Compacted::default());
    }
    let mut live: Vec<ManifestEntryRef> = cur
        .manifests
        .iter()
        .filter(|m| m.content == ManifestContentType::Data)
        .flat_map(|m| {
            cur.entries[&m.manifest_path]
                .iter()
                .filter(|e| e.is_alive())
                .cloned()
        })
        .collect();
    // Oldest first: a compacted file keeps each key's records in commit order (the files of
    // one commit hold disjoint keys, one shard core each).
    live.sort_by(|a, b| {
        (a.sequence_number(), a.file_path()).cmp(&(b.sequence_number(), b.file_path()))
    });
    let items: Vec<Item> = live
        .iter()
        .map(|e| Item {
            bytes: e.file_size_in_bytes(),
            group: file_group(e.data_file()),
        })
        .collect();
    let bins = plan_compaction(&items, CompactPolicy::for_target(target_bytes));
    let mut out = Compacted::default();
    if dry {
        out.files = bins.iter().map(Vec::len).sum();
        out.into = bins.len();
        return Ok(out);
    }
    let start_seq = cur
        .table
        .metadata()
        .current_snapshot()
        .map_or(0, |s| s.sequence_number());
    let mut done = Vec::new();
    for bin in &bins {
        let inputs: Vec<ManifestEntryRef> = bin.iter().map(|&i| live[i].clone()).collect();
        if let Some((output, read)) = rewrite_files(&cur.table, storage, &inputs).await? {
            out.bytes_read += read;
            done.push(Done { inputs, output });
        }
    }
    let mut head = cur;
    for attempt in 1..=ATTEMPTS {
        if done.is_empty() {
            break;
        }
        let sid = replace::new_snapshot_id(&head.table);
        let (replaced, manifest, added, deleted) =
            compaction_manifests(&head, ident, sid, start_seq, &done).await?;
        let written = vec![manifest.manifest_path.clone()];
        let change = Change {
            replaced: &replaced,
            manifests: std::slice::from_ref(&manifest),
            added: &added,
            deleted: &deleted,
            what: "compact",
        };
        match replace::commit_on_head(catalog, pointer, ident, sid, change).await? {
            Rebased::Done => {
                out.files += done.iter().map(|d| d.inputs.len()).sum::<usize>();
                out.into += done.len();
                return Ok(out);
            }
            Rebased::Gone => {
                replace::delete_quietly(&head.table, &written).await;
                tracing::info!(
                    attempt,
                    "the manifests changed under the compaction: checking the inputs again"
                );
                let Some(next) = load(catalog, ident).await? else {
                    break;
                };
                head = next;
                let alive: BTreeSet<&str> = head
                    .entries
                    .values()
                    .flatten()
                    .filter(|e| e.is_alive())
                    .map(|e| e.file_path())
                    .collect();
                let (keep, gone): (Vec<Done>, Vec<Done>) = std::mem::take(&mut done)
                    .into_iter()
                    .partition(|d| d.inputs.iter().all(|e| alive.contains(e.file_path())));
                let abandoned: Vec<String> = gone
                    .iter()
                    .map(|d| d.output.file_path().to_owned())
                    .collect();
                if !abandoned.is_empty() {
                    tracing::info!(
                        bins = abandoned.len(),
                        "inputs rewritten by another: bins abandoned"
                    );
                }
                replace::delete_quietly(&head.table, &abandoned).await;
                done = keep;
            }
        }
    }
    // Every attempt certainly lost: nothing of these outputs is in the table.
    let left: Vec<String> = done
        .iter()
        .map(|d| d.output.file_path().to_owned())
        .collect();
    replace::delete_quietly(&head.table, &left).await;
    Ok(out)
}

/// A compaction's change on `head`: the manifests holding an input are replaced by one new
/// manifest with their other live entries EXISTING, the inputs DELETED and the outputs ADDED.
async fn compaction_manifests(
    head: &Current,
    ident: &TableIdent,
    sid: i64,
    start_seq: i64,
    done: &[Done],
) -> Result<(BTreeSet<String>, ManifestFile, Vec<DataFile>, Vec<DataFile>), SinkError> {
    let inputs: BTreeSet<&str> = done
        .iter()
        .flat_map(|d| d.inputs.iter().map(|e| e.file_path()))
        .collect();
    let mut w = replace::manifest_writer(&head.table, sid, 0)?;
    let mut replaced = BTreeSet::new();
    let mut deleted = Vec::new();
    for m in &head.manifests {
        let entries = &head.entries[&m.manifest_path];
        let touched = m.content == ManifestContentType::Data
            && entries
                .iter()
                .any(|e| e.is_alive() && inputs.contains(e.file_path()));
        if !touched {
            continue;
        }
        replaced.insert(m.manifest_path.clone());
        for e in entries.iter().filter(|e| e.is_alive()) {
            let (snapshot, seq, file_seq) = numbers(ident, e)?;
            let f = e.data_file().clone();
            let res = if inputs.contains(e.file_path()) {
                deleted.push(f.clone());
                w.add_delete_file(f, seq, file_seq)
            } else {
                w.add_existing_file(f, snapshot, seq, file_seq)
            };
            res.map_err(catalog_err("cannot write the compaction's manifest"))?;
        }
    }
    let added: Vec<DataFile> = done.iter().map(|d| d.output.clone()).collect();
    for f in &added {
        w.add_file(f.clone(), start_seq)
            .map_err(catalog_err("cannot write the compaction's manifest"))?;
    }
    let m = w
        .write_manifest_file()
        .await
        .map_err(catalog_err("cannot write the compaction's manifest"))?;
    Ok((replaced, m, added, deleted))
}

/// Rewrites `inputs` (in order) into one file; `None` if their Arrow schemas differ. Memory is
/// bounded by one input and one row group of the output.
async fn rewrite_files(
    table: &Table,
    storage: &ObjectStoreStorage,
    inputs: &[ManifestEntryRef],
) -> Result<Option<(DataFile, u64)>, SinkError> {
    let meta = table.metadata();
    let files = TableFiles {
        storage: storage.clone(),
        location: meta.location().to_string(),
        schema: meta.current_schema().as_ref().clone(),
        partition_spec_id: meta.default_partition_spec_id(),
        evolution: None,
    };
    let rel = format!("data/compacted-{}.parquet", uuid::Uuid::new_v4());
    let mut stream: Option<super::files::Stream> = None;
    let mut writer: Option<(ArrowWriter<Chunks>, arrow_schema::SchemaRef)> = None;
    let mut read = 0u64;
    let parquet_err = |source| SinkError::Encode { core: 0, source };
    for e in inputs {
        let path = e.file_path();
        let input = table
            .file_io()
            .new_input(path)
            .map_err(catalog_err(format!("cannot read {path}")))?;
        // Read whole only at the size its manifest entry planned (and bounded) it at.
        let size = input
            .metadata()
            .await
            .map_err(catalog_err(format!("cannot read {path}")))?
            .size;
        if size != e.file_size_in_bytes() {
            let listed = e.file_size_in_bytes();
            tracing::warn!(
                path,
                size,
                listed,
                "a file's size is not its manifest entry's: bin left"
            );
            give_up(stream).await;
            return Ok(None);
        }
        let bytes: Bytes = input
            .read()
            .await
            .map_err(catalog_err(format!("cannot read {path}")))?;
        read += bytes.len() as u64;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(parquet_err)?
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(parquet_err)?;
        let schema = arrow_array::RecordBatchReader::schema(&reader);
        let w = match &mut writer {
            Some((w, first)) if *first == schema => w,
            Some(_) => {
                tracing::info!(files = inputs.len(), "inputs differ in schema: bin left");
                give_up(stream).await;
                return Ok(None);
            }
            None => {
                let props = super::props::writer_properties(
                    &schema,
                    1,
                    ROW_GROUP_ROWS,
                    super::props::Sample::Compresses,
                )
                .map_err(parquet_err)?;
                stream = Some(files.open_stream(&rel).await?);
                let w = ArrowWriter::try_new(Chunks::new(), Arc::clone(&schema), Some(props))
                    .map_err(parquet_err)?;
                &mut writer.insert((w, schema)).0
            }
        };
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(e.into()))?;
            w.write(&batch).map_err(parquet_err)?;
            let parts = w.inner_mut().take_done();
            if let Some(s) = stream.as_mut() {
                s.push(parts, PARTS_IN_FLIGHT).await?;
            }
        }
    }
    let (Some((mut w, _)), Some(s)) = (writer, stream) else {
        return Ok(None);
    };
    let metadata = w.finish().map_err(parquet_err)?;
    let rest = std::mem::take(w.inner_mut());
    let size = rest.len() as u64;
    let location = s.finish(rest.into_parts()).await?;
    let file = super::stats::data_file(
        location,
        size,
        &metadata,
        meta.current_schema(),
        meta.default_partition_spec_id(),
    )?;
    Ok(Some((file, read)))
}

/// Aborts a compaction's upload that will not be finished.
async fn give_up(stream: Option<super::files::Stream>) {
    if let Some(s) = stream
        && let Err(e) = s.abort().await
    {
        tracing::warn!(error = %e, "cannot abort a compaction's upload");
    }
}
