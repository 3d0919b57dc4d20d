//! Fetch requests built and responses taken apart (sans-IO): one request carries every
//! partition a core reads from one leader; the answer is split into per-partition parts whose
//! record bytes are slices of the response frame.
//!
//! A request is sessionless (session id 0, epoch -1, every broker serves it) or belongs to an
//! incremental fetch session ([`super::session`]), which names only what changed.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::batch::{Aborted, Isolation};

/// How much a fetch asks for and how long the broker may wait to fill it.
#[derive(Debug, Clone, Copy)]
pub struct FetchParams {
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// For the whole response.
    pub max_bytes: i32,
    /// For each partition.
    pub partition_max_bytes: i32,
    pub isolation: Isolation,
}

/// One partition to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub partition: i32,
    pub offset: i64,
    /// From metadata, so a stale leader answers FENCED_LEADER_EPOCH; -1 when unknown.
    pub leader_epoch: i32,
}

/// A sessionless Fetch request for `wants` of `topic`.
pub fn request(topic: &str, wants: &[Want], p: &FetchParams) -> FetchRequest {
    let mut r = request_in(topic, wants, p);
    r.session_id = 0;
    r.session_epoch = -1;
    r
}

/// The Fetch request of a session's `plan`.
pub fn session_request(
    topic: &str,
    plan: &super::session::SessionRequest,
    p: &FetchParams,
) -> FetchRequest {
    let mut r = request_in(topic, &plan.send, p);
    r.session_id = plan.session_id;
    r.session_epoch = plan.session_epoch;
    if r.topics.first().is_some_and(|t| t.partitions.is_empty()) {
        r.topics.clear();
    }
    if !plan.forget.is_empty() {
        let mut f = ForgottenTopic::default();
        f.topic = TopicName(StrBytes::from_string(topic.to_owned()));
        f.partitions = plan.forget.clone();
        r.forgotten_topics_data = vec![f];
    }
    r
}

fn request_in(topic: &str, wants: &[Want], p: &FetchParams) -> FetchRequest {
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partitions = wants
        .iter()
        .map(|w| {
            let mut fp = FetchPartition::default();
            fp.partition = w.partition;
            fp.fetch_offset = w.offset;
            fp.current_leader_epoch = w.leader_epoch;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            fp.partition_max_bytes = p.partition_max_bytes;
            fp
        })
        .collect();
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_wait_ms = p.max_wait.as_millis().min(i32::MAX as u128) as i32;
    r.min_bytes = p.min_bytes;
    r.max_bytes = p.max_bytes;
    r.isolation_level = p.isolation.wire();
    r.topics = vec![t];
    r
}

/// One partition's share of a Fetch response.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub partition: i32,
    pub error: Option<ResponseError>,
    pub high_watermark: i64,
    /// -1 when the broker does not say.
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub aborted: Vec<Aborted>,
    pub records: Bytes,
}

impl Answer {
    /// Where the partition ends for a reader at `isolation`: the last stable offset under
    /// `read_committed` (records past it are not served yet), else the high watermark.
    pub fn end(&self, isolation: Isolation) -> i64 {
        match isolation {
            Isolation::ReadCommitted if self.last_stable_offset >= 0 => {
                self.last_stable_offset.min(self.high_watermark)
            }
            _ => self.high_watermark,
        }
    }
}

/// A response taken apart: the throttle to honour, the session id it carries, and each
/// partition of `topic` it answers. `Err` is a response-level error code.
pub fn answers(
    topic: &str,
    resp: FetchResponse,
) -> Result<(Duration, i32, Vec<Answer>), ResponseError> {
    if let Some(e) = ResponseError::try_from_code(resp.error_code) {
        return Err(e);
    }
    let throttle = Duration::from_millis(u64::try_from(resp.throttle_time_ms).unwrap_or(0));
    let session_id = resp.session_id;
    let mut out = Vec::new();
    for t in resp.responses {
        if t.topic.0.as_str() != topic {
            continue;
        }
        for p in t.partitions {
            out.push(Answer {
                partition: p.partition_index,
                error: ResponseError::try_from_code(p.error_code),
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                log_start_offset: p.log_start_offset,
                aborted: p
                    .aborted_transactions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| Aborted {
                        producer_id: a.producer_id.0,
                        first_offset: a.first_offset,
                    })
                    .collect(),
                records: p.records.unwrap_or_default(),
            });
        }
    }
    Ok((throttle, session_id, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ProducerId;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };

    #[test]
    fn one_request_carries_every_partition_and_answers_split_back() {
        let p = FetchParams {
            max_wait: Duration::from_millis(250),
            min_bytes: 1,
            max_bytes: 1 << 20,
            partition_max_bytes: 1 << 16,
            isolation: Isolation::ReadCommitted,
        };
        let wants = [
            Want {
                partition: 0,
                offset: 5,
                leader_epoch: 3,
            },
            Want {
                partition: 7,
                offset: 9,
                leader_epoch: -1,
            },
        ];
        let r = request("t", &wants, &p);
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].partitions.len(), 2);
        assert_eq!(r.topics[0].partitions[1].fetch_offset, 9);
        assert_eq!(r.topics[0].partitions[0].current_leader_epoch, 3);
        assert_eq!(
            (r.isolation_level, r.max_wait_ms, r.session_epoch),
            (1, 250, -1)
        );

        let mut pd = PartitionData::default();
        pd.partition_index = 7;
        pd.high_watermark = 20;
        pd.last_stable_offset = 15;
        let mut a = AbortedTransaction::default();
        a.producer_id = ProducerId(4);
        a.first_offset = 11;
        pd.aborted_transactions = Some(vec![a]);
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName("t".into());
        t.partitions = vec![pd];
        let mut other = t.clone();
        other.topic = TopicName("other".into());
        let mut resp = FetchResponse::default();
        resp.throttle_time_ms = 30;
        resp.responses = vec![t, other];
        let (throttle, _, parts) = answers("t", resp).unwrap();
        assert_eq!(throttle, Duration::from_millis(30));
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].aborted,
            [Aborted {
                producer_id: 4,
                first_offset: 11
            }]
        );
        assert_eq!(parts[0].end(Isolation::ReadCommitted), 15);
        assert_eq!(parts[0].end(Isolation::ReadUncommitted), 20);
    }
}
