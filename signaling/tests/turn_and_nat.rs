//! TURN credentials as clients get them, and the address announced behind
//! 1:1 NAT, read from the SDP the server sends.
//!
//! (Real coturn checks the credentials in `web-client/tests/turn.test.mjs`.)

mod common;

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use common::{config, join_ws, server_with, token, wait_event, ws_url};
use teleconsult_protocol::{ClientMessage, IceServer, Role, ServerMessage};

const TURN_SECRET: &str = "turn-test-secret-0123456789";

fn expected_password(username: &str) -> String {
    // The scheme coturn checks (use-auth-secret), computed here apart from
    // the server's code: HMAC-SHA1 by its definition (RFC 2104) over SHA-1
    // from aws-lc-rs's digest module.
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
    let mut key = [0u8; 64];
    key[..TURN_SECRET.len()].copy_from_slice(TURN_SECRET.as_bytes());
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = digest(&SHA1_FOR_LEGACY_USE_ONLY, &[pad(0x36), username.as_bytes().to_vec()].concat());
    let outer = digest(&SHA1_FOR_LEGACY_USE_ONLY, &[pad(0x5c), inner.as_ref().to_vec()].concat());
    base64::engine::general_purpose::STANDARD.encode(outer.as_ref())
}

/// Checks one `ice_servers` list: the configured URLs, a username
/// `<expiry>:<participant>` expiring within `expiry` of now, and the password.
fn check_credentials(servers: &[IceServer], participant: &str, expiry: std::ops::RangeInclusive<u64>) {
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0].urls, ["turn:127.0.0.1:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"]);
    let username = servers[0].username.as_deref().expect("a username");
    let (when, who) = username.split_once(':').expect("expiry:id");
    assert_eq!(who, participant, "the username names the participant");
    let when: u64 = when.parse().expect("the expiry is Unix seconds");
    assert!(expiry.contains(&when), "expiry {when} in {expiry:?}");
    assert_eq!(servers[0].credential.as_deref(), Some(expected_password(username).as_str()));
}

#[tokio::test]
async fn joined_admitted_and_resumed_carry_turn_credentials() {
    let mut c = config();
    c.turn = Some(teleconsult_signaling::turn::TurnServers::new(
        vec!["turn:127.0.0.1:3478?transport=udp".into(), "turns:turn.example.org:443?transport=tcp".into()],
        TURN_SECRET,
    ));
    let server = server_with(c).await;
    let now = teleconsult_signaling::join_token::unix_now();
    // A clinician joins: the credentials expire with the join token (600 s).
    let (client, _events) = teleconsult_loadtest::SignalingClient::connect(&ws_url(&server)).await.unwrap();
    client.hello().await.unwrap();
    let joined = client
        .request(ClientMessage::Join { id: None, token: token(&server, "room-t", Role::Clinician, "Dr T") })
        .await
        .unwrap();
    let ServerMessage::Joined { participant_id: clinician, ice_servers, .. } = joined else { panic!("{joined:?}") };
    check_credentials(&ice_servers, &clinician, now + 600..=now + 602);

    // A patient waits, then is admitted: fresh credentials come with `admitted`.
    let patient_token =
        server.app.keys.mint_join("room-t", Role::Patient, "P", "test-patient", now, 60, false).unwrap();
    let (patient, mut patient_events, patient_id, resume_token, admitted) =
        join_ws(&ws_url(&server), patient_token).await;
    assert!(!admitted);
    client.request(ClientMessage::Admit { id: None, participant_id: patient_id.clone() }).await.unwrap();
    let event =
        wait_event(&mut patient_events, Duration::from_secs(5), |m| matches!(m, ServerMessage::Admitted { .. })).await;
    let Some(ServerMessage::Admitted { ice_servers, .. }) = event else { panic!("not admitted: {event:?}") };
    check_credentials(&ice_servers, &patient_id, now + 900..=now + 902);

    // The patient's socket drops and resumes: fresh credentials again.
    drop(patient);
    let (again, _e) = teleconsult_loadtest::SignalingClient::connect(&ws_url(&server)).await.unwrap();
    again.hello().await.unwrap();
    let reply = again.request(ClientMessage::Resume { id: None, resume_token }).await.unwrap();
    let ServerMessage::Resumed { ice_servers, .. } = reply else { panic!("{reply:?}") };
    check_credentials(&ice_servers, &patient_id, now + 900..=now + 903);
}

#[tokio::test]
async fn without_turn_there_is_no_ice_servers_field() {
    let server = server_with(config()).await;
    let (client, _events) = teleconsult_loadtest::SignalingClient::connect(&ws_url(&server)).await.unwrap();
    client.hello().await.unwrap();
    let joined = client
        .request(ClientMessage::Join { id: None, token: token(&server, "room-n", Role::Clinician, "Dr N") })
        .await
        .unwrap();
    let text = serde_json::to_string(&joined).unwrap();
    assert!(text.contains("\"type\":\"joined\"") && !text.contains("ice_servers"), "{text}");
}

#[tokio::test]
async fn candidates_announce_the_public_address_behind_1_to_1_nat() {
    let public: IpAddr = "203.0.113.7".parse().unwrap();
    let mut c = config();
    c.media_public_ips = vec![public];
    let server = server_with(c).await;
    let (client, _events) = teleconsult_loadtest::SignalingClient::connect(&ws_url(&server)).await.unwrap();
    client.hello().await.unwrap();
    client
        .request(ClientMessage::Join { id: None, token: token(&server, "room-nat", Role::Clinician, "Dr N") })
        .await
        .unwrap();
    let offer = teleconsult_loadtest::webrtc_peer::publish_offer_sdp().await.expect("an offer");
    let reply = client.request(ClientMessage::PublishOffer { id: None, sdp: offer }).await.unwrap();
    let ServerMessage::PublishAnswer { sdp, .. } = reply else { panic!("{reply:?}") };
    let port = server.app.sfu.ports()[0];
    let candidates: Vec<&str> = sdp.lines().filter(|l| l.starts_with("a=candidate:")).collect();
    assert!(!candidates.is_empty(), "the answer has candidates: {sdp}");
    for c in &candidates {
        let fields: Vec<&str> = c.split(' ').collect();
        assert_eq!(fields[4], "203.0.113.7", "every candidate announces the public address: {c}");
        assert_eq!(fields[5], port.to_string(), "on the worker's port: {c}");
    }
    assert!(!sdp.contains("127.0.0.1"), "the bound address is never announced: {sdp}");
}
