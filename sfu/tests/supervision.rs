//! A media worker that dies is taken out of placement at once and started
//! again on its port; the other workers never stop.

use std::time::{Duration, Instant};

use teleconsult_sfu::{RoomId, RoomOptions, SfuConfig, SfuHandle};

async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

#[tokio::test]
async fn a_dead_worker_is_restarted_and_avoided_meanwhile() {
    let sfu = SfuHandle::start(SfuConfig { workers: 2, ..SfuConfig::default() }).expect("starts");
    let ports = sfu.ports();
    // Two rooms, one per worker (fewest rooms wins).
    sfu.create_room(RoomId("a".into()), RoomOptions::default()).await.unwrap();
    sfu.create_room(RoomId("b".into()), RoomOptions::default()).await.unwrap();
    sfu.inject_worker_panic(0);
    assert!(
        eventually(Duration::from_secs(2), || !sfu.worker_health()[0].alive).await,
        "the dead worker is marked down"
    );
    // Meanwhile every new room goes to the live worker.
    for i in 0..4 {
        sfu.create_room(RoomId(format!("new-{i}")), RoomOptions::default()).await.expect("placed on the live worker");
    }
    assert!(sfu.worker_health()[1].alive);
    // It comes back on the same port, once.
    assert!(eventually(Duration::from_secs(5), || sfu.worker_health()[0].alive).await, "restarted");
    let health = sfu.worker_health();
    assert_eq!((health[0].restarts, health[0].port), (1, ports[0]));
    assert_eq!(health[1].restarts, 0);
    // The restart count reaches the stats (and so /metrics), across the restart.
    let counted: Vec<u64> = sfu.worker_stats().iter().map(|w| w.restarts).collect();
    assert_eq!(counted, vec![1, 0]);
    // And takes rooms again: the rooms it held are gone, so "a" is new.
    sfu.create_room(RoomId("a".into()), RoomOptions::default()).await.expect("placed again");
    let stats = sfu.participant_stats().await;
    assert!(stats.is_empty());
    sfu.shutdown().await;
}
