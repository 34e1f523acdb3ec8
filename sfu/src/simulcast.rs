//! Simulcast: telling where a keyframe starts (and, for VP8, its size) from
//! an RTP payload, measuring each layer's bitrate, and choosing one layer
//! per subscriber track from a bandwidth budget and the size the subscriber
//! asked for.
//!
//! Everything here is pure or driven by the caller's clock, so it is tested
//! here without sockets; `core/forwarding.rs` applies the choices.

use std::time::{Duration, Instant};

/// The first packet of a keyframe, and the picture size when the codec
/// carries it in the clear (VP8 does; H.264 keeps it in the SPS, which is
/// not parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyframeStart {
    /// Picture height in pixels, when known.
    pub height: Option<u16>,
}

/// Whether a VP8 RTP payload (RFC 7741) begins a keyframe, and its size.
///
/// Only the first packet of partition 0 (S=1, PID=0) carries the VP8
/// frame header; every other packet answers `None`.
pub(crate) fn vp8_keyframe(payload: &[u8]) -> Option<KeyframeStart> {
    let first = *payload.first()?;
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return None;
    }
    let mut at = 1;
    if extended {
        let x = *payload.get(1)?;
        at = 2;
        if x & 0x80 != 0 {
            // Picture id: one byte, or two when its M bit is set.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    let header = payload.get(at..at + 10)?;
    // The inverse keyframe bit, then the keyframe start code.
    if header[0] & 0x01 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
    Some(KeyframeStart { height: Some(height) })
}

/// Whether an H.264 RTP payload (RFC 6184) begins a keyframe: an IDR slice
/// or a sequence parameter set, alone, aggregated (STAP-A) or as the first
/// fragment (FU-A) of one.
pub(crate) fn h264_keyframe(payload: &[u8]) -> Option<KeyframeStart> {
    let is_key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    let first = *payload.first()?;
    let found = match first & 0x1f {
        24 => {
            let mut at = 1;
            let mut found = false;
            while let Some(size) = payload.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                let Some(nal) = payload.get(at + 2) else { break };
                found |= is_key(nal & 0x1f);
                at += 2 + size;
            }
            found
        }
        28 => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        nal_type => is_key(nal_type),
    };
    found.then_some(KeyframeStart { height: None })
}

/// How long a layer may send nothing before it counts as stopped (a
/// publisher whose own estimate fell stops its top layers).
pub(crate) const LAYER_IDLE: Duration = Duration::from_secs(1);

/// The measuring window of [`RateMeter`].
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// A layer's received bitrate, over half-second windows, smoothed.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    rate_bps: Option<u64>,
    last_packet: Option<Instant>,
}

impl RateMeter {
    /// Counts one packet of `bytes` payload bytes received at `now`.
    pub fn record(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let rate = self.bytes * 8 * 1_000_000 / (elapsed.as_micros().max(1) as u64);
            // Keyframes make single windows jump; half of the new window
            // against half of the past keeps the choice from flapping.
            self.rate_bps = Some(self.rate_bps.map_or(rate, |old| (old + rate) / 2));
            self.window_start = Some(now);
            self.bytes = 0;
        }
        self.bytes += bytes as u64;
        self.last_packet = Some(now);
    }

    /// The measured rate, once a window has completed.
    pub fn rate_bps(&self) -> Option<u64> {
        self.rate_bps
    }

    /// Whether a packet arrived within [`LAYER_IDLE`].
    pub fn active(&self, now: Instant) -> bool {
        self.last_packet.is_some_and(|at| now.saturating_duration_since(at) <= LAYER_IDLE)
    }
}

/// What a layer costs before it has been measured, by rank (low to high):
/// typical VP8 rates of 320×180, 640×360 and 1280×720 at 30 fps.
pub(crate) const NOMINAL_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];

/// Upgrading to a higher layer than the one forwarded now needs this much
/// headroom (percent of the layer's rate), and the layer forwarded now is
/// kept until the budget falls this much short of it: an estimate hovering
/// around a layer's rate (it moves by tens of percent from one report to
/// the next) does not switch layers back and forth, each switch costing a
/// keyframe.
const HYSTERESIS_PERCENT: u64 = 15;

/// One layer of a published track, as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerSpec {
    /// Whether the publisher sends it at all now.
    pub active: bool,
    /// What forwarding it costs.
    pub bitrate_bps: u64,
    /// Picture height, when a keyframe has told it.
    pub height: Option<u16>,
}

/// One subscriber track with simulcast layers (low to high).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackDemand<'a> {
    pub layers: &'a [LayerSpec],
    /// The largest picture the subscriber wants (its tile's height).
    pub max_height: Option<u16>,
    /// Never paused for lack of bandwidth: gets at least its lowest layer.
    pub keep: bool,
    /// The layer forwarded now, if any.
    pub current: Option<usize>,
}

/// The allocator's choice for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Forward this layer (switching at its next keyframe).
    Layer(usize),
    /// Forward no video: the budget does not cover even the lowest layer.
    Paused,
}

/// Chooses one layer per track.
///
/// Without a budget (no estimate yet), each track gets the highest layer
/// its size allows. With one, tracks are served in priority order (`keep`
/// first, then as given): first every track its lowest layer while the
/// budget lasts (a `keep` track gets it even beyond), the others paused;
/// then, in the same order, each track is raised to the highest layer its
/// size allows and the remaining budget covers. The lowest active layer is
/// always allowed, whatever its size: it is the smallest there is.
pub(crate) fn allocate(budget_bps: Option<u64>, demands: &[TrackDemand<'_>]) -> Vec<Pick> {
    let mut picks = vec![Pick::Paused; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|i| !demands[*i].keep);
    let floor = |d: &TrackDemand<'_>| d.layers.iter().position(|l| l.active);
    let ceiling = |d: &TrackDemand<'_>, low: usize| {
        (low..d.layers.len())
            .filter(|i| {
                let l = d.layers[*i];
                l.active
                    && (*i == low
                        || match (d.max_height, l.height) {
                            (None, _) => true,
                            (Some(max), Some(h)) => h <= max,
                            // An unmeasured layer above the lowest may be too big.
                            (Some(_), None) => false,
                        })
            })
            .max()
            .unwrap_or(low)
    };
    let Some(budget) = budget_bps else {
        for (i, d) in demands.iter().enumerate() {
            // A track none of whose layers is active keeps waiting on its lowest.
            picks[i] = Pick::Layer(floor(d).map_or(0, |low| ceiling(d, low)));
        }
        return picks;
    };
    let mut remaining = budget;
    for &i in &order {
        let d = &demands[i];
        let Some(low) = floor(d) else {
            picks[i] = Pick::Layer(0);
            continue;
        };
        let need = d.layers[low].bitrate_bps;
        if need <= remaining || d.keep {
            picks[i] = Pick::Layer(low);
            remaining = remaining.saturating_sub(need);
        }
    }
    for &i in &order {
        let d = &demands[i];
        let (Pick::Layer(low), Some(_)) = (picks[i], floor(d)) else { continue };
        let base = d.layers[low].bitrate_bps;
        let top = ceiling(d, low);
        for layer in (low + 1..=top).rev() {
            let l = d.layers[layer];
            if !l.active {
                continue;
            }
            let band = l.bitrate_bps * HYSTERESIS_PERCENT / 100;
            let extra = l.bitrate_bps.saturating_sub(base);
            let cost = match d.current {
                Some(c) if layer == c => extra.saturating_sub(band),
                Some(c) if layer < c => extra,
                _ => extra + band,
            };
            if cost <= remaining {
                picks[i] = Pick::Layer(layer);
                remaining = remaining.saturating_sub(extra);
                break;
            }
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 keyframe's first packet: descriptor with a 15-bit picture id,
    /// then the frame tag, start code and size.
    fn vp8_key(width: u16, height: u16) -> Vec<u8> {
        let mut p = vec![0x90, 0x80, 0x81, 0x23, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a];
        p.extend_from_slice(&width.to_le_bytes());
        p.extend_from_slice(&height.to_le_bytes());
        p.extend_from_slice(&[0u8; 20]);
        p
    }

    #[test]
    fn vp8_keyframes_are_told_from_delta_frames_and_continuations() {
        assert_eq!(vp8_keyframe(&vp8_key(640, 360)), Some(KeyframeStart { height: Some(360) }));
        // Scaling bits in the top two bits of the size are not part of it.
        assert_eq!(vp8_keyframe(&vp8_key(320, 180 | 0x4000)).and_then(|k| k.height), Some(180));
        let mut delta = vp8_key(640, 360);
        delta[4] |= 0x01;
        assert_eq!(vp8_keyframe(&delta), None, "inverse keyframe bit set");
        let mut continuation = vp8_key(640, 360);
        continuation[0] &= !0x10;
        assert_eq!(vp8_keyframe(&continuation), None, "not the start of a partition");
        assert_eq!(vp8_keyframe(&[0x10, 0x00, 0x00]), None, "truncated");
        assert_eq!(vp8_keyframe(&[]), None);
        // No extension: the header follows the first byte.
        let plain = [&[0x10u8][..], &vp8_key(1280, 720)[4..]].concat();
        assert_eq!(vp8_keyframe(&plain).and_then(|k| k.height), Some(720));
    }

    #[test]
    fn h264_keyframes_alone_aggregated_and_fragmented() {
        assert!(h264_keyframe(&[0x65, 0x88]).is_some(), "IDR");
        assert!(h264_keyframe(&[0x41, 0x9a]).is_none(), "non-IDR slice");
        assert!(h264_keyframe(&[0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]).is_some(), "STAP-A with an SPS");
        assert!(h264_keyframe(&[0x18, 0x00, 0x09]).is_none(), "STAP-A cut short");
        assert!(h264_keyframe(&[0x7c, 0x85, 0x00]).is_some(), "FU-A start of an IDR");
        assert!(h264_keyframe(&[0x7c, 0x05, 0x00]).is_none(), "FU-A continuation");
    }

    #[test]
    fn the_meter_measures_and_notices_a_layer_that_stops() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert!(!m.active(t0));
        for i in 0..=50u64 {
            // 1000 bytes every 20 ms: 400 kbit/s.
            m.record(t0 + Duration::from_millis(20 * i), 1000);
        }
        let rate = m.rate_bps().unwrap();
        assert!((380_000..=420_000).contains(&rate), "{rate}");
        assert!(m.active(t0 + Duration::from_millis(1500)));
        assert!(!m.active(t0 + Duration::from_millis(2500)));
    }

    fn three(q: u64, h: u64, f: u64) -> [LayerSpec; 3] {
        [
            LayerSpec { active: true, bitrate_bps: q, height: Some(180) },
            LayerSpec { active: true, bitrate_bps: h, height: Some(360) },
            LayerSpec { active: true, bitrate_bps: f, height: Some(720) },
        ]
    }

    fn demand(layers: &[LayerSpec], max_height: Option<u16>, keep: bool, current: Option<usize>) -> TrackDemand<'_> {
        TrackDemand { layers, max_height, keep, current }
    }

    #[test]
    fn the_budget_and_the_size_choose_the_layer() {
        let l = three(100_000, 300_000, 1_000_000);
        let one = |budget, max_height, current| allocate(budget, &[demand(&l, max_height, false, current)])[0];
        assert_eq!(one(None, None, None), Pick::Layer(2));
        assert_eq!(one(Some(5_000_000), None, Some(2)), Pick::Layer(2));
        assert_eq!(one(Some(500_000), None, Some(2)), Pick::Layer(1));
        assert_eq!(one(Some(150_000), None, Some(1)), Pick::Layer(0));
        assert_eq!(one(Some(50_000), None, Some(0)), Pick::Paused);
        // A small tile gets the small layer however wide the link.
        assert_eq!(one(None, Some(200), None), Pick::Layer(0));
        assert_eq!(one(Some(5_000_000), Some(360), Some(2)), Pick::Layer(1));
        // Smaller than every layer: the lowest one still.
        assert_eq!(one(Some(5_000_000), Some(90), None), Pick::Layer(0));
    }

    #[test]
    fn upgrades_need_headroom_but_staying_does_not() {
        let l = three(100_000, 300_000, 1_000_000);
        let one = |budget, current| allocate(Some(budget), &[demand(&l, None, false, current)])[0];
        assert_eq!(one(1_050_000, Some(2)), Pick::Layer(2), "keeps the top layer at its rate");
        assert_eq!(one(1_050_000, Some(1)), Pick::Layer(1), "does not climb without 15% to spare");
        assert_eq!(one(1_200_000, Some(1)), Pick::Layer(2));
        // The top layer stays while the shortfall is under 15%, and goes beyond.
        assert_eq!(one(900_000, Some(2)), Pick::Layer(2));
        assert_eq!(one(800_000, Some(2)), Pick::Layer(1));
    }

    #[test]
    fn under_a_poor_link_kept_tracks_keep_video_and_others_pause() {
        let l = three(100_000, 300_000, 1_000_000);
        let demands = [demand(&l, None, false, None), demand(&l, None, true, None), demand(&l, None, false, None)];
        // Room for one lowest layer: the kept track has it, the others pause.
        assert_eq!(allocate(Some(120_000), &demands), vec![Pick::Paused, Pick::Layer(0), Pick::Paused]);
        // Nothing at all: the kept track still gets its lowest layer.
        assert_eq!(allocate(Some(0), &demands), vec![Pick::Paused, Pick::Layer(0), Pick::Paused]);
        // Room for every lowest layer and one upgrade: the kept track is raised first.
        assert_eq!(
            allocate(Some(300_000 + 200_000 + 20_000 + 45_000), &demands),
            vec![Pick::Layer(0), Pick::Layer(1), Pick::Layer(0)]
        );
    }

    #[test]
    fn stopped_layers_are_never_chosen() {
        let mut l = three(100_000, 300_000, 1_000_000);
        l[2].active = false;
        assert_eq!(allocate(None, &[demand(&l, None, false, Some(2))]), vec![Pick::Layer(1)]);
        l[0].active = false;
        assert_eq!(allocate(Some(400_000), &[demand(&l, None, false, Some(1))]), vec![Pick::Layer(1)]);
    }
}
