//! `icefall-loadgen`: produce deterministic sample records to a topic with icefall's Kafka
//! client, or pull a topic back as fast as that client can (`--fetch`, the raw-client baseline
//! of the benches: fetch and decode batches in place, nothing else).
//!
//! Producing: keys come from `--keys` sources, uniform or Zipf-skewed (`--key-dist zipf:1.1`:
//! a few hot keys); keyed records go to Kafka's default partition (murmur2, made positive,
//! modulo the partition count: what the Java client and librdkafka's murmur2 partitioner pick);
//! records without a key stick to one partition for a batch, then move on (sticky batching).
//! `--producers` tasks produce concurrently, each owning a share of the partitions (so a
//! partition's records keep the generator's order). Transient errors are retried with
//! exponential backoff for `--retry-for`; pending batches are flushed on exit. Every record
//! carries a `seq` header, so a reader can re-derive its key, value and headers (see
//! `tools/sample.rs`).

#[path = "sample.rs"]
mod sample;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use icefall::kafka::client::fetch_in_session;
use icefall::kafka::fetch::{FetchParams, Want};
use icefall::kafka::{
    Client, ClientConfig, Codec, ConnConfig, Decoded, Decoder, Isolation, ProduceRecord, Producer,
    ProducerConfig,
};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(
    name = "icefall-loadgen",
    about = "Produce deterministic sample records to a Kafka topic, or fetch a topic back (--fetch)"
)]
struct Args {
    /// Bootstrap brokers, HOST:PORT[,..].
    #[arg(long, value_delimiter = ',', required = true)]
    brokers: Vec<String>,
    #[arg(long)]
    topic: String,
    /// Records to produce (ignored with --duration).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Produce for this long instead of a record count (e.g. 30s); with --rate, rate × duration
    /// records.
    #[arg(long, value_parser = icefall::config::parse_duration)]
    duration: Option<Duration>,
    /// First sequence number (to append more records to a stream).
    #[arg(long, default_value_t = 0)]
    first_seq: u64,
    /// Distinct keys (key sources).
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// How keys are drawn: uniform, or zipf:S (rank r has probability ∝ 1/r^S; hot keys).
    #[arg(long, default_value = "uniform", value_parser = parse_dist)]
    key_dist: sample::KeyDist,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// raw (random bytes) or json (an event object padded to --value-bytes).
    #[arg(long, default_value = "raw", value_parser = parse_payload)]
    payload: sample::Payload,
    /// Every n-th record has no key (0: never).
    #[arg(long, default_value_t = 20)]
    null_key_every: u64,
    /// Every n-th record has no value, a tombstone (0: never).
    #[arg(long, default_value_t = 101)]
    null_value_every: u64,
    /// Records per produce request.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Records per second over all partitions (0: as fast as the broker takes them). They leave
    /// in ticks of up to --batch records per partition, at most 100 ms apart.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Concurrent producers, each owning a share of the partitions.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Idempotent producing (producer id, epoch and sequence numbers).
    #[arg(long)]
    idempotent: bool,
    /// How long a failing produce request is retried before giving up.
    #[arg(long, default_value = "30s", value_parser = icefall::config::parse_duration)]
    retry_for: Duration,
    /// Instead of producing: fetch every record of the topic up to its high watermark and
    /// report records/s (the raw-client baseline).
    #[arg(long)]
    fetch: bool,
    /// Bytes per fetch request (--fetch).
    #[arg(long, default_value = "4MiB")]
    fetch_max_bytes: icefall::config::ByteSize,
    /// A Kafka client setting by librdkafka's name, KEY=VALUE (repeatable; as `icefall run
    /// --kafka-option`, over `ICEFALL_KAFKA_*` variables).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_option: Vec<String>,
}

fn parse_dist(s: &str) -> Result<sample::KeyDist, String> {
    match s.split_once(':') {
        None if s == "uniform" => Ok(sample::KeyDist::Uniform),
        Some(("zipf", e)) => match e.parse::<f64>() {
            Ok(e) if e > 0.0 && e.is_finite() => Ok(sample::KeyDist::Zipf(e)),
            _ => Err(format!("zipf exponent {e:?} is not a positive number")),
        },
        _ => Err(format!("{s:?}: expected uniform or zipf:S")),
    }
}

fn parse_payload(s: &str) -> Result<sample::Payload, String> {
    match s {
        "raw" => Ok(sample::Payload::Raw),
        "json" => Ok(sample::Payload::Json),
        _ => Err(format!("{s:?}: expected raw or json")),
    }
}

/// TLS and SASL from `ICEFALL_KAFKA_*` and `--kafka-option` (which wins), as `icefall run` has them.
fn security(a: &Args) -> anyhow::Result<icefall::kafka::Security> {
    let env = |k: &str| std::env::var(k).ok();
    let mut options: Vec<String> = icefall::config::kafka::from_env(&env)
        .into_iter()
        .map(|(k, v, _)| format!("{k}={v}"))
        .collect();
    options.extend(a.kafka_option.iter().cloned());
    Ok(icefall::config::kafka::security(&options)?)
}

fn client_config(a: &Args, security: &icefall::kafka::Security) -> ClientConfig {
    ClientConfig {
        bootstrap: a.brokers.clone(),
        conn: ConnConfig {
            client_id: "icefall-loadgen".into(),
            timeout: Duration::from_secs(30),
            max_frame: 256 << 20,
            security: security.clone(),
        },
        retry_for: a.retry_for,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // The allocator settings icefall runs with, so the raw-fetch baseline pays what icefall's
    // fetch pays (the current-thread runtime has started no other thread yet).
    icefall::runtime::tune_malloc();
    let a = Args::parse();
    if a.keys == 0 || a.batch == 0 || a.producers == 0 {
        bail!("--keys, --batch and --producers must be positive");
    }
    let security = security(&a)?;
    let mut client = Client::connect(client_config(&a, &security))
        .await
        .with_context(|| format!("cannot reach Kafka at {}", a.brokers.join(",")))?;
    let partitions = client.partitions(&a.topic).await?.len() as u32;
    if a.fetch {
        return fetch_all(&a, client, partitions).await;
    }
    produce(&a, partitions, &security).await
}

/// A partition's next chunk of sequence numbers, for the producer that owns it.
struct Chunk {
    partition: u32,
    seqs: Vec<u64>,
}

/// What one producer did.
struct Produced {
    records: u64,
    bytes: u64,
    retries: u64,
    /// Produce request latency, microseconds.
    latency_us: Histogram<u64>,
}

impl Produced {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            records: 0,
            bytes: 0,
            retries: 0,
            // 1 µs to 10 min (saturating_record clamps; it never resizes).
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram")?,
        })
    }
}

async fn produce(
    a: &Args,
    partitions: u32,
    security: &icefall::kafka::Security,
) -> anyhow::Result<()> {
    let shape = sample::Shape {
        keys: a.keys,
        value_bytes: a.value_bytes,
        null_key_every: a.null_key_every,
        null_value_every: a.null_value_every,
        dist: a.key_dist,
        payload: a.payload,
        ..Default::default()
    };
    let producers = a.producers.min(partitions as usize);
    let mut txs = Vec::with_capacity(producers);
    let mut tasks = Vec::with_capacity(producers);
    for p in 0..producers {
        let (tx, rx) = mpsc::channel::<Chunk>(4);
        txs.push(tx);
        let client = Client::connect(client_config(a, security)).await?;
        let cfg = ProducerConfig {
            idempotent: a.idempotent,
            codec: Codec::None,
            request_timeout: Duration::from_secs(30),
        };
        let owner = Producer::open(client, &a.topic, cfg)
            .await
            .with_context(|| format!("producer {p}"))?;
        tasks.push(producer(rx, owner, shape));
    }
    let started = Instant::now();
    let generator = async move {
        generate(a, &shape, partitions, producers, txs, started).await;
        anyhow::Ok(())
    };
    let (gen_result, results) = tokio::join!(generator, futures_util::future::join_all(tasks));
    gen_result?;
    let secs = started.elapsed().as_secs_f64();
    let mut total = Produced::new()?;
    for r in results {
        let r = r?;
        total.records += r.records;
        total.bytes += r.bytes;
        total.retries += r.retries;
        total.latency_us.add(&r.latency_us).context("histogram")?;
    }
    let hist = &total.latency_us;
    println!(
        "produced records={} partitions={} producers={} seconds={:.3} records_per_sec={:.0} mb_per_sec={:.1} produce_p50_ms={:.2} produce_p99_ms={:.2} retries={}",
        total.records,
        partitions,
        producers,
        secs,
        total.records as f64 / secs.max(1e-9),
        total.bytes as f64 / secs.max(1e-9) / 1e6,
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        total.retries,
    );
    Ok(())
}

/// Routes sequence numbers to partitions and hands full chunks to their producers, paced by
/// `--rate` and bounded by `--records` or `--duration`. Dropping the senders at the end is the
/// producers' signal to flush and stop.
async fn generate(
    a: &Args,
    shape: &sample::Shape,
    partitions: u32,
    producers: usize,
    txs: Vec<mpsc::Sender<Chunk>>,
    started: Instant,
) {
    let end = match (a.duration, a.rate) {
        (Some(d), rate) if rate > 0 => a.first_seq + (d.as_secs_f64() * rate as f64) as u64,
        (Some(_), _) => u64::MAX,
        (None, _) => a.first_seq + a.records,
    };
    // With a rate, records leave in ticks of up to a batch per partition and at most 100 ms
    // apart; every partition is flushed at each tick, so no record waits for a full batch.
    let tick = if a.rate > 0 {
        (a.batch as u64 * u64::from(partitions)).clamp(1, (a.rate / 10).max(1))
    } else {
        1024
    };
    let mut pending: Vec<Vec<u64>> = vec![Vec::new(); partitions as usize];
    let (mut sticky, mut sticky_left) = (0u32, a.batch);
    let send = |partition: u32, seqs: Vec<u64>| {
        let tx = &txs[partition as usize % producers];
        async move { tx.send(Chunk { partition, seqs }).await.is_ok() }
    };
    let mut i = a.first_seq;
    while i < end {
        if (i - a.first_seq).is_multiple_of(tick) {
            if a.rate > 0 {
                let due =
                    started + Duration::from_secs_f64((i - a.first_seq) as f64 / a.rate as f64);
                tokio::time::sleep_until(due.into()).await;
                for (p, seqs) in pending.iter_mut().enumerate() {
                    if !seqs.is_empty() && !send(p as u32, std::mem::take(seqs)).await {
                        return;
                    }
                }
            }
            if a.duration.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
        }
        let p = match shape.key(i) {
            Some(k) => sample::kafka_partition(&k, partitions),
            None => {
                if sticky_left == 0 {
                    sticky = (sticky + 1) % partitions;
                    sticky_left = a.batch;
                }
                sticky_left -= 1;
                sticky
            }
        };
        let seqs = &mut pending[p as usize];
        seqs.push(i);
        if seqs.len() >= a.batch && !send(p, std::mem::take(seqs)).await {
            return;
        }
        i += 1;
    }
    for (p, seqs) in pending.into_iter().enumerate() {
        if !seqs.is_empty() && !send(p as u32, seqs).await {
            return;
        }
    }
}

/// Produces the chunks of the partitions it owns, one request at a time; the producer retries
/// transient failures with backoff for `--retry-for`.
async fn producer(
    mut rx: mpsc::Receiver<Chunk>,
    mut owner: Producer,
    shape: sample::Shape,
) -> anyhow::Result<Produced> {
    let mut out = Produced::new()?;
    while let Some(chunk) = rx.recv().await {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let owned: Vec<_> = chunk
            .seqs
            .iter()
            .map(|&i| (shape.key(i), shape.value(i), shape.headers(i)))
            .collect();
        let headers: Vec<Vec<icefall::kafka::HeaderRef<'_>>> = owned
            .iter()
            .map(|(_, _, h)| {
                h.iter()
                    .map(|(k, v)| (k.as_bytes(), Some(v.as_slice())))
                    .collect()
            })
            .collect();
        let records: Vec<ProduceRecord<'_>> = owned
            .iter()
            .zip(&headers)
            .map(|((k, v, _), h)| ProduceRecord {
                timestamp_ms: now,
                key: k.as_deref(),
                value: v.as_deref(),
                headers: h,
            })
            .collect();
        let bytes: usize = owned
            .iter()
            .map(|(k, v, h)| {
                k.as_ref().map_or(0, Vec::len)
                    + v.as_ref().map_or(0, Vec::len)
                    + h.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            })
            .sum();
        let sent = Instant::now();
        let retries = owner.retries;
        owner
            .send(&[(chunk.partition as i32, &records)])
            .await
            .with_context(|| {
                format!(
                    "producing {} records to partition {} (seq {}..)",
                    records.len(),
                    chunk.partition,
                    chunk.seqs[0]
                )
            })?;
        out.retries += owner.retries - retries;
        out.latency_us
            .saturating_record(sent.elapsed().as_micros() as u64);
        out.records += records.len() as u64;
        out.bytes += bytes as u64;
    }
    Ok(out)
}

/// Fetches every partition from its first offset to the high watermark its fetch answers
/// report: one request in flight per leader carrying all its partitions, every batch decoded
/// in place (CRC checked, records and headers walked), nothing kept.
async fn fetch_all(a: &Args, mut client: Client, partitions: u32) -> anyhow::Result<()> {
    let max_bytes = i32::try_from(a.fetch_max_bytes.0).context("--fetch-max-bytes")?;
    let all: Vec<i32> = (0..partitions as i32).collect();
    let groups = client.by_leader(&a.topic, &all)?;
    let started = Instant::now();
    let mut loops = Vec::new();
    for (node, parts) in groups {
        let conn = client.take(node).await?;
        let params = FetchParams {
            max_wait: Duration::from_millis(100),
            min_bytes: 1,
            max_bytes: max_bytes.saturating_mul(parts.len() as i32).min(64 << 20),
            partition_max_bytes: max_bytes,
            isolation: Isolation::ReadCommitted,
        };
        loops.push(fetch_leader(&a.topic, conn, parts, params));
    }
    let results = futures_util::future::try_join_all(loops).await?;
    let secs = started.elapsed().as_secs_f64();
    let records: u64 = results.iter().map(|r| r.0).sum();
    let bytes: u64 = results.iter().map(|r| r.1).sum();
    println!(
        "fetched records={records} partitions={partitions} seconds={secs:.3} records_per_sec={:.0} mb_per_sec={:.1}",
        records as f64 / secs.max(1e-9),
        bytes as f64 / secs.max(1e-9) / 1e6,
    );
    Ok(())
}

/// One leader's partitions fetched to their ends; (records, payload bytes).
async fn fetch_leader(
    topic: &str,
    mut conn: icefall::kafka::Conn,
    parts: Vec<i32>,
    params: FetchParams,
) -> anyhow::Result<(u64, u64)> {
    let mut wants: Vec<Want> = parts
        .iter()
        .map(|&partition| Want {
            partition,
            offset: 0,
            leader_epoch: -1,
        })
        .collect();
    let mut decoder = Decoder::new(1 << 30);
    let mut d = Decoded::default();
    let (mut records, mut bytes) = (0u64, 0u64);
    // Data is waiting while a partition is behind its end: ask the broker not to wait then.
    let mut behind = true;
    while !wants.is_empty() {
        let mut p = params;
        if behind {
            p.max_wait = Duration::ZERO;
        }
        let (c, r) = fetch_in_session(conn, topic, &wants, &p).await;
        let answers = r?;
        conn = c.context("connection lost")?;
        let mut done = Vec::new();
        behind = false;
        for ans in &answers {
            let Some(w) = wants.iter_mut().find(|w| w.partition == ans.partition) else {
                continue;
            };
            if let Some(e) = ans.error {
                bail!(
                    "fetching partition {} at offset {}: {e}",
                    w.partition,
                    w.offset
                );
            }
            decoder
                .decode(
                    &ans.records,
                    w.offset,
                    params.isolation,
                    &ans.aborted,
                    &mut d,
                )
                .with_context(|| format!("partition {}", w.partition))?;
            records += d.records.len() as u64;
            bytes += d
                .records
                .iter()
                .map(|r| (r.key.bytes() + r.value.bytes()) as u64)
                .sum::<u64>()
                + d.headers
                    .iter()
                    .map(|h| (h.key.bytes() + h.value.bytes()) as u64)
                    .sum::<u64>();
            w.offset = d.next_offset.unwrap_or(w.offset).max(w.offset);
            if w.offset >= ans.end(params.isolation) {
                done.push(w.partition);
            } else {
                behind = true;
            }
        }
        wants.retain(|w| !done.contains(&w.partition));
    }
    Ok((records, bytes))
}

#[cfg(test)]
mod tests {
    use super::sample::{KeyDist, Shape, kafka_partition, murmur2, zipf_rank};

    /// Java's `Utils.murmur2` results: the Java client's `UtilsTest.testMurmur2`, the table
    /// kafkajs generated by running the Java client's hash, and librdkafka's Java-compatible
    /// vectors.
    const JAVA_MURMUR2: &[(&[u8], i32)] = &[
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
        (b"0", 971_027_396),
        (b"1", -1_993_445_489),
        (b"128", -326_012_175),
        (b"2187", -1_508_407_203),
        (b"16384", -325_739_742),
        (b"78125", -1_654_490_814),
        (b"279936", 1_462_227_128),
        (b"823543", -2_014_198_330),
        (b"2097152", 607_668_903),
        (b"4782969", -1_182_699_775),
        (b"10000000", -1_830_336_757),
        (b"19487171", -1_603_849_305),
        (b"35831808", -857_013_643),
        (b"62748517", -1_167_431_028),
        (b"105413504", -381_294_639),
        (b"170859375", -1_658_323_481),
        (b"100:48069", 1_009_543_857),
        (b"kafka", -798_503_068),
        (b"giberish123456789", -1_890_243_828),
        (b"1234", -1_614_185_708),
        (b"234", -406_844_982),
        (b"34", -2_026_295_078),
        (b"4", 1_514_888_353),
        (b"", 275_646_681),
    ];

    /// Partitions the Java client's partitioner picks among 1,000 partitions (as recorded in
    /// kafka-python's compatibility test).
    const JAVA_PARTITION_OF_1000: &[(&[u8], u32)] = &[
        (b"", 681),
        (b"a", 524),
        (b"ab", 434),
        (b"abc", 107),
        (b"123456789", 566),
        (b"\x00 ", 742),
    ];

    #[test]
    fn murmur2_matches_the_java_client() {
        for &(key, want) in JAVA_MURMUR2 {
            assert_eq!(
                murmur2(key) as i32,
                want,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn the_partition_matches_the_java_partitioner() {
        for &(key, want) in JAVA_PARTITION_OF_1000 {
            assert_eq!(kafka_partition(key, 1000), want, "{key:?}");
        }
        // Java: Utils.toPositive(murmur2(key)) % numPartitions (toPositive masks the sign bit).
        for &(key, hash) in JAVA_MURMUR2 {
            for n in [1u32, 3, 8, 12, 1000] {
                assert_eq!(
                    kafka_partition(key, n),
                    (hash & 0x7fff_ffff) as u32 % n,
                    "{:?} of {n}",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }

    #[test]
    fn zipf_keys_are_skewed_and_uniform_keys_are_not() {
        let count = |dist| {
            let shape = Shape {
                keys: 1000,
                dist,
                ..Default::default()
            };
            let mut hits = vec![0u32; 1000];
            for i in 0..100_000 {
                hits[shape.key_index(i) as usize] += 1;
            }
            hits
        };
        let zipf = count(KeyDist::Zipf(1.1));
        // Rank 1 of a Zipf(1.1) over 1,000 keys holds ~13% of the records (the continuous
        // approximation; the discrete law gives ~18%), rank 2 about half that.
        assert!(zipf[0] > 10_000 && zipf[0] < 20_000, "{}", zipf[0]);
        assert!(zipf[0] > zipf[1] && zipf[1] > zipf[10] && zipf[10] > zipf[500]);
        let uniform = count(KeyDist::Uniform);
        assert!(
            uniform.iter().all(|&h| (50..=160).contains(&h)),
            "{uniform:?}"
        );
        assert_eq!(zipf_rank(0.0, 1000, 1.1), 0);
        assert_eq!(zipf_rank(0.999_999_999, 1000, 1.1), 999);
        assert_eq!(zipf_rank(0.5, 1, 1.0), 0);
    }

    #[test]
    fn json_values_parse_and_keep_their_size() {
        let shape = Shape {
            payload: super::sample::Payload::Json,
            value_bytes: 200,
            ..Default::default()
        };
        for i in 1..500 {
            let Some(v) = shape.value(i) else { continue };
            let j: serde_json::Value = serde_json::from_slice(&v).expect("json");
            assert_eq!(j["seq"], i);
            assert!(v.len() >= 200 && v.len() < 210, "{}", v.len());
        }
    }
}
