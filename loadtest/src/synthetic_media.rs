//! Synthetic media: payloads that carry their own sequence number and send
//! time, so a receiver can measure true loss and latency through the SFU,
//! and the bookkeeping of what was received.
//!
//! Payload layout after the codec prefix (one VP8 payload-descriptor byte
//! for video, nothing for audio):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `TCLT` |
//! | 4 | sequence number of this track (big-endian) |
//! | 8 | send time, microseconds since the Unix epoch (big-endian) |
//! | … | filler up to the packet size |

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Marks a synthetic payload.
pub const MAGIC: &[u8; 4] = b"TCLT";
/// Bytes of the synthetic header.
pub const HEADER_LEN: usize = 16;

/// Microseconds since the Unix epoch (all clients run on one machine, so
/// send and receive clocks agree).
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Builds a payload: `prefix`, the synthetic header, then filler to `len` bytes.
pub fn build_payload(prefix: &[u8], seq: u32, sent_us: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(prefix.len() + HEADER_LEN));
    p.extend_from_slice(prefix);
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&sent_us.to_be_bytes());
    p.resize(len.max(p.len()), 0xA5);
    p
}

/// Parses the synthetic header after a `prefix_len`-byte codec prefix.
/// Returns (sequence number, send time) or `None` for a foreign payload.
pub fn parse_payload(payload: &[u8], prefix_len: usize) -> Option<(u32, u64)> {
    let h = payload.get(prefix_len..prefix_len + HEADER_LEN)?;
    if &h[0..4] != MAGIC {
        return None;
    }
    let seq = u32::from_be_bytes(h[4..8].try_into().ok()?);
    let sent = u64::from_be_bytes(h[8..16].try_into().ok()?);
    Some((seq, sent))
}

/// A growable set of sequence numbers (one bit each).
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; returns false if it was already there (a duplicate).
    pub fn insert(&mut self, seq: u32) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let fresh = self.words[w] & (1 << b) == 0;
        self.words[w] |= 1 << b;
        if fresh {
            self.len += 1;
        }
        fresh
    }

    /// Distinct numbers held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Distinct numbers held in `[start, end)`.
    pub fn count_in(&self, start: u32, end: u32) -> u64 {
        (start..end).filter(|s| self.words.get((s / 64) as usize).is_some_and(|w| w & (1 << (s % 64)) != 0)).count()
            as u64
    }
}

/// The start of a VP8 keyframe as the SFU reads it (RFC 6386 §9.1): a
/// payload descriptor byte (start of partition 0), the 3-byte frame tag
/// with the inverse keyframe bit clear, the start code, and the picture's
/// width and height. A synthetic keyframe's first packet begins with it,
/// so a simulcast layer can be switched to at its keyframes.
pub fn vp8_keyframe_prefix(width: u16, height: u16) -> [u8; VP8_KEYFRAME_PREFIX_LEN] {
    let (w, h) = (width.to_le_bytes(), height.to_le_bytes());
    [0x10, 0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, w[0], w[1], h[0], h[1]]
}

/// Length of [`vp8_keyframe_prefix`].
pub const VP8_KEYFRAME_PREFIX_LEN: usize = 11;

/// The RTP sequence numbers one receiver got on one track, as the sender
/// of that track (the SFU) numbered them: what RFC 3550 loss is counted
/// from. A simulcast subscriber receives one layer at a time under one
/// continuous sequence, so this counts its loss across layer switches,
/// where the publishers' own numbering cannot.
#[derive(Debug, Default, Clone)]
pub struct RtpReception {
    /// Distinct extended sequence numbers, counted from the first received.
    pub seqs: SeqSet,
    /// The highest extended sequence number, from the first (0).
    pub highest: Option<u32>,
    last: Option<(u16, u32)>,
    /// RTP payload bytes received, duplicates included.
    pub bytes: u64,
}

impl RtpReception {
    /// Records one packet's sequence number and payload size.
    pub fn record(&mut self, seq: u16, payload_len: usize) {
        self.bytes += payload_len as u64;
        let ext = match self.last {
            None => 0,
            // Within half the sequence space of the last one: later or earlier.
            Some((last, last_ext)) => {
                let delta = seq.wrapping_sub(last) as i16;
                (i64::from(last_ext) + i64::from(delta)).max(0) as u32
            }
        };
        if self.last.is_none_or(|(_, last_ext)| ext > last_ext) {
            self.last = Some((seq, ext));
        }
        self.seqs.insert(ext);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
    }

    /// (numbers the sender used so far, distinct numbers received, bytes):
    /// the difference of two marks is a window's expected and received
    /// packets and its bytes.
    pub fn mark(&self) -> (u64, u64, u64) {
        (self.highest.map_or(0, |h| u64::from(h) + 1), self.seqs.len(), self.bytes)
    }
}

/// What one receiver got from one remote track.
#[derive(Debug, Default, Clone)]
pub struct TrackReception {
    /// The same packets by their RTP sequence numbers, and their bytes.
    pub rtp: RtpReception,
    /// Distinct synthetic sequence numbers received.
    pub seqs: SeqSet,
    /// Packets received, duplicates included.
    pub packets: u64,
    /// One-way latency samples, microseconds.
    pub latencies_us: Vec<u32>,
    /// Lowest and highest sequence numbers seen.
    pub first_seq: Option<u32>,
    /// Highest sequence number seen.
    pub last_seq: Option<u32>,
    /// Receive time of the first packet, microseconds since the epoch.
    pub first_packet_us: Option<u64>,
    /// Receive time of the first keyframe (video), microseconds since the epoch.
    pub first_keyframe_us: Option<u64>,
    /// Interarrival jitter estimate (RFC 3550), microseconds.
    pub jitter_us: f64,
    last_transit_us: Option<i64>,
}

impl TrackReception {
    /// Records one packet.
    pub fn record(&mut self, seq: u32, sent_us: u64, received_us: u64, keyframe: bool) {
        self.packets += 1;
        self.seqs.insert(seq);
        self.first_seq = Some(self.first_seq.map_or(seq, |s| s.min(seq)));
        self.last_seq = Some(self.last_seq.map_or(seq, |s| s.max(seq)));
        self.first_packet_us.get_or_insert(received_us);
        if keyframe {
            self.first_keyframe_us.get_or_insert(received_us);
        }
        let transit = received_us as i64 - sent_us as i64;
        if let Some(last) = self.last_transit_us {
            let d = (transit - last).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit_us = Some(transit);
        // Keep memory bounded on long runs: a uniform-enough sample.
        if self.latencies_us.len() < 200_000 {
            self.latencies_us.push(transit.clamp(0, u32::MAX as i64) as u32);
        }
    }
}

/// Key of a remote track: (publisher participant id, "audio" or "video").
pub type TrackKey = (String, &'static str);

/// Everything one participant received, by remote track.
#[derive(Debug, Default, Clone)]
pub struct Reception {
    /// Per remote track.
    pub tracks: HashMap<TrackKey, TrackReception>,
}

/// The p-th percentile (0..=100) of samples, by nearest rank.
pub fn percentile(samples: &mut [u32], p: f64) -> Option<u32> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() as f64 - 1.0)).round() as usize;
    samples.get(rank.min(samples.len() - 1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_reception_counts_gaps_across_wraparound_and_reordering() {
        let mut r = RtpReception::default();
        for seq in [65_534u16, 65_535, 1, 0, 3] {
            r.record(seq, 100);
        }
        // 65534..=3 is six numbers; 2 never came.
        assert_eq!(r.mark(), (6, 5, 500));
        r.record(3, 100);
        assert_eq!(r.mark(), (6, 5, 600), "a duplicate is counted once, its bytes twice");
    }

    #[test]
    fn the_keyframe_prefix_carries_the_size() {
        let p = vp8_keyframe_prefix(1280, 720);
        assert_eq!(p[0] & 0x10, 0x10, "start of partition");
        assert_eq!(p[1] & 0x01, 0, "a keyframe");
        assert_eq!(&p[4..7], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([p[9], p[10]]), 720);
    }

    #[test]
    fn payload_round_trip() {
        let p = build_payload(&[0x10], 42, 1234, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(&p, 1), Some((42, 1234)));
        assert_eq!(parse_payload(&p, 0), None);
        assert_eq!(parse_payload(&[1, 2, 3], 0), None);
    }

    #[test]
    fn seq_set_counts_distinct_in_range() {
        let mut s = SeqSet::default();
        assert!(s.insert(5));
        assert!(!s.insert(5));
        s.insert(6);
        s.insert(200);
        assert_eq!(s.len(), 3);
        assert_eq!(s.count_in(0, 10), 2);
        assert_eq!(s.count_in(6, 201), 2);
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(51));
        assert_eq!(percentile(&mut v, 99.0), Some(99));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
