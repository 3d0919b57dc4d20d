//! One Kafka fetch core: one Fetch in flight per leader broker, carrying every partition this
//! core owns on that broker; each answer is decoded and handed to the [`Emitter`] (routing,
//! overload, barriers).
//!
//! Brokers are fetched concurrently and independently (a slow broker never stalls the others).
//! One request per broker is in flight at a time, so a partition's batches enter every ring in
//! offset order. The next request to a broker leaves as soon as its answer is in, before that
//! answer is routed: where each partition goes on is read from the batch headers
//! ([`crate::kafka::batch::next_offset`]), so the broker fetches while the shard cores are fed
//! and a backfill is never a round trip per answer slower than the shard cores. An answer is
//! routed only if it was asked for at the partition's routed position (else it is asked again).
//! The position moves past every batch the answer completes (markers, aborted
//! transactions and compaction gaps included). The overload policy is fed each answer's end
//! (high watermark, or last stable offset under `read_committed`), never ListOffsets. When an
//! answer or a broker says the leader moved, metadata is asked again and partitions move to
//! their new leader; a partition failing for longer than `--kafka-timeout` fails the run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;

use super::emit::{Emitter, Fetched};
use super::{PartitionPlan, SourceConfig, SourceError, read};
use crate::kafka::client::fetch_in_session;
use crate::kafka::error::Backoff;
use crate::kafka::fetch::{Answer, Want};
use crate::kafka::{Client, Conn, Decoded, KafkaError};
use crate::metrics::FetchStats;
use crate::runtime::Control;

/// How often a fetch core looks at the stop flag while waiting for responses.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Everything one Kafka fetch core owns.
pub struct FetchCore {
    pub partitions: Vec<PartitionPlan>,
    pub emitter: Emitter,
}

/// One owned partition being read.
struct Part {
    plan: PartitionPlan,
    leader: i32,
    leader_epoch: i32,
    /// When it started failing (reset by an answer with data or none).
    failing_since: Option<Instant>,
    /// Where its next request starts: its routed position, or past the answer being routed.
    fetch_at: i64,
    done: bool,
}

type Done = (
    i32,
    Option<Conn>,
    Vec<Want>,
    Result<Vec<Answer>, KafkaError>,
);

type InFlight = FuturesUnordered<BoxFuture<'static, Done>>;

/// A request whose task the runtime dropped (it is shutting down): retried like a lost connection.
fn cancelled(node: i32) -> KafkaError {
    KafkaError::Io {
        broker: format!("node {node}"),
        api: "Fetch",
        source: std::io::Error::other("the request was cancelled"),
    }
}

/// What the fetch loop keeps between answers.
struct Loop {
    parts: Vec<Part>,
    /// Partition → its index in `parts`.
    index: std::collections::BTreeMap<i32, usize>,
    /// Brokers with a request in flight.
    busy: BTreeSet<i32>,
    /// Rotates each broker's partition order, so a partition whose batch exceeds the
    /// per-partition limit comes first in some request (the broker returns it only there).
    turn: usize,
    stale: bool,
    /// Brokers whose last answer left a partition behind its end: data is waiting there, so the
    /// next request does not ask the broker to wait for more.
    behind: BTreeSet<i32>,
    decoded: Decoded,
    decoder: crate::kafka::Decoder,
}

impl FetchCore {
    /// Fetches and routes until every partition reaches its stop offset, or a stop is requested,
    /// then sends the last barrier. The rings stay open; dropping `self` closes them.
    pub async fn run(
        &mut self,
        cfg: &Arc<SourceConfig>,
        control: &Control,
    ) -> Result<FetchStats, SourceError> {
        self.emitter.positions = self
            .partitions
            .iter()
            .map(|p| (p.partition, p.start))
            .collect();
        let stats = self.fetch(cfg, control).await?;
        self.emitter.finish().await?;
        Ok(stats)
    }

    async fn fetch(
        &mut self,
        cfg: &Arc<SourceConfig>,
        control: &Control,
    ) -> Result<FetchStats, SourceError> {
        let mut stats = FetchStats::default();
        let (pending, done): (Vec<PartitionPlan>, Vec<PartitionPlan>) =
            self.partitions.iter().partition(|p| !p.is_done(p.start));
        for p in done {
            // Ends the policy's wait for it; with nothing left to read nothing can be dropped.
            self.emitter.finished(p.partition);
        }
        if pending.is_empty() {
            return Ok(stats);
        }
        let mut client = cfg.connect().await?;
        cfg.partitions(&mut client).await?;
        let index = pending
            .iter()
            .enumerate()
            .map(|(i, p)| (p.partition, i))
            .collect();
        let mut l = Loop {
            index,
            parts: pending
                .into_iter()
                .map(|plan| Part {
                    plan,
                    leader: -1,
                    leader_epoch: -1,
                    failing_since: None,
                    fetch_at: plan.start,
                    done: false,
                })
                .collect(),
            busy: BTreeSet::new(),
            turn: 0,
            stale: false,
            behind: BTreeSet::new(),
            decoded: Decoded::default(),
            decoder: read::decoder(cfg),
        };
        l.assign(&client, &cfg.topic);
        // Data is already waiting where a partition starts behind its end: the first request to
        // its leader asks the broker not to wait (a broker may sit out `max_wait` even then).
        l.behind = l
            .parts
            .iter()
            .filter(|p| p.leader >= 0 && p.plan.start < p.plan.high_watermark)
            .map(|p| p.leader)
            .collect();
        let mut in_flight = InFlight::new();
        let mut stop_poll = tokio::time::interval(STOP_POLL);
        stop_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Backoff::default();
        loop {
            if control.should_stop() {
                break;
            }
            l.send(cfg, &mut client, &mut in_flight).await?;
            if in_flight.is_empty() {
                if l.parts.iter().all(|p| p.done) {
                    break;
                }
                // Every broker we need failed: wait, then ask where the leaders are now.
                tokio::time::sleep(backoff.next_wait()).await;
                l.refresh(cfg, &mut client).await?;
                continue;
            }
            self.emitter.catch_up_epochs().await?;
            let next = tokio::select! {
                n = in_flight.next() => n,
                _ = self.emitter.clock.past(self.emitter.epoch) => continue,
                _ = stop_poll.tick() => continue,
            };
            let Some((node, conn, wants, result)) = next else {
                continue;
            };
            l.busy.remove(&node);
            if let Some(c) = conn {
                client.put(node, c);
            }
            match result {
                Err(e) => l.failed(cfg, &wants, e)?,
                Ok(answers) => {
                    if l.look_ahead(cfg, node, &answers) {
                        // The broker fetches the next answer while this one is routed.
                        l.send(cfg, &mut client, &mut in_flight).await?;
                    }
                    let asked: std::collections::HashMap<i32, i64> =
                        wants.iter().map(|w| (w.partition, w.offset)).collect();
                    let mut behind = false;
                    for a in answers {
                        let asked = asked.get(&a.partition).copied();
                        behind |= self.answer(cfg, &mut l, a, asked, &mut stats).await?;
                    }
                    if behind {
                        l.behind.insert(node);
                    } else {
                        l.behind.remove(&node);
                    }
                }
            }
            let open = client.open_connections() + l.busy.len();
            self.emitter.live.connections.set(open as i64);
            if l.stale {
                l.refresh(cfg, &mut client).await?;
            } else {
                backoff = Backoff::default();
            }
        }
        Ok(stats)
    }

    /// One partition's answer to a request `asked` from an offset: its records routed, its
    /// position moved, or its error handled. True when the partition is still behind its end
    /// (more is waiting on the broker).
    async fn answer(
        &mut self,
        cfg: &SourceConfig,
        l: &mut Loop,
        a: Answer,
        asked: Option<i64>,
        stats: &mut FetchStats,
    ) -> Result<bool, SourceError> {
        let Some(&idx) = l.index.get(&a.partition) else {
            return Ok(false);
        };
        let partition = a.partition;
        let position = self
            .emitter
            .positions
            .get(&partition)
            .copied()
            .unwrap_or(l.parts[idx].plan.start);
        if asked.is_some_and(|o| o > position) {
            // Asked past what was routed (the answer before it did not end where its headers
            // said): routing it would leave a gap. Ask again from the position.
            tracing::debug!(
                partition,
                position,
                ?asked,
                "an answer ahead of the position is asked again"
            );
            l.parts[idx].fetch_at = position;
            return Ok(true);
        }
        if let Some(error) = a.error {
            let e = KafkaError::Partition {
                api: "Fetch",
                topic: cfg.topic.clone(),
                partition,
                error,
            };
            let w = Want {
                partition,
                offset: position,
                leader_epoch: -1,
            };
            return l.failed(cfg, &[w], e).map(|()| false);
        }
        l.parts[idx].failing_since = None;
        read::decode(cfg, &mut l.decoder, &a, position, &mut l.decoded)?;
        let d = &l.decoded;
        let mut keep = d.records.len();
        let mut next = d.next_offset.map_or(position, |n| n.max(position));
        let plan = l.parts[idx].plan;
        if let Some(stop) = plan.stop_at {
            // Stop exactly at the end taken at start: the same input, the same output.
            keep = d.records.partition_point(|r| r.offset < stop);
            if keep < d.records.len() || next > stop {
                // Offsets up to the stop that were not returned hold no data.
                next = stop.max(position);
            }
        }
        let fetched = Fetched {
            buf: &d.buf,
            records: &d.records[..keep],
            headers: &d.headers,
        };
        l.parts[idx].fetch_at = l.parts[idx].fetch_at.max(next);
        self.emitter.emit(partition, fetched, next, stats).await?;
        if plan.is_done(next) {
            l.parts[idx].done = true;
            self.emitter.finished(partition);
            return Ok(false);
        }
        let end = a.end(cfg.isolation);
        self.emitter.observe(partition, next, end);
        Ok(next < end)
    }
}

impl Loop {
    /// Each partition's leader from the client's metadata.
    fn assign(&mut self, client: &Client, topic: &str) {
        for p in &mut self.parts {
            if let Some(m) = client.partition(topic, p.plan.partition) {
                p.leader = m.leader;
                p.leader_epoch = m.leader_epoch;
            }
        }
    }

    /// Sends one request to every broker that leads a partition still to read and has none in
    /// flight.
    async fn send(
        &mut self,
        cfg: &Arc<SourceConfig>,
        client: &mut Client,
        in_flight: &mut InFlight,
    ) -> Result<(), SourceError> {
        for (node, wants) in self.requests() {
            match client.take(node).await {
                Ok(conn) => {
                    self.busy.insert(node);
                    let mut params = cfg.fetch_params(wants.len());
                    if self.behind.contains(&node) {
                        params.max_wait = Duration::ZERO;
                    }
                    let cfg = cfg.clone();
                    // A task of its own, so the request goes out and its answer comes in while
                    // this core waits to route the answer before it.
                    let task = tokio::spawn(async move {
                        let (conn, r) = fetch_in_session(conn, &cfg.topic, &wants, &params).await;
                        (node, conn, wants, r) as Done
                    });
                    in_flight.push(Box::pin(async move {
                        match task.await {
                            Ok(done) => done,
                            Err(e) => match e.try_into_panic() {
                                Ok(panic) => std::panic::resume_unwind(panic),
                                Err(_) => (node, None, Vec::new(), Err(cancelled(node))),
                            },
                        }
                    }));
                }
                Err(e) => self.failed(cfg, &wants, e)?,
            }
        }
        Ok(())
    }

    /// Before `answers` are routed: moves each of their partitions' next request past what
    /// they hold, read from the batch headers. False (nothing moved) when an answer carries an
    /// error or cannot be read ahead: the next request then waits for the routing, as it must.
    fn look_ahead(&mut self, cfg: &SourceConfig, node: i32, answers: &[Answer]) -> bool {
        if self.stale {
            return false;
        }
        let mut ahead = Vec::with_capacity(answers.len());
        for a in answers {
            let Some(&idx) = self.index.get(&a.partition) else {
                continue;
            };
            if a.error.is_some() {
                return false;
            }
            let at = self.parts[idx].fetch_at;
            let next = match crate::kafka::batch::next_offset(&a.records) {
                Some(n) => n.max(at),
                None if a.records.is_empty() => at,
                None => return false,
            };
            ahead.push((idx, next, next < a.end(cfg.isolation)));
        }
        let mut behind = false;
        for (idx, next, b) in ahead {
            self.parts[idx].fetch_at = next;
            behind |= b;
        }
        if behind {
            self.behind.insert(node);
        } else {
            self.behind.remove(&node);
        }
        true
    }

    /// One request for every broker that leads a partition still to read and has none in
    /// flight, from where each partition's next request starts.
    fn requests(&mut self) -> Vec<(i32, Vec<Want>)> {
        if self.stale {
            return Vec::new();
        }
        let mut by_node: std::collections::BTreeMap<i32, Vec<Want>> = Default::default();
        for p in self.parts.iter().filter(|p| !p.done && p.leader >= 0) {
            if self.busy.contains(&p.leader) || p.plan.is_done(p.fetch_at) {
                continue;
            }
            by_node.entry(p.leader).or_default().push(Want {
                partition: p.plan.partition,
                offset: p.fetch_at,
                leader_epoch: p.leader_epoch,
            });
        }
        self.turn = self.turn.wrapping_add(1);
        by_node
            .into_iter()
            .map(|(node, mut wants)| {
                let n = wants.len();
                wants.rotate_left(self.turn % n);
                (node, wants)
            })
            .collect()
    }

    /// A failure for `wants`: retried (after a metadata refresh) while it is retriable and
    /// younger than `--kafka-timeout`, else the run's error.
    fn failed(
        &mut self,
        cfg: &SourceConfig,
        wants: &[Want],
        e: KafkaError,
    ) -> Result<(), SourceError> {
        let now = Instant::now();
        for w in wants {
            let Some(p) = self
                .parts
                .iter_mut()
                .find(|p| p.plan.partition == w.partition)
            else {
                continue;
            };
            let since = *p.failing_since.get_or_insert(now);
            if !e.retriable() || now.duration_since(since) >= cfg.timeout {
                return Err(cfg.partition_error("fetching", w.partition, w.offset, e));
            }
        }
        tracing::warn!(error = %e, "Kafka: a fetch failed; retrying");
        self.stale |= e.stale_metadata() || e.retriable();
        Ok(())
    }

    async fn refresh(
        &mut self,
        cfg: &SourceConfig,
        client: &mut Client,
    ) -> Result<(), SourceError> {
        if !self.busy.is_empty() {
            // Wait for the answers in flight first; their partitions keep their leaders.
            return Ok(());
        }
        match client.refresh(&[&cfg.topic]).await {
            Ok(()) => {
                self.assign(client, &cfg.topic);
                self.stale = false;
                Ok(())
            }
            Err(e) => Err(cfg.topic_error("finding the partitions' leaders", e)),
        }
    }
}
