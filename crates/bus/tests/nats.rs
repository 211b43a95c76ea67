//! The bus on the machine's NATS (with JetStream), each test under a prefix of
//! its own: what the room's sequencer relies on.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::time::Duration;

use bus::{AppendError, Bus, NatsSettings, Start, Topic};
use bytes::Bytes;
use domain::ids::RoomId;

const URL: &str = "nats://127.0.0.1:4222";

fn prefix(test: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("bus_{test}_{}_{}", std::process::id(), now % 1_000_000)
}

async fn bus(prefix: &str) -> Bus {
    Bus::nats(&NatsSettings {
        url: URL.into(),
        prefix: prefix.into(),
    })
    .await
    .unwrap()
}

async fn forget(prefix: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(URL).await.unwrap());
    for stream in ["room_inputs", "room_log", "leases"] {
        let _ = js.delete_stream(format!("{prefix}_{stream}")).await;
    }
}

#[tokio::test]
async fn one_writer_appends_to_a_rooms_log_and_every_reader_reads_it_in_order() {
    let prefix = prefix("log");
    let (a, b) = (bus(&prefix).await, bus(&prefix).await);
    let room = RoomId::from_string("room_1");
    assert!(a.ready() && a.kind() == "nats");
    assert!(a.last_batch(&room).await.unwrap().is_none());
    let first = a
        .append(&room, 0, Bytes::from_static(b"one"))
        .await
        .unwrap();
    // Another node that thinks the log is still empty cannot write.
    assert!(matches!(
        b.append(&room, 0, Bytes::from_static(b"two?")).await,
        Err(AppendError::Conflict)
    ));
    let second = b
        .append(&room, first, Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert!(matches!(
        a.append(&room, first, Bytes::from_static(b"three?")).await,
        Err(AppendError::Conflict)
    ));
    let last = b.last_batch(&room).await.unwrap().unwrap();
    assert_eq!((last.position, &last.payload[..]), (second, &b"two"[..]));
    let mut log = a.room_log(&room).await.unwrap();
    for (position, payload) in [(first, "one"), (second, "two")] {
        let entry = log.next().await.unwrap();
        assert_eq!(
            (entry.position, &entry.payload[..]),
            (position, payload.as_bytes())
        );
    }
    forget(&prefix).await;
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_is_released_or_lapses() {
    let prefix = prefix("lease");
    let (a, b) = (bus(&prefix).await, bus(&prefix).await);
    let room = RoomId::from_string("room_1");
    let held = a.lease(&room, 0, "a").await.unwrap();
    assert!(matches!(
        b.lease(&room, 0, "b").await,
        Err(AppendError::Conflict)
    ));
    let renewed = a.lease(&room, held, "a").await.unwrap();
    assert!(matches!(
        b.lease(&room, held, "b").await,
        Err(AppendError::Conflict)
    ));
    a.release(&room, renewed).await;
    let taken = b.lease(&room, 0, "b").await.unwrap();
    // Not renewed: it lapses, and the next one takes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match a.lease(&room, 0, "a").await {
            Ok(_) => break,
            Err(AppendError::Conflict) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the lease never lapsed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(matches!(
        b.lease(&room, taken, "b").await,
        Err(AppendError::Conflict)
    ));
    forget(&prefix).await;
}

#[tokio::test]
async fn a_rooms_inputs_are_kept_until_read_and_read_from_where_one_left_off() {
    let prefix = prefix("inputs");
    let bus = bus(&prefix).await;
    let room = RoomId::from_string("room_1");
    let topic = Topic::Room(room.clone());
    for text in ["a", "b", "c"] {
        bus.publish(&topic, Bytes::from(text)).await.unwrap();
    }
    let mut all = bus
        .room_inputs(&room, Start::Recent(Duration::from_secs(60)))
        .await
        .unwrap();
    let a = all.next().await.unwrap();
    assert_eq!(&a.payload[..], b"a");
    let mut rest = bus
        .room_inputs(&room, Start::After(a.position))
        .await
        .unwrap();
    assert_eq!(&rest.next().await.unwrap().payload[..], b"b");
    assert_eq!(&rest.next().await.unwrap().payload[..], b"c");
    forget(&prefix).await;
}
