use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::json;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn sign_up_sets_a_safe_cookie_and_a_bearer_token() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .json(&json!({"email": " Ann@Example.com ", "password": "correct horse", "display_name": "Ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookie = res.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("hawker_session=hks_"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ann@example.com");
    assert_eq!(body["user"]["role"], "buyer");
    assert!(body["user"].get("password_hash").is_none());

    let token = body["token"].as_str().unwrap();
    let (status, me) = app.get("/api/v1/me", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["display_name"], "Ann");

    let pair = cookie.split(';').next().unwrap();
    let by_cookie = app
        .client
        .get(app.url("/api/v1/me"))
        .header(COOKIE, format!("theme=dark; {pair}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), StatusCode::OK);
}

#[tokio::test]
async fn sign_in_answers_wrong_password_and_unknown_email_alike() {
    let app = TestApp::spawn().await;
    app.sign_up("ann@example.com").await;
    let wrong = app
        .post(
            "/api/v1/sessions",
            None,
            json!({"email": "ann@example.com", "password": "wrong horse"}),
        )
        .await;
    let unknown = app
        .post(
            "/api/v1/sessions",
            None,
            json!({"email": "bob@example.com", "password": "wrong horse"}),
        )
        .await;
    assert_eq!(wrong, unknown);
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");

    let (status, body) = app
        .post(
            "/api/v1/sessions",
            None,
            json!({"email": "ANN@example.com", "password": "correct horse"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["token"].as_str().unwrap().starts_with("hks_"));
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let app = TestApp::spawn().await;
    let ann = app.sign_up("ann@example.com").await;
    let (status, _) = app
        .delete("/api/v1/sessions/current", Some(&ann.token))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        app.get("/api/v1/me", Some(&ann.token)).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        app.get("/api/v1/me", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
}

#[tokio::test]
async fn sign_up_validates_and_rejects_duplicates() {
    let app = TestApp::spawn().await;
    app.sign_up("ann@example.com").await;
    assert_error(
        app.post(
            "/api/v1/users",
            None,
            json!({"email": "ANN@example.com", "password": "correct horse", "display_name": "A"}),
        )
        .await,
        StatusCode::CONFLICT,
        "email_taken",
    );
    let (status, body) = app
        .post(
            "/api/v1/users",
            None,
            json!({"email": "bob@example.com", "password": "short", "display_name": "B"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_field");
    assert_eq!(body["error"]["field"], "password");
    assert_error(
        app.post(
            "/api/v1/users",
            None,
            json!({"email": "not-an-email", "password": "correct horse", "display_name": "B"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
}

#[tokio::test]
async fn api_tokens_are_for_sellers_shown_once_and_revocable() {
    let app = TestApp::spawn().await;
    let buyer = app.sign_up("buyer@example.com").await;
    assert_error(
        app.post("/api/v1/tokens", Some(&buyer.token), json!({"name": "bot"}))
            .await,
        StatusCode::FORBIDDEN,
        "seller_only",
    );
    let seller = app.seller("anns").await;
    let (status, created) = app
        .post(
            "/api/v1/tokens",
            Some(&seller.token),
            json!({"name": "OBS"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("hkp_"));
    let (status, me) = app.get("/api/v1/me", Some(secret)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["id"], seller.id.as_str());
    assert_eq!(me["shops"][0]["handle"], "anns");

    let (_, list) = app.get("/api/v1/tokens", Some(&seller.token)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(secret),
        "the secret is never listed"
    );

    let id = created["token"]["id"].as_str().unwrap();
    let other = app.seller("bobs").await;
    assert_error(
        app.delete(&format!("/api/v1/tokens/{id}"), Some(&other.token))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (status, _) = app
        .delete(&format!("/api/v1/tokens/{id}"), Some(&seller.token))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        app.get("/api/v1/me", Some(secret)).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    // Signing out makes no sense for a token.
    let (_, fresh) = app
        .post("/api/v1/tokens", Some(&seller.token), json!({"name": "CI"}))
        .await;
    assert_error(
        app.delete("/api/v1/sessions/current", fresh["secret"].as_str())
            .await,
        StatusCode::CONFLICT,
        "not_a_session",
    );
}

#[tokio::test]
async fn cookie_writes_must_come_from_this_origin() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .json(&json!({"email": "ann@example.com", "password": "correct horse", "display_name": "Ann"}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let open_shop = |headers: Vec<(&'static str, String)>, handle: &'static str| {
        let mut req = app
            .client
            .post(app.url("/api/v1/shops"))
            .header(COOKIE, cookie.clone())
            .json(&json!({"handle": handle, "name": "Ann", "currency": "EUR"}));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        async move { req.send().await.unwrap().status() }
    };
    let own_origin = format!("http://{}", app.addr);
    assert_eq!(
        open_shop(vec![("sec-fetch-site", "cross-site".into())], "cross-a").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        open_shop(vec![("sec-fetch-site", "same-site".into())], "cross-b").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        open_shop(vec![("origin", "https://evil.example".into())], "cross-c").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        open_shop(
            vec![
                ("sec-fetch-site", "same-origin".into()),
                ("origin", own_origin.clone())
            ],
            "own-a"
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        open_shop(vec![("origin", own_origin)], "own-b").await,
        StatusCode::CREATED
    );
    // Reads are fine from anywhere, and bearer tokens are not cookies.
    let read = app
        .client
        .get(app.url("/api/v1/me"))
        .header(COOKIE, cookie.clone())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_change_to_a_users_sign_ins_on_another_node_is_heard_at_once() {
    let app = TestApp::spawn().await;
    let ann = app.sign_up("ann@example.com").await;
    let (_, me) = app.get("/api/v1/me", Some(&ann.token)).await;
    assert_eq!(me["user"]["role"], "buyer", "and now cached on this node");
    // Another node makes her a seller, and says so on the sessions topic.
    let user = domain::ids::UserId::from_string(&ann.id);
    app.db
        .store
        .set_role(&user, domain::account::Role::Seller)
        .await
        .unwrap();
    app.state
        .bus()
        .announce_sessions(&domain::event::SessionEvent::CredentialsChanged { user })
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !app
        .metrics()
        .await
        .contains("api_credentials_forgotten_total 1")
    {
        assert!(tokio::time::Instant::now() < deadline, "the node heard it");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_, me) = app.get("/api/v1/me", Some(&ann.token)).await;
    assert_eq!(me["user"]["role"], "seller", "not the cached buyer");
}
