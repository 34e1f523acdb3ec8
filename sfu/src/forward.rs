//! Per-subscriber rewriting of forwarded RTP, and keyframe-request throttling.
//!
//! Both are pure state machines driven by the caller's clock, so they are
//! tested here without sockets.

use std::time::{Duration, Instant};

/// Rewrites a publisher's sequence numbers and RTP timestamps into one
/// subscriber's own sequence space.
///
/// Each subscriber's stream starts at a small random sequence number with a
/// rollover counter of 0, whatever the publisher's counter is: passing the
/// publisher's extended numbers through would break SRTP for a subscriber
/// that joins after they have wrapped. Gaps (loss) are kept, so the
/// subscriber's NACKs and jitter buffer see the truth. When the publisher's
/// stream restarts (a new SSRC after a reconnect), both sequences continue
/// seamlessly from where they were.
#[derive(Debug, Clone)]
pub struct SeqRewriter {
    anchor: Option<Anchor>,
    /// Highest sequence number written so far.
    last_out_seq: u64,
    /// Timestamp written with `last_out_seq`.
    last_out_ts: u32,
    /// How far timestamps move on when a new source takes over.
    switch_advance: u32,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    source_ssrc: u32,
    first_in_seq: u64,
    first_out_seq: u64,
    ts_offset: u32,
}

/// Where a rewritten packet goes in the subscriber's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended sequence number for the subscriber's stream.
    pub seq: u64,
    /// RTP timestamp for the subscriber's stream.
    pub timestamp: u32,
}

/// A nominal frame (3000 ticks at 90 kHz = 33 ms): how far timestamps move
/// on at a source change whose real gap is unknown.
const NOMINAL_FRAME_TICKS: u32 = 3000;

/// How far back a late (reordered or retransmitted) packet may be before it
/// is dropped rather than forwarded.
const MAX_REORDER: u64 = 1000;

impl SeqRewriter {
    /// A rewriter whose first packet gets sequence number `initial_seq`
    /// (callers pass a random value below 2^15).
    pub fn new(initial_seq: u16) -> Self {
        SeqRewriter {
            anchor: None,
            last_out_seq: u64::from(initial_seq).saturating_sub(1),
            last_out_ts: 0,
            switch_advance: NOMINAL_FRAME_TICKS,
        }
    }

    /// Sets how far (in RTP clock ticks) the timestamps move on from the
    /// last one written when the next packet comes from another source
    /// (SSRC): a simulcast layer switch knows the time that passed. Without
    /// it, a nominal frame is assumed.
    pub fn set_switch_advance(&mut self, ticks: u32) {
        self.switch_advance = ticks;
    }

    /// Maps one incoming packet (source SSRC, extended sequence number, RTP
    /// timestamp). Returns `None` for a packet too old to forward.
    pub fn rewrite(&mut self, source_ssrc: u32, in_seq: u64, in_ts: u32) -> Option<Rewritten> {
        let anchor = match self.anchor {
            Some(a) if a.source_ssrc == source_ssrc => a,
            previous => {
                // First packet, or another source (the publisher's stream
                // restarted, or a simulcast layer switch): continue after the
                // last number we wrote, and keep timestamps moving forward.
                let first_out_seq = self.last_out_seq + 1;
                let ts_offset = if previous.is_some() {
                    self.last_out_ts.wrapping_add(self.switch_advance).wrapping_sub(in_ts)
                } else {
                    0
                };
                self.switch_advance = NOMINAL_FRAME_TICKS;
                let a = Anchor { source_ssrc, first_in_seq: in_seq, first_out_seq, ts_offset };
                self.anchor = Some(a);
                a
            }
        };
        if in_seq < anchor.first_in_seq {
            // Reordered from before we started forwarding: the subscriber
            // never saw its neighbours, so it is of no use.
            return None;
        }
        let seq = anchor.first_out_seq + (in_seq - anchor.first_in_seq);
        if seq + MAX_REORDER < self.last_out_seq {
            return None;
        }
        let timestamp = in_ts.wrapping_add(anchor.ts_offset);
        if seq > self.last_out_seq {
            self.last_out_seq = seq;
            self.last_out_ts = timestamp;
        }
        Some(Rewritten { seq, timestamp })
    }
}

/// Throttles keyframe requests to one publisher track: at most one per
/// `min_interval`. A request inside the window is remembered and sent when
/// the window ends, so a late joiner is never left waiting for the next
/// natural keyframe.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    min_interval: Duration,
    last_sent: Option<Instant>,
    deferred: bool,
}

impl KeyframeThrottle {
    /// A throttle allowing one request per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        KeyframeThrottle { min_interval, last_sent: None, deferred: false }
    }

    /// Someone wants a keyframe. Returns true if the request should go to
    /// the publisher now; otherwise it is deferred.
    pub fn request(&mut self, now: Instant) -> bool {
        if self.window_open(now) {
            self.last_sent = Some(now);
            self.deferred = false;
            true
        } else {
            self.deferred = true;
            false
        }
    }

    /// Called on timeouts: true if a deferred request is now due.
    pub fn poll_deferred(&mut self, now: Instant) -> bool {
        if self.deferred && self.window_open(now) {
            self.last_sent = Some(now);
            self.deferred = false;
            true
        } else {
            false
        }
    }

    /// When a deferred request will be due, if one is waiting.
    pub fn deferred_until(&self) -> Option<Instant> {
        match (self.deferred, self.last_sent) {
            (true, Some(last)) => Some(last + self.min_interval),
            _ => None,
        }
    }

    fn window_open(&self, now: Instant) -> bool {
        self.last_sent.is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_initial_and_keeps_gaps() {
        let mut r = SeqRewriter::new(100);
        assert_eq!(r.rewrite(1, 70_000, 5).unwrap(), Rewritten { seq: 100, timestamp: 5 });
        assert_eq!(r.rewrite(1, 70_001, 6).unwrap().seq, 101);
        // Two lost packets: the gap survives so the subscriber can NACK.
        assert_eq!(r.rewrite(1, 70_004, 7).unwrap().seq, 104);
        // A retransmission fills the gap with its original position.
        assert_eq!(r.rewrite(1, 70_002, 6).unwrap().seq, 102);
    }

    #[test]
    fn late_joiner_starts_with_rollover_zero() {
        // The publisher has wrapped many times; the subscriber's stream must not.
        let mut r = SeqRewriter::new(1);
        let out = r.rewrite(9, 5 * 65_536 + 12, 0).unwrap();
        assert!(out.seq < 65_536);
    }

    #[test]
    fn drops_packets_from_before_the_anchor_and_too_old() {
        let mut r = SeqRewriter::new(10);
        r.rewrite(1, 500, 0).unwrap();
        assert_eq!(r.rewrite(1, 499, 0), None);
        r.rewrite(1, 500 + 5000, 0).unwrap();
        assert_eq!(r.rewrite(1, 501, 0), None, "older than the reorder window");
    }

    #[test]
    fn publisher_restart_continues_both_sequences() {
        let mut r = SeqRewriter::new(10);
        r.rewrite(1, 100, 90_000).unwrap();
        let before = r.rewrite(1, 101, 93_000).unwrap();
        let after = r.rewrite(2, 7, 12).unwrap();
        assert_eq!(after.seq, before.seq + 1);
        assert_eq!(after.timestamp, before.timestamp.wrapping_add(3000));
        assert_eq!(r.rewrite(2, 8, 3012).unwrap().timestamp, after.timestamp.wrapping_add(3000));
    }

    #[test]
    fn a_layer_switch_advances_timestamps_by_the_time_given() {
        let mut r = SeqRewriter::new(10);
        let last = r.rewrite(1, 100, 90_000).unwrap();
        r.set_switch_advance(1800);
        let switched = r.rewrite(2, 5000, 7).unwrap();
        assert_eq!(switched.seq, last.seq + 1);
        assert_eq!(switched.timestamp, last.timestamp.wrapping_add(1800));
        // The advance is used once; a later restart falls back to a nominal frame.
        let restarted = r.rewrite(3, 1, 0).unwrap();
        assert_eq!(restarted.timestamp, switched.timestamp.wrapping_add(3000));
    }

    #[test]
    fn throttle_allows_one_per_window_and_defers_the_rest() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(100)));
        assert!(!k.request(t0 + Duration::from_millis(200)));
        assert_eq!(k.deferred_until(), Some(t0 + Duration::from_millis(500)));
        assert!(!k.poll_deferred(t0 + Duration::from_millis(499)));
        assert!(k.poll_deferred(t0 + Duration::from_millis(500)));
        // The deferred requests collapsed into one.
        assert!(!k.poll_deferred(t0 + Duration::from_millis(2000)));
        assert!(k.request(t0 + Duration::from_millis(2000)));
    }
}

/// Property tests of the rewriter around the 16-bit wrap and across
/// publisher restarts.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// In-order input keeps its gaps, whatever the starting point (near
        /// the wrap included) and whatever the subscriber's first number.
        #[test]
        fn in_order_packets_keep_their_spacing(
            start in prop_oneof![Just(65_500u64), Just(65_535u64), Just(131_000u64), 0u64..10_000_000],
            gaps in proptest::collection::vec(1u64..30, 1..400),
            initial in 1u16..30_000,
            ts_step in 1u32..6000,
        ) {
            let mut r = SeqRewriter::new(initial);
            let first = r.rewrite(7, start, 1000).unwrap();
            prop_assert_eq!(first.seq, u64::from(initial));
            let (mut seq, mut ts, mut out_prev) = (start, 1000u32, first);
            for gap in gaps {
                seq += gap;
                ts = ts.wrapping_add(ts_step);
                let out = r.rewrite(7, seq, ts).unwrap();
                prop_assert_eq!(out.seq - out_prev.seq, gap, "gaps are kept");
                prop_assert_eq!(out.timestamp.wrapping_sub(out_prev.timestamp), ts_step);
                out_prev = out;
            }
        }

        /// A publisher that restarts (a new SSRC, any numbers) continues
        /// the subscriber's sequence with no step back and no repeat, and
        /// late packets never produce a number already used.
        #[test]
        fn restarts_and_reordering_never_go_back(
            steps in proptest::collection::vec((0u8..4, 0u64..70_000, 0u64..40), 1..300),
        ) {
            let mut r = SeqRewriter::new(100);
            let (mut ssrc, mut seq) = (1u32, 60_000u64);
            let mut highest: Option<u64> = None;
            let mut written = std::collections::HashMap::<u64, u64>::new();
            for (kind, jump, back) in steps {
                match kind {
                    // A restart: new SSRC, numbers anywhere.
                    0 => { ssrc += 1; seq = jump; }
                    // Forward.
                    1 | 2 => seq += 1 + jump % 50,
                    // A late packet (reordered or retransmitted).
                    _ => {}
                }
                let in_seq = if kind == 3 { seq.saturating_sub(back) } else { seq };
                if let Some(out) = r.rewrite(ssrc, in_seq, 0) {
                    if kind == 0 {
                        prop_assert_eq!(Some(out.seq), highest.map(|h| h + 1).or(Some(100)), "a restart continues at once");
                    }
                    if let Some(h) = highest && kind != 3 {
                        prop_assert!(out.seq > h, "forward input goes forward");
                    }
                    // One input number of one stream maps to one output number.
                    if let Some(previous) = written.insert(out.seq, (u64::from(ssrc) << 40) | in_seq) {
                        prop_assert_eq!(previous, (u64::from(ssrc) << 40) | in_seq, "an output number reused");
                    }
                    highest = Some(highest.map_or(out.seq, |h| h.max(out.seq)));
                }
            }
        }
    }
}
