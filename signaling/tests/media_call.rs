//! Three webrtc-rs participants in one room through the real server:
//! forwarding, keyframe requests on a late join, and track removal on leave.

mod common;

use std::time::Duration;

use common::{eventually, live_sections_of, server, token, ws_url};
use teleconsult_loadtest::{Participant, ParticipantOptions};
use teleconsult_protocol::{Role, ServerMessage};

async fn all_receive_from_all(people: &[&Participant]) -> bool {
    people.iter().all(|r| {
        people.iter().filter(|p| p.participant_id != r.participant_id).all(|p| {
            r.track_reception(&p.participant_id, true).is_some()
                && r.track_reception(&p.participant_id, false).is_some()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_forwarding_keyframes_and_leave() {
    let server = server().await;
    let url = ws_url(&server);
    let opts = |role, name| ParticipantOptions::new(url.clone(), token(&server, "room-a", role, name));

    let a = Participant::connect(&opts(Role::Clinician, "A")).await.expect("A connects");
    let b = Participant::connect(&opts(Role::Patient, "B")).await.expect("B connects");
    assert!(
        eventually(Duration::from_secs(15), || async { all_receive_from_all(&[&a, &b]).await }).await,
        "A and B receive each other's audio and video"
    );

    // A late joiner makes each publisher receive a keyframe request.
    let (kf_a, kf_b) = (a.keyframe_requests(), b.keyframe_requests());
    let c = Participant::connect(&opts(Role::Guest, "C")).await.expect("C connects");
    assert!(
        eventually(Duration::from_secs(15), || async { all_receive_from_all(&[&a, &b, &c]).await }).await,
        "everyone receives everyone"
    );
    assert!(
        eventually(Duration::from_secs(5), || async { a.keyframe_requests() > kf_a && b.keyframe_requests() > kf_b })
            .await,
        "A ({kf_a} -> {}) and B ({kf_b} -> {}) got a keyframe request when C joined",
        a.keyframe_requests(),
        b.keyframe_requests()
    );

    // Each receives at least 95% of what the other two sent in a window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let people = [&a, &b, &c];
    let start: Vec<(u32, u32)> = people.iter().map(|p| (p.sent_seq(false), p.sent_seq(true))).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end: Vec<(u32, u32)> = people.iter().map(|p| (p.sent_seq(false), p.sent_seq(true))).collect();
    tokio::time::sleep(Duration::from_millis(700)).await; // let the tail arrive
    for (ri, receiver) in people.iter().enumerate() {
        for (pi, publisher) in people.iter().enumerate() {
            if ri == pi {
                continue;
            }
            for video in [false, true] {
                let (s, e) = if video { (start[pi].1, end[pi].1) } else { (start[pi].0, end[pi].0) };
                let sent = u64::from(e - s);
                let got = receiver.received_in(&publisher.participant_id, video, s, e);
                assert!(sent > 50, "publisher sent enough to judge ({sent})");
                assert!(
                    got * 100 >= sent * 95,
                    "receiver {ri} got {got} of {sent} {} packets from publisher {pi}",
                    if video { "video" } else { "audio" }
                );
            }
        }
    }

    // After C leaves, A's and B's subscriptions no longer carry C's tracks.
    let c_id = c.participant_id.clone();
    c.leave().await;
    for p in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                let removed = p
                    .events()
                    .iter()
                    .filter(|e| matches!(e, ServerMessage::TrackRemoved { track } if track.participant_id == c_id))
                    .count();
                let offer = p.last_subscribe_offer().unwrap_or_default();
                removed == 2 && live_sections_of(&offer, &c_id) == 0 && p.subscribe_errors() == 0
            })
            .await,
            "{} saw C's two tracks removed by renegotiation",
            p.participant_id
        );
        assert!(
            eventually(Duration::from_secs(5), || async {
                p.events().iter().any(
                    |e| matches!(e, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == c_id),
                )
            })
            .await,
            "participant_left announced"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = (a.packets_from(&c_id), b.packets_from(&c_id));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((a.packets_from(&c_id), b.packets_from(&c_id)), frozen, "no packets from C after it left");
    // A and B still talk.
    let before = a.packets_from(&b.participant_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.packets_from(&b.participant_id) > before + 10);

    a.leave().await;
    b.leave().await;
    server.shutdown().await;
}
