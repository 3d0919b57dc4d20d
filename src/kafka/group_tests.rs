use super::*;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;

fn cfg(instance: Option<&str>) -> GroupConfig {
    GroupConfig {
        group: "g".into(),
        topic: "events".into(),
        instance_id: instance.map(str::to_string),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(3),
        retry_backoff: Duration::from_millis(100),
    }
}

fn joined(
    member: &str,
    leader: &str,
    generation: i32,
    members: &[(&str, Bytes)],
) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_member_id(StrBytes::from_string(member.into()))
        .with_leader(StrBytes::from_string(leader.into()))
        .with_generation_id(generation)
        .with_members(
            members
                .iter()
                .map(|(id, meta)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string((*id).into()))
                        .with_metadata(meta.clone())
                })
                .collect(),
        )
}

fn join_metadata(a: Action) -> Bytes {
    match a {
        Action::Join(r) => r.protocols[0].metadata.clone(),
        other => panic!("expected a join, got {other:?}"),
    }
}

/// The leader of a two-member group: joins, assigns, syncs, takes its share.
fn stable_leader(now: Instant) -> (Membership, Vec<i32>) {
    let mut m = Membership::new(cfg(Some("pod-0")), (0..12).collect(), now);
    let meta = join_metadata(m.poll(now));
    let other = assign::subscription("events", &[], -1);
    m.on_join(now, &joined("a", "a", 1, &[("a", meta), ("b", other)]));
    let sync = match m.poll(now) {
        Action::Sync(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(sync.generation_id, 1);
    assert_eq!(sync.group_instance_id.as_deref(), Some("pod-0"));
    let mine = sync
        .assignments
        .iter()
        .find(|a| a.member_id.as_str() == "a")
        .expect("a's");
    let theirs = sync
        .assignments
        .iter()
        .find(|a| a.member_id.as_str() == "b")
        .expect("b's");
    let b_parts = assign::read_assignment(theirs.assignment.clone(), "events").expect("reads");
    assert_eq!(b_parts.len(), 6);
    m.on_sync(
        now,
        &SyncGroupResponse::default().with_assignment(mine.assignment.clone()),
    );
    let parts = match m.poll(now) {
        Action::Assigned {
            generation: 1,
            partitions,
        } => partitions,
        other => panic!("{other:?}"),
    };
    assert_eq!(parts.len(), 6);
    assert!(parts.iter().all(|p| !b_parts.contains(p)));
    (m, parts)
}

#[test]
fn a_leader_assigns_every_partition_and_takes_its_share() {
    let now = Instant::now();
    let (mut m, parts) = stable_leader(now);
    assert_eq!(m.owned(), parts.as_slice());
    // Heartbeats every interval; none before.
    assert_eq!(m.poll(now), Action::WaitUntil(now + Duration::from_secs(3)));
    let later = now + Duration::from_secs(3);
    assert!(
        matches!(m.poll(later), Action::Heartbeat(h) if h.generation_id == 1 && h.member_id.as_str() == "a")
    );
    m.on_heartbeat(later, &HeartbeatResponse::default());
    assert_eq!(
        m.poll(later),
        Action::WaitUntil(later + Duration::from_secs(3))
    );
}

#[test]
fn a_rebalance_commits_what_is_held_then_claims_it_at_the_next_join() {
    let now = Instant::now();
    let (mut m, parts) = stable_leader(now);
    let t = now + Duration::from_secs(3);
    assert!(matches!(m.poll(t), Action::Heartbeat(_)));
    m.on_heartbeat(
        t,
        &HeartbeatResponse::default().with_error_code(ResponseError::RebalanceInProgress.code()),
    );
    assert_eq!(
        m.poll(t),
        Action::Revoke {
            partitions: parts.clone(),
            commit: true
        }
    );
    // Nothing is joined until the driver says the revoked partitions are committed.
    assert!(matches!(m.poll(t), Action::WaitUntil(_)));
    m.revoked(t);
    let meta = join_metadata(m.poll(t));
    let (_, owned, generation) = assign::read_subscription(meta, "events").expect("reads");
    assert_eq!((owned, generation), (parts, 1));
}

#[test]
fn a_member_paused_past_its_session_gives_up_without_committing() {
    let now = Instant::now();
    let (mut m, parts) = stable_leader(now);
    // SIGSTOP: the next poll comes long after the session ended.
    let woke = now + Duration::from_secs(60);
    assert_eq!(
        m.poll(woke),
        Action::Revoke {
            partitions: parts.clone(),
            commit: false
        }
    );
    m.revoked(woke);
    assert!(matches!(m.poll(woke), Action::Join(_)));
    // The coordinator says the generation is gone: the same, at a heartbeat.
    let (mut m, parts) = stable_leader(now);
    let t = now + Duration::from_secs(3);
    assert!(matches!(m.poll(t), Action::Heartbeat(_)));
    m.on_heartbeat(
        t,
        &HeartbeatResponse::default().with_error_code(ResponseError::IllegalGeneration.code()),
    );
    assert_eq!(
        m.poll(t),
        Action::Revoke {
            partitions: parts,
            commit: false
        }
    );
    assert_eq!(m.generation(), -1);
}

#[test]
fn join_errors_rejoin_retry_or_stop_as_kafka_says() {
    let now = Instant::now();
    let mut m = Membership::new(cfg(None), (0..4).collect(), now);
    assert!(matches!(m.poll(now), Action::Join(r) if r.member_id.is_empty()));
    // KIP-394: the coordinator names the id and asks for a second join at once.
    m.on_join(
        now,
        &JoinGroupResponse::default()
            .with_error_code(ResponseError::MemberIdRequired.code())
            .with_member_id(StrBytes::from_static_str("m-1")),
    );
    assert!(matches!(m.poll(now), Action::Join(r) if r.member_id.as_str() == "m-1"));
    // A coordinator still loading: wait the backoff, then join again.
    m.on_join(
        now,
        &JoinGroupResponse::default()
            .with_error_code(ResponseError::CoordinatorLoadInProgress.code()),
    );
    assert_eq!(
        m.poll(now),
        Action::WaitUntil(now + Duration::from_millis(100))
    );
    assert!(matches!(
        m.poll(now + Duration::from_millis(100)),
        Action::Join(_)
    ));
    // Another process with the same instance id: stop, saying which flag.
    m.on_join(
        now,
        &JoinGroupResponse::default().with_error_code(ResponseError::FencedInstanceId.code()),
    );
    match m.poll(now) {
        Action::Fatal(e) => assert!(e.to_string().contains("--instance-id"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_leader_refuses_member_metadata_it_cannot_read() {
    let now = Instant::now();
    let mut m = Membership::new(cfg(None), (0..4).collect(), now);
    let _ = m.poll(now);
    let garbage = Bytes::from_static(&[0, 1, 0x7f, 0xff, 0xff, 0xff]);
    m.on_join(now, &joined("a", "a", 1, &[("a", garbage)]));
    match m.poll(now) {
        Action::Fatal(e) => assert!(e.to_string().contains("member a"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lost_answer_repeats_the_step_and_the_session_still_bounds_it() {
    let now = Instant::now();
    let (mut m, parts) = stable_leader(now);
    let t = now + Duration::from_secs(3);
    assert!(matches!(m.poll(t), Action::Heartbeat(_)));
    m.on_no_answer(t);
    let again = t + Duration::from_millis(100);
    assert_eq!(m.poll(t), Action::WaitUntil(again));
    assert!(matches!(m.poll(again), Action::Heartbeat(_)));
    // Still no answer, session over: the partitions are given up uncommitted.
    m.on_no_answer(now + Duration::from_secs(11));
    assert_eq!(
        m.poll(now + Duration::from_secs(11)),
        Action::Revoke {
            partitions: parts,
            commit: false
        }
    );
}
