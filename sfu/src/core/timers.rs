//! The core's timers, ordered by due time, so a wake costs O(due timers ·
//! log n), not a scan of every peer.
//!
//! Each peer has exactly one entry: when its timeout moves, the old entry
//! is taken out and the new one put in (both O(log n)), and only when it
//! actually moved. Deferred keyframe requests have one entry each until due.

use std::collections::BTreeSet;
use std::time::Instant;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A peer's str0m timeout: (peer slot, peer serial).
    Peer(usize, u64),
    /// A deferred keyframe request: (participant slot, participant serial, track index).
    Keyframe(usize, u64, usize),
}

/// The timers, by due time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    due: BTreeSet<(Instant, Timer)>,
}

impl Timers {
    /// Schedules `timer` at `at`.
    pub fn schedule(&mut self, at: Instant, timer: Timer) {
        self.due.insert((at, timer));
    }

    /// Moves `timer` from `old` (if it was scheduled) to `at`.
    pub fn reschedule(&mut self, old: Option<Instant>, at: Instant, timer: Timer) {
        if let Some(old) = old {
            self.due.remove(&(old, timer));
        }
        self.due.insert((at, timer));
    }

    /// Unschedules `timer` at `at`.
    pub fn cancel(&mut self, at: Instant, timer: Timer) {
        self.due.remove(&(at, timer));
    }

    /// The earliest due time, if any.
    pub fn next(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes the next timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.due.first() {
            Some((at, _)) if *at <= now => self.due.pop_first().map(|(_, t)| t),
            _ => None,
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timers_fire_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_millis(30), Timer::Peer(2, 1));
        timers.schedule(t0 + Duration::from_millis(10), Timer::Peer(1, 1));
        timers.schedule(t0 + Duration::from_millis(20), Timer::Keyframe(3, 1, 0));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), Some(Timer::Peer(1, 1)));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), Some(Timer::Keyframe(3, 1, 0)));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), None);
        assert_eq!(timers.len(), 1);
        timers.reschedule(Some(t0 + Duration::from_millis(30)), t0 + Duration::from_millis(40), Timer::Peer(2, 1));
        assert_eq!(timers.len(), 1, "a move replaces the entry");
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(40)));
        timers.cancel(t0 + Duration::from_millis(40), Timer::Peer(2, 1));
        assert_eq!(timers.next(), None);
    }
}
