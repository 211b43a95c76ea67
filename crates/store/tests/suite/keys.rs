//! Idempotency-Keys: their states, and the race for one key.

use super::*;

pub(crate) async fn idempotency_keys(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let long = Duration::from_secs(60);
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::Fresh
    );
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::InUse
    );
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h2", long)
            .await
            .unwrap(),
        KeyState::Reused
    );
    assert_eq!(
        store
            .begin_idempotent(&bob, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::Fresh,
        "keys are per user"
    );
    store
        .finish_idempotent(&ann, "k1", &store::Answer::Made("{\"id\":1}".into()))
        .await
        .unwrap();
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::Replay(store::Answer::Made("{\"id\":1}".into()))
    );
    // An unfinished request older than any request may run was abandoned; one
    // caller takes it over.
    store.begin_idempotent(&ann, "k2", "h", long).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        store
            .begin_idempotent(&ann, "k2", "h", Duration::ZERO)
            .await
            .unwrap(),
        KeyState::Abandoned
    );
    store.forget_idempotent(&ann, "k2").await.unwrap();
    assert_eq!(
        store
            .begin_idempotent(&ann, "k2", "other", long)
            .await
            .unwrap(),
        KeyState::Fresh
    );
    assert_eq!(store.delete_expired_idempotency_keys().await.unwrap(), 0);

    // The key on an order finds it again.
    let (seller, _, sale) = sale_setup(store, 10, 5, 5).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let key = store::ClaimKey {
        key: "buy-1".into(),
        request_hash: "h".into(),
    };
    let mut claim = tap(&ann, 1);
    claim.idempotency = Some(key);
    // The same key twice in one batch: one order, and the other tap is refused.
    let got = store
        .claim_batch(&sale, &[claim.clone(), claim.clone()], &WINDOW)
        .await
        .unwrap();
    let ClaimOutcome::Reserved(order) = &got[0] else {
        panic!("{got:?}")
    };
    assert!(matches!(got[1], ClaimOutcome::Earlier(Earlier::InUse)));
    let body = serde_json::to_string(order.as_ref()).unwrap();
    // A retry in a later batch gets the first answer, recorded with the order.
    let again = store
        .claim_batch(&sale, &[claim.clone()], &WINDOW)
        .await
        .unwrap();
    match &again[0] {
        ClaimOutcome::Earlier(Earlier::Replay(replayed)) => {
            assert_eq!(replayed, &store::Answer::Made(body.clone()))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .begin_idempotent(&ann, "buy-1", "h", long)
            .await
            .unwrap(),
        KeyState::Replay(store::Answer::Made(body))
    );
    let mut changed = claim;
    if let Some(k) = changed.idempotency.as_mut() {
        k.request_hash = "other".into();
    }
    let reused = store.claim_batch(&sale, &[changed], &WINDOW).await.unwrap();
    assert!(matches!(reused[0], ClaimOutcome::Earlier(Earlier::Reused)));
    assert_eq!(
        store.sale_tally(&sale).await.unwrap().orders,
        1,
        "one order for one key"
    );
    let mine = store.orders_of_buyer(&ann, &page(10, None)).await.unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].history.len(), 1);
}

/// Two requests with one key at the same moment, on PostgreSQL: the batch that
/// found the key free but could not write it (the other request's transaction
/// wrote it first) is rolled back and served again, and then answers with the
/// first request's answer: no second order, no units taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_loses_a_race_for_a_key_is_served_again() {
    use sqlx::Connection;
    let db = TestDatabase::postgres().await;
    let store = &db.store;
    let (seller, _, sale) = sale_setup(store, 10, 5, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let mut other = sqlx::PgConnection::connect(db.url.as_deref().unwrap())
        .await
        .unwrap();
    let mut first = other.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, outcome, body, created_at)
         VALUES ($1, 'race', 'h', 'made', '{\"first\":true}', $2)",
    )
    .bind(ann.as_str())
    .bind(Timestamp::now().as_millis())
    .execute(&mut *first)
    .await
    .unwrap();
    let mut claim = tap(&ann, 1);
    claim.idempotency = Some(store::ClaimKey {
        key: "race".into(),
        request_hash: "h".into(),
    });
    let batch = {
        let (store, sale) = (store.clone(), sale.clone());
        tokio::spawn(async move { store.claim_batch(&sale, &[claim], &WINDOW).await })
    };
    // The batch finds the key free and waits on the uncommitted row: its
    // connection shows up in PostgreSQL as waiting for a lock.
    let mut watcher = sqlx::PgConnection::connect(db.url.as_deref().unwrap())
        .await
        .unwrap();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            !batch.is_finished(),
            "the batch waits for the first request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !batch.is_finished(),
        "the batch waits for the first request"
    );
    first.commit().await.unwrap();
    let got = batch.await.unwrap().unwrap();
    match &got[0] {
        ClaimOutcome::Earlier(Earlier::Replay(answer)) => {
            assert_eq!(answer, &store::Answer::Made("{\"first\":true}".into()))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.sale_tally(&sale).await.unwrap().orders, 0);
    assert_eq!(store.sale(&sale).await.unwrap().unwrap().available, 5);
    // Without foreign keys on the purchase path, the orphan check sees a key
    // whose user does not exist.
    assert_eq!(store::testing::orphans(store).await.unwrap(), 0);
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at)
         VALUES ('usr_gone', 'k', 'h', 0)",
    )
    .execute(&mut other)
    .await
    .unwrap();
    assert_eq!(store::testing::orphans(store).await.unwrap(), 1);
}
