//! icefall's producer (the dead-letter topic's): a batch resent after a lost acknowledgement is
//! written once when idempotent, and twice when not (the test broker deduplicates by producer id
//! and sequence as Kafka does, and drops the connection instead of answering the first Produce).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::wire_broker::{Log, WireBroker};
use icefall::kafka::{
    Client, ClientConfig, Codec, ConnConfig, ProduceRecord, Producer, ProducerConfig,
};

fn records(values: &[&'static [u8]]) -> Vec<ProduceRecord<'static>> {
    values
        .iter()
        .map(|v| ProduceRecord {
            timestamp_ms: 1_700_000_000_000,
            key: Some(b"k"),
            value: Some(v),
            headers: &[],
        })
        .collect()
}

/// Produces a batch of 3 whose answer is lost, then a batch of 2; returns the broker and producer.
fn run(idempotent: bool) -> (WireBroker, u64, u64) {
    let logs = BTreeMap::from([(0, Log::default())]);
    let wb = WireBroker::start(1, "dl", logs);
    wb.state.lock().unwrap().lose_produce_answers = 1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (duplicates, retries) = rt.block_on(async {
        let client = Client::connect(ClientConfig {
            bootstrap: vec![wb.bootstrap()],
            conn: ConnConfig {
                client_id: "produce-test".into(),
                timeout: Duration::from_secs(5),
                max_frame: 1 << 20,
                security: Default::default(),
            },
            retry_for: Duration::from_secs(10),
        })
        .await
        .expect("connect");
        let cfg = ProducerConfig {
            idempotent,
            codec: Codec::None,
            request_timeout: Duration::from_secs(5),
        };
        let mut p = Producer::open(client, "dl", cfg).await.expect("open");
        let first = records(&[b"a", b"b", b"c"]);
        p.send(&[(0, &first)])
            .await
            .expect("the lost answer is retried");
        let second = records(&[b"d", b"e"]);
        let at = p.send(&[(0, &second)]).await.expect("second batch");
        assert_eq!(at.len(), 1);
        (p.duplicates, p.retries)
    });
    (wb, duplicates, retries)
}

#[test]
fn an_idempotent_resend_after_a_lost_acknowledgement_is_written_once() {
    let (wb, duplicates, retries) = run(true);
    let s = wb.state.lock().unwrap();
    let sent = s.produces.clone();
    assert_eq!(
        sent.len(),
        3,
        "the first batch twice, then the second: {sent:?}"
    );
    assert!(sent[0].0 >= 0, "an idempotent producer has an id: {sent:?}");
    assert_eq!(
        sent[0], sent[1],
        "the resend keeps its producer id, epoch and sequence"
    );
    assert_eq!((sent[0].3, sent[0].4), (0, 3));
    assert_eq!(
        (sent[2].0, sent[2].3, sent[2].4),
        (sent[0].0, 3, 2),
        "the next batch goes on at 3"
    );
    assert_eq!((duplicates, retries), (1, 1));
    let log = &s.logs[&0];
    assert_eq!(log.batches.len(), 2, "written once");
    assert_eq!(log.end(), 5);
}

#[test]
fn a_plain_resend_after_a_lost_acknowledgement_is_written_twice() {
    // The contrast that shows the test above can fail: without a producer id the broker cannot
    // tell a resend from new records.
    let (wb, duplicates, retries) = run(false);
    let s = wb.state.lock().unwrap();
    assert!(s.produces.iter().all(|(pid, ..)| *pid == -1));
    assert_eq!((duplicates, retries), (0, 1));
    assert_eq!(s.logs[&0].batches.len(), 3);
    assert_eq!(s.logs[&0].end(), 8);
}
