//! Consumer-group membership, sans-IO: the classic protocol's member (JoinGroup, SyncGroup,
//! Heartbeat; KIP-345 static membership with `group.instance.id`, KIP-394's member id handshake)
//! as a state machine. It takes the coordinator's answers and `now`, and says what to do next:
//! send a request, give partitions up, take partitions, wait. It never awaits and holds no
//! connection; the driver owns the coordinator's connection and the fetch cores.
//!
//! Rebalances are eager: before rejoining, a member gives up every partition it holds and
//! finishes (commits) what it routed of them; the sticky assignor (`assign`) then gives most of
//! them back. A member that lost its generation (its session expired while it was paused) gives
//! them up without committing: another member owns them now, and the commit's fence refuses it
//! anyway.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::assign::{self, ASSIGNOR, Member};

/// What a member is configured with.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    pub topic: String,
    /// KIP-345: a restarting member with the same id gets its partitions back without a rebalance.
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// The wait before a JoinGroup or SyncGroup is sent again after a retriable error.
    pub retry_backoff: Duration,
}

/// A failure no rejoin can mend.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("group {group}: {api} answered {error}{hint}")]
    Refused {
        group: String,
        api: &'static str,
        error: String,
        hint: &'static str,
    },
    #[error("group {group}: the leader sent an assignment icefall cannot read: {why}")]
    Assignment { group: String, why: String },
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this to the coordinator and hand the answer to [`Membership::on_join`].
    Join(JoinGroupRequest),
    /// Send this and hand the answer to [`Membership::on_sync`].
    Sync(SyncGroupRequest),
    /// Send this and hand the answer to [`Membership::on_heartbeat`].
    Heartbeat(HeartbeatRequest),
    /// Stop fetching these partitions; if `commit`, finish and commit what was routed of them
    /// (within the rebalance timeout), else discard it. Then call [`Membership::revoked`].
    Revoke {
        partitions: Vec<i32>,
        commit: bool,
    },
    /// Fetch these partitions from the table's offsets: this member's share of `generation`.
    Assigned {
        generation: i32,
        partitions: Vec<i32>,
    },
    /// Nothing to do before this instant.
    WaitUntil(Instant),
    Fatal(GroupError),
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Send JoinGroup at the instant.
    Join(Instant),
    /// A JoinGroup is in flight.
    Joining,
    /// Send SyncGroup with these assignments (empty unless leader) at the instant.
    Sync(Instant, Vec<(String, Bytes)>),
    Syncing,
    /// The assignment is to be announced.
    Announce(Vec<i32>),
    /// Stable: heartbeat at the instant.
    Stable(Instant),
    Heartbeating,
    /// Partitions to give up before joining again.
    Revoke(bool),
    Revoking,
    Failed(GroupError),
}

/// One member of one group, reading one topic.
#[derive(Debug)]
pub struct Membership {
    cfg: GroupConfig,
    member_id: String,
    generation: i32,
    /// The topic's partitions, for the assignment this member makes when it is leader.
    partitions: Vec<i32>,
    /// What this member fetches now (empty while it joins).
    owned: Vec<i32>,
    /// What it held in `owned_generation`, sent as its claim at the next join.
    claim: Vec<i32>,
    owned_generation: i32,
    /// This member assigned the current generation's partitions.
    leader: bool,
    /// The last heartbeat (or sync) the coordinator accepted.
    alive_at: Instant,
    state: State,
}

fn code(e: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(e)
}

impl Membership {
    pub fn new(cfg: GroupConfig, partitions: Vec<i32>, now: Instant) -> Self {
        Self {
            cfg,
            member_id: String::new(),
            generation: -1,
            partitions,
            owned: Vec::new(),
            claim: Vec::new(),
            owned_generation: -1,
            leader: false,
            alive_at: now,
            state: State::Join(now),
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// This member made the current generation's assignment.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    pub fn owned(&self) -> &[i32] {
        &self.owned
    }

    /// The topic grew (a metadata refresh): the next assignment this member makes spreads these.
    pub fn set_partitions(&mut self, partitions: Vec<i32>) {
        self.partitions = partitions;
    }

    fn instance(&self) -> Option<StrBytes> {
        self.cfg.instance_id.clone().map(StrBytes::from_string)
    }

    fn join_request(&self) -> JoinGroupRequest {
        let metadata = assign::subscription(&self.cfg.topic, &self.claim, self.owned_generation);
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.cfg.group.clone())))
            .with_session_timeout_ms(millis(self.cfg.session_timeout))
            .with_rebalance_timeout_ms(millis(self.cfg.rebalance_timeout))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_group_instance_id(self.instance())
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(ASSIGNOR))
                    .with_metadata(metadata),
            ])
    }

    /// What to do now. Call again after every answer, and when a wait ends.
    pub fn poll(&mut self, now: Instant) -> Action {
        match std::mem::replace(&mut self.state, State::Joining) {
            State::Join(at) if now < at => self.park(State::Join(at), at),
            State::Join(_) => Action::Join(self.join_request()),
            State::Joining => self.park(State::Joining, now + self.cfg.rebalance_timeout),
            State::Sync(at, a) if now < at => self.park(State::Sync(at, a), at),
            State::Sync(_, assignments) => {
                self.state = State::Syncing;
                Action::Sync(self.sync_request(assignments))
            }
            State::Syncing => self.park(State::Syncing, now + self.cfg.rebalance_timeout),
            State::Announce(partitions) => {
                self.owned.clone_from(&partitions);
                self.claim.clone_from(&partitions);
                self.owned_generation = self.generation;
                self.state = State::Stable(now + self.cfg.heartbeat_interval);
                Action::Assigned {
                    generation: self.generation,
                    partitions,
                }
            }
            State::Stable(_) if now >= self.alive_at + self.cfg.session_timeout => {
                // Paused past the session: the coordinator has given the partitions away.
                self.lost();
                self.poll(now)
            }
            State::Stable(at) if now < at => self.park(State::Stable(at), at),
            State::Stable(_) => {
                self.state = State::Heartbeating;
                Action::Heartbeat(
                    HeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(self.cfg.group.clone())))
                        .with_generation_id(self.generation)
                        .with_member_id(StrBytes::from_string(self.member_id.clone()))
                        .with_group_instance_id(self.instance()),
                )
            }
            State::Heartbeating => self.park(State::Heartbeating, now + self.cfg.session_timeout),
            State::Revoke(commit) => {
                self.state = State::Revoking;
                Action::Revoke {
                    partitions: std::mem::take(&mut self.owned),
                    commit,
                }
            }
            State::Revoking => self.park(State::Revoking, now + self.cfg.rebalance_timeout),
            State::Failed(e) => {
                self.state = State::Failed(e.clone());
                Action::Fatal(e)
            }
        }
    }

    fn park(&mut self, state: State, until: Instant) -> Action {
        self.state = state;
        Action::WaitUntil(until)
    }

    fn sync_request(&self, assignments: Vec<(String, Bytes)>) -> SyncGroupRequest {
        SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.cfg.group.clone())))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_group_instance_id(self.instance())
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str(ASSIGNOR)))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(id, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_assignment(a)
                    })
                    .collect(),
            )
    }

    /// The generation is gone: give up what is held without committing, then join afresh.
    fn lost(&mut self) {
        self.generation = -1;
        self.state = if self.owned.is_empty() {
            State::Join(self.alive_at)
        } else {
            State::Revoke(false)
        };
    }

    fn fail(&mut self, api: &'static str, e: ResponseError, hint: &'static str) {
        self.state = State::Failed(GroupError::Refused {
            group: self.cfg.group.clone(),
            api,
            error: format!("{e:?}"),
            hint,
        });
    }

    /// The answer to the JoinGroup of [`Action::Join`].
    pub fn on_join(&mut self, now: Instant, r: &JoinGroupResponse) {
        let retry = now + self.cfg.retry_backoff;
        match code(r.error_code) {
            None => {
                self.member_id = r.member_id.to_string();
                self.generation = r.generation_id;
                self.leader = r.leader == r.member_id;
                let assignments = match self.leader {
                    true => self.lead(r),
                    false => Ok(Vec::new()),
                };
                match assignments {
                    Ok(a) => self.state = State::Sync(now, a),
                    Err(why) => {
                        self.state = State::Failed(GroupError::Assignment {
                            group: self.cfg.group.clone(),
                            why,
                        })
                    }
                }
            }
            Some(ResponseError::MemberIdRequired) => {
                // KIP-394: join again at once with the id the coordinator chose.
                self.member_id = r.member_id.to_string();
                self.state = State::Join(now);
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                self.state = State::Join(now);
            }
            Some(e @ ResponseError::FencedInstanceId) => self.fail(
                "JoinGroup",
                e,
                " (another process runs with the same --instance-id)",
            ),
            Some(e) if e.is_retriable() || matches!(e, ResponseError::RebalanceInProgress) => {
                self.state = State::Join(retry)
            }
            Some(e) => self.fail("JoinGroup", e, ""),
        }
    }

    /// The leader's work: every member's claim read, the partitions spread.
    fn lead(&self, r: &JoinGroupResponse) -> Result<Vec<(String, Bytes)>, String> {
        let mut members = Vec::with_capacity(r.members.len());
        for m in &r.members {
            let (_, owned, generation) =
                assign::read_subscription(m.metadata.clone(), &self.cfg.topic)
                    .map_err(|e| format!("member {}: {e}", m.member_id.as_str()))?;
            members.push(Member {
                id: m.member_id.to_string(),
                owned,
                generation,
            });
        }
        Ok(assign::assign(&self.partitions, &members)
            .into_iter()
            .map(|(id, ps)| {
                let a = assign::assignment(&self.cfg.topic, &ps);
                (id, a)
            })
            .collect())
    }

    /// The answer to the SyncGroup of [`Action::Sync`].
    pub fn on_sync(&mut self, now: Instant, r: &SyncGroupResponse) {
        match code(r.error_code) {
            None => match assign::read_assignment(r.assignment.clone(), &self.cfg.topic) {
                Ok(mut ps) => {
                    ps.sort_unstable();
                    ps.dedup();
                    self.alive_at = now;
                    self.state = State::Announce(ps);
                }
                Err(e) => {
                    self.state = State::Failed(GroupError::Assignment {
                        group: self.cfg.group.clone(),
                        why: e.to_string(),
                    })
                }
            },
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                self.state = State::Join(now);
            }
            Some(e @ ResponseError::FencedInstanceId) => self.fail(
                "SyncGroup",
                e,
                " (another process runs with the same --instance-id)",
            ),
            Some(e)
                if e.is_retriable()
                    || matches!(
                        e,
                        ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration
                    ) =>
            {
                self.state = State::Join(now + self.cfg.retry_backoff)
            }
            Some(e) => self.fail("SyncGroup", e, ""),
        }
    }

    /// The answer to the Heartbeat of [`Action::Heartbeat`].
    pub fn on_heartbeat(&mut self, now: Instant, r: &HeartbeatResponse) {
        match code(r.error_code) {
            None => {
                self.alive_at = now;
                self.state = State::Stable(now + self.cfg.heartbeat_interval);
            }
            // Another member joins or leaves: finish what is held, then rejoin.
            Some(ResponseError::RebalanceInProgress) => {
                self.alive_at = now;
                self.state = State::Revoke(true);
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                self.lost();
            }
            Some(ResponseError::IllegalGeneration) => self.lost(),
            Some(e @ ResponseError::FencedInstanceId) => self.fail(
                "Heartbeat",
                e,
                " (another process runs with the same --instance-id)",
            ),
            Some(_) => self.state = State::Stable(now + self.cfg.heartbeat_interval),
        }
    }

    /// The request in flight got no answer (the connection to the coordinator was lost, or it
    /// moved): the same step again after the backoff, on the coordinator found anew.
    pub fn on_no_answer(&mut self, now: Instant) {
        let again = now + self.cfg.retry_backoff;
        self.state = match std::mem::replace(&mut self.state, State::Joining) {
            State::Joining | State::Syncing => State::Join(again),
            State::Heartbeating => State::Stable(again),
            other => other,
        };
    }

    /// The partitions of [`Action::Revoke`] are given up (and committed, if asked).
    pub fn revoked(&mut self, now: Instant) {
        self.state = State::Join(now);
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
