//! The maintenance settings (`icefall maintain`, `run --maintain-interval`): how old a snapshot must be to expire and how
//! many stay, typed and validated once, with errors that name the flag. Knows nothing of tables
//! or of how a pass runs.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::{ByteSize, ConfigError, duration, field};

/// Raw maintenance flags (flattened into the shared flags; `run` maintains with them when
/// `--maintain-interval` is given).
#[derive(Debug, Clone, clap::Args)]
pub struct MaintainArgs {
    /// `maintain`: snapshots older than this may expire (default: the table's
    /// history.expire.max-snapshot-age-ms, else 5 days). `0s` with `--retain-last 1` keeps only
    /// the current snapshot.
    #[arg(long)]
    pub expire_older_than: Option<String>,
    /// `maintain`: the newest N snapshots always stay (default: the table's
    /// history.expire.min-snapshots-to-keep, else 1).
    #[arg(long)]
    pub retain_last: Option<String>,
    /// `maintain`: data files under 75% of this are compacted into files of about this size
    /// (default: the table's write.target-file-size-bytes, else 512MiB).
    #[arg(long)]
    pub target_file_size: Option<String>,
    /// `maintain`: do not compact small data files.
    #[arg(long)]
    pub no_compact: bool,
    /// `maintain`: do not merge small manifests (the table's commit.manifest.target-size-bytes,
    /// commit.manifest.min-count-to-merge and commit.manifest-merge.enabled are honoured).
    #[arg(long)]
    pub no_merge_manifests: bool,
    /// `maintain`: plan and print what a pass would do; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `run`: also maintain the table from the io core every this often (off unless given;
    /// 10m suits the default 10s commit interval). One maintainer at a time per table holds a
    /// lease in the catalog's database; the others skip their pass.
    #[arg(long)]
    pub maintain_interval: Option<String>,
    /// `maintain`: run even while another maintainer holds the table's lease (safety rests on
    /// the catalog's compare-and-swap, not on the lease).
    #[arg(long)]
    pub ignore_lease: bool,
    /// Test hook: a rewrite waits this long between writing its files and swapping the table's
    /// pointer (to race two maintainers, or to kill one mid-commit).
    #[arg(long, hide = true)]
    pub debug_pause_before_swap: Option<String>,
    /// `maintain`: also delete files under the table's location that nothing references (uploads
    /// a killed run never committed, unfinished staging files), once older than
    /// --orphans-older-than.
    #[arg(long)]
    pub orphans: bool,
    /// `maintain --orphans`: how old an unreferenced file must be (younger ones may be uploads
    /// still on their way to a commit).
    #[arg(long, default_value = "72h")]
    pub orphans_older_than: String,
}

/// Validated maintenance settings; `None` fields take the table's properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintainConfig {
    pub expire_older_than: Option<Duration>,
    pub retain_last: Option<NonZeroUsize>,
    pub dry_run: bool,
    /// `run --maintain-interval`.
    pub interval: Option<Duration>,
    pub ignore_lease: bool,
    pub pause_before_swap: Option<Duration>,
    /// `None`: the table's write.target-file-size-bytes.
    pub target_file_size: Option<u64>,
    pub compact: bool,
    pub merge_manifests: bool,
    /// `--orphans`: sweep files unreferenced for this long.
    pub orphans: Option<Duration>,
}

impl Default for MaintainArgs {
    fn default() -> Self {
        MaintainArgs {
            expire_older_than: None,
            retain_last: None,
            target_file_size: None,
            no_compact: false,
            no_merge_manifests: false,
            dry_run: false,
            maintain_interval: None,
            ignore_lease: false,
            debug_pause_before_swap: None,
            orphans: false,
            orphans_older_than: "72h".into(),
        }
    }
}

impl MaintainArgs {
    pub fn validate(&self) -> Result<MaintainConfig, ConfigError> {
        Ok(MaintainConfig {
            expire_older_than: self
                .expire_older_than
                .as_deref()
                .map(|v| duration("--expire-older-than", v))
                .transpose()?,
            retain_last: self
                .retain_last
                .as_deref()
                .map(|v| field("--retain-last", v))
                .transpose()?,
            target_file_size: self
                .target_file_size
                .as_deref()
                .map(|v| field::<ByteSize>("--target-file-size", v).map(|b| b.0))
                .transpose()?
                .map(|b| match b {
                    0 => Err(ConfigError::invalid(
                        "--target-file-size",
                        "0",
                        "a target size must be above 0",
                    )),
                    b => Ok(b),
                })
                .transpose()?,
            compact: !self.no_compact,
            merge_manifests: !self.no_merge_manifests,
            dry_run: self.dry_run,
            interval: self
                .maintain_interval
                .as_deref()
                .map(|v| match duration("--maintain-interval", v)? {
                    Duration::ZERO => Err(ConfigError::invalid(
                        "--maintain-interval",
                        v,
                        "an interval must be above 0",
                    )),
                    d => Ok(d),
                })
                .transpose()?,
            ignore_lease: self.ignore_lease,
            pause_before_swap: self
                .debug_pause_before_swap
                .as_deref()
                .map(|v| duration("--debug-pause-before-swap", v))
                .transpose()?,
            orphans: match self.orphans {
                true => Some(duration("--orphans-older-than", &self.orphans_older_than)?),
                false => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_and_bad_ones_name_their_flag() {
        let a = MaintainArgs {
            expire_older_than: Some("0s".into()),
            retain_last: Some("1".into()),
            target_file_size: Some("64MiB".into()),
            no_compact: true,
            no_merge_manifests: false,
            dry_run: true,
            maintain_interval: Some("10m".into()),
            ignore_lease: false,
            debug_pause_before_swap: None,
            orphans: true,
            orphans_older_than: "1h".into(),
        };
        let c = a.validate().unwrap();
        assert_eq!(c.expire_older_than, Some(Duration::ZERO));
        assert_eq!(c.retain_last.map(NonZeroUsize::get), Some(1));
        assert_eq!(c.orphans, Some(Duration::from_secs(3600)));
        assert_eq!(c.target_file_size, Some(64 << 20));
        assert!(!c.compact && c.merge_manifests);
        assert_eq!(c.interval, Some(Duration::from_secs(600)));
        let bad = |a: MaintainArgs| a.validate().unwrap_err().to_string();
        let zero = MaintainArgs {
            retain_last: Some("0".into()),
            ..Default::default()
        };
        assert!(bad(zero).starts_with("--retain-last \"0\""));
        let junk = MaintainArgs {
            expire_older_than: Some("soon".into()),
            ..Default::default()
        };
        assert!(bad(junk).starts_with("--expire-older-than \"soon\""));
        let none = MaintainArgs {
            target_file_size: Some("0".into()),
            ..Default::default()
        };
        assert!(bad(none).starts_with("--target-file-size \"0\""));
        let never = MaintainArgs {
            maintain_interval: Some("0s".into()),
            ..Default::default()
        };
        assert!(bad(never).starts_with("--maintain-interval \"0s\""));
    }
}
