//! Consumer-group assignment, sans-IO: the partitions of one topic spread over a group's members
//! evenly and, where it can, where they were (sticky), decided by the member the coordinator
//! makes leader; and the consumer protocol's member metadata (`ConsumerProtocolSubscription`,
//! `ConsumerProtocolAssignment`), so `kafka-consumer-groups --describe` and every Kafka tool read
//! icefall's groups as any consumer's. Other members' metadata comes from the network: it is
//! read with every count bounded by the bytes that remain, never by the count itself.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The assignor's name in JoinGroup (every member of an icefall group uses it).
pub const ASSIGNOR: &str = "icefall-sticky";
/// The consumer protocol's version icefall writes: v2 carries the partitions a member owns and
/// the generation it owned them in.
const SUBSCRIPTION_VERSION: i16 = 2;
const ASSIGNMENT_VERSION: i16 = 1;

/// A member as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// The partitions it held in the generation it names.
    pub owned: Vec<i32>,
    /// The generation `owned` is from (-1: unknown, as consumer protocol v0/v1 write).
    pub generation: i32,
}

/// Member metadata that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("consumer protocol metadata: {0}")]
pub struct MetadataError(pub String);

/// Partitions per member: every partition of `partitions` exactly once, counts differing by at
/// most one, each member keeping as many of the partitions it owned as that allows. A partition
/// two members claim goes to the claim of the newer generation (a stale member's memory loses);
/// claims of partitions the topic lacks are ignored. Deterministic for the same input.
pub fn assign(partitions: &[i32], members: &[Member]) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> =
        members.iter().map(|m| (m.id.clone(), Vec::new())).collect();
    if members.is_empty() {
        return out;
    }
    let all: BTreeSet<i32> = partitions.iter().copied().collect();
    // The claim that wins each partition: newest generation, then the smallest member id.
    let mut claim: BTreeMap<i32, (i32, &str)> = BTreeMap::new();
    for m in members {
        for p in m.owned.iter().filter(|p| all.contains(p)) {
            let c = (m.generation, m.id.as_str());
            let e = claim.entry(*p).or_insert(c);
            if c.0 > e.0 || (c.0 == e.0 && c.1 < e.1) {
                *e = c;
            }
        }
    }
    let mut kept: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (p, (_, id)) in &claim {
        kept.entry(id).or_default().push(*p);
    }
    // Quotas: `base` each, one more for `extra` members, those that keep the most first.
    let (base, extra) = (all.len() / members.len(), all.len() % members.len());
    let mut order: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    order.sort_by_key(|id| (std::cmp::Reverse(kept.get(id).map_or(0, Vec::len)), *id));
    order.dedup();
    let quota: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, base + usize::from(i < extra)))
        .collect();
    let mut free: Vec<i32> = Vec::new();
    for id in &order {
        let mine = kept.remove(id).unwrap_or_default();
        let q = quota[id];
        free.extend(mine.iter().skip(q));
        out.entry((*id).to_string())
            .or_default()
            .extend(mine.into_iter().take(q));
    }
    free.extend(all.iter().filter(|p| !claim.contains_key(p)));
    free.sort_unstable();
    // The freed and unclaimed partitions go to whoever is furthest below its quota.
    let mut free = free.into_iter();
    for id in &order {
        let list = out.entry((*id).to_string()).or_default();
        while list.len() < quota[id] {
            match free.next() {
                Some(p) => list.push(p),
                None => break,
            }
        }
        list.sort_unstable();
    }
    out
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len().min(i16::MAX as usize) as i16);
    buf.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_partitions(buf: &mut BytesMut, topic: &str, partitions: &[i32]) {
    if partitions.is_empty() {
        buf.put_i32(0);
        return;
    }
    buf.put_i32(1);
    put_str(buf, topic);
    buf.put_i32(partitions.len() as i32);
    for p in partitions {
        buf.put_i32(*p);
    }
}

/// A member's JoinGroup metadata: it reads `topic` and owned `owned` in `generation`
/// (consumer protocol v2).
pub fn subscription(topic: &str, owned: &[i32], generation: i32) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    buf.put_i32(1);
    put_str(&mut buf, topic);
    buf.put_i32(-1); // no user data
    put_partitions(&mut buf, topic, owned);
    buf.put_i32(generation);
    buf.freeze()
}

/// What the leader sends a member in SyncGroup: its partitions of `topic`.
pub fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(ASSIGNMENT_VERSION);
    put_partitions(&mut buf, topic, partitions);
    buf.put_i32(-1); // no user data
    buf.freeze()
}

/// A bounded reader over untrusted metadata bytes.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), MetadataError> {
        if self.0.remaining() < n {
            return Err(MetadataError(format!(
                "{what} needs {n} bytes, {} remain",
                self.0.remaining()
            )));
        }
        Ok(())
    }
    fn i16(&mut self, what: &str) -> Result<i16, MetadataError> {
        self.need(2, what)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self, what: &str) -> Result<i32, MetadataError> {
        self.need(4, what)?;
        Ok(self.0.get_i32())
    }
    /// A count of elements each at least `min` bytes long: never more than the bytes allow.
    fn count(&mut self, min: usize, what: &str) -> Result<usize, MetadataError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n.saturating_mul(min) > self.0.remaining() {
            return Err(MetadataError(format!(
                "{what} counts {n}, more than the {} bytes left can hold",
                self.0.remaining()
            )));
        }
        Ok(n)
    }
    fn string(&mut self, what: &str) -> Result<String, MetadataError> {
        let n = self.i16(what)?;
        let n = usize::try_from(n).unwrap_or(0);
        self.need(n, what)?;
        let b = self.0.split_to(n);
        String::from_utf8(b.to_vec()).map_err(|_| MetadataError(format!("{what} is not UTF-8")))
    }
    fn skip_bytes(&mut self, what: &str) -> Result<(), MetadataError> {
        let n = self.i32(what)?;
        let n = usize::try_from(n).unwrap_or(0);
        self.need(n, what)?;
        self.0.advance(n);
        Ok(())
    }
    /// `[topic, [partition]]`: the partitions of `topic` only.
    fn partitions(&mut self, topic: &str, what: &str) -> Result<Vec<i32>, MetadataError> {
        let mut out = Vec::new();
        for _ in 0..self.count(6, what)? {
            let t = self.string(what)?;
            let n = self.count(4, what)?;
            for _ in 0..n {
                let p = self.i32(what)?;
                if t == topic {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }
}

/// A member's subscription: the topics it reads and what it owned of `topic` (v0 owns nothing
/// it says; v2+ also say the generation, which v3's rack follows and icefall does not need).
pub fn read_subscription(
    bytes: Bytes,
    topic: &str,
) -> Result<(Vec<String>, Vec<i32>, i32), MetadataError> {
    let mut r = Reader(bytes);
    let version = r.i16("version")?;
    if version < 0 {
        return Err(MetadataError(format!("version {version}")));
    }
    let mut topics = Vec::new();
    for _ in 0..r.count(2, "topics")? {
        topics.push(r.string("topic")?);
    }
    r.skip_bytes("user data")?;
    let owned = match version {
        0 => Vec::new(),
        _ => r.partitions(topic, "owned partitions")?,
    };
    let generation = match version {
        0 | 1 => -1,
        _ => r.i32("generation")?,
    };
    Ok((topics, owned, generation))
}

/// The partitions of `topic` an assignment gives.
pub fn read_assignment(bytes: Bytes, topic: &str) -> Result<Vec<i32>, MetadataError> {
    if bytes.is_empty() {
        // What a coordinator hands a member that got nothing.
        return Ok(Vec::new());
    }
    let mut r = Reader(bytes);
    let version = r.i16("version")?;
    if version < 0 {
        return Err(MetadataError(format!("version {version}")));
    }
    r.partitions(topic, "assigned partitions")
}

#[cfg(test)]
#[path = "assign_tests.rs"]
mod tests;
