//! The group coordinator's connection: FindCoordinator, then the requests a [`Membership`]
//! asks for (JoinGroup, SyncGroup, Heartbeat), LeaveGroup and OffsetCommit, each answer handed
//! back to the state machine. The decisions stay in `group`; this is only the wire.

use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::Client;
use super::conn::Conn;
use super::error::KafkaError;
use super::group::{Action, Membership};

/// A connection to one group's coordinator.
#[derive(Debug)]
pub struct Coordinator {
    group: String,
    broker: String,
    conn: Conn,
}

fn refused(broker: &str, api: &'static str, code: i16) -> Result<(), KafkaError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(KafkaError::Broker {
            broker: broker.to_owned(),
            api,
            error,
        }),
    }
}

impl Coordinator {
    /// Asks any broker which one coordinates `group`, and connects to it.
    pub async fn find(client: &mut Client, group: &str) -> Result<Coordinator, KafkaError> {
        let node = client
            .any_broker()
            .ok_or_else(|| KafkaError::UnknownTopic {
                topic: String::new(),
                brokers: client.cfg.bootstrap.join(","),
            })?;
        let mut conn = client.take(node).await?;
        let broker = client.broker(node).unwrap_or_default().to_owned();
        let version = conn.version::<FindCoordinatorRequest>()?;
        let key = StrBytes::from_string(group.to_owned());
        let mut req = FindCoordinatorRequest::default().with_key_type(0);
        if version >= 4 {
            req = req.with_coordinator_keys(vec![key]);
        } else {
            req = req.with_key(key);
        }
        let r = conn.call(&req, version, Duration::ZERO).await?;
        client.put(node, conn);
        let (code, host, port) = match r.coordinators.first() {
            Some(c) if version >= 4 => (c.error_code, c.host.to_string(), c.port),
            _ => (r.error_code, r.host.to_string(), r.port),
        };
        refused(&broker, "FindCoordinator", code)?;
        let addr = format!("{host}:{port}");
        let conn = Conn::open(&addr, &client.cfg.conn).await?;
        Ok(Coordinator {
            group: group.to_owned(),
            broker: addr,
            conn,
        })
    }

    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Sends what `action` asks and hands the answer to `m`. Returns the actions that are not
    /// requests (revoke, assigned, wait, fatal) for the caller. A transport error is handed to
    /// `m` as no answer and returned, so the caller can find the coordinator again.
    pub async fn perform(
        &mut self,
        m: &mut Membership,
        action: Action,
        wait: Duration,
    ) -> Result<Option<Action>, KafkaError> {
        let result = match &action {
            Action::Join(req) => self.join(m, req, wait).await,
            Action::Sync(req) => self.sync(m, req, wait).await,
            Action::Heartbeat(req) => self.heartbeat(m, req).await,
            _ => return Ok(Some(action)),
        };
        if result.is_err() {
            m.on_no_answer(Instant::now());
        }
        result.map(|()| None)
    }

    async fn join(
        &mut self,
        m: &mut Membership,
        req: &JoinGroupRequest,
        wait: Duration,
    ) -> Result<(), KafkaError> {
        let v = self.conn.version::<JoinGroupRequest>()?;
        let r = self.conn.call(req, v, wait).await?;
        tracing::debug!(error = r.error_code, generation = r.generation_id, leader = %r.leader, member = %r.member_id, members = r.members.len(), "JoinGroup answered");
        m.on_join(Instant::now(), &r);
        Ok(())
    }

    async fn sync(
        &mut self,
        m: &mut Membership,
        req: &SyncGroupRequest,
        wait: Duration,
    ) -> Result<(), KafkaError> {
        let v = self.conn.version::<SyncGroupRequest>()?;
        let r = self.conn.call(req, v, wait).await?;
        tracing::debug!(error = r.error_code, "SyncGroup answered");
        m.on_sync(Instant::now(), &r);
        Ok(())
    }

    async fn heartbeat(
        &mut self,
        m: &mut Membership,
        req: &HeartbeatRequest,
    ) -> Result<(), KafkaError> {
        let v = self.conn.version::<HeartbeatRequest>()?;
        let r = self.conn.call(req, v, Duration::ZERO).await?;
        m.on_heartbeat(Instant::now(), &r);
        Ok(())
    }

    /// Leaves the group at shutdown, so the others rebalance now rather than at the session's
    /// end. A static member (KIP-345) does not leave: its restart keeps its partitions.
    pub async fn leave(
        &mut self,
        m: &Membership,
        instance_id: Option<&str>,
    ) -> Result<(), KafkaError> {
        if instance_id.is_some() || m.member_id().is_empty() {
            return Ok(());
        }
        let v = self.conn.version::<LeaveGroupRequest>()?;
        let group = GroupId(StrBytes::from_string(self.group.clone()));
        let member = StrBytes::from_string(m.member_id().to_owned());
        let mut req = LeaveGroupRequest::default().with_group_id(group);
        if v >= 3 {
            req = req.with_members(vec![MemberIdentity::default().with_member_id(member)]);
        } else {
            req = req.with_member_id(member);
        }
        let r = self.conn.call(&req, v, Duration::ZERO).await?;
        refused(&self.broker, "LeaveGroup", r.error_code)
    }

    /// Commits `offsets` of `topic` to the group, as the table holds them: advisory, for the
    /// tools that show lag (icefall resumes from the table, never from these).
    pub async fn commit_offsets(
        &mut self,
        m: &Membership,
        instance_id: Option<&str>,
        topic: &str,
        offsets: &crate::record::Offsets,
    ) -> Result<(), KafkaError> {
        let v = self.conn.version::<OffsetCommitRequest>()?;
        let partitions = offsets
            .iter()
            .map(|(p, o)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
            })
            .collect();
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id_or_member_epoch(m.generation())
            .with_member_id(StrBytes::from_string(m.member_id().to_owned()))
            .with_group_instance_id(instance_id.map(|s| StrBytes::from_string(s.to_owned())))
            .with_retention_time_ms(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(partitions),
            ]);
        let r = self.conn.call(&req, v, Duration::ZERO).await?;
        for t in &r.topics {
            for p in &t.partitions {
                if let Some(error) = ResponseError::try_from_code(p.error_code) {
                    return Err(KafkaError::Partition {
                        api: "OffsetCommit",
                        topic: topic.to_owned(),
                        partition: p.partition_index,
                        error,
                    });
                }
            }
        }
        Ok(())
    }
}
