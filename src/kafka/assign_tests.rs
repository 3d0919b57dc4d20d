use super::*;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTp;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;

fn member(id: &str, owned: &[i32], generation: i32) -> Member {
    Member {
        id: id.into(),
        owned: owned.to_vec(),
        generation,
    }
}

fn check_balanced(partitions: &[i32], out: &BTreeMap<String, Vec<i32>>) {
    let mut seen: Vec<i32> = out.values().flatten().copied().collect();
    seen.sort_unstable();
    let mut want = partitions.to_vec();
    want.sort_unstable();
    want.dedup();
    assert_eq!(seen, want, "every partition exactly once: {out:?}");
    let (lo, hi) = (
        out.values().map(Vec::len).min().unwrap_or(0),
        out.values().map(Vec::len).max().unwrap_or(0),
    );
    assert!(hi - lo <= 1, "balanced: {out:?}");
}

#[test]
fn twelve_partitions_over_two_then_three_members_move_only_what_they_must() {
    let parts: Vec<i32> = (0..12).collect();
    let first = assign(&parts, &[member("a", &[], -1), member("b", &[], -1)]);
    check_balanced(&parts, &first);
    assert_eq!(first["a"], (0..6).collect::<Vec<_>>());
    // A third member joins: a and b keep 4 each of what they had, c gets the 4 freed.
    let owned = |id: &str| first[id].clone();
    let second = assign(
        &parts,
        &[
            member("a", &owned("a"), 1),
            member("b", &owned("b"), 1),
            member("c", &[], -1),
        ],
    );
    check_balanced(&parts, &second);
    for id in ["a", "b"] {
        assert!(
            second[id].iter().all(|p| first[id].contains(p)),
            "{id} kept its own: {second:?}"
        );
    }
    assert_eq!(second["c"].len(), 4);
    // b is lost: a and c keep theirs, b's four are split between them.
    let third = assign(
        &parts,
        &[member("a", &second["a"], 2), member("c", &second["c"], 2)],
    );
    check_balanced(&parts, &third);
    assert!(second["a"].iter().all(|p| third["a"].contains(p)));
    assert!(second["c"].iter().all(|p| third["c"].contains(p)));
}

#[test]
fn a_stale_claim_loses_to_the_newer_generation() {
    let parts: Vec<i32> = (0..4).collect();
    // z was paused: it still claims 0-3 from generation 1, a holds 0-1 since generation 3.
    let out = assign(
        &parts,
        &[member("z", &[0, 1, 2, 3], 1), member("a", &[0, 1], 3)],
    );
    check_balanced(&parts, &out);
    assert_eq!(out["a"], vec![0, 1]);
    assert_eq!(out["z"], vec![2, 3]);
    // Claims of partitions the topic lacks are ignored; no members, nothing assigned.
    let out = assign(&parts, &[member("a", &[9, 0], 1)]);
    assert_eq!(out["a"], vec![0, 1, 2, 3]);
    assert!(assign(&parts, &[]).is_empty());
}

proptest! {
    #[test]
    fn always_balanced_complete_and_sticky(
        n in 1i32..64,
        claims in proptest::collection::vec((proptest::collection::btree_set(0i32..80, 0..20), -1i32..5), 1..9),
    ) {
        let parts: Vec<i32> = (0..n).collect();
        let members: Vec<Member> = claims
            .iter()
            .enumerate()
            .map(|(i, (owned, g))| member(&format!("m{i}"), &owned.iter().copied().collect::<Vec<_>>(), *g))
            .collect();
        let out = assign(&parts, &members);
        check_balanced(&parts, &out);
        prop_assert_eq!(out.len(), members.len());
        // Deterministic, whatever the order the coordinator listed the members in.
        let mut rev = members.clone();
        rev.reverse();
        prop_assert_eq!(&assign(&parts, &rev), &out);
        // A balanced assignment handed back as the claims stays exactly as it is.
        let again: Vec<Member> = out.iter().map(|(id, ps)| member(id, ps, 9)).collect();
        prop_assert_eq!(assign(&parts, &again), out);
    }

    #[test]
    fn metadata_reads_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = read_subscription(Bytes::from(bytes.clone()), "t");
        let _ = read_assignment(Bytes::from(bytes), "t");
    }
}

#[test]
fn metadata_agrees_with_kafka_protocols_codecs() {
    // Ours, read by kafka-protocol's decoder.
    let mut b = subscription("events", &[3, 1], 7);
    let version = b.get_i16();
    let s = ConsumerProtocolSubscription::decode(&mut b, version).expect("decodes");
    assert_eq!(s.topics, vec![StrBytes::from_static_str("events")]);
    assert_eq!(s.owned_partitions[0].partitions, vec![3, 1]);
    assert_eq!(s.generation_id, 7);
    let mut b = assignment("events", &[0, 2]);
    let version = b.get_i16();
    let a = ConsumerProtocolAssignment::decode(&mut b, version).expect("decodes");
    assert_eq!(a.assigned_partitions[0].partitions, vec![0, 2]);

    // kafka-protocol's (as a Java consumer writes, v3 with a rack), read by ours.
    let theirs = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("events")])
        .with_owned_partitions(vec![
            OwnedTp::default()
                .with_topic(TopicName(StrBytes::from_static_str("other")))
                .with_partitions(vec![5]),
            OwnedTp::default()
                .with_topic(TopicName(StrBytes::from_static_str("events")))
                .with_partitions(vec![4, 8]),
        ])
        .with_generation_id(11)
        .with_rack_id(Some(StrBytes::from_static_str("r1")));
    let mut buf = BytesMut::new();
    buf.put_i16(3);
    theirs.encode(&mut buf, 3).expect("encodes");
    let (topics, owned, generation) = read_subscription(buf.freeze(), "events").expect("reads");
    assert_eq!(
        (topics, owned, generation),
        (vec!["events".to_string()], vec![4, 8], 11)
    );
    let theirs = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
        AssignedTp::default()
            .with_topic(TopicName(StrBytes::from_static_str("events")))
            .with_partitions(vec![1, 9]),
    ]);
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    theirs.encode(&mut buf, 0).expect("encodes");
    assert_eq!(
        read_assignment(buf.freeze(), "events").expect("reads"),
        vec![1, 9]
    );
    assert_eq!(
        read_assignment(Bytes::new(), "events").expect("empty"),
        Vec::<i32>::new()
    );
}

#[test]
fn a_count_past_the_bytes_is_refused_before_allocating() {
    let mut buf = BytesMut::new();
    buf.put_i16(1);
    buf.put_i32(i32::MAX); // topics
    let err = read_subscription(buf.freeze(), "t").expect_err("refused");
    assert!(err.to_string().contains("counts 2147483647"), "{err}");
}
