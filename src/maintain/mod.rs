//! Table maintenance, planned sans-IO (issue 16). A pass expires old snapshots and deletes what no
//! kept snapshot reaches. This module decides which snapshots may go without losing anything
//! icefall reads back: the offsets a restart resumes from, the drop ledger that
//! `replay-dropped` reads (folded into what is kept), and the set-aside dead letters. It also
//! decides which manifest lists, manifests and data files are then unreachable. It takes
//! snapshots and file lists as plain data and returns decisions; it never awaits. It knows
//! nothing of catalogs, object stores or the manifest format: the caller lists the files and
//! performs the commit, whose compare-and-swap keeps it safe beside concurrent writers.
//! It also packs small manifests and data files into the bins a pass rewrites. `icefall
//! maintain` and `run --maintain-interval` run it through `sink::maintain`.

pub mod bins;
pub mod expire;
pub mod reach;

pub use bins::{CompactPolicy, Item, MergePolicy, plan_compaction, plan_merge};
pub use expire::{Expiry, Policy, Snapshot, plan_expiry};
pub use reach::{Manifests, SnapshotFiles, Unreachable, unreachable};
