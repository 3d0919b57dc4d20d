//! A protocol-level Kafka broker for what Tansu cannot serve: transactions (markers, aborted
//! transaction lists), several nodes with leaders that move, and prepared record batches of
//! every codec. It speaks the real wire format through kafka-protocol's codecs: ApiVersions,
//! Metadata, ListOffsets, Fetch, and for producers InitProducerId and Produce (idempotent: a
//! batch whose sequence was already written is answered DUPLICATE_SEQUENCE_NUMBER and not
//! written again), on real TCP listeners on loopback. Batches are served as
//! prepared; a Fetch answer also carries the first bytes of the next batch when one remains (a
//! cut-short trailing batch, as a real broker sends at its byte limit).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "wire_sasl.rs"]
mod sasl;

/// One prepared batch of a partition's log.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub base_offset: i64,
    pub last_offset: i64,
    pub bytes: Bytes,
}

/// A transaction the log aborted: (producer id, first offset, offset of its ABORT marker).
#[derive(Debug, Clone, Copy)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Default, Clone)]
pub struct Log {
    pub batches: Vec<Prepared>,
    pub aborted: Vec<AbortedTxn>,
    pub leader: i32,
}

impl Log {
    pub fn end(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.last_offset + 1)
    }
}

/// What the broker holds and what it saw.
#[derive(Debug, Default)]
pub struct State {
    pub topic: String,
    pub logs: BTreeMap<i32, Log>,
    /// Per Fetch request: (node, partitions asked).
    pub fetches: Vec<(i32, Vec<i32>)>,
    /// Per partition named in a Fetch request, in order: (partition, fetch offset).
    pub fetch_offsets: Vec<(i32, i64)>,
    /// Connections accepted, per node.
    pub connections: BTreeMap<i32, usize>,
    /// After this many Fetch requests to its leader, partition p moves to node n.
    pub move_after: Option<(usize, i32, i32)>,
    /// A partition answered without records until that move is done (so it is still being read
    /// when the moved partition joins its leader, whatever the timing).
    pub hold_until_moved: Option<i32>,
    /// Per Produce request and partition: (producer id, epoch, partition, base sequence, records).
    pub produces: Vec<(i64, i16, i32, i32, i32)>,
    /// The next sequence each (producer id, partition) must send.
    pub sequences: BTreeMap<(i64, i32), i32>,
    /// Produce requests to apply and then answer by closing the connection (a lost acknowledgement).
    pub lose_produce_answers: usize,
    pub producer_ids: i64,
    /// Serve incremental fetch sessions (KIP-227) to requests that ask for one (epoch 0).
    pub sessions: bool,
    /// Open sessions by id.
    pub open_sessions: BTreeMap<i32, OpenSession>,
    /// Every Fetch request served in a session.
    pub session_fetches: Vec<SessionFetch>,
    /// After this many requests in sessions, every open session is evicted once (the next
    /// incremental request gets FETCH_SESSION_ID_NOT_FOUND).
    pub evict_sessions_after: Option<usize>,
    pub sessions_made: i32,
    /// In a session, an odd-epoch request is answered for one partition only (as a broker at
    /// its response limit does): the others get no news and stay where they were.
    pub thin_answers: bool,
    /// SASL required on every connection (rsasl's server side), when set.
    pub sasl: Option<SaslSetup>,
    /// Per SaslAuthenticate served: (mechanism, user or token, accepted).
    pub authentications: Vec<(String, String, bool)>,
    /// Requests other than ApiVersions and SASL's that came before authentication.
    pub unauthenticated: usize,
}

/// What the broker's SASL accepts.
#[derive(Debug, Clone, Default)]
pub struct SaslSetup {
    /// Mechanisms enabled (e.g. `PLAIN`, `OAUTHBEARER`).
    pub mechanisms: Vec<String>,
    /// PLAIN's users and passwords.
    pub users: BTreeMap<String, String>,
    /// OAUTHBEARER tokens accepted.
    pub tokens: Vec<String>,
    /// The session lifetime granted (KIP-368); 0: unlimited.
    pub lifetime_ms: i64,
}

/// A fetch session the broker holds.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub node: i32,
    /// The epoch the next request must carry.
    pub next_epoch: i32,
    /// Partition → (fetch offset, partition max bytes).
    pub held: BTreeMap<i32, (i64, i32)>,
}

/// One Fetch request served in a session.
#[derive(Debug, Clone)]
pub struct SessionFetch {
    pub node: i32,
    pub id: i32,
    pub epoch: i32,
    pub named: Vec<i32>,
    pub forgotten: Vec<i32>,
    /// Partitions the session holds after it.
    pub held: usize,
}

pub struct WireBroker {
    pub state: Arc<Mutex<State>>,
    /// (node id, host:port).
    pub nodes: Vec<(i32, String)>,
}

impl WireBroker {
    /// `nodes` listeners on free loopback ports serving `topic` with `logs`.
    pub fn start(nodes: usize, topic: &str, logs: BTreeMap<i32, Log>) -> WireBroker {
        let state = Arc::new(Mutex::new(State {
            topic: topic.to_owned(),
            logs,
            ..State::default()
        }));
        let mut listeners = Vec::new();
        for id in 0..nodes as i32 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            let addr = l.local_addr().expect("addr").to_string();
            listeners.push((id, addr, l));
        }
        let node_list: Vec<(i32, String)> =
            listeners.iter().map(|(i, a, _)| (*i, a.clone())).collect();
        for (id, _, l) in listeners {
            let state = state.clone();
            let nodes = node_list.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("rt");
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(l).expect("listener");
                    loop {
                        let Ok((sock, _)) = l.accept().await else {
                            return;
                        };
                        *state.lock().unwrap().connections.entry(id).or_default() += 1;
                        let (state, nodes) = (state.clone(), nodes.clone());
                        tokio::spawn(async move {
                            let _ = serve(sock, id, state, nodes).await;
                        });
                    }
                });
            });
        }
        WireBroker {
            state,
            nodes: node_list,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.nodes[0].1.clone()
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    node: i32,
    state: Arc<Mutex<State>>,
    nodes: Vec<(i32, String)>,
) -> std::io::Result<()> {
    let mut auth = sasl::Conn::default();
    loop {
        let len = sock.read_i32().await? as usize;
        let mut buf = vec![0u8; len];
        sock.read_exact(&mut buf).await?;
        let mut frame = Bytes::from(buf);
        let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame)
            .map_err(std::io::Error::other)?;
        let v = header.request_api_version;
        let key = header.request_api_key;
        let setup = state.lock().unwrap().sasl.clone();
        if setup.is_some() && ![17, 18, 36].contains(&key) && !auth.authenticated {
            state.lock().unwrap().unauthenticated += 1;
            return Ok(());
        }
        let out = match ApiKey::try_from(key) {
            Ok(ApiKey::ApiVersions) => respond(&api_versions(), v, header.correlation_id),
            Ok(ApiKey::SaslHandshake) => {
                let req =
                    SaslHandshakeRequest::decode(&mut frame, v).map_err(std::io::Error::other)?;
                let r = auth.handshake(setup.as_ref(), &req);
                respond(&r, v, header.correlation_id)
            }
            Ok(ApiKey::SaslAuthenticate) => {
                let req = SaslAuthenticateRequest::decode(&mut frame, v)
                    .map_err(std::io::Error::other)?;
                let r = auth.authenticate(setup.as_ref(), &req, &state);
                respond(&r, v, header.correlation_id)
            }
            Ok(ApiKey::Metadata) => respond(&metadata(&state, &nodes), v, header.correlation_id),
            Ok(ApiKey::ListOffsets) => {
                let req =
                    ListOffsetsRequest::decode(&mut frame, v).map_err(std::io::Error::other)?;
                respond(&list_offsets(&state, &req), v, header.correlation_id)
            }
            Ok(ApiKey::Fetch) => {
                let req = FetchRequest::decode(&mut frame, v).map_err(std::io::Error::other)?;
                respond(&fetch(&state, node, &req), v, header.correlation_id)
            }
            Ok(ApiKey::InitProducerId) => {
                let mut r = InitProducerIdResponse::default();
                let mut s = state.lock().unwrap();
                s.producer_ids += 1;
                r.producer_id = ProducerId(1000 + s.producer_ids);
                r.producer_epoch = 0;
                respond(&r, v, header.correlation_id)
            }
            Ok(ApiKey::Produce) => {
                let req = ProduceRequest::decode(&mut frame, v).map_err(std::io::Error::other)?;
                let r = produce(&state, &req);
                let mut s = state.lock().unwrap();
                if s.lose_produce_answers > 0 {
                    s.lose_produce_answers -= 1;
                    return Ok(());
                }
                drop(s);
                respond(&r, v, header.correlation_id)
            }
            _ => return Ok(()),
        };
        sock.write_all(&out).await?;
    }
}

fn respond<R: Encodable + HeaderVersion>(r: &R, version: i16, correlation: i32) -> BytesMut {
    let mut h = ResponseHeader::default();
    h.correlation_id = correlation;
    let hv = R::header_version(version);
    let mut body = BytesMut::new();
    h.encode(&mut body, hv).expect("header");
    r.encode(&mut body, version).expect("body");
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out
}

fn api_versions() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = [
        (18, 0, 3),
        (3, 1, 12),
        (2, 1, 7),
        (1, 4, 12),
        (0, 3, 9),
        (22, 0, 4),
        (17, 0, 1),
        (36, 0, 2),
    ]
    .into_iter()
    .map(|(k, min, max)| {
        let mut a = ApiVersion::default();
        a.api_key = k;
        a.min_version = min;
        a.max_version = max;
        a
    })
    .collect();
    r
}

fn metadata(state: &Mutex<State>, nodes: &[(i32, String)]) -> MetadataResponse {
    let s = state.lock().unwrap();
    let mut r = MetadataResponse::default();
    r.brokers = nodes
        .iter()
        .map(|(id, addr)| {
            let (host, port) = addr.rsplit_once(':').expect("host:port");
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(*id);
            b.host = StrBytes::from_string(host.to_owned());
            b.port = port.parse().expect("port");
            b
        })
        .collect();
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(s.topic.clone())));
    t.partitions = s
        .logs
        .iter()
        .map(|(p, log)| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = *p;
            mp.leader_id = BrokerId(log.leader);
            mp.leader_epoch = 0;
            mp.replica_nodes = vec![BrokerId(log.leader)];
            mp.isr_nodes = vec![BrokerId(log.leader)];
            mp
        })
        .collect();
    r.topics = vec![t];
    r
}

fn list_offsets(state: &Mutex<State>, req: &ListOffsetsRequest) -> ListOffsetsResponse {
    let s = state.lock().unwrap();
    let mut r = ListOffsetsResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = ListOffsetsTopicResponse::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = ListOffsetsPartitionResponse::default();
                    rp.partition_index = p.partition_index;
                    match s.logs.get(&p.partition_index) {
                        None => rp.error_code = 3,
                        Some(log) => {
                            rp.offset = if p.timestamp == -2 {
                                log.batches.first().map_or(0, |b| b.base_offset)
                            } else {
                                log.end()
                            }
                        }
                    }
                    rp
                })
                .collect();
            rt
        })
        .collect();
    r
}

/// Appends each partition's batch unless its sequence is one the producer already wrote.
fn produce(state: &Mutex<State>, req: &ProduceRequest) -> ProduceResponse {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    let mut s = state.lock().unwrap();
    let mut r = ProduceResponse::default();
    for t in &req.topic_data {
        let mut rt = TopicProduceResponse::default();
        rt.name = t.name.clone();
        for d in &t.partition_data {
            let mut rp = PartitionProduceResponse::default();
            rp.index = d.index;
            let bytes = d.records.clone().unwrap_or_default();
            let field = |at: usize, n: usize| bytes.get(at..at + n).map(|b| b.to_vec());
            let (Some(pid), Some(epoch), Some(seq), Some(count)) =
                (field(43, 8), field(51, 2), field(53, 4), field(57, 4))
            else {
                rp.error_code = 87; // INVALID_RECORD
                rt.partition_responses.push(rp);
                continue;
            };
            let pid = i64::from_be_bytes(pid.try_into().unwrap());
            let epoch = i16::from_be_bytes(epoch.try_into().unwrap());
            let seq = i32::from_be_bytes(seq.try_into().unwrap());
            let count = i32::from_be_bytes(count.try_into().unwrap());
            s.produces.push((pid, epoch, d.index, seq, count));
            let next = s.sequences.get(&(pid, d.index)).copied().unwrap_or(0);
            let end = s.logs.get(&d.index).map(Log::end);
            match end {
                None => rp.error_code = 3, // UNKNOWN_TOPIC_OR_PARTITION
                Some(_) if pid >= 0 && seq < next => rp.error_code = 46, // DUPLICATE_SEQUENCE_NUMBER
                Some(_) if pid >= 0 && seq > next => rp.error_code = 45, // OUT_OF_ORDER_SEQUENCE_NUMBER
                Some(base) => {
                    let mut b = BytesMut::from(&bytes[..]);
                    b[..8].copy_from_slice(&base.to_be_bytes());
                    let last = base + i64::from(count) - 1;
                    s.logs.get_mut(&d.index).unwrap().batches.push(Prepared {
                        base_offset: base,
                        last_offset: last,
                        bytes: b.freeze(),
                    });
                    s.sequences.insert((pid, d.index), seq + count);
                    rp.base_offset = base;
                }
            }
            rt.partition_responses.push(rp);
        }
        r.responses.push(rt);
    }
    r
}

fn fetch(state: &Mutex<State>, node: i32, req: &FetchRequest) -> FetchResponse {
    let mut s = state.lock().unwrap();
    let asked: Vec<i32> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.partition))
        .collect();
    s.fetches.push((node, asked));
    for t in &req.topics {
        for p in &t.partitions {
            s.fetch_offsets.push((p.partition, p.fetch_offset));
        }
    }
    if let Some((after, p, to)) = s.move_after {
        let to_leader = s
            .fetches
            .iter()
            .filter(|(n, ps)| *n != to && ps.contains(&p))
            .count();
        if to_leader >= after {
            if let Some(log) = s.logs.get_mut(&p) {
                log.leader = to;
            }
            s.move_after = None;
        }
    }
    let named: BTreeMap<i32, (i64, i32)> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|fp| (fp.partition, (fp.fetch_offset, fp.partition_max_bytes)))
        .collect();
    let mut r = FetchResponse::default();
    let topic = req
        .topics
        .first()
        .map(|t| t.topic.clone())
        .or_else(|| req.forgotten_topics_data.first().map(|f| f.topic.clone()))
        .unwrap_or_default();
    // Sessionless (or sessions off): every named partition is answered.
    let (wanted, only_news) = if !s.sessions || req.session_epoch == -1 {
        (named, false)
    } else if req.session_epoch == 0 {
        s.sessions_made += 1;
        let id = s.sessions_made;
        s.open_sessions.insert(
            id,
            OpenSession {
                node,
                next_epoch: 1,
                held: named.clone(),
            },
        );
        s.session_fetches.push(SessionFetch {
            node,
            id,
            epoch: 0,
            named: named.keys().copied().collect(),
            forgotten: vec![],
            held: named.len(),
        });
        r.session_id = id;
        (named, false)
    } else {
        if let Some(n) = s.evict_sessions_after
            && s.session_fetches.len() >= n
        {
            s.open_sessions.clear();
            s.evict_sessions_after = None;
        }
        let forgotten: Vec<i32> = req
            .forgotten_topics_data
            .iter()
            .flat_map(|f| f.partitions.iter().copied())
            .collect();
        let Some(open) = s.open_sessions.get_mut(&req.session_id) else {
            r.error_code = 70; // FETCH_SESSION_ID_NOT_FOUND
            return r;
        };
        if open.node != node || open.next_epoch != req.session_epoch {
            r.error_code = 71; // INVALID_FETCH_SESSION_EPOCH
            return r;
        }
        open.next_epoch += 1;
        for p in &forgotten {
            open.held.remove(p);
        }
        open.held.extend(named.iter().map(|(p, v)| (*p, *v)));
        let held = open.held.clone();
        s.session_fetches.push(SessionFetch {
            node,
            id: req.session_id,
            epoch: req.session_epoch,
            named: named.keys().copied().collect(),
            forgotten,
            held: held.len(),
        });
        r.session_id = req.session_id;
        (held, true)
    };
    let mut rt = FetchableTopicResponse::default();
    rt.topic = topic;
    rt.partitions = wanted
        .iter()
        .map(|(p, (offset, max))| answer(&s, node, *p, *offset, *max, req.isolation_level))
        // In a session, a partition without news is left out of the answer.
        .filter(|pd| {
            !only_news || pd.error_code != 0 || pd.records.as_ref().is_some_and(|r| !r.is_empty())
        })
        .collect();
    if only_news && s.thin_answers && req.session_epoch % 2 == 1 {
        rt.partitions.truncate(1);
    }
    r.responses = vec![rt];
    r
}

fn answer(
    s: &State,
    node: i32,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    isolation: i8,
) -> PartitionData {
    let mut pd = PartitionData::default();
    pd.partition_index = partition;
    let Some(log) = s.logs.get(&partition) else {
        pd.error_code = 3;
        return pd;
    };
    if log.leader != node {
        pd.error_code = 6; // NOT_LEADER_OR_FOLLOWER
        return pd;
    }
    pd.high_watermark = log.end();
    pd.last_stable_offset = log.end();
    pd.log_start_offset = log.batches.first().map_or(0, |b| b.base_offset);
    if s.move_after.is_some() && s.hold_until_moved == Some(partition) {
        pd.records = Some(Bytes::new());
        return pd;
    }
    let mut out = BytesMut::new();
    let mut last = offset;
    let mut rest = log
        .batches
        .iter()
        .filter(|b| b.last_offset >= offset)
        .peekable();
    while let Some(b) = rest.next() {
        out.extend_from_slice(&b.bytes);
        last = b.last_offset;
        if out.len() >= max_bytes.max(1) as usize {
            break;
        }
        if let Some(next) = rest.peek()
            && out.len() + next.bytes.len() > max_bytes.max(1) as usize
        {
            // What a broker at its byte limit sends: the next batch cut short.
            out.extend_from_slice(&next.bytes[..next.bytes.len() / 2]);
            break;
        }
    }
    if isolation == 1 {
        pd.aborted_transactions = Some(
            log.aborted
                .iter()
                .filter(|a| a.first_offset <= last && a.last_offset >= offset)
                .map(|a| {
                    let mut at = AbortedTransaction::default();
                    at.producer_id = ProducerId(a.producer_id);
                    at.first_offset = a.first_offset;
                    at
                })
                .collect(),
        );
    }
    pd.records = Some(out.freeze());
    pd
}
