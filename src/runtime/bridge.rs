//! The bounded lock-free SPSC ring that links two cores, whatever executor each runs.
//!
//! One producer thread, one consumer thread, a power-of-two array of slots, and two cache-padded
//! indices. Each side caches the other's index so a push or pop touches shared memory only when the
//! cached view says the ring is full or empty. Either side may wait asynchronously: the waiting side
//! registers its waker in an [`AtomicWaker`], re-checks, and the other side wakes it after moving an
//! index. Wakers are plain `std::task::Waker`s, so a tokio task can wait on a glommio task and back.
//!
//! Dropping the [`Sender`] closes the ring for the receiver once it is drained; dropping the
//! [`Receiver`] makes every further send fail, handing the value back.
//!
//! A ring can also be bounded by *weight* ([`weighted`]): each value weighs what its `weigh`
//! function says (records in a batch), and a send needs room in both slots and weight. Values of
//! weight 0 (control messages such as barriers) ignore the weight bound and may use slots reserved
//! for them, so a ring full of records still accepts them.

use std::cell::{Cell, UnsafeCell};
use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use crossbeam_utils::CachePadded;

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next slot the consumer reads. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    rx_waker: AtomicWaker,
    tx_waker: AtomicWaker,
    tx_closed: AtomicBool,
    rx_closed: AtomicBool,
    weigh: fn(&T) -> usize,
    weight_cap: usize,
    /// Slots weighted values may use; the rest are for weight-0 values.
    weighted_slots: usize,
    /// Weight pushed so far. Written only by the producer.
    pushed: CachePadded<AtomicUsize>,
    /// Weight popped so far. Written only by the consumer.
    popped: CachePadded<AtomicUsize>,
}

// SAFETY: a slot is written only by the producer while it is outside [head, tail), and read only by
// the consumer while inside; the Release/Acquire pairs on `head` and `tail` order those accesses.
unsafe impl<T: Send> Sync for Shared<T> {}
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        let mut i = head;
        while i != tail {
            // SAFETY: slots in [head, tail) hold initialised values nobody else can reach now.
            unsafe { (*self.slots[i & self.mask].get()).assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// Creates a ring with room for at least `capacity` values (rounded up to a power of two).
pub fn channel<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    build(capacity, |_| 0, usize::MAX, usize::MAX)
}

/// Creates a ring bounded by `slots` values and by `weight_cap` total weight, with `reserved`
/// extra slots that only weight-0 values may use. One value heavier than `weight_cap` still
/// passes when the ring holds no weight (else it could never be sent).
pub fn weighted<T: Send>(
    slots: usize,
    weight_cap: usize,
    reserved: usize,
    weigh: fn(&T) -> usize,
) -> (Sender<T>, Receiver<T>) {
    build(
        slots.max(1) + reserved,
        weigh,
        weight_cap.max(1),
        slots.max(1),
    )
}

fn build<T: Send>(
    capacity: usize,
    weigh: fn(&T) -> usize,
    weight_cap: usize,
    weighted_slots: usize,
) -> (Sender<T>, Receiver<T>) {
    let cap = capacity.max(1).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        slots,
        mask: cap - 1,
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        rx_waker: AtomicWaker::new(),
        tx_waker: AtomicWaker::new(),
        tx_closed: AtomicBool::new(false),
        rx_closed: AtomicBool::new(false),
        weigh,
        weight_cap,
        weighted_slots: weighted_slots.min(cap),
        pushed: CachePadded::new(AtomicUsize::new(0)),
        popped: CachePadded::new(AtomicUsize::new(0)),
    });
    (
        Sender {
            shared: shared.clone(),
            tail: Cell::new(0),
            head_cache: Cell::new(0),
            pushed: Cell::new(0),
        },
        Receiver {
            shared,
            head: Cell::new(0),
            tail_cache: Cell::new(0),
            popped: Cell::new(0),
        },
    )
}

/// Why a send did not happen; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    Full(T),
    Closed(T),
}

/// The receiver is gone; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

/// The producing end. `Send` (move it to its thread) but not `Sync`: one thread pushes.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
    tail: Cell<usize>,
    head_cache: Cell<usize>,
    pushed: Cell<usize>,
}

impl<T: Send> Sender<T> {
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Values pushed and not yet popped (may be stale by the time it is read).
    pub fn len(&self) -> usize {
        self.tail
            .get()
            .wrapping_sub(self.shared.head.load(Ordering::Acquire))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most weight the next value may carry and still fit: everything while the ring holds
    /// no weight (a value heavier than the cap is taken then), else what is left under the cap.
    pub fn room(&self) -> usize {
        match self.weight() {
            0 => usize::MAX,
            held => self.shared.weight_cap.saturating_sub(held),
        }
    }

    /// Weight pushed and not yet popped (for a weighted ring: records waiting).
    pub fn weight(&self) -> usize {
        self.pushed
            .get()
            .wrapping_sub(self.shared.popped.load(Ordering::Acquire))
    }

    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let s = &*self.shared;
        if s.rx_closed.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(value));
        }
        let w = (s.weigh)(&value);
        // Weighted values leave the reserved slots to weight-0 ones.
        let slot_limit = if w == 0 { s.mask + 1 } else { s.weighted_slots };
        let tail = self.tail.get();
        if tail.wrapping_sub(self.head_cache.get()) >= slot_limit {
            self.head_cache.set(s.head.load(Ordering::Acquire));
            if tail.wrapping_sub(self.head_cache.get()) >= slot_limit {
                return Err(TrySendError::Full(value));
            }
        }
        if w > 0 && w > self.room() {
            return Err(TrySendError::Full(value));
        }
        // SAFETY: the slot at `tail` is outside [head, tail): the consumer does not touch it.
        unsafe { (*s.slots[tail & s.mask].get()).write(value) };
        if w > 0 {
            let pushed = self.pushed.get().wrapping_add(w);
            self.pushed.set(pushed);
            s.pushed.store(pushed, Ordering::Release);
        }
        let next = tail.wrapping_add(1);
        self.tail.set(next);
        s.tail.store(next, Ordering::Release);
        s.rx_waker.wake();
        Ok(())
    }

    /// Pushes, waiting for room while the ring is full.
    pub async fn send(&self, value: T) -> Result<(), Closed<T>> {
        let mut pending = Some(value);
        poll_fn(|cx| {
            let value = pending.take().expect("send polled after completion");
            match self.poll_send(cx, value) {
                SendPoll::Ready(r) => Poll::Ready(r),
                SendPoll::Pending(v) => {
                    pending = Some(v);
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn poll_send(&self, cx: &mut Context<'_>, value: T) -> SendPoll<T> {
        let value = match self.try_send(value) {
            Ok(()) => return SendPoll::Ready(Ok(())),
            Err(TrySendError::Closed(v)) => return SendPoll::Ready(Err(Closed(v))),
            Err(TrySendError::Full(v)) => v,
        };
        self.shared.tx_waker.register(cx.waker());
        match self.try_send(value) {
            Ok(()) => SendPoll::Ready(Ok(())),
            Err(TrySendError::Closed(v)) => SendPoll::Ready(Err(Closed(v))),
            Err(TrySendError::Full(v)) => SendPoll::Pending(v),
        }
    }
}

enum SendPoll<T> {
    Ready(Result<(), Closed<T>>),
    Pending(T),
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.tx_closed.store(true, Ordering::Release);
        self.shared.rx_waker.wake();
    }
}

/// What a receive found instead of a value.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    Empty,
    /// The sender is gone and every value has been taken.
    Closed,
}

/// The consuming end. `Send` but not `Sync`: one thread pops.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    head: Cell<usize>,
    tail_cache: Cell<usize>,
    popped: Cell<usize>,
}

impl<T: Send> Receiver<T> {
    /// Weight waiting in the ring (for a weighted ring: records queued).
    pub fn weight(&self) -> usize {
        self.shared
            .pushed
            .load(Ordering::Acquire)
            .wrapping_sub(self.popped.get())
    }

    pub fn len(&self) -> usize {
        self.shared
            .tail
            .load(Ordering::Acquire)
            .wrapping_sub(self.head.get())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let s = &*self.shared;
        let head = self.head.get();
        if head == self.tail_cache.get() {
            self.tail_cache.set(s.tail.load(Ordering::Acquire));
            if head == self.tail_cache.get() {
                if !s.tx_closed.load(Ordering::Acquire) {
                    return Err(TryRecvError::Empty);
                }
                // Pushes happen before the close; look once more now that we have seen it.
                self.tail_cache.set(s.tail.load(Ordering::Acquire));
                if head == self.tail_cache.get() {
                    return Err(TryRecvError::Closed);
                }
            }
        }
        // SAFETY: head < tail, so the slot holds a value the producer finished writing (Acquire on
        // tail), and the producer will not reuse it until we publish the new head.
        let value = unsafe { (*s.slots[head & s.mask].get()).assume_init_read() };
        let w = (s.weigh)(&value);
        if w > 0 {
            let popped = self.popped.get().wrapping_add(w);
            self.popped.set(popped);
            s.popped.store(popped, Ordering::Release);
        }
        let next = head.wrapping_add(1);
        self.head.set(next);
        s.head.store(next, Ordering::Release);
        s.tx_waker.wake();
        Ok(value)
    }

    /// Polls for a value; `Ready(None)` once the sender is gone and the ring is drained.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.try_recv() {
            Ok(v) => return Poll::Ready(Some(v)),
            Err(TryRecvError::Closed) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.shared.rx_waker.register(cx.waker());
        match self.try_recv() {
            Ok(v) => Poll::Ready(Some(v)),
            Err(TryRecvError::Closed) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.rx_closed.store(true, Ordering::Release);
        self.shared.tx_waker.wake();
    }
}

/// Receives from whichever of several rings has a value, round-robin so none starves. A ring
/// can be paused (for checkpoint alignment): it is not read until resumed.
pub struct Fan<T> {
    rings: Vec<Receiver<T>>,
    open: Vec<bool>,
    paused: Vec<bool>,
    next: usize,
}

impl<T: Send> Fan<T> {
    pub fn new(rings: Vec<Receiver<T>>) -> Self {
        let open = vec![true; rings.len()];
        let paused = vec![false; rings.len()];
        Self {
            rings,
            open,
            paused,
            next: 0,
        }
    }

    /// Stops reading ring `i` until [`Fan::resume_all`].
    pub fn pause(&mut self, i: usize) {
        self.paused[i] = true;
    }

    pub fn resume_all(&mut self) {
        self.paused.iter_mut().for_each(|p| *p = false);
    }

    /// Rings paused and not known to be closed.
    pub fn paused(&self) -> usize {
        (0..self.rings.len())
            .filter(|&i| self.paused[i] && self.open[i])
            .count()
    }

    /// True when every ring not known to be closed is paused.
    pub fn all_open_paused(&self) -> bool {
        (0..self.rings.len()).all(|i| !self.open[i] || self.paused[i])
    }

    /// Values waiting in all rings.
    pub fn len(&self) -> usize {
        self.rings.iter().map(Receiver::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the ring and its value; `None` once every ring that is not paused is closed
    /// and drained.
    pub async fn recv(&mut self) -> Option<(usize, T)> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, T)>> {
        let n = self.rings.len();
        for registered in [false, true] {
            let mut any_open = false;
            for step in 0..n {
                let i = (self.next + step) % n;
                if !self.open[i] || self.paused[i] {
                    continue;
                }
                match self.rings[i].try_recv() {
                    Ok(v) => {
                        self.next = (i + 1) % n;
                        return Poll::Ready(Some((i, v)));
                    }
                    Err(TryRecvError::Closed) => self.open[i] = false,
                    Err(TryRecvError::Empty) => {
                        any_open = true;
                        if !registered {
                            self.rings[i].shared.rx_waker.register(cx.waker());
                        }
                    }
                }
            }
            if !any_open {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn fifo_and_capacity() {
        let (tx, rx) = channel::<u32>(3);
        assert_eq!(tx.capacity(), 4);
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(9), Err(TrySendError::Full(9)));
        assert_eq!(rx.len(), 4);
        for i in 0..4 {
            assert_eq!(rx.try_recv(), Ok(i));
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn weighted_rings_bound_weight_and_keep_room_for_weightless_values() {
        // 4 slots for weighted values (+2 reserved, 8 after rounding), 10 units of weight;
        // values weigh themselves, 0 is a control message.
        let (tx, rx) = weighted::<u32>(4, 10, 2, |v| *v as usize);
        tx.try_send(6).unwrap();
        tx.try_send(4).unwrap();
        assert_eq!(tx.weight(), 10);
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)), "full by weight");
        for _ in 0..3 {
            tx.try_send(0).unwrap(); // control messages pass a ring full of records
        }
        assert_eq!(rx.try_recv(), Ok(6));
        assert_eq!(rx.weight(), 4);
        assert_eq!(
            tx.try_send(3),
            Err(TrySendError::Full(3)),
            "4 slots held: full by slots"
        );
        assert_eq!(rx.try_recv(), Ok(4));
        tx.try_send(3).unwrap();
        assert_eq!(tx.try_send(50), Err(TrySendError::Full(50)));
        let drained: Vec<u32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(drained, vec![0, 0, 0, 3]);
        assert_eq!((tx.weight(), rx.weight()), (0, 0));
        // One value heavier than the whole bound passes into an empty ring.
        tx.try_send(50).unwrap();
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    }

    #[test]
    fn weighted_values_cannot_take_reserved_slots() {
        let (tx, _rx) = weighted::<u32>(2, 1_000, 2, |v| *v as usize);
        tx.try_send(1).unwrap();
        tx.try_send(1).unwrap();
        assert_eq!(
            tx.try_send(1),
            Err(TrySendError::Full(1)),
            "the other 2 slots are reserved"
        );
        tx.try_send(0).unwrap();
        tx.try_send(0).unwrap();
    }

    #[test]
    fn values_left_in_a_closed_ring_are_still_received_then_dropped_once() {
        let item = Arc::new(());
        let (tx, rx) = channel(8);
        for _ in 0..5 {
            tx.try_send(item.clone()).unwrap();
        }
        drop(tx);
        assert!(rx.try_recv().is_ok());
        assert_eq!(Arc::strong_count(&item), 5);
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn send_to_a_dropped_receiver_hands_the_value_back() {
        let (tx, rx) = channel(2);
        drop(rx);
        assert_eq!(tx.try_send(7), Err(TrySendError::Closed(7)));
    }

    /// Two OS threads, a tiny ring, async waits on both sides with different executors' wakers:
    /// every value arrives once and in order.
    #[test]
    fn stress_async_across_threads_keeps_order() {
        const N: u64 = 200_000;
        let (tx, rx) = channel::<u64>(4);
        let producer = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                for i in 0..N {
                    tx.send(i).await.unwrap();
                }
            });
        });
        let consumer = thread::spawn(move || {
            glommio::LocalExecutorBuilder::default()
                .io_memory(64 << 10)
                .make()
                .unwrap()
                .run(async move {
                    let mut expected = 0;
                    while let Some(v) = rx.recv().await {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                    expected
                })
        });
        producer.join().unwrap();
        assert_eq!(consumer.join().unwrap(), N);
    }

    #[test]
    fn fan_drains_every_ring_and_ends_when_all_close() {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = channel::<(usize, u32)>(2);
            senders.push(tx);
            receivers.push(rx);
        }
        let handles: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(r, tx)| {
                thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        for i in 0..10_000 {
                            tx.send((r, i)).await.unwrap();
                        }
                    })
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let counts = rt.block_on(async {
            let mut fan = Fan::new(receivers);
            let mut last = [None::<u32>; 3];
            while let Some((ring, (r, i))) = fan.recv().await {
                assert_eq!(ring, r);
                assert!(last[r].is_none_or(|l| l + 1 == i), "ring {r} out of order");
                last[r] = Some(i);
            }
            last
        });
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counts, [Some(9_999); 3]);
    }

    #[test]
    fn paused_rings_are_not_read_until_resumed() {
        let (a_tx, a_rx) = channel::<u32>(4);
        let (b_tx, b_rx) = channel::<u32>(4);
        let mut fan = Fan::new(vec![a_rx, b_rx]);
        a_tx.try_send(1).unwrap();
        a_tx.try_send(2).unwrap();
        b_tx.try_send(10).unwrap();
        drop(b_tx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            fan.pause(0);
            assert_eq!(fan.recv().await, Some((1, 10)));
            assert_eq!(fan.recv().await, None, "ring 1 closed, ring 0 paused");
            assert!(fan.all_open_paused());
            assert_eq!(fan.paused(), 1);
            fan.resume_all();
            assert_eq!(fan.recv().await, Some((0, 1)));
            assert_eq!(fan.recv().await, Some((0, 2)));
            drop(a_tx);
            assert_eq!(fan.recv().await, None);
            assert_eq!(fan.paused(), 0);
        });
    }
}
