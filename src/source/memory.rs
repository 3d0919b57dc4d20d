//! An in-memory source for the pipeline bench: partitions of generated records, routed through
//! the same [`Emitter`] as Kafka's, so the shards, the bridge and the sink run exactly as in a
//! real run, with the broker and the network taken out.
//!
//! Each simulated response copies its records from a pool of templates into one buffer (as a
//! Fetch answer arrives in one), stamped with their offset and the time they were "fetched".

use std::sync::Arc;

use super::SourceError;
use super::emit::{Emitter, Fetched};
use crate::metrics::{FetchStats, now_ms};
use crate::record::{BatchBuilder, Record};
use crate::runtime::Control;

/// What the in-memory topic holds.
#[derive(Debug, Clone)]
pub struct MemoryInput {
    pub partitions: u32,
    pub records_per_partition: u64,
    /// Record `o` of partition `p` is a copy of template `(o × partitions + p) mod len`.
    pub templates: Arc<Vec<Record>>,
    /// Records per simulated fetch response.
    pub per_fetch: usize,
}

/// One fetch core reading its share of the in-memory topic.
pub struct MemorySource {
    pub input: MemoryInput,
    pub partitions: Vec<i32>,
    pub emitter: Emitter,
}

impl MemorySource {
    /// Routes every record of its partitions, a response at a time, round robin, then sends the
    /// last barrier.
    pub async fn run(&mut self, control: &Control) -> Result<FetchStats, SourceError> {
        let mut stats = FetchStats::default();
        let templates = self.input.templates.clone();
        // Without templates there is nothing to read.
        let end = if templates.is_empty() {
            0
        } else {
            self.input.records_per_partition as i64
        };
        if end == 0 {
            for &p in &self.partitions {
                self.emitter.finished(p);
            }
        }
        let mut next: Vec<(i32, i64)> = self.partitions.iter().map(|&p| (p, 0)).collect();
        self.emitter.positions = next.iter().copied().collect();
        let stride = self.input.partitions as usize;
        while !next.is_empty() && !control.should_stop() {
            for (partition, position) in &mut next {
                self.emitter.catch_up_epochs().await?;
                let upto = (*position + self.input.per_fetch as i64).min(end);
                let now = now_ms();
                let mut b = BatchBuilder::default();
                for o in *position..upto {
                    let t =
                        &templates[(o as usize * stride + *partition as usize) % templates.len()];
                    let hs = t.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
                    b.push(o, now, t.key.as_deref(), t.value.as_deref(), hs);
                }
                let batch = b.finish(*partition);
                *position = upto;
                self.emitter
                    .emit(*partition, Fetched::of_batch(&batch), upto, &mut stats)
                    .await?;
                if upto >= end {
                    self.emitter.finished(*partition);
                } else {
                    self.emitter.observe(*partition, upto, end);
                }
            }
            next.retain(|&(_, position)| position < end);
        }
        self.emitter.finish().await?;
        Ok(stats)
    }
}
