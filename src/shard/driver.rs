//! The shard core's async shell: bridge in, encoder, bridge out.

use crate::metrics::ShardStats;
use crate::record::Batch;
use crate::runtime::Control;
use crate::runtime::bridge::{Fan, Sender};
use crate::sink::encode::FileEncoder;
use crate::sink::upload::PendingFile;

use super::{ShardError, ShardState, Step};

/// Names the files one shard core writes: `<data_dir>/<run_id>-<core>-<seq>.parquet`.
#[derive(Debug, Clone)]
pub struct FileNames {
    pub data_dir: String,
    pub run_id: String,
    pub core_index: usize,
    pub next_seq: u64,
}

impl FileNames {
    fn next(&mut self) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        format!(
            "{}/{}-{:03}-{:06}.parquet",
            self.data_dir, self.run_id, self.core_index, seq
        )
    }
}

/// Everything one shard core owns.
pub struct ShardCore {
    pub core_index: usize,
    pub inputs: Fan<Batch>,
    pub files: Sender<PendingFile>,
    pub encoder: FileEncoder,
    pub state: ShardState,
    pub names: FileNames,
}

impl ShardCore {
    /// Runs until every input ring is closed and drained, then sends the last file. If the run
    /// was aborted, stops without sending anything more.
    pub async fn run(mut self, control: &Control) -> Result<ShardStats, ShardError> {
        let mut stats = ShardStats::default();
        while let Some((_, mut batch)) = self.inputs.recv().await {
            if control.is_aborted() {
                return Ok(stats);
            }
            for r in &batch.records {
                self.state.count(r.shard);
            }
            stats.rows += batch.records.len() as u64;
            self.encoder.append(batch.partition, &mut batch.records)?;
            let step = self.state.after_append(
                self.encoder.buffered_rows(),
                self.encoder.file_rows(),
                self.encoder.file_bytes() as u64,
            );
            match step {
                Step::Append => {}
                Step::EncodeBatch => self.encoder.encode_buffered()?,
                Step::RollFile => self.roll(&mut stats).await?,
            }
        }
        if !control.is_aborted() {
            self.roll(&mut stats).await?;
        }
        stats.per_shard = self.state.per_shard(self.core_index).collect();
        Ok(stats)
    }

    async fn roll(&mut self, stats: &mut ShardStats) -> Result<(), ShardError> {
        let Some(file) = self.encoder.finish_file()? else {
            return Ok(());
        };
        stats.files += 1;
        stats.encoded_bytes += file.bytes.len() as u64;
        let path = self.names.next();
        self.files
            .send(PendingFile { path, file })
            .await
            .map_err(|e| ShardError::IoGone {
                core: self.core_index,
                path: e.0.path,
            })
    }
}
