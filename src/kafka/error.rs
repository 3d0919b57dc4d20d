//! What can go wrong talking to Kafka, each naming the broker, topic, partition or offset, and
//! whether waiting and asking again can help ([`KafkaError::retriable`]).

use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot connect to Kafka broker {broker}: {source}")]
    Connect {
        broker: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka broker {broker}: connection lost during {api}: {source}")]
    Io {
        broker: String,
        api: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Kafka broker {broker}: {what} got no answer within {timeout:?}")]
    Timeout {
        broker: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("TLS with Kafka broker {broker}: {why}")]
    Tls { broker: String, why: String },
    #[error("Kafka broker {broker} refused SASL {mechanism} authentication: {why}")]
    Auth {
        broker: String,
        mechanism: &'static str,
        why: String,
    },
    #[error("Kafka broker {broker} sent a malformed {api} response: {why}")]
    Malformed {
        broker: String,
        api: &'static str,
        why: String,
    },
    #[error(
        "Kafka broker {broker} speaks no version of {api} that icefall speaks (it offers {theirs})"
    )]
    Unsupported {
        broker: String,
        api: &'static str,
        theirs: String,
    },
    #[error("{api} of {topic}/{partition}: the broker answered {error}")]
    Partition {
        api: &'static str,
        topic: String,
        partition: i32,
        error: ResponseError,
    },
    #[error("{api} to broker {broker}: the broker answered {error}")]
    Broker {
        broker: String,
        api: &'static str,
        error: ResponseError,
    },
    #[error("topic {topic:?} does not exist on {brokers}")]
    UnknownTopic { topic: String, brokers: String },
    #[error(
        "{topic}/{partition} has no leader that icefall can reach (metadata names broker {leader})"
    )]
    NoLeader {
        topic: String,
        partition: i32,
        leader: i32,
    },
    #[error("{topic}/{partition}: {source}")]
    Batch {
        topic: String,
        partition: i32,
        #[source]
        source: BatchError,
    },
    #[error("no Kafka broker of {brokers} could be reached: {last}")]
    Unreachable {
        brokers: String,
        #[source]
        last: Box<KafkaError>,
    },
}

impl KafkaError {
    /// True when the same request may succeed later (after a metadata refresh or a reconnect).
    pub fn retriable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Io { .. }
            | Self::Timeout { .. }
            | Self::NoLeader { .. } => true,
            Self::Partition { error, .. } | Self::Broker { error, .. } => error.is_retriable(),
            Self::Unreachable { last, .. } => last.retriable(),
            _ => false,
        }
    }

    /// True when the error says the partition's leader moved or is unknown: refresh metadata.
    pub fn stale_metadata(&self) -> bool {
        match self {
            Self::Partition { error, .. } | Self::Broker { error, .. } => stale(*error),
            Self::Connect { .. }
            | Self::Io { .. }
            | Self::Timeout { .. }
            | Self::NoLeader { .. } => true,
            _ => false,
        }
    }
}

/// Errors after which the client asks for metadata again before retrying.
pub fn stale(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::PreferredLeaderNotAvailable
            | ResponseError::BrokerNotAvailable
            | ResponseError::ReplicaNotAvailable
            | ResponseError::KafkaStorageError
            | ResponseError::NotCoordinator
    )
}

/// Exponential backoff with jitter: 50 ms doubling to 2 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() as u64 | 1);
        Self {
            next: Duration::from_millis(50),
            seed,
        }
    }
}

impl Backoff {
    /// The next wait (between half and all of the current step), then doubles the step.
    pub fn next_wait(&mut self) -> Duration {
        // xorshift64: jitter only, no need for a real generator.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(2));
        let half = step / 2;
        half + Duration::from_nanos(self.seed % (half.as_nanos() as u64).max(1))
    }
}
