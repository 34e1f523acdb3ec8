//! Loss between the SFU and a subscriber is repaired by NACK and RTX: a
//! relay drops every 20th video packet on its way to the subscriber, and
//! the subscriber still gets (almost) every packet, while the SFU counts the
//! NACKs it answered.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, server, token, ws_url};
use teleconsult_loadtest::lossy_relay::LossyRelay;
use teleconsult_loadtest::{Participant, ParticipantOptions};
use teleconsult_protocol::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_is_retransmitted_to_the_subscriber() {
    let server = server().await;
    let url = ws_url(&server);
    let room = "room-nack";
    let media: SocketAddr = format!("127.0.0.1:{}", server.media_ports()[0]).parse().unwrap();
    // VP8 is payload type 96 in the server's offers; its RTX (97) passes.
    let relay = LossyRelay::start(media, 96, 20).await.unwrap();

    let a = common::media_participant(&server, room, Role::Clinician, "A").await;
    let mut b_opts = ParticipantOptions::new(url.clone(), token(&server, room, Role::Patient, "B"));
    b_opts.subscribe_via = Some((media, relay.addr));
    let b = Participant::connect(&b_opts).await.unwrap();
    assert!(eventually(Duration::from_secs(15), || async { b.packets_from(&a.participant_id) > 0 }).await);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (start, dropped_before) = (a.sent_seq(true), relay.dropped());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = a.sent_seq(true);
    tokio::time::sleep(Duration::from_secs(1)).await; // repairs take a round trip or two
    let sent = u64::from(end - start);
    let dropped = relay.dropped() - dropped_before;
    let got = b.received_in(&a.participant_id, true, start, end);
    assert!(dropped * 100 >= sent * 4, "the relay dropped about 5% ({dropped} of {sent})");
    assert!(
        got * 1000 >= sent * 995,
        "NACK/RTX repaired the loss: {got} of {sent} received, {dropped} dropped on the wire"
    );
    let stats = server.app.sfu.participant_stats().await;
    let b_stats =
        stats.iter().find(|s| s.participant.as_ref().map(|p| p.0.as_str()) == Some(b.participant_id.as_str())).unwrap();
    assert!(b_stats.nacks_received > 0, "the SFU answered B's NACKs ({b_stats:?})");
    a.leave().await;
    b.leave().await;
    server.shutdown().await;
}
