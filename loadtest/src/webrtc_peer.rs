//! webrtc-rs peer connections for synthetic clients: building them with a
//! loopback-only socket, and the interceptor that lets a publisher see
//! keyframe requests.

use std::collections::VecDeque;
use std::sync::Arc;

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::{Registry, register_default_interceptors};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::sansio;
use rtc::shared::error::Error;
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler};

/// How a peer connection reaches the server: the TURN servers the server
/// handed out (`joined`, `admitted`), and whether to use them only.
#[derive(Debug, Clone, Default)]
pub struct IceSettings {
    /// From `ice_servers`; empty without TURN.
    pub servers: Vec<teleconsult_protocol::IceServer>,
    /// `iceTransportPolicy: "relay"`: media goes through TURN or not at all.
    pub relay_only: bool,
}

/// Opus as browsers offer it.
pub fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// VP8.
pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

fn rtx(apt: u8) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/rtx".to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: format!("apt={apt}"),
        rtcp_feedback: vec![],
    }
}

/// Builds a peer connection bound to 127.0.0.1 only, with Opus (111), VP8
/// (96) and RTX (97), the default interceptors (NACK, reports, TWCC feedback,
/// the simulcast header extensions), and —
/// for publishers — an interceptor that hands keyframe requests to the
/// application.
pub async fn build_peer(
    handler: Arc<dyn PeerConnectionEventHandler>,
    surface_keyframe_requests: bool,
    ice: &IceSettings,
) -> Result<Arc<dyn PeerConnection>, webrtc::error::Error> {
    let mut media = MediaEngine::default();
    media.register_codec(RTCRtpCodecParameters { rtp_codec: opus(), payload_type: 111 }, RtpCodecKind::Audio)?;
    media.register_codec(RTCRtpCodecParameters { rtp_codec: vp8(), payload_type: 96 }, RtpCodecKind::Video)?;
    media.register_codec(RTCRtpCodecParameters { rtp_codec: rtx(96), payload_type: 97 }, RtpCodecKind::Video)?;
    // The defaults also register the `sdes:mid` and `sdes:rtp-stream-id`
    // header extensions that simulcast layers are marked with.
    let mut registry = register_default_interceptors(Registry::new(), &mut media)?;
    if surface_keyframe_requests {
        registry = registry.with(Slot::from(14_000), KeyframeRequestForwarder::default());
    }
    let settings = webrtc::peer_connection::SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let servers = ice
        .servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let policy = if ice.relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All };
    let configuration =
        RTCConfigurationBuilder::new().with_ice_servers(servers).with_ice_transport_policy(policy).build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    Ok(Arc::new(pc) as Arc<dyn PeerConnection>)
}

/// Passes inbound PLI and FIR to the application (through `TrackLocal::poll`)
/// and drops other RTCP, which the built-in interceptors have already used.
#[derive(Default)]
pub struct KeyframeRequestForwarder {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// A local RTP track of `kind` (Opus or VP8) with a fixed SSRC.
pub fn local_track(
    kind: RtpCodecKind,
    ssrc: u32,
    stream_id: &str,
) -> Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP> {
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
    let (name, codec) = match kind {
        RtpCodecKind::Video => ("video", vp8()),
        _ => ("audio", opus()),
    };
    Arc::new(webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP::new(
        rtc::media_stream::MediaStreamTrack::new(
            stream_id.to_owned(),
            name.to_owned(),
            name.to_owned(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec,
                ..Default::default()
            }],
        ),
    ))
}

/// The rids of a simulcast publisher's layers, lowest first (as browsers name them).
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// A VP8 track sent in three simulcast layers, one SSRC each (`ssrcs`
/// in the order of [`SIMULCAST_RIDS`]).
pub fn local_simulcast_video(
    ssrcs: [u32; 3],
    stream_id: &str,
) -> Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP> {
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
    let codings = SIMULCAST_RIDS
        .iter()
        .zip(ssrcs)
        .map(|(rid, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: (*rid).to_owned(),
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: vp8(),
            ..Default::default()
        })
        .collect();
    Arc::new(webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP::new(
        rtc::media_stream::MediaStreamTrack::new(
            stream_id.to_owned(),
            "video".to_owned(),
            "video".to_owned(),
            RtpCodecKind::Video,
            codings,
        ),
    ))
}

/// From an SDP: the video section's `mid`, and the ids it maps the
/// `sdes:mid` and `sdes:rtp-stream-id` header extensions to.
pub fn video_mid_and_extension_ids(sdp: &str) -> Option<(String, u8, u8)> {
    let video = sdp.split("\nm=").find(|section| section.starts_with("video"))?;
    let mut mid = None;
    let (mut mid_id, mut rid_id) = (None, None);
    for line in video.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(map) = line.strip_prefix("a=extmap:") {
            let mut parts = map.split_whitespace();
            let id = parts.next().and_then(|i| i.split('/').next()).and_then(|i| i.parse::<u8>().ok());
            match parts.next() {
                Some("urn:ietf:params:rtp-hdrext:sdes:mid") => mid_id = id,
                Some("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") => rid_id = id,
                _ => {}
            }
        }
    }
    Some((mid?, mid_id?, rid_id?))
}

struct NoEvents;
#[async_trait::async_trait]
impl PeerConnectionEventHandler for NoEvents {}

/// The SDP offer of a send-only audio and video connection, as a publisher
/// makes it; for tests that only read what the server answers.
pub async fn publish_offer_sdp() -> Result<String, webrtc::error::Error> {
    use webrtc::media_stream::track_local::TrackLocal;
    use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    let pc = build_peer(Arc::new(NoEvents), false, &IceSettings::default()).await?;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        let track = local_track(kind, rand::random(), "offer-only");
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
        pc.add_transceiver_from_track(track as Arc<dyn TrackLocal>, Some(init)).await?;
    }
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
    let _ = pc.close().await;
    Ok(sdp)
}
