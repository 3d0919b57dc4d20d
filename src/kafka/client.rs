//! A client for one core: the cluster's brokers, the leader of every partition asked about, one
//! connection per broker (opened when first needed), and the requests that are not the fetch
//! loop's own: Metadata, ListOffsets. Retriable errors are retried with backoff, after a
//! metadata refresh where the error says the leader moved, until the configured timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::batch::Isolation;
use super::conn::{Conn, ConnConfig};
use super::error::{Backoff, KafkaError};
use super::fetch::{self, Answer, FetchParams, Want};

/// Which end of a partition ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAt {
    Earliest,
    /// The high watermark (or, under `read_committed`, the last stable offset).
    Latest,
}

/// Where to reach the cluster and how long to keep trying.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub bootstrap: Vec<String>,
    pub conn: ConnConfig,
    /// How long a retriable failure may go on before it becomes the run's error.
    pub retry_for: Duration,
}

/// One partition as metadata describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMeta {
    pub leader: i32,
    pub leader_epoch: i32,
}

/// A client owned by one core.
#[derive(Debug)]
pub struct Client {
    pub cfg: ClientConfig,
    /// Node id → `host:port`.
    brokers: BTreeMap<i32, String>,
    conns: BTreeMap<i32, Conn>,
    /// The connection metadata goes over (to a bootstrap broker until one is known by id).
    meta: Option<Conn>,
    topics: BTreeMap<String, BTreeMap<i32, PartitionMeta>>,
}

impl Client {
    /// Connects to the first bootstrap broker that answers.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, KafkaError> {
        let mut c = Client {
            cfg,
            brokers: BTreeMap::new(),
            conns: BTreeMap::new(),
            meta: None,
            topics: BTreeMap::new(),
        };
        c.refresh(&[]).await?;
        Ok(c)
    }

    fn bootstrap_str(&self) -> String {
        self.cfg.bootstrap.join(",")
    }

    /// A connection for metadata: the current one, or the first broker that answers.
    async fn meta_conn(&mut self) -> Result<Conn, KafkaError> {
        if let Some(c) = self.meta.take() {
            return Ok(c);
        }
        // Any broker answers Metadata: reuse an open connection rather than open another.
        if let Some(node) = self.conns.keys().next().copied()
            && let Some(c) = self.conns.remove(&node)
        {
            return Ok(c);
        }
        let mut last = None;
        let known: Vec<String> = self.brokers.values().cloned().collect();
        for addr in self.cfg.bootstrap.iter().chain(&known) {
            match Conn::open(addr, &self.cfg.conn).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(KafkaError::Unreachable {
            brokers: self.bootstrap_str(),
            last: Box::new(last.unwrap_or(KafkaError::NoLeader {
                topic: String::new(),
                partition: -1,
                leader: -1,
            })),
        })
    }

    /// Asks for the brokers and for `topics`' partitions, retrying until every partition of
    /// them has a leader or the retry time is spent.
    pub async fn refresh(&mut self, topics: &[&str]) -> Result<(), KafkaError> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            match self.refresh_once(topics).await {
                Ok(()) => return Ok(()),
                Err(e) if e.retriable() && started.elapsed() < self.cfg.retry_for => {
                    tracing::warn!(error = %e, "Kafka: metadata failed; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn refresh_once(&mut self, topics: &[&str]) -> Result<(), KafkaError> {
        let mut conn = self.meta_conn().await?;
        let version = conn.version::<MetadataRequest>()?;
        let mut req = MetadataRequest::default();
        req.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string((*t).to_owned())));
                    mt
                })
                .collect(),
        );
        req.allow_auto_topic_creation = false;
        let resp = conn.call(&req, version, Duration::ZERO).await?;
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.conns.retain(|id, _| self.brokers.contains_key(id));
        // The connection becomes its broker's, when it is to one by that address.
        match self.brokers.iter().find(|(_, a)| **a == conn.broker) {
            Some((&node, _)) if !self.conns.contains_key(&node) => {
                self.conns.insert(node, conn);
            }
            _ => self.meta = Some(conn),
        }
        for t in &resp.topics {
            let name = t.name.as_ref().map_or("", |n| n.0.as_str()).to_owned();
            if let Some(error) = ResponseError::try_from_code(t.error_code) {
                if error == ResponseError::UnknownTopicOrPartition {
                    self.topics.remove(&name);
                    return Err(KafkaError::UnknownTopic {
                        topic: name,
                        brokers: self.bootstrap_str(),
                    });
                }
                return Err(KafkaError::Partition {
                    api: "Metadata",
                    topic: name,
                    partition: -1,
                    error,
                });
            }
            let mut parts = BTreeMap::new();
            for p in &t.partitions {
                if let Some(error) = ResponseError::try_from_code(p.error_code)
                    && error != ResponseError::ReplicaNotAvailable
                {
                    return Err(KafkaError::Partition {
                        api: "Metadata",
                        topic: name,
                        partition: p.partition_index,
                        error,
                    });
                }
                if !self.brokers.contains_key(&p.leader_id.0) {
                    return Err(KafkaError::NoLeader {
                        topic: name,
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                    });
                }
                parts.insert(
                    p.partition_index,
                    PartitionMeta {
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                    },
                );
            }
            self.topics.insert(name, parts);
        }
        Ok(())
    }

    /// After a failed request about `topic`: the error back when it is fatal or the retry time
    /// (from `started`) is spent; else waits the next backoff and, when the error says the
    /// leader moved, asks for metadata again.
    pub async fn retry_after(
        &mut self,
        e: KafkaError,
        started: Instant,
        backoff: &mut Backoff,
        topic: &str,
    ) -> Result<(), KafkaError> {
        if !e.retriable() || started.elapsed() >= self.cfg.retry_for {
            return Err(e);
        }
        tokio::time::sleep(backoff.next_wait()).await;
        if e.stale_metadata() {
            self.refresh(&[topic]).await?;
        }
        Ok(())
    }

    /// The topic's partitions, sorted (asks the cluster when the topic is not known yet).
    pub async fn partitions(&mut self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        if !self.topics.contains_key(topic) {
            self.refresh(&[topic]).await?;
        }
        Ok(self
            .topics
            .get(topic)
            .map(|p| p.keys().copied().collect())
            .unwrap_or_default())
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<PartitionMeta> {
        self.topics.get(topic)?.get(&partition).copied()
    }

    /// Some broker of the cluster (for requests any broker answers).
    pub fn any_broker(&self) -> Option<i32> {
        self.brokers.keys().next().copied()
    }

    /// The broker's address by node id.
    pub fn broker(&self, node: i32) -> Option<&str> {
        self.brokers.get(&node).map(String::as_str)
    }

    /// The connection to `node`, opened when there is none. Give it back with [`Client::put`];
    /// a connection that failed is simply not given back.
    pub async fn take(&mut self, node: i32) -> Result<Conn, KafkaError> {
        if let Some(c) = self.conns.remove(&node) {
            return Ok(c);
        }
        let addr = self
            .brokers
            .get(&node)
            .cloned()
            .ok_or(KafkaError::NoLeader {
                topic: String::new(),
                partition: -1,
                leader: node,
            })?;
        Conn::open(&addr, &self.cfg.conn).await
    }

    pub fn put(&mut self, node: i32, conn: Conn) {
        self.conns.insert(node, conn);
    }

    /// Open connections to brokers by id (not counting the metadata connection).
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Groups `partitions` of `topic` by leader.
    pub fn by_leader(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, Vec<i32>>, KafkaError> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            let m = self.partition(topic, p).ok_or(KafkaError::NoLeader {
                topic: topic.to_owned(),
                partition: p,
                leader: -1,
            })?;
            out.entry(m.leader).or_default().push(p);
        }
        Ok(out)
    }

    /// One end of each partition: one ListOffsets request per leader, retried as needed.
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        at: OffsetAt,
        isolation: Isolation,
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut out = BTreeMap::new();
        let mut left: Vec<i32> = partitions.to_vec();
        if !self.topics.contains_key(topic) {
            self.refresh(&[topic]).await?;
        }
        while !left.is_empty() {
            let mut failed = None;
            let groups = self.by_leader(topic, &left)?;
            left.clear();
            for (node, parts) in groups {
                match self
                    .list_offsets_at(node, topic, &parts, at, isolation)
                    .await
                {
                    Ok(found) => {
                        for (p, r) in found {
                            match r {
                                Ok(o) => {
                                    out.insert(p, o);
                                }
                                Err(e) => {
                                    left.push(p);
                                    failed = Some(e);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        left.extend(parts);
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                self.retry_after(e, started, &mut backoff, topic).await?;
            }
        }
        Ok(out)
    }

    async fn list_offsets_at(
        &mut self,
        node: i32,
        topic: &str,
        parts: &[i32],
        at: OffsetAt,
        isolation: Isolation,
    ) -> Result<Vec<(i32, Result<i64, KafkaError>)>, KafkaError> {
        let mut conn = self.take(node).await?;
        let version = conn.version::<ListOffsetsRequest>()?;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_owned()));
        t.partitions = parts
            .iter()
            .map(|&p| {
                let mut lp = ListOffsetsPartition::default();
                lp.partition_index = p;
                lp.current_leader_epoch = -1;
                lp.timestamp = match at {
                    OffsetAt::Earliest => -2,
                    OffsetAt::Latest => -1,
                };
                lp
            })
            .collect();
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.isolation_level = isolation.wire();
        req.topics = vec![t];
        let resp = conn.call(&req, version, Duration::ZERO).await?;
        self.put(node, conn);
        let mut out = Vec::with_capacity(parts.len());
        for t in resp.topics.iter().filter(|t| t.name.0.as_str() == topic) {
            for p in &t.partitions {
                if !parts.contains(&p.partition_index) {
                    continue;
                }
                let r = match ResponseError::try_from_code(p.error_code) {
                    None => Ok(p.offset),
                    Some(error) => Err(KafkaError::Partition {
                        api: "ListOffsets",
                        topic: topic.to_owned(),
                        partition: p.partition_index,
                        error,
                    }),
                };
                out.push((p.partition_index, r));
            }
        }
        for &p in parts {
            if !out.iter().any(|(q, _)| *q == p) {
                out.push((
                    p,
                    Err(KafkaError::Malformed {
                        broker: self.broker(node).unwrap_or("?").to_owned(),
                        api: "ListOffsets",
                        why: format!("no answer for partition {p}"),
                    }),
                ));
            }
        }
        Ok(out)
    }

    /// Fetches each of `wants` once (one request per leader), retrying partitions whose leader
    /// moved. Every answer has no error; a fatal partition error fails the call.
    pub async fn fetch_once(
        &mut self,
        topic: &str,
        wants: &[Want],
        params: &FetchParams,
    ) -> Result<Vec<Answer>, KafkaError> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut out = Vec::with_capacity(wants.len());
        let mut left: Vec<Want> = wants.to_vec();
        if !self.topics.contains_key(topic) {
            self.refresh(&[topic]).await?;
        }
        while !left.is_empty() {
            let parts: Vec<i32> = left.iter().map(|w| w.partition).collect();
            let mut failed = None;
            let mut retry = Vec::new();
            for (node, ps) in self.by_leader(topic, &parts)? {
                let ws: Vec<Want> = left
                    .iter()
                    .filter(|w| ps.contains(&w.partition))
                    .copied()
                    .collect();
                match self.fetch_at(node, topic, &ws, params).await {
                    Ok(answers) => {
                        for a in answers {
                            match a.error {
                                None => out.push(a),
                                Some(error) => {
                                    let e = KafkaError::Partition {
                                        api: "Fetch",
                                        topic: topic.to_owned(),
                                        partition: a.partition,
                                        error,
                                    };
                                    if let Some(w) = ws.iter().find(|w| w.partition == a.partition)
                                    {
                                        retry.push(*w);
                                    }
                                    failed = Some(e);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        retry.extend(ws);
                        failed = Some(e);
                    }
                }
            }
            left = retry;
            if let Some(e) = failed {
                self.retry_after(e, started, &mut backoff, topic).await?;
            }
        }
        Ok(out)
    }

    /// One Fetch to `node`; answers for partitions it did not mention are errors.
    pub async fn fetch_at(
        &mut self,
        node: i32,
        topic: &str,
        wants: &[Want],
        params: &FetchParams,
    ) -> Result<Vec<Answer>, KafkaError> {
        let conn = self.take(node).await?;
        let (conn, r) = fetch_on(conn, topic, wants, params).await;
        if let Some(c) = conn {
            self.put(node, c);
        }
        r
    }
}

/// Sends one sessionless Fetch over `conn` and takes the answer apart; gives the connection back
/// unless it failed. Missing partitions are answered with an error, so the caller retries them.
pub async fn fetch_on(
    conn: Conn,
    topic: &str,
    wants: &[Want],
    params: &FetchParams,
) -> (Option<Conn>, Result<Vec<Answer>, KafkaError>) {
    fetch_over(conn, topic, wants, params, false).await
}

/// [`fetch_on`] within the connection's fetch session (KIP-227): the request names only the
/// partitions whose position changed, and partitions without news are not answered (a full
/// request, the first and any after a failure, still answers every one of `wants`).
pub async fn fetch_in_session(
    conn: Conn,
    topic: &str,
    wants: &[Want],
    params: &FetchParams,
) -> (Option<Conn>, Result<Vec<Answer>, KafkaError>) {
    fetch_over(conn, topic, wants, params, true).await
}

async fn fetch_over(
    mut conn: Conn,
    topic: &str,
    wants: &[Want],
    params: &FetchParams,
    in_session: bool,
) -> (Option<Conn>, Result<Vec<Answer>, KafkaError>) {
    let version = match conn.version::<kafka_protocol::messages::FetchRequest>() {
        Ok(v) => v,
        Err(e) => return (Some(conn), Err(e)),
    };
    let plan = in_session.then(|| conn.session.plan(wants));
    let req = match &plan {
        Some(plan) => fetch::session_request(topic, plan, params),
        None => fetch::request(topic, wants, params),
    };
    let resp = match conn.call(&req, version, params.max_wait).await {
        Ok(r) => r,
        Err(e) => return (None, Err(e)),
    };
    let r = match fetch::answers(topic, resp) {
        Err(error) => {
            conn.session.reset();
            Err(KafkaError::Broker {
                broker: conn.broker.clone(),
                api: "Fetch",
                error,
            })
        }
        Ok((throttle, session_id, mut answers)) => {
            if let Some(plan) = &plan {
                conn.session.answered(plan, session_id);
            }
            if !throttle.is_zero() {
                tokio::time::sleep(throttle).await;
            }
            let asked: BTreeSet<i32> = wants.iter().map(|w| w.partition).collect();
            answers.retain(|a| asked.contains(&a.partition));
            if plan.as_ref().is_none_or(|p| p.is_full()) {
                let answered: BTreeSet<i32> = answers.iter().map(|a| a.partition).collect();
                for &partition in asked.difference(&answered) {
                    answers.push(Answer {
                        partition,
                        error: Some(ResponseError::UnknownServerError),
                        ..Answer::default()
                    });
                }
            }
            Ok(answers)
        }
    };
    (Some(conn), r)
}
