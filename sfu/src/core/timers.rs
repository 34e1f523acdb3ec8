//! The core's timers: an indexed binary heap, so a wake costs O(due timers
//! · log n), not a scan of every peer, and moving a timer is O(log n) in
//! place.
//!
//! Each peer has exactly one entry, moved when its timeout moves; deferred
//! keyframe requests have one each until due. Once the heap and its index
//! have grown to the number of timers, nothing here allocates.

use std::time::Instant;

use rustc_hash::FxHashMap;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Timer {
    /// A peer's str0m timeout: (peer slot, peer serial).
    Peer(usize, u64),
    /// A deferred keyframe request: (participant slot, participant serial,
    /// track index, layer index).
    Keyframe(usize, u64, usize, usize),
}

/// The timers, by due time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: Vec<(Instant, Timer)>,
    /// Where each timer is in `heap`.
    position: FxHashMap<Timer, usize>,
}

impl Timers {
    /// Schedules `timer` at `at`, moving it if it is scheduled already.
    pub fn set(&mut self, at: Instant, timer: Timer) {
        match self.position.get(&timer).copied() {
            Some(i) => {
                let old = self.heap[i].0;
                self.heap[i].0 = at;
                if at < old { self.sift_up(i) } else { self.sift_down(i) }
            }
            None => {
                self.heap.push((at, timer));
                let i = self.heap.len() - 1;
                self.position.insert(timer, i);
                self.sift_up(i);
            }
        }
    }

    /// Unschedules `timer`, if it is scheduled.
    pub fn cancel(&mut self, timer: Timer) {
        if let Some(i) = self.position.get(&timer).copied() {
            self.remove_at(i);
        }
    }

    /// The earliest due time, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.first().map(|(at, _)| *at)
    }

    /// Takes the next timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.first() {
            Some((at, _)) if *at <= now => Some(self.remove_at(0)),
            _ => None,
        }
    }

    /// Timers scheduled.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    fn remove_at(&mut self, i: usize) -> Timer {
        let last = self.heap.len() - 1;
        self.swap(i, last);
        let (_, timer) = self.heap.pop().unwrap_or_else(|| unreachable!("the heap holds entry {i}"));
        self.position.remove(&timer);
        if i < self.heap.len() {
            self.sift_down(i);
            self.sift_up(i);
        }
        timer
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.position.insert(self.heap[a].1, a);
        self.position.insert(self.heap[b].1, b);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[i].0 >= self.heap[parent].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (left, right) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if left < self.heap.len() && self.heap[left].0 < self.heap[smallest].0 {
                smallest = left;
            }
            if right < self.heap.len() && self.heap[right].0 < self.heap[smallest].0 {
                smallest = right;
            }
            if smallest == i {
                break;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timers_fire_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        timers.set(ms(30), Timer::Peer(2, 1));
        timers.set(ms(10), Timer::Peer(1, 1));
        timers.set(ms(20), Timer::Keyframe(3, 1, 0, 0));
        assert_eq!(timers.next(), Some(ms(10)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(ms(25)), Some(Timer::Peer(1, 1)));
        assert_eq!(timers.pop_due(ms(25)), Some(Timer::Keyframe(3, 1, 0, 0)));
        assert_eq!(timers.pop_due(ms(25)), None);
        assert_eq!(timers.len(), 1);
        timers.set(ms(40), Timer::Peer(2, 1));
        assert_eq!(timers.len(), 1, "a move replaces the entry");
        assert_eq!(timers.next(), Some(ms(40)));
        timers.cancel(Timer::Peer(2, 1));
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn the_heap_order_holds_through_many_moves() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut x: u64 = 12345;
        let mut expected = std::collections::HashMap::new();
        for round in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let peer = (x % 50) as usize;
            let at = t0 + Duration::from_micros(x % 100_000);
            if round % 7 == 0 {
                timers.cancel(Timer::Peer(peer, 0));
                expected.remove(&peer);
            } else {
                timers.set(at, Timer::Peer(peer, 0));
                expected.insert(peer, at);
            }
        }
        let mut last = t0;
        let mut seen = 0;
        while let Some(Timer::Peer(peer, _)) = timers.pop_due(t0 + Duration::from_secs(1)) {
            let at = expected[&peer];
            assert!(at >= last, "popped in order");
            last = at;
            seen += 1;
        }
        assert_eq!(seen, expected.len());
    }
}
