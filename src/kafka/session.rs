//! Incremental fetch sessions (KIP-227), sans-IO: what the broker's session holds, which
//! partitions a request must name, and how an answer moves the session on.
//!
//! A connection starts with a full fetch that asks for a session (id 0, epoch 0). A broker that
//! opens one answers its id; from then on a request names only the partitions whose position
//! (or leader epoch) changed since the session last saw them, and the partitions to forget, and
//! the broker answers only the partitions with news (records or an error). A broker that opens
//! none (id 0 in the answer, as Tansu does) gets full fetches. Any failure ends the session: the
//! next request is full again, as the Java client does.

use std::collections::BTreeMap;

use super::fetch::Want;

/// The epoch of a request that asks for a new session.
const INITIAL_EPOCH: i32 = 0;

/// One connection's fetch session.
#[derive(Debug, Clone, Default)]
pub struct FetchSession {
    /// 0: none; the next request is full.
    id: i32,
    /// The epoch the next incremental request carries.
    epoch: i32,
    /// Per partition, what the broker's session holds: (fetch offset, leader epoch).
    held: BTreeMap<i32, (i64, i32)>,
}

/// What one request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub session_id: i32,
    pub session_epoch: i32,
    /// Partitions the request names.
    pub send: Vec<Want>,
    /// Partitions the session drops.
    pub forget: Vec<i32>,
}

impl SessionRequest {
    /// A full request: every wanted partition is named and every one is answered.
    pub fn is_full(&self) -> bool {
        self.session_epoch == INITIAL_EPOCH
    }
}

impl FetchSession {
    /// The session id, 0 when there is none.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The request that fetches `wants` (every partition to read from this broker now).
    pub fn plan(&self, wants: &[Want]) -> SessionRequest {
        if self.id == 0 {
            return SessionRequest {
                session_id: 0,
                session_epoch: INITIAL_EPOCH,
                send: wants.to_vec(),
                forget: Vec::new(),
            };
        }
        let send = wants
            .iter()
            .filter(|w| self.held.get(&w.partition) != Some(&(w.offset, w.leader_epoch)))
            .copied()
            .collect();
        // A set, not a scan of `wants` per held partition: thousands of partitions per broker.
        let wanted: std::collections::BTreeSet<i32> = wants.iter().map(|w| w.partition).collect();
        let forget = self
            .held
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        SessionRequest {
            session_id: self.id,
            session_epoch: self.epoch,
            send,
            forget,
        }
    }

    /// The broker answered `req` without a top-level error; `answered_id` is the session id
    /// the answer carries.
    pub fn answered(&mut self, req: &SessionRequest, answered_id: i32) {
        if req.is_full() {
            self.held.clear();
            if answered_id == 0 {
                self.id = 0;
                return;
            }
            self.id = answered_id;
            self.epoch = INITIAL_EPOCH;
        }
        // Epochs run 1..=i32::MAX, then wrap to 1 (0 asks for a new session).
        self.epoch = if self.epoch == i32::MAX {
            1
        } else {
            self.epoch + 1
        };
        for p in &req.forget {
            self.held.remove(p);
        }
        for w in &req.send {
            self.held.insert(w.partition, (w.offset, w.leader_epoch));
        }
    }

    /// The request failed (a top-level error, a lost connection): the next one is full.
    pub fn reset(&mut self) {
        *self = FetchSession::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn want(partition: i32, offset: i64) -> Want {
        Want {
            partition,
            offset,
            leader_epoch: 3,
        }
    }

    #[test]
    fn a_session_names_only_what_changed_and_forgets_what_left() {
        let mut s = FetchSession::default();
        let wants = [want(0, 10), want(1, 20), want(2, 30)];
        let first = s.plan(&wants);
        assert!(first.is_full());
        assert_eq!(first.send.len(), 3);
        s.answered(&first, 77);
        assert_eq!(s.id(), 77);

        // Partition 1 moved on, partition 2 is done.
        let next = s.plan(&[want(0, 10), want(1, 25)]);
        assert_eq!((next.session_id, next.session_epoch), (77, 1));
        assert_eq!(next.send, vec![want(1, 25)]);
        assert_eq!(next.forget, vec![2]);
        s.answered(&next, 77);

        let idle = s.plan(&[want(0, 10), want(1, 25)]);
        assert_eq!(idle.session_epoch, 2);
        assert!(idle.send.is_empty() && idle.forget.is_empty());

        // A new leader epoch is a change too.
        let moved = s.plan(&[
            Want {
                leader_epoch: 4,
                ..want(0, 10)
            },
            want(1, 25),
        ]);
        assert_eq!(moved.send.len(), 1);

        s.reset();
        assert!(s.plan(&wants).is_full());
    }

    #[test]
    fn a_broker_without_sessions_gets_full_fetches() {
        let mut s = FetchSession::default();
        let wants = [want(0, 1)];
        for _ in 0..3 {
            let r = s.plan(&wants);
            assert!(r.is_full());
            s.answered(&r, 0);
        }
        assert_eq!(s.id(), 0);
    }

    #[test]
    fn epochs_wrap_past_zero() {
        let mut s = FetchSession {
            id: 5,
            epoch: i32::MAX,
            held: BTreeMap::new(),
        };
        let r = s.plan(&[]);
        s.answered(&r, 5);
        assert_eq!(s.plan(&[]).session_epoch, 1);
    }

    proptest! {
        /// Whatever the sequence of wanted sets, the broker's view (the session replayed from
        /// the requests alone) always equals what the client wants after each request.
        #[test]
        fn the_broker_view_follows_the_wants(
            rounds in proptest::collection::vec(
                proptest::collection::btree_map(0i32..8, 0i64..4, 0..8), 1..12),
        ) {
            let mut s = FetchSession::default();
            let mut broker: BTreeMap<i32, i64> = BTreeMap::new();
            for round in rounds {
                let wants: Vec<Want> = round.iter().map(|(p, o)| want(*p, *o)).collect();
                let r = s.plan(&wants);
                if r.is_full() {
                    broker.clear();
                }
                for p in &r.forget {
                    broker.remove(p);
                }
                for w in &r.send {
                    broker.insert(w.partition, w.offset);
                }
                prop_assert_eq!(&broker, &round);
                s.answered(&r, 9);
            }
        }
    }
}
