//! Producing: one batch per partition, one Produce request per leader, acknowledged by all
//! in-sync replicas. Idempotent when asked (InitProducerId, the producer epoch and a sequence per
//! partition): a batch resent after a lost acknowledgement keeps its sequence, and the broker
//! writes it once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::client::Client;
use super::codec::Codec;
use super::encode::{BatchSpec, OutRecord, encode_batch};
use super::error::{Backoff, KafkaError};

/// A header to produce: its key and its value (`None`: a null value).
pub type HeaderRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// One record to produce.
#[derive(Debug, Clone, Copy)]
pub struct ProduceRecord<'a> {
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [HeaderRef<'a>],
}

#[derive(Debug, Clone, Copy)]
pub struct ProducerConfig {
    pub idempotent: bool,
    pub codec: Codec,
    /// How long the broker may take to replicate a request.
    pub request_timeout: Duration,
}

/// A producer for one topic.
#[derive(Debug)]
pub struct Producer {
    pub client: Client,
    topic: String,
    partitions: Vec<i32>,
    /// Producer id and epoch, when idempotent.
    id: Option<(i64, i16)>,
    sequences: BTreeMap<i32, i32>,
    cfg: ProducerConfig,
    /// Batches the broker reported as already written (a resend it deduplicated).
    pub duplicates: u64,
    /// Requests sent again after a retriable failure.
    pub retries: u64,
}

impl Producer {
    /// A producer for `topic`; fails naming the topic when it does not exist.
    pub async fn open(
        mut client: Client,
        topic: &str,
        cfg: ProducerConfig,
    ) -> Result<Self, KafkaError> {
        let partitions = client.partitions(topic).await?;
        let id = if cfg.idempotent {
            Some(init_producer_id(&mut client).await?)
        } else {
            None
        };
        Ok(Self {
            client,
            topic: topic.to_owned(),
            partitions,
            id,
            sequences: BTreeMap::new(),
            cfg,
            duplicates: 0,
            retries: 0,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Produces one batch per `(partition, records)` (one partition at most once), and returns
    /// per partition the offset of its batch's first record (-1 when the broker only said it
    /// already had the batch). Retriable failures are retried with the same batches until the
    /// client's retry time is spent.
    pub async fn send(
        &mut self,
        batches: &[(i32, &[ProduceRecord<'_>])],
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let mut encoded: BTreeMap<i32, (bytes::Bytes, i32)> = BTreeMap::new();
        for (p, recs) in batches {
            if recs.is_empty() {
                continue;
            }
            let seq = self.sequences.get(p).copied().unwrap_or(0);
            let bytes = self.encode(seq, recs)?;
            encoded.insert(*p, (bytes, recs.len() as i32));
        }
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut out = BTreeMap::new();
        while !encoded.is_empty() {
            let parts: Vec<i32> = encoded.keys().copied().collect();
            let mut failed = None;
            for (node, ps) in self.client.by_leader(&self.topic, &parts)? {
                match self.send_to(node, &ps, &encoded).await {
                    Ok(results) => {
                        for (p, r) in results {
                            match r {
                                Ok(base) => {
                                    if let Some((_, n)) = encoded.remove(&p) {
                                        let s = self.sequences.entry(p).or_insert(0);
                                        *s = s.checked_add(n).unwrap_or(0);
                                    }
                                    out.insert(p, base);
                                }
                                Err(e) => failed = Some(e),
                            }
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                self.client
                    .retry_after(e, started, &mut backoff, &self.topic)
                    .await?;
                self.retries += 1;
            }
        }
        Ok(out)
    }

    fn encode(
        &self,
        base_sequence: i32,
        recs: &[ProduceRecord<'_>],
    ) -> Result<bytes::Bytes, KafkaError> {
        let out: Vec<OutRecord<'_>> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| OutRecord {
                offset: i as i64,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
            .collect();
        let (producer_id, producer_epoch) = self.id.unwrap_or((-1, -1));
        let spec = BatchSpec {
            codec: self.cfg.codec,
            producer_id,
            producer_epoch,
            base_sequence: if self.id.is_some() { base_sequence } else { -1 },
            ..BatchSpec::default()
        };
        let mut buf = Vec::new();
        encode_batch(&spec, &out, &mut buf).map_err(|e| KafkaError::Malformed {
            broker: String::new(),
            api: "Produce",
            why: format!("encoding a batch: {e}"),
        })?;
        Ok(bytes::Bytes::from(buf))
    }

    async fn send_to(
        &mut self,
        node: i32,
        parts: &[i32],
        encoded: &BTreeMap<i32, (bytes::Bytes, i32)>,
    ) -> Result<Vec<(i32, Result<i64, KafkaError>)>, KafkaError> {
        let mut conn = self.client.take(node).await?;
        let version = conn.version::<ProduceRequest>()?;
        let mut t = TopicProduceData::default();
        t.name = TopicName(StrBytes::from_string(self.topic.clone()));
        t.partition_data = parts
            .iter()
            .filter_map(|p| encoded.get(p).map(|(b, _)| (p, b)))
            .map(|(p, b)| {
                let mut d = PartitionProduceData::default();
                d.index = *p;
                d.records = Some(b.clone());
                d
            })
            .collect();
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = self.cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32;
        req.topic_data = vec![t];
        let resp = conn.call(&req, version, self.cfg.request_timeout).await?;
        self.client.put(node, conn);
        let mut out = Vec::new();
        for t in resp
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == self.topic)
        {
            for p in t
                .partition_responses
                .iter()
                .filter(|p| parts.contains(&p.index))
            {
                let r = match ResponseError::try_from_code(p.error_code) {
                    None => Ok(p.base_offset),
                    Some(ResponseError::DuplicateSequenceNumber) => {
                        self.duplicates += 1;
                        Ok(-1)
                    }
                    Some(error) => Err(KafkaError::Partition {
                        api: "Produce",
                        topic: self.topic.clone(),
                        partition: p.index,
                        error,
                    }),
                };
                out.push((p.index, r));
            }
        }
        Ok(out)
    }
}

/// A producer id and epoch for an idempotent (not transactional) producer; any broker gives one.
async fn init_producer_id(client: &mut Client) -> Result<(i64, i16), KafkaError> {
    let started = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        let r = init_once(client).await;
        match r {
            Err(e) if e.retriable() && started.elapsed() < client.cfg.retry_for => {
                tokio::time::sleep(backoff.next_wait()).await;
            }
            r => return r,
        }
    }
}

async fn init_once(client: &mut Client) -> Result<(i64, i16), KafkaError> {
    let node = client.any_broker().ok_or(KafkaError::NoLeader {
        topic: String::new(),
        partition: -1,
        leader: -1,
    })?;
    let mut conn = client.take(node).await?;
    let version = conn.version::<InitProducerIdRequest>()?;
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let resp = conn.call(&req, version, Duration::ZERO).await?;
    let broker = conn.broker.clone();
    client.put(node, conn);
    if let Some(error) = ResponseError::try_from_code(resp.error_code) {
        return Err(KafkaError::Broker {
            broker,
            api: "InitProducerId",
            error,
        });
    }
    Ok((resp.producer_id.0, resp.producer_epoch))
}
