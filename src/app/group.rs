//! `icefall run --group`: the process as one consumer-group member. A current-thread runtime
//! drives the sans-IO [`Membership`] over the [`Coordinator`] and serves HTTP across
//! generations; each generation's partitions run as one pipeline (the same roles, cores and
//! table as the static mode) on its own thread, started from the table's offsets. A revoke stops
//! the pipeline gracefully (what was routed is committed, within the rebalance timeout, else it
//! is aborted) before the member rejoins. Every commit is fence-guarded (`offsets::fence`), so a
//! member that lost its generation unknowingly can try to commit but never duplicates: a fenced
//! pipeline is counted and started again from the table. After every Iceberg commit the same
//! offsets go to the group (advisory, for lag tools; never read back).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::RunConfig;
use crate::kafka::Client;
use crate::kafka::coordinator::Coordinator;
use crate::kafka::group::{Action, GroupConfig, Membership};
use crate::metrics::RunSummary;
use crate::metrics::group::GroupLive;
use crate::record::Offsets;
use crate::runtime::{Control, RuntimeError};
use crate::sink::SinkError;
use crate::source::SourceError;

use super::{Error, Input, listen, setup_runtime, source_config};

/// The longest the member's loop sleeps: how soon it sees a finished pipeline, a commit to
/// mirror to the group, or a stop signal.
const TICK: Duration = Duration::from_millis(20);

/// Runs as a member of `group` until a stop signal (or, with `--stop-at-end`, until its
/// pipeline reaches the end), then commits, leaves the group and returns what every generation
/// did.
pub fn run(cfg: RunConfig, group: GroupConfig, control: Arc<Control>) -> Result<RunSummary, Error> {
    let started = Instant::now();
    let rt = setup_runtime()?;
    let live = Arc::new(GroupLive::new(&group.group, group.instance_id.as_deref()));
    let listener = cfg.http_addr.map(listen).transpose()?;
    let mut member = Member {
        pipeline_cfg: RunConfig {
            http_addr: None,
            group: None,
            ..cfg.clone()
        },
        group,
        control,
        live: live.clone(),
        running: None,
        revoking: false,
        summary: RunSummary::default(),
        sent: Offsets::new(),
        rebalance_since: Instant::now(),
    };
    let result = rt.block_on(async {
        if let Some(l) = listener {
            tokio::spawn(crate::metrics::http::serve(
                l,
                crate::metrics::http::Served::Group(live),
            ));
        }
        member.run(&cfg).await
    });
    let mut summary = result?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// One generation's pipeline.
struct Running {
    generation: i32,
    control: Arc<Control>,
    thread: JoinHandle<Result<RunSummary, Error>>,
    /// Set once asked to stop: past it, the pipeline is aborted.
    deadline: Option<Instant>,
    /// Io commits already mirrored to the group.
    commits_seen: u64,
}

struct Member {
    pipeline_cfg: RunConfig,
    group: GroupConfig,
    control: Arc<Control>,
    live: Arc<GroupLive>,
    running: Option<Running>,
    /// A revoke waits for the pipeline to end before the member rejoins.
    revoking: bool,
    summary: RunSummary,
    /// What the group was last told, per partition.
    sent: Offsets,
    rebalance_since: Instant,
}

impl Member {
    async fn run(&mut self, cfg: &RunConfig) -> Result<RunSummary, Error> {
        let source = source_config(cfg);
        let mut client = source.connect().await?;
        let partitions = client
            .partitions(&cfg.topic)
            .await
            .map_err(|e| source.topic_error("reading the partitions", e))?;
        let mut m = Membership::new(self.group.clone(), partitions, Instant::now());
        let mut coord: Option<Coordinator> = None;
        let mut finished = false;
        loop {
            let now = Instant::now();
            if let Some(e) = self.supervise(&mut m, &mut coord, &mut finished).await {
                self.abort_pipeline().await;
                self.leave(&m, &mut coord).await;
                return Err(e);
            }
            let leaving = finished || self.control.should_stop();
            if leaving {
                match &mut self.running {
                    Some(r) => {
                        if r.deadline.is_none() {
                            tracing::info!(
                                generation = r.generation,
                                "stopping: committing what was routed"
                            );
                            r.control.stop();
                            r.deadline = Some(now + cfg.drain_timeout);
                        }
                    }
                    None => {
                        self.leave(&m, &mut coord).await;
                        return Ok(std::mem::take(&mut self.summary));
                    }
                }
            }
            let Some(c) = &mut coord else {
                coord = self.find(&mut client).await;
                continue;
            };
            let action = m.poll(now);
            if !matches!(action, Action::WaitUntil(_)) {
                tracing::debug!(?action, "group");
            }
            if matches!(action, Action::Join(_)) {
                // What a leader assigns: the topic as it is now (it may have grown).
                refresh(&mut client, &mut m, &cfg.topic).await;
            }
            match c
                .perform(&mut m, action, self.group.rebalance_timeout)
                .await
            {
                Ok(None) => {}
                Ok(Some(Action::WaitUntil(at))) => {
                    tokio::time::sleep(at.saturating_duration_since(now).min(TICK)).await;
                }
                Ok(Some(Action::Assigned {
                    generation,
                    partitions,
                })) => self.assigned(&m, generation, partitions, leaving)?,
                Ok(Some(Action::Revoke { partitions, commit })) => {
                    self.revoke(&mut m, &partitions, commit);
                }
                Ok(Some(Action::Fatal(e))) => {
                    self.abort_pipeline().await;
                    return Err(SourceError::from(e).into());
                }
                Ok(Some(other)) => tracing::debug!(?other, "unexpected action"),
                Err(e) => {
                    tracing::warn!(
                        coordinator = c.broker(),
                        error = %crate::report::one_line(&e),
                        "the group coordinator did not answer; finding it again"
                    );
                    coord = None;
                    tokio::time::sleep(self.group.retry_backoff).await;
                }
            }
        }
    }

    async fn find(&self, client: &mut Client) -> Option<Coordinator> {
        match Coordinator::find(client, &self.group.group).await {
            Ok(c) => {
                tracing::info!(group = %self.group.group, coordinator = c.broker(), "group coordinator");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(group = %self.group.group, error = %crate::report::one_line(&e), "finding the group coordinator");
                tokio::time::sleep(self.group.retry_backoff.max(Duration::from_millis(500))).await;
                None
            }
        }
    }

    /// This member's share of `generation`: logged, published, and its pipeline started.
    fn assigned(
        &mut self,
        m: &Membership,
        generation: i32,
        partitions: Vec<i32>,
        leaving: bool,
    ) -> Result<(), Error> {
        let took = self.rebalance_since.elapsed();
        tracing::info!(
            group = %self.group.group,
            member = m.member_id(),
            generation,
            ?partitions,
            leader = m.is_leader(),
            rebalance_ms = took.as_millis() as u64,
            "generation {generation}: holding partitions {partitions:?}"
        );
        self.live.generation_held(
            m.member_id(),
            generation,
            &partitions,
            took.as_millis() as u64,
        );
        if !partitions.is_empty() && !leaving {
            self.start(generation, partitions)?;
        }
        Ok(())
    }

    fn start(&mut self, generation: i32, partitions: Vec<i32>) -> Result<(), Error> {
        let cfg = RunConfig {
            partitions: Some(partitions),
            ..self.pipeline_cfg.clone()
        };
        let control = Control::new();
        let (ctl, live) = (control.clone(), self.live.clone());
        let thread = std::thread::Builder::new()
            .name(format!("generation-{generation}"))
            .spawn(move || super::pipeline(cfg, ctl, Input::Kafka, &|l| live.set_current(Some(l))))
            .map_err(|e| RuntimeError::Spawn {
                role: "generation",
                core: 0,
                reason: e.to_string(),
            })?;
        self.running = Some(Running {
            generation,
            control,
            thread,
            deadline: None,
            commits_seen: 0,
        });
        Ok(())
    }

    /// Gives up `partitions`: the pipeline stops and commits what it routed (fence-guarded, so
    /// this is safe even when `commit` is false: the generation was lost and another member may
    /// hold them), and the member rejoins once it has ended.
    fn revoke(&mut self, m: &mut Membership, partitions: &[i32], commit: bool) {
        self.rebalance_since = Instant::now();
        self.live.generation.set(-1);
        tracing::info!(
            group = %self.group.group,
            ?partitions,
            generation_lost = !commit,
            "giving up partitions {partitions:?}"
        );
        match &mut self.running {
            Some(r) => {
                r.control.stop();
                r.deadline = Some(Instant::now() + self.group.rebalance_timeout);
                self.revoking = true;
            }
            None => m.revoked(Instant::now()),
        }
    }

    /// Watches the pipeline: mirrors its commits to the group, aborts it past its deadline,
    /// and handles its end. Returns a failure that ends the member.
    async fn supervise(
        &mut self,
        m: &mut Membership,
        coord: &mut Option<Coordinator>,
        finished: &mut bool,
    ) -> Option<Error> {
        let r = self.running.as_mut()?;
        if let Some(d) = r.deadline
            && Instant::now() > d
            && !r.control.is_aborted()
        {
            tracing::warn!(
                generation = r.generation,
                "the pipeline did not finish in time: aborting it (what it did not commit is read again)"
            );
            r.control.abort();
        }
        let seen = r.commits_seen;
        let fresh = self.live.current().and_then(|l| {
            let io = l.io();
            (io.commits() > seen).then(|| (io.commits(), io.committed.clone()))
        });
        if let Some((n, offsets)) = fresh {
            r.commits_seen = n;
            self.mirror(m, coord, offsets).await;
        }
        if !self.running.as_ref()?.thread.is_finished() {
            return None;
        }
        let r = self.running.take()?;
        // The final commit's offsets, then the view goes.
        if let Some(l) = self.live.current() {
            let offsets = l.io().committed.clone();
            self.mirror(m, coord, offsets).await;
        }
        self.live.set_current(None);
        let asked = r.deadline.is_some();
        let outcome = r.thread.join().unwrap_or_else(|_| {
            Err(RuntimeError::Panicked {
                role: "generation",
                core: 0,
                message: "the generation's thread panicked".into(),
            }
            .into())
        });
        match outcome {
            Ok(s) => {
                self.summary.absorb(&s);
                if !asked {
                    tracing::info!(
                        generation = r.generation,
                        "every assigned partition reached its end"
                    );
                    *finished = true;
                }
            }
            Err(Error::Sink(e @ SinkError::Fenced { .. })) => {
                self.live.fenced_commits.add(1);
                tracing::warn!(
                    generation = r.generation,
                    error = %crate::report::one_line(&e),
                    "fenced: another member moved a partition; starting again from the table"
                );
                if !asked
                    && !self.revoking
                    && let Err(e) = self.start(r.generation, m.owned().to_vec())
                {
                    return Some(e);
                }
            }
            Err(e) if r.control.is_aborted() && asked => {
                tracing::warn!(generation = r.generation, error = %crate::report::one_line(&e), "aborted pipeline");
            }
            Err(e) => return Some(e),
        }
        if self.revoking {
            self.revoking = false;
            m.revoked(Instant::now());
        }
        None
    }

    /// Commits the table's offsets to the group, for lag tools. Advisory: a refusal (a
    /// rebalance under way) is logged at debug and the next commit tries again.
    async fn mirror(&mut self, m: &Membership, coord: &mut Option<Coordinator>, offsets: Offsets) {
        let changed: Offsets = offsets
            .into_iter()
            .filter(|(p, o)| self.sent.get(p) != Some(o))
            .collect();
        let Some(c) = coord.as_mut().filter(|_| !changed.is_empty()) else {
            return;
        };
        let instance = self.group.instance_id.as_deref();
        match c
            .commit_offsets(m, instance, &self.group.topic, &changed)
            .await
        {
            Ok(()) => self.sent.extend(changed),
            Err(e) => {
                tracing::debug!(error = %crate::report::one_line(&e), "offset commit to the group refused")
            }
        }
    }

    /// LeaveGroup, so the others rebalance now (a static member stays, see `Coordinator::leave`).
    async fn leave(&self, m: &Membership, coord: &mut Option<Coordinator>) {
        if let Some(c) = coord
            && let Err(e) = c.leave(m, self.group.instance_id.as_deref()).await
        {
            tracing::warn!(error = %crate::report::one_line(&e), "leaving the group");
        }
    }

    async fn abort_pipeline(&mut self) {
        if let Some(r) = self.running.take() {
            r.control.abort();
            while !r.thread.is_finished() {
                tokio::time::sleep(TICK).await;
            }
            let _ = r.thread.join();
        }
    }
}

/// Reads the topic's partitions again before a join; a failure keeps the known ones.
async fn refresh(client: &mut Client, m: &mut Membership, topic: &str) {
    let read = async {
        client.refresh(&[topic]).await?;
        client.partitions(topic).await
    };
    match read.await {
        Ok(ps) if !ps.is_empty() => m.set_partitions(ps),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(topic, error = %crate::report::one_line(&e), "reading the topic's partitions")
        }
    }
}
