//! The same synthetic video sent directly between two webrtc-rs peers on
//! loopback, with no server in between: the baseline that the SFU's added
//! latency is measured against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCSessionDescription};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::participant::{ParticipantOptions, Shared, SubscribeHandler, send_video};
use crate::webrtc_peer::{build_peer, local_track};

struct Quiet;
#[async_trait::async_trait]
impl PeerConnectionEventHandler for Quiet {}

/// Waits until the local description lists a candidate (host-only gathering
/// on loopback takes milliseconds), then returns its SDP.
async fn sdp_with_candidates(pc: &Arc<dyn PeerConnection>) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        if sdp.contains("a=candidate") {
            return Ok(sdp);
        }
        anyhow::ensure!(Instant::now() < deadline, "no local candidate within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `video_kbps` of synthetic video for `window` from one peer to the
/// other and returns the one-way latency samples (µs).
pub async fn direct_video_latency(video_kbps: u32, window: Duration) -> anyhow::Result<Vec<u32>> {
    let shared = Arc::new(Shared::default());
    let sender = build_peer(Arc::new(Quiet), true, &Default::default()).await?;
    let receiver =
        build_peer(Arc::new(SubscribeHandler { shared: shared.clone() }), false, &Default::default()).await?;
    let ssrc: u32 = rand::random();
    let track = local_track(RtpCodecKind::Video, ssrc, "baseline");
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
    sender.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init)).await?;

    let offer = sender.create_offer(None).await?;
    sender.set_local_description(offer).await?;
    let offer = sdp_with_candidates(&sender).await?;
    receiver.set_remote_description(RTCSessionDescription::offer(offer)?).await?;
    let answer = receiver.create_answer(None).await?;
    receiver.set_local_description(answer).await?;
    let answer = sdp_with_candidates(&receiver).await?;
    sender.set_remote_description(RTCSessionDescription::answer(answer)?).await?;

    let mut options = ParticipantOptions::new("", "");
    options.video_bitrate_bps = video_kbps * 1000;
    let layer = crate::participant::VideoLayer::single(ssrc, &options);
    let sending = tokio::spawn(send_video(track, layer, options, Arc::new(Shared::default())));
    // Warm up until packets flow, then measure.
    let deadline = Instant::now() + Duration::from_secs(15);
    while shared.reception().tracks.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "direct connection carried no video within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let skip: usize = shared.reception().tracks.values().map(|t| t.latencies_us.len()).sum();
    tokio::time::sleep(window).await;
    sending.abort();
    let samples: Vec<u32> =
        shared.reception().tracks.values().flat_map(|t| t.latencies_us.iter().copied()).skip(skip).collect();
    let _ = sender.close().await;
    let _ = receiver.close().await;
    Ok(samples)
}
