//! Migrations, users, sessions and API tokens.

use super::*;

pub(crate) async fn migrations_are_idempotent(store: &Store) {
    assert!(store.migrate().await.unwrap().is_empty());
    store.ping().await.unwrap();
}

pub(crate) async fn users_and_sessions(store: &Store) {
    let id = user(store, "Ann@Example.com").await;
    let again = store
        .create_user(NewUser {
            email: Email::parse("ann@example.com").unwrap(),
            display_name: DisplayName::parse("Other").unwrap(),
            password_hash: "x".into(),
            role: Role::Buyer,
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(Conflict::Email))));
    let (found, hash) = store
        .user_by_email(&Email::parse("ANN@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id);
    assert_eq!(hash, "$argon2id$stand-in");
    assert_eq!(store.count_users().await.unwrap(), 1);

    let now = Timestamp::now();
    let session = store
        .create_session(&id, "live-hash", now.plus_millis(60_000))
        .await
        .unwrap();
    store
        .create_session(&id, "old-hash", now.plus_millis(-1))
        .await
        .unwrap();
    let (sid, u) = store.session_user("live-hash", now).await.unwrap().unwrap();
    assert_eq!((sid.clone(), u.id), (session.clone(), id.clone()));
    assert!(store.session_user("old-hash", now).await.unwrap().is_none());
    assert_eq!(store.delete_expired_sessions(now).await.unwrap(), 1);
    store.delete_session(&sid).await.unwrap();
    assert!(
        store
            .session_user("live-hash", now)
            .await
            .unwrap()
            .is_none()
    );

    store.set_role(&id, Role::Admin).await.unwrap();
    assert_eq!(store.user(&id).await.unwrap().unwrap().role, Role::Admin);
}

pub(crate) async fn api_tokens(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let name = TokenName::parse("OBS").unwrap();
    let token = store.create_api_token(&ann, &name, "h1").await.unwrap();
    assert_eq!(store.token_user("h1").await.unwrap().unwrap().1.id, ann);
    assert!(matches!(
        store.revoke_api_token(&bob, &token.id).await,
        Err(StoreError::NotFound)
    ));
    store.revoke_api_token(&ann, &token.id).await.unwrap();
    assert!(store.token_user("h1").await.unwrap().is_none());
    assert!(matches!(
        store.revoke_api_token(&ann, &token.id).await,
        Err(StoreError::NotFound)
    ));
    let listed = store.api_tokens(&ann).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    assert!(store.api_tokens(&bob).await.unwrap().is_empty());
}

/// The shared sign-in throttle: `limit` hits per window per key, counted by
/// however many callers at once, reset by a new window or a clear.
pub async fn throttle_windows(store: &Store) {
    let window = std::time::Duration::from_secs(900);
    let mut hits = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        hits.spawn(async move {
            store
                .throttle_hit("sign-in:address:10.0.0.1", 5, window)
                .await
        });
    }
    let answers = hits.join_all().await;
    let allowed = answers.iter().filter(|a| matches!(a, Ok(Ok(())))).count();
    assert_eq!(allowed, 5, "{answers:?}");
    let wait = store
        .throttle_hit("sign-in:address:10.0.0.1", 5, window)
        .await
        .unwrap()
        .unwrap_err();
    assert!((1..=900).contains(&wait), "{wait}");
    assert!(
        store
            .throttle_hit("sign-in:address:10.0.0.2", 5, window)
            .await
            .unwrap()
            .is_ok()
    );
    store
        .throttle_clear("sign-in:address:10.0.0.1")
        .await
        .unwrap();
    assert!(
        store
            .throttle_hit("sign-in:address:10.0.0.1", 5, window)
            .await
            .unwrap()
            .is_ok()
    );
    // A window that is over starts again at one.
    let none = std::time::Duration::ZERO;
    for _ in 0..2 {
        assert!(
            store
                .throttle_hit("sign-in:account:a@example.com", 1, none)
                .await
                .unwrap()
                .is_ok()
        );
    }
    assert_eq!(store.delete_expired_throttles(none).await.unwrap(), 3);
}
