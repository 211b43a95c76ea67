//! Live rooms: chat, samples, pins and moderation.

use super::*;

pub(crate) async fn chat_is_kept_in_batches(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 1, 1, 1).await;
    let room = store.sale(&sale).await.unwrap().unwrap().room_id;
    let at = Timestamp::now();
    let batch: Vec<store::ChatRecord> = (0..3)
        .map(|i| store::ChatRecord {
            id: domain::ids::MessageId::generate(),
            room: room.clone(),
            user: seller.clone(),
            moderator: i == 2,
            seq: 10 + i,
            text: format!("hello {i}"),
            at,
        })
        .collect();
    store.save_chat(&batch).await.unwrap();
    store.save_chat(&[]).await.unwrap();
    let recent = store.recent_chat(&room, 2).await.unwrap();
    let records: Vec<_> = recent.iter().map(|c| c.record.clone()).collect();
    assert_eq!(records, batch[1..]);
    let name = store.user(&seller).await.unwrap().unwrap().display_name;
    assert!(
        recent.iter().all(|c| c.name == name.as_str()),
        "each message comes with its author's name"
    );
}

pub(crate) async fn room_stats_add_up_the_nodes_samples_and_the_chat(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 1, 1, 1).await;
    let room = store.sale(&sale).await.unwrap().unwrap().room_id;
    let empty = store.room_stats(&room, 10_000).await.unwrap();
    assert_eq!(empty, store::RoomStats::default());
    let sample = |at: i64, viewers: i64, likes: i64| store::RoomSample {
        room: room.clone(),
        at: Timestamp::from_millis(at),
        viewers,
        likes,
    };
    // Two nodes sample the same intervals; a third interval saw one node only.
    store
        .record_room_samples(&[sample(1_000_000, 3, 2), sample(1_000_000, 4, 1)])
        .await
        .unwrap();
    store
        .record_room_samples(&[sample(1_010_000, 5, 0), sample(1_020_000, 2, 7)])
        .await
        .unwrap();
    store.record_room_samples(&[]).await.unwrap();
    let chat: Vec<store::ChatRecord> = [1_000_500, 1_001_000, 1_021_000]
        .into_iter()
        .enumerate()
        .map(|(i, at)| store::ChatRecord {
            id: domain::ids::MessageId::generate(),
            room: room.clone(),
            user: seller.clone(),
            moderator: false,
            seq: i as i64,
            text: format!("hello {i}"),
            at: Timestamp::from_millis(at),
        })
        .collect();
    store.save_chat(&chat).await.unwrap();
    let stats = store.room_stats(&room, 10_000).await.unwrap();
    let series: Vec<(i64, i64, i64, i64)> = stats
        .series
        .iter()
        .map(|p| (p.at, p.viewers, p.likes, p.messages))
        .collect();
    assert_eq!(
        series,
        [
            (1_000_000, 7, 3, 2),
            (1_010_000, 5, 0, 0),
            (1_020_000, 2, 7, 1)
        ]
    );
    assert_eq!(
        (
            stats.peak_viewers,
            stats.likes,
            stats.messages,
            stats.chatters
        ),
        (7, 10, 3, 1)
    );
    assert_eq!(
        (stats.orders, stats.paid_orders, stats.buyers, stats.revenue),
        (0, 0, 0, 0)
    );
}

pub(crate) async fn pins_replace_each_other_and_keep_their_timeline(store: &Store) {
    let seller = user(store, "seller@example.com").await;
    let s = shop(store, &seller, "anns").await;
    let a = store
        .create_product(product(&s, "A", vec![variant("A", 100, 1)]), &seller)
        .await
        .unwrap();
    let b = store
        .create_product(product(&s, "B", vec![variant("B", 100, 1)]), &seller)
        .await
        .unwrap();
    let room = room_of(store, &s).await;
    assert_eq!(store.current_pin(&room.id).await.unwrap(), None);
    assert!(!store.unpin(&room.id).await.unwrap());
    let at = store.pin_product(&room.id, &a.id, &seller).await.unwrap();
    assert_eq!(
        store.current_pin(&room.id).await.unwrap(),
        Some((a.id.clone(), at))
    );
    let at = store.pin_product(&room.id, &b.id, &seller).await.unwrap();
    assert_eq!(
        store.current_pin(&room.id).await.unwrap(),
        Some((b.id.clone(), at))
    );
    assert!(store.unpin(&room.id).await.unwrap());
    assert_eq!(store.current_pin(&room.id).await.unwrap(), None);
    // Pins racing each other: one wins, none fails.
    let racing: Vec<_> = (0..8)
        .map(|i| {
            let (store, room, seller) = (store.clone(), room.id.clone(), seller.clone());
            let product = if i % 2 == 0 {
                a.id.clone()
            } else {
                b.id.clone()
            };
            tokio::spawn(async move { store.pin_product(&room, &product, &seller).await })
        })
        .collect();
    for pin in racing {
        pin.await.unwrap().unwrap();
    }
    assert!(store.current_pin(&room.id).await.unwrap().is_some());
}

pub(crate) async fn moderation_is_kept(store: &Store) {
    use domain::room::SanctionKind;
    let (seller, _, sale) = sale_setup(store, 1, 1, 1).await;
    let sale = store.sale(&sale).await.unwrap().unwrap();
    let (room, shop) = (sale.room_id, sale.shop_id);
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;

    assert!(!store.is_moderator(&shop, &ann).await.unwrap());
    store.appoint_moderator(&shop, &ann).await.unwrap();
    store.appoint_moderator(&shop, &ann).await.unwrap();
    assert!(store.is_moderator(&shop, &ann).await.unwrap());
    assert_eq!(
        store.moderators(&shop).await.unwrap(),
        std::slice::from_ref(&ann)
    );
    assert!(store.dismiss_moderator(&shop, &ann).await.unwrap());
    assert!(!store.dismiss_moderator(&shop, &ann).await.unwrap());

    let words = vec!["scam".to_owned(), "spam".to_owned()];
    store.set_blocked_words(&shop, &words).await.unwrap();
    assert_eq!(store.blocked_words(&shop).await.unwrap(), words);
    store.set_blocked_words(&shop, &[]).await.unwrap();
    assert!(store.blocked_words(&shop).await.unwrap().is_empty());

    let past = Timestamp::now().plus_millis(-1000);
    store
        .sanction(&room, &bob, SanctionKind::Mute, Some(past), &seller)
        .await
        .unwrap();
    assert!(
        store.sanctions(&room).await.unwrap().is_empty(),
        "a mute that ended"
    );
    let ban = store
        .sanction(&room, &bob, SanctionKind::Ban, None, &seller)
        .await
        .unwrap();
    assert_eq!(store.sanctions(&room).await.unwrap(), [ban]);
    assert!(store.lift_sanction(&room, &bob).await.unwrap());
    assert!(store.sanctions(&room).await.unwrap().is_empty());

    assert_eq!(store.slow_mode(&room).await.unwrap(), 0);
    store.set_slow_mode(&room, 30).await.unwrap();
    assert_eq!(store.slow_mode(&room).await.unwrap(), 30);

    let message = store::ChatRecord {
        id: domain::ids::MessageId::generate(),
        room: room.clone(),
        user: bob.clone(),
        moderator: false,
        seq: 1,
        text: "hello".into(),
        at: Timestamp::now(),
    };
    store
        .save_chat(std::slice::from_ref(&message))
        .await
        .unwrap();
    assert!(store.delete_chat(&room, message.id.as_str()).await.unwrap());
    assert!(!store.delete_chat(&room, message.id.as_str()).await.unwrap());
    assert!(store.recent_chat(&room, 10).await.unwrap().is_empty());
}

pub(crate) async fn the_newest_claim_of_a_stream_origin_wins(store: &Store) {
    let room = store::testing::room(store).await;
    let ttl = Duration::from_secs(30);
    assert_eq!(store.origin(&room).await.unwrap(), None);

    let first = store
        .claim_origin(&room, "node-a", "http://a", "s1", ttl)
        .await
        .unwrap();
    assert_eq!(first.previous_node, None);
    assert_eq!(
        (first.origin.epoch, first.origin.stream_id.as_str()),
        (1, "s1")
    );
    assert!(
        store
            .renew_origin(&room, 1, "{\"msn\":4}", ttl)
            .await
            .unwrap()
    );

    // Another node takes it: the stream keeps its id and state, and the
    // first holder's renewal fails from now on.
    let second = store
        .claim_origin(&room, "node-b", "http://b", "s2", ttl)
        .await
        .unwrap();
    assert_eq!(second.previous_node.as_deref(), Some("node-a"));
    assert_eq!(second.origin.epoch, 2);
    assert_eq!(second.origin.stream_id, "s1");
    assert_eq!(second.origin.state, "{\"msn\":4}");
    assert!(!store.renew_origin(&room, 1, "{}", ttl).await.unwrap());
    let read = store.origin(&room).await.unwrap().unwrap();
    assert_eq!(
        (read.node.as_str(), read.url.as_str(), read.epoch),
        ("node-b", "http://b", 2)
    );

    // A release by the one who lost it changes nothing; by the holder, it ends.
    assert!(!store.release_origin(&room, 1).await.unwrap());
    assert!(store.origin(&room).await.unwrap().is_some());
    assert!(store.release_origin(&room, 2).await.unwrap());
    assert_eq!(store.origin(&room).await.unwrap(), None);

    // A lapsed lease is no lease: the next stream starts afresh.
    store
        .claim_origin(&room, "node-a", "http://a", "s3", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(store.origin(&room).await.unwrap(), None);
    let fresh = store
        .claim_origin(&room, "node-c", "http://c", "s4", ttl)
        .await
        .unwrap();
    assert_eq!(fresh.previous_node, None);
    assert_eq!(
        (fresh.origin.stream_id.as_str(), fresh.origin.state.as_str()),
        ("s4", "")
    );
}
