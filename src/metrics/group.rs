//! What a consumer-group member publishes, and the view HTTP serves across generations: the
//! member's id, generation and partitions, its rebalances and fenced commits, and the live view
//! of the pipeline the current generation runs (none while the member joins).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use super::expose::{escape, header};
use super::live::{Count, Gauge, Live};

/// A group member's state, written by the member's thread, read by HTTP.
#[derive(Debug)]
pub struct GroupLive {
    pub group: String,
    pub instance_id: Option<String>,
    pub member_id: Mutex<String>,
    pub generation: Gauge,
    pub assigned: Mutex<Vec<i32>>,
    /// Generations this member took part in (its first join counts).
    pub rebalances: Count,
    /// Summed time from giving partitions up (or first joining) to holding the next assignment.
    pub rebalance_ms: Count,
    /// Pipelines that ended because a commit found a partition moved by another writer.
    pub fenced_commits: Count,
    /// The pipeline of the current generation.
    pub current: Mutex<Option<Arc<Live>>>,
}

impl GroupLive {
    pub fn new(group: &str, instance_id: Option<&str>) -> Self {
        GroupLive {
            group: group.to_owned(),
            instance_id: instance_id.map(str::to_owned),
            member_id: Mutex::new(String::new()),
            generation: Gauge::new(-1),
            assigned: Mutex::new(Vec::new()),
            rebalances: Count::default(),
            rebalance_ms: Count::default(),
            fenced_commits: Count::default(),
            current: Mutex::new(None),
        }
    }

    /// The pipeline running now, if any.
    pub fn current(&self) -> Option<Arc<Live>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    pub fn set_current(&self, live: Option<Arc<Live>>) {
        if let Ok(mut c) = self.current.lock() {
            *c = live;
        }
    }

    pub fn assigned(&self) -> Vec<i32> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn member_id(&self) -> String {
        self.member_id.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// A new generation is held: `partitions`, after a rebalance of `rebalance_ms`.
    pub fn generation_held(&self, member: &str, generation: i32, partitions: &[i32], ms: u64) {
        if let Ok(mut m) = self.member_id.lock() {
            member.clone_into(&mut m);
        }
        if let Ok(mut a) = self.assigned.lock() {
            *a = partitions.to_vec();
        }
        self.generation.set(i64::from(generation));
        self.rebalances.add(1);
        self.rebalance_ms.add(ms);
    }

    /// The Prometheus lines of the group.
    pub fn prometheus(&self, out: &mut String) {
        let g = escape(&self.group);
        let member = escape(&self.member_id());
        let instance = escape(self.instance_id.as_deref().unwrap_or(""));
        let mut series = |name: &str, kind: &str, help: &str, value: String| {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name}{{group=\"{g}\"}} {value}");
        };
        series(
            "icefall_group_generation",
            "gauge",
            "The consumer-group generation this member holds (-1 while joining).",
            self.generation.get().to_string(),
        );
        series(
            "icefall_group_assigned_partitions",
            "gauge",
            "Partitions this member holds in its generation.",
            self.assigned().len().to_string(),
        );
        series(
            "icefall_rebalances_total",
            "counter",
            "Generations this member joined.",
            self.rebalances.get().to_string(),
        );
        series(
            "icefall_rebalance_seconds_total",
            "counter",
            "Time spent rebalancing: from giving partitions up to holding the next assignment.",
            format!("{:.3}", self.rebalance_ms.get() as f64 / 1000.0),
        );
        series(
            "icefall_fenced_commits_total",
            "counter",
            "Commits refused because another member had moved a partition (the pipeline restarts from the table).",
            self.fenced_commits.get().to_string(),
        );
        header(
            out,
            "icefall_group_member_info",
            "gauge",
            "The member's id in its group.",
        );
        let _ = writeln!(
            out,
            "icefall_group_member_info{{group=\"{g}\",member_id=\"{member}\",instance_id=\"{instance}\"}} 1"
        );
    }

    /// The `group` object of `/status`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "group": self.group,
            "instance_id": self.instance_id,
            "member_id": self.member_id(),
            "generation": self.generation.get(),
            "assigned": self.assigned(),
            "rebalances": self.rebalances.get(),
            "rebalance_seconds": self.rebalance_ms.get() as f64 / 1000.0,
            "fenced_commits": self.fenced_commits.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_generation_shows_in_metrics_and_status() {
        let g = GroupLive::new("sink", Some("pod-0"));
        let mut out = String::new();
        g.prometheus(&mut out);
        assert!(
            out.contains("icefall_group_generation{group=\"sink\"} -1"),
            "{out}"
        );
        g.generation_held("m-1", 3, &[0, 4, 8], 1500);
        g.fenced_commits.add(1);
        let mut out = String::new();
        g.prometheus(&mut out);
        assert!(
            out.contains("icefall_group_generation{group=\"sink\"} 3"),
            "{out}"
        );
        assert!(out.contains("icefall_group_assigned_partitions{group=\"sink\"} 3"));
        assert!(out.contains("icefall_rebalances_total{group=\"sink\"} 1"));
        assert!(out.contains("icefall_rebalance_seconds_total{group=\"sink\"} 1.500"));
        assert!(out.contains("icefall_fenced_commits_total{group=\"sink\"} 1"));
        assert!(out.contains("member_id=\"m-1\",instance_id=\"pod-0\"} 1"));
        let s = g.status();
        assert_eq!(s["assigned"], serde_json::json!([0, 4, 8]));
        assert_eq!(s["fenced_commits"], 1);
    }
}
