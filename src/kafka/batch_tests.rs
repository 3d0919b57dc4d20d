use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::kafka::CodecError;
use crate::kafka::encode::{BatchSpec, OutRecord, encode_batch, encode_marker};

const ALL: [Codec; 5] = Codec::ALL;

type H = (&'static [u8], Option<&'static [u8]>);
const HEADERS: &[H] = &[
    (b"trace", Some(b"a")),
    (b"trace", Some(b"b")),
    (b"nullable", None),
    (b"", Some(b"")),
];

fn rec(offset: i64, value: &'static [u8], headers: &'static [H]) -> OutRecord<'static> {
    OutRecord {
        offset,
        timestamp_ms: 1_700_000_000_000 + offset,
        key: Some(b"k"),
        value: Some(value),
        headers,
    }
}

fn batch(spec: BatchSpec, recs: &[OutRecord<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch(&spec, recs, &mut out).unwrap();
    out
}

/// Decodes `data`; every successful decode is also checked against [`next_offset`], which must
/// foresee its next offset from the batch headers alone.
fn decode(
    data: &[u8],
    from: i64,
    iso: Isolation,
    aborted: &[Aborted],
) -> Result<Decoded, BatchError> {
    // Read ahead first, so arbitrary bytes reach it whether or not they decode.
    let foreseen = next_offset(data);
    let mut out = Decoded::default();
    Decoder::new(1 << 24).decode(&Bytes::copy_from_slice(data), from, iso, aborted, &mut out)?;
    assert_eq!(foreseen, out.next_offset, "foreseen next offset");
    Ok(out)
}

/// (offset, value, headers) of a decoded record, resolved against the buffer.
type Row = (i64, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

/// Every decoded record as a [`Row`].
fn rows(d: &Decoded) -> Vec<Row> {
    d.records
        .iter()
        .map(|r| {
            let hs = &d.headers[r.headers.start as usize..][..r.headers.len as usize];
            let hs = hs
                .iter()
                .map(|h| {
                    (
                        h.key.get(&d.buf).unwrap().to_vec(),
                        h.value.get(&d.buf).map(<[u8]>::to_vec),
                    )
                })
                .collect();
            (r.offset, r.value.get(&d.buf).map(<[u8]>::to_vec), hs)
        })
        .collect()
}

#[test]
fn every_codec_keeps_headers_in_order_with_duplicates_and_nulls() {
    for codec in ALL {
        let spec = BatchSpec {
            codec,
            ..BatchSpec::default()
        };
        let mut data = batch(spec, &[rec(5, b"v5", HEADERS), rec(6, b"v6", &[])]);
        data.extend(batch(spec, &[rec(7, b"v7", HEADERS)]));
        let d = decode(&data, 5, Isolation::ReadCommitted, &[]).unwrap();
        let r = rows(&d);
        assert_eq!(r.len(), 3, "{codec:?}");
        assert_eq!(r[0].1.as_deref(), Some(&b"v5"[..]));
        let want: Vec<_> = HEADERS
            .iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(r[0].2, want, "{codec:?}");
        assert!(r[1].2.is_empty());
        assert_eq!(r[2].0, 7);
        assert_eq!(d.next_offset, Some(8));
        assert_eq!(d.records[1].timestamp_ms, 1_700_000_000_006);
        assert_eq!(d.records[0].key.get(&d.buf), Some(&b"k"[..]));
    }
}

#[test]
fn uncompressed_records_point_into_the_response_itself() {
    let data = Bytes::from(batch(BatchSpec::default(), &[rec(0, b"zero", &[])]));
    let mut out = Decoded::default();
    Decoder::new(1 << 20)
        .decode(&data, 0, Isolation::ReadCommitted, &[], &mut out)
        .unwrap();
    assert_eq!(out.buf.as_ptr(), data.as_ptr(), "no copy");
}

/// kafka-protocol's encoder (unique header keys) is an independent writer to check against.
#[test]
fn batches_written_by_kafka_protocol_decode_alike() {
    use indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    for (codec, compression) in [
        (Codec::None, Compression::None),
        (Codec::Gzip, Compression::Gzip),
        (Codec::Snappy, Compression::Snappy),
        (Codec::Lz4, Compression::Lz4),
        (Codec::Zstd, Compression::Zstd),
    ] {
        let records: Vec<Record> = (0..20)
            .map(|i| {
                let mut headers = IndexMap::new();
                headers.insert("h1".into(), Some(Bytes::from(format!("x{i}"))));
                headers.insert("h2".into(), None);
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: 100 + i,
                    sequence: -1,
                    timestamp: 1000 + i,
                    key: (i % 2 == 0).then(|| Bytes::from(format!("key{i}"))),
                    value: Some(Bytes::from(vec![i as u8; i as usize])),
                    headers,
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        let opts = RecordEncodeOptions {
            version: 2,
            compression,
        };
        let compress = |plain: &mut BytesMut, out: &mut BytesMut, _: Compression| {
            let mut v = Vec::new();
            codec
                .compress_into(plain, &mut v)
                .map_err(anyhow::Error::from)?;
            out.extend_from_slice(&v);
            Ok(())
        };
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            &records,
            &opts,
            Some(compress),
        )
        .unwrap();
        let d = decode(&buf, 0, Isolation::ReadCommitted, &[]).unwrap();
        assert_eq!(d.records.len(), 20, "{codec:?}");
        for (v, r) in d.records.iter().zip(&records) {
            assert_eq!(v.offset, r.offset);
            assert_eq!(v.timestamp_ms, r.timestamp);
            assert_eq!(v.key.get(&d.buf), r.key.as_deref());
            assert_eq!(v.value.get(&d.buf), r.value.as_deref());
            let hs = &d.headers[v.headers.start as usize..][..v.headers.len as usize];
            assert_eq!(hs.len(), 2);
            assert_eq!(hs[0].value.get(&d.buf), r.headers[0].as_deref());
            assert!(hs[1].value.is_null());
        }
        assert_eq!(d.next_offset, Some(120));
    }
}

#[test]
fn a_cut_short_trailing_batch_is_normal_at_every_cut() {
    let first = batch(
        BatchSpec::default(),
        &[rec(0, b"a", HEADERS), rec(1, b"b", &[])],
    );
    let second = batch(
        BatchSpec {
            codec: Codec::Zstd,
            ..BatchSpec::default()
        },
        &[rec(2, b"c", &[])],
    );
    let whole = [first.clone(), second.clone()].concat();
    for cut in first.len()..whole.len() {
        let d = decode(&whole[..cut], 0, Isolation::ReadCommitted, &[]).unwrap();
        assert_eq!(d.records.len(), 2, "cut at {cut}");
        assert_eq!(d.next_offset, Some(2));
        if cut >= first.len() + 12 {
            assert_eq!(d.truncated, Some((2, second.len())), "cut at {cut}");
        }
    }
    for cut in 0..first.len() {
        let d = decode(&whole[..cut], 0, Isolation::ReadCommitted, &[]).unwrap();
        assert!(d.records.is_empty());
        assert_eq!(d.next_offset, None);
    }
}

#[test]
fn a_fetch_offset_inside_a_batch_skips_its_head() {
    let data = batch(
        BatchSpec::default(),
        &(0..10).map(|o| rec(o, b"v", &[])).collect::<Vec<_>>(),
    );
    let d = decode(&data, 4, Isolation::ReadCommitted, &[]).unwrap();
    assert_eq!(d.records.first().map(|r| r.offset), Some(4));
    assert_eq!(d.records.len(), 6);
    assert_eq!(d.skipped, 4);
    assert!(d.headers.is_empty());
}

#[test]
fn a_compaction_gap_still_moves_the_next_offset_to_the_batch_end() {
    let spec = BatchSpec {
        last_offset: Some(19),
        ..BatchSpec::default()
    };
    let data = batch(spec, &[rec(10, b"a", &[]), rec(13, b"b", &[])]);
    let d = decode(&data, 10, Isolation::ReadCommitted, &[]).unwrap();
    assert_eq!(
        d.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [10, 13]
    );
    assert_eq!(d.next_offset, Some(20));
}

fn txn(pid: i64, recs: &[OutRecord<'_>]) -> Vec<u8> {
    batch(
        BatchSpec {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: true,
            ..BatchSpec::default()
        },
        recs,
    )
}

fn marker(pid: i64, offset: i64, commit: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode_marker(pid, offset, commit, 3, &mut out).unwrap();
    out
}

/// Three producers interleaved: 1 commits, 2 aborts, 3 aborts then commits a second transaction.
fn three_producers() -> (Vec<u8>, Vec<Aborted>) {
    let parts = [
        txn(1, &[rec(0, b"p1a", &[])]),
        txn(2, &[rec(1, b"p2a", &[])]),
        txn(3, &[rec(2, b"p3a", &[])]),
        txn(1, &[rec(3, b"p1b", &[])]),
        marker(2, 4, false),
        txn(3, &[rec(5, b"p3b", &[])]),
        marker(1, 6, true),
        marker(3, 7, false),
        txn(3, &[rec(8, b"p3c", &[])]),
        batch(BatchSpec::default(), &[rec(9, b"plain", &[])]),
        marker(3, 10, true),
    ];
    let aborted = vec![
        Aborted {
            producer_id: 3,
            first_offset: 2,
        },
        Aborted {
            producer_id: 2,
            first_offset: 1,
        },
    ];
    (parts.concat(), aborted)
}

fn values(d: &Decoded) -> Vec<String> {
    rows(d)
        .into_iter()
        .map(|r| String::from_utf8(r.1.unwrap()).unwrap())
        .collect()
}

#[test]
fn read_committed_keeps_only_committed_records_and_passes_the_markers() {
    let (data, aborted) = three_producers();
    let d = decode(&data, 0, Isolation::ReadCommitted, &aborted).unwrap();
    assert_eq!(values(&d), ["p1a", "p1b", "p3c", "plain"]);
    assert_eq!(d.markers, 4);
    assert_eq!(d.skipped, 3);
    assert_eq!(d.next_offset, Some(11), "past the tail marker");
    let u = decode(&data, 0, Isolation::ReadUncommitted, &aborted).unwrap();
    assert_eq!(
        values(&u),
        ["p1a", "p2a", "p3a", "p1b", "p3b", "p3c", "plain"]
    );
}

#[test]
fn a_tail_of_markers_alone_moves_the_position() {
    let data = [marker(1, 40, true), marker(2, 41, false)].concat();
    let d = decode(&data, 40, Isolation::ReadCommitted, &[]).unwrap();
    assert!(d.records.is_empty());
    assert_eq!(d.next_offset, Some(42));
}

fn set_attributes_and_fix_crc(data: &mut [u8], attributes: i16) {
    data[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&data[21..]);
    data[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn bad_bytes_are_named_errors() {
    let good = batch(BatchSpec::default(), &[rec(70, b"value", &[])]);
    let mut crc = good.clone();
    *crc.last_mut().unwrap() ^= 1;
    let e = decode(&crc, 70, Isolation::ReadCommitted, &[]).unwrap_err();
    assert!(
        matches!(e.problem, Problem::Crc { .. }) && e.offset == 70,
        "{e}"
    );

    let mut codec = good.clone();
    set_attributes_and_fix_crc(&mut codec, 5);
    let e = decode(&codec, 70, Isolation::ReadCommitted, &[]).unwrap_err();
    assert_eq!(e.problem, Problem::Codec(CodecError::Unknown(5)), "{e}");
    assert!(e.to_string().contains("offset 70"), "{e}");

    let mut magic = good.clone();
    magic[16] = 1;
    let e = decode(&magic, 70, Isolation::ReadCommitted, &[]).unwrap_err();
    assert_eq!(e.problem, Problem::Magic(1));

    let mut count = good.clone();
    count[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&count[21..]);
    count[17..21].copy_from_slice(&crc.to_be_bytes());
    let e = decode(&count, 70, Isolation::ReadCommitted, &[]).unwrap_err();
    assert!(
        matches!(
            e.problem,
            Problem::Count {
                declared: i32::MAX,
                found: 1
            }
        ),
        "{e}"
    );

    // A record length that runs past its batch (CRC made right so the record reader sees it).
    let mut long = good.clone();
    long[61] = 0x7e;
    let crc = crc32c::crc32c(&long[21..]);
    long[17..21].copy_from_slice(&crc.to_be_bytes());
    let e = decode(&long, 70, Isolation::ReadCommitted, &[]).unwrap_err();
    assert!(matches!(e.problem, Problem::Record { index: 0, .. }), "{e}");
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let big = vec![b'x'; 1 << 20];
    let r = OutRecord {
        offset: 0,
        timestamp_ms: 0,
        key: None,
        value: Some(&big),
        headers: &[],
    };
    let data = batch(
        BatchSpec {
            codec: Codec::Zstd,
            ..BatchSpec::default()
        },
        &[r],
    );
    let mut out = Decoded::default();
    let e = Decoder::new(64 << 10)
        .decode(
            &Bytes::from(data),
            0,
            Isolation::ReadCommitted,
            &[],
            &mut out,
        )
        .unwrap_err();
    assert!(
        matches!(e.problem, Problem::Codec(CodecError::TooLarge { .. })),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes: an error or records, never a panic; every span lies in the buffer.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), from in -2i64..50) {
        if let Ok(d) = decode(&data, from, Isolation::ReadCommitted, &[]) {
            for r in &d.records {
                prop_assert!(r.key.is_null() || r.key.get(&d.buf).is_some());
                prop_assert!(r.value.is_null() || r.value.get(&d.buf).is_some());
            }
        }
    }

    /// Valid batches with bytes flipped (CRC fixed up, so the record reader is reached).
    #[test]
    fn mutated_batches_never_panic(flips in proptest::collection::vec((61usize..200, any::<u8>()), 1..6), codec in 0usize..5) {
        let spec = BatchSpec { codec: ALL[codec], ..BatchSpec::default() };
        let mut data = batch(spec, &[rec(0, b"some value", HEADERS), rec(1, b"another", HEADERS)]);
        for (at, byte) in flips {
            if at < data.len() {
                data[at] = byte;
            }
        }
        let crc = crc32c::crc32c(&data[21..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        let _ = decode(&data, 0, Isolation::ReadCommitted, &[]);
    }

    /// Runs of batches cut anywhere: the next offset foreseen from the headers is the decoder's
    /// (checked in `decode`), whatever the codecs, gaps and markers.
    #[test]
    fn the_next_offset_is_foreseen_at_every_cut(
        runs in proptest::collection::vec((0usize..5, 1i64..4, 0i64..3, any::<bool>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = Vec::new();
        let mut offset = 0;
        for (codec, n, gap, is_marker) in runs {
            if is_marker {
                data.extend(marker(9, offset, true));
                offset += 1;
                continue;
            }
            let recs: Vec<_> = (0..n).map(|i| rec(offset + i, b"v", HEADERS)).collect();
            let spec = BatchSpec {
                codec: ALL[codec],
                last_offset: Some(offset + n - 1 + gap),
                ..BatchSpec::default()
            };
            data.extend(batch(spec, &recs));
            offset += n + gap;
        }
        let at = cut.index(data.len() + 1);
        let d = decode(&data[..at], 0, Isolation::ReadCommitted, &[]).unwrap();
        if at == data.len() {
            prop_assert_eq!(d.next_offset, Some(offset));
        }
    }

    /// Any records round-trip through the encoder and decoder, under every codec.
    #[test]
    fn records_round_trip(values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 1..30), codec in 0usize..5) {
        let recs: Vec<OutRecord<'_>> = values.iter().enumerate().map(|(i, v)| OutRecord {
            offset: 1000 + i as i64 * 2,
            timestamp_ms: i as i64,
            key: v.as_deref(),
            value: v.as_deref(),
            headers: HEADERS,
        }).collect();
        let data = batch(BatchSpec { codec: ALL[codec], ..BatchSpec::default() }, &recs);
        let d = decode(&data, 0, Isolation::ReadCommitted, &[]).unwrap();
        prop_assert_eq!(d.records.len(), values.len());
        for (r, v) in d.records.iter().zip(&values) {
            prop_assert_eq!(r.value.get(&d.buf), v.as_deref());
            prop_assert_eq!(r.headers.len as usize, HEADERS.len());
        }
    }
}
