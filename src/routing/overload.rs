//! The overload policy of one fetch core: wait for a full ring, or drop what is bound for it.
//!
//! Sans-IO: fed each fetch response's outcome (a partition's next offset and the high watermark
//! the broker reported with it), it says whether the core drops records bound for a full ring.
//!
//! A partition is *caught up* once a response brings it to the high watermark (nothing left to
//! read), and stays caught up while it is at most `live_threshold` records behind; further
//! behind, it is *backfilling* again. That band is the hysteresis: a partition does not flap
//! between the two at one boundary, and a backfill only turns live at the true end of the log,
//! so no record of a backfill is dropped. `auto` drops only while every partition the core still
//! reads is caught up, so one backfilling partition makes the whole core wait (it shares the
//! rings). The switch goes both ways: after a stall (a broker outage, a slow sink) the core blocks
//! and backfills until it is caught up again.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// `--overload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverloadMode {
    /// Block while any owned partition is backfilling, drop once all are caught up.
    #[default]
    Auto,
    /// Always wait for room: nothing is ever dropped.
    Block,
    /// Always drop what is bound for a full ring.
    Drop,
}

impl FromStr for OverloadMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "block" => Ok(Self::Block),
            "drop" => Ok(Self::Drop),
            _ => Err("expected auto, block or drop".to_string()),
        }
    }
}

impl fmt::Display for OverloadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Block => "block",
            Self::Drop => "drop",
        })
    }
}

/// A change of the core's behaviour, with the partition that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub dropping: bool,
    pub partition: i32,
    /// Records behind the high watermark after the response that caused the switch.
    pub lag: u64,
}

/// One fetch core's policy state.
#[derive(Debug, Clone)]
pub struct Overload {
    mode: OverloadMode,
    live_threshold: u64,
    /// Partitions still being read → caught up.
    caught_up: BTreeMap<i32, bool>,
    behind: usize,
    dropping: bool,
}

impl Overload {
    pub fn new(mode: OverloadMode, live_threshold: u64, partitions: &[i32]) -> Self {
        let caught_up: BTreeMap<i32, bool> = partitions.iter().map(|p| (*p, false)).collect();
        Self {
            mode,
            live_threshold,
            behind: caught_up.len(),
            caught_up,
            dropping: mode == OverloadMode::Drop,
        }
    }

    /// Whether records bound for a full ring are dropped (rather than waited for).
    pub fn dropping(&self) -> bool {
        self.dropping
    }

    /// After routing a response of `partition`: its next offset and the response's high
    /// watermark. Returns the switch, if the core's behaviour changed.
    pub fn observe(
        &mut self,
        partition: i32,
        position: i64,
        high_watermark: i64,
    ) -> Option<Switch> {
        let lag = high_watermark.saturating_sub(position).max(0) as u64;
        let c = self.caught_up.get_mut(&partition)?;
        let now = if *c {
            lag <= self.live_threshold
        } else {
            lag == 0
        };
        if now != *c {
            *c = now;
            if now {
                self.behind -= 1;
            } else {
                self.behind += 1;
            }
        }
        self.update(partition, lag)
    }

    /// `partition` reached its stop offset: it no longer holds the core back.
    pub fn finished(&mut self, partition: i32) -> Option<Switch> {
        if let Some(c) = self.caught_up.remove(&partition)
            && !c
        {
            self.behind -= 1;
        }
        self.update(partition, 0)
    }

    fn update(&mut self, partition: i32, lag: u64) -> Option<Switch> {
        let dropping = match self.mode {
            OverloadMode::Block => false,
            OverloadMode::Drop => true,
            OverloadMode::Auto => self.behind == 0 && !self.caught_up.is_empty(),
        };
        if dropping == self.dropping {
            return None;
        }
        self.dropping = dropping;
        Some(Switch {
            dropping,
            partition,
            lag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_drops_only_once_every_partition_reached_its_end() {
        let mut o = Overload::new(OverloadMode::Auto, 100, &[0, 1]);
        assert!(!o.dropping());
        assert_eq!(o.observe(0, 500, 10_000), None, "backfilling");
        assert_eq!(
            o.observe(0, 9_950, 10_000),
            None,
            "within the threshold is not the end"
        );
        assert_eq!(
            o.observe(0, 10_000, 10_000),
            None,
            "partition 1 still backfills"
        );
        let s = o.observe(1, 42, 42).unwrap();
        assert_eq!((s.dropping, s.partition, s.lag), (true, 1, 0));
        assert!(o.dropping());
        assert_eq!(
            o.observe(1, 50, 150),
            None,
            "100 behind still counts as caught up"
        );
        let s = o.observe(1, 50, 151).unwrap();
        assert_eq!((s.dropping, s.partition, s.lag), (false, 1, 101));
        assert_eq!(
            o.observe(1, 140, 150),
            None,
            "back within the threshold is not enough"
        );
        assert!(o.observe(1, 150, 150).unwrap().dropping);
    }

    #[test]
    fn a_finished_partition_stops_holding_the_core_back() {
        let mut o = Overload::new(OverloadMode::Auto, 0, &[0, 1]);
        assert_eq!(o.observe(0, 7, 7), None);
        assert!(o.finished(1).unwrap().dropping);
        assert_eq!(
            o.finished(0),
            Some(Switch {
                dropping: false,
                partition: 0,
                lag: 0
            }),
            "nothing left to read: nothing to drop"
        );
    }

    #[test]
    fn block_and_drop_never_switch() {
        let mut b = Overload::new(OverloadMode::Block, 10, &[0]);
        let mut d = Overload::new(OverloadMode::Drop, 10, &[0]);
        for (pos, hwm) in [(0, 100), (100, 100), (100, 1000)] {
            assert_eq!(b.observe(0, pos, hwm), None);
            assert_eq!(d.observe(0, pos, hwm), None);
        }
        assert!(!b.dropping() && d.dropping());
        assert_eq!("drop".parse::<OverloadMode>(), Ok(OverloadMode::Drop));
        assert!("sometimes".parse::<OverloadMode>().is_err());
    }
}
