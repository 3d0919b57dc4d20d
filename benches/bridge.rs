//! The SPSC bridge between two pinned cores, as icefall runs it: a tokio current-thread producer
//! (the fetch role) and a glommio consumer (a shard core), batches of real `Record`s moved by
//! ownership. Batches are recycled through a return ring so the figure is the bridge's cost, not
//! the allocator's. Reports records/s (batches of 1024) and batches/s (batches of 1).
//!
//! Cores: the first two this process may use (both roles on one core when it has only one).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use icefall::record::Record;
use icefall::runtime::{self, bridge};

const POOL: usize = 128;

struct Pair {
    cmd: mpsc::Sender<u64>,
    done: mpsc::Receiver<()>,
    target: Arc<AtomicU64>,
}

fn record(offset: i64) -> Record {
    Record {
        offset,
        timestamp_ms: 1_700_000_000_000,
        shard: 0,
        key: Some(b"key-000042".to_vec()),
        value: Some(vec![7; 100]),
        headers: Vec::new(),
    }
}

fn start_pair(batch: usize, producer_core: usize, consumer_core: usize) -> Pair {
    // As icefall builds fetch→shard rings: 64 batches, 65,536 records, 8 slots for barriers.
    let (fwd_tx, fwd_rx) = bridge::weighted::<Vec<Record>>(64, 65_536, 8, Vec::len);
    let (ret_tx, ret_rx) = bridge::channel::<Vec<Record>>(POOL);
    let (cmd_tx, cmd_rx) = mpsc::channel::<u64>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let seen_target = target.clone();
    let consumer = runtime::spawn_glommio("bench-consumer", consumer_core, move || async move {
        let mut seen = 0u64;
        while let Some(v) = fwd_rx.recv().await {
            let mut sum = 0i64;
            for r in &v {
                sum = sum.wrapping_add(r.offset);
            }
            black_box(sum);
            if ret_tx.try_send(v).is_err() {
                panic!("return ring smaller than the pool");
            }
            seen += 1;
            if seen == seen_target.load(Ordering::Acquire) {
                seen = 0;
                let _ = done_tx.send(());
            }
        }
    })
    .expect("consumer");
    let producer = runtime::spawn_tokio("bench-producer", producer_core, move || async move {
        let mut pool: Vec<Vec<Record>> = (0..POOL)
            .map(|b| (0..batch).map(|i| record((b * batch + i) as i64)).collect())
            .collect();
        while let Ok(n) = cmd_rx.recv() {
            for _ in 0..n {
                let v = match pool.pop() {
                    Some(v) => v,
                    None => ret_rx.recv().await.expect("return ring open"),
                };
                fwd_tx.send(v).await.expect("consumer alive");
            }
            while let Ok(v) = ret_rx.try_recv() {
                pool.push(v);
            }
        }
    })
    .expect("producer");
    // Threads live for the whole bench process.
    std::mem::forget(consumer);
    std::mem::forget(producer);
    Pair {
        cmd: cmd_tx,
        done: done_rx,
        target,
    }
}

impl Pair {
    fn run(&self, batches: u64) -> Duration {
        self.target.store(batches, Ordering::Release);
        let t = Instant::now();
        self.cmd.send(batches).expect("producer alive");
        self.done.recv().expect("consumer alive");
        t.elapsed()
    }
}

fn bench_bridge(c: &mut Criterion) {
    let online = runtime::online_cores().expect("cores");
    let (a, b) = (online[0], *online.get(1).unwrap_or(&online[0]));
    let mut group = c.benchmark_group(format!("bridge/cores {a}->{b}"));
    for (name, batch) in [
        ("records (batches of 1024)", 1024usize),
        ("batches (of 1 record)", 1),
    ] {
        let pair = start_pair(batch, a, b);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| pair.run(iters.max(1)));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = bench_bridge
}
criterion_main!(benches);
