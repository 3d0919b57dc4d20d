//! The consumer-group settings (`--group`, `--instance-id`, the session, heartbeat and rebalance
//! timings): typed and validated once into [`GroupConfig`], with errors that name the flag.
//! Knows Kafka's rules for these values; knows nothing of the member's state machine or I/O.

use std::time::Duration;

use super::{ConfigError, positive_duration};
use crate::kafka::group::GroupConfig;

/// Kafka's longest group instance id (as for topic names).
const MAX_INSTANCE_ID: usize = 249;
/// The wait before a refused JoinGroup or SyncGroup is sent again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Raw group settings, as given (flattened into `icefall run`'s flags).
#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    /// Join this Kafka consumer group and read the partitions it assigns (classic protocol,
    /// sticky assignment); the group's offsets are committed after every Iceberg commit, for
    /// lag tools. Without it: the static mode (`--partitions`, or all).
    #[arg(long)]
    pub group: Option<String>,
    /// Static membership (KIP-345), e.g. the pod's name: a member restarting with the same id
    /// within --session-timeout gets its partitions back without a rebalance.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// With --group: the coordinator gives a silent member's partitions away after this.
    #[arg(long, default_value = "45s")]
    pub session_timeout: String,
    /// With --group: how often the member tells the coordinator it is alive.
    #[arg(long, default_value = "3s")]
    pub heartbeat_interval: String,
    /// With --group: how long a rebalance waits for members to finish and commit what they
    /// routed of the partitions they give up.
    #[arg(long, default_value = "60s")]
    pub rebalance_timeout: String,
}

impl Default for GroupArgs {
    fn default() -> Self {
        GroupArgs {
            group: None,
            instance_id: None,
            session_timeout: "45s".into(),
            heartbeat_interval: "3s".into(),
            rebalance_timeout: "60s".into(),
        }
    }
}

impl GroupArgs {
    /// `None` without `--group` (the static `--partitions` mode).
    pub fn validate(&self, topic: &str) -> Result<Option<GroupConfig>, ConfigError> {
        let Some(group) = &self.group else {
            if let Some(id) = &self.instance_id {
                return Err(ConfigError::invalid("--instance-id", id, "needs --group"));
            }
            return Ok(None);
        };
        if group.trim().is_empty() {
            return Err(ConfigError::invalid("--group", group, "must not be empty"));
        }
        if let Some(id) = &self.instance_id {
            instance_id(id)?;
        }
        let session_timeout = positive_duration("--session-timeout", &self.session_timeout)?;
        let heartbeat_interval =
            positive_duration("--heartbeat-interval", &self.heartbeat_interval)?;
        let rebalance_timeout = positive_duration("--rebalance-timeout", &self.rebalance_timeout)?;
        if heartbeat_interval >= session_timeout {
            return Err(ConfigError::invalid(
                "--heartbeat-interval",
                &self.heartbeat_interval,
                format!(
                    "must be shorter than --session-timeout {} (a third of it or less is usual)",
                    self.session_timeout
                ),
            ));
        }
        Ok(Some(GroupConfig {
            group: group.clone(),
            topic: topic.to_owned(),
            instance_id: self.instance_id.clone(),
            session_timeout,
            rebalance_timeout,
            heartbeat_interval,
            retry_backoff: RETRY_BACKOFF,
        }))
    }
}

impl super::RunArgs {
    /// `--group`'s settings; the group assigns the partitions, so `--partitions` conflicts.
    pub(super) fn group_config(&self, topic: &str) -> Result<Option<GroupConfig>, ConfigError> {
        let cfg = self.group.validate(topic)?;
        if let (Some(_), Some(p)) = (&cfg, &self.partitions) {
            return Err(ConfigError::invalid(
                "--partitions",
                p,
                "cannot be used with --group: the group assigns the partitions",
            ));
        }
        Ok(cfg)
    }
}

fn instance_id(id: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > MAX_INSTANCE_ID || !id.chars().all(allowed) {
        return Err(ConfigError::invalid(
            "--instance-id",
            id,
            format!("must be 1 to {MAX_INSTANCE_ID} of a-z A-Z 0-9 . _ - (e.g. the pod's name)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(group: Option<&str>, instance: Option<&str>) -> GroupArgs {
        GroupArgs {
            group: group.map(Into::into),
            instance_id: instance.map(Into::into),
            ..GroupArgs::default()
        }
    }

    #[test]
    fn defaults_are_kafkas() {
        let cfg = args(Some("sink"), Some("icefall-0"))
            .validate("events")
            .unwrap()
            .unwrap();
        assert_eq!(cfg.session_timeout, Duration::from_secs(45));
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(cfg.rebalance_timeout, Duration::from_secs(60));
        assert_eq!(cfg.instance_id.as_deref(), Some("icefall-0"));
        assert_eq!(cfg.topic, "events");
    }

    #[test]
    fn without_group_it_is_the_static_mode() {
        assert!(args(None, None).validate("events").unwrap().is_none());
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = |a: GroupArgs| a.validate("events").unwrap_err().to_string();
        assert!(e(args(None, Some("pod-0"))).contains("--instance-id"));
        assert!(e(args(Some(" "), None)).contains("--group"));
        assert!(e(args(Some("g"), Some("pod 0"))).contains("--instance-id"));
        assert!(e(args(Some("g"), Some(&"a".repeat(250)))).contains("--instance-id"));
        let mut slow = args(Some("g"), None);
        slow.heartbeat_interval = "45s".into();
        assert!(e(slow).contains("--heartbeat-interval"));
        let mut zero = args(Some("g"), None);
        zero.session_timeout = "0s".into();
        assert!(e(zero).contains("--session-timeout"));
        let mut junk = args(Some("g"), None);
        junk.rebalance_timeout = "soon".into();
        assert!(e(junk).contains("--rebalance-timeout"));
    }
}
