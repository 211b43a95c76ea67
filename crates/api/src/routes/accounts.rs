//! Sign-up, sign-in, sign-out, who am I, and personal API tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::Timestamp;
use domain::account::{ApiToken, DisplayName, Email, Password, Role, TokenName, User};
use domain::catalog::Shop;
use domain::ids::TokenId;
use serde::{Deserialize, Serialize};
use store::NewUser;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::time::Duration;

use crate::auth::{
    API_TOKEN_PREFIX, SESSION_COOKIE, SESSION_PREFIX, hash_password, hash_secret, new_token,
    verify_password,
};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{ClientAddr, Credential, CurrentUser, JsonBody};
use crate::{AppState, SIGN_IN_WINDOW, SIGN_UP_WINDOW};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(sign_in))
        .routes(routes!(sign_out))
        .routes(routes!(me))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignUp {
    email: String,
    /// 8 to 128 characters.
    password: String,
    display_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    email: String,
    password: String,
}

/// A new session. The token also arrives as the `hawker_session` cookie
/// (HttpOnly, SameSite=Lax); API clients send it as `Authorization: Bearer`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionCreated {
    user: User,
    token: String,
    expires_at: Timestamp,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Me {
    user: User,
    /// Shops this account owns.
    shops: Vec<Shop>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// What the token is for, such as "OBS plugin".
    name: String,
}

/// A new personal API token. `secret` is shown this once and never again.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenCreated {
    token: ApiToken,
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TokenList {
    items: Vec<ApiToken>,
}

/// Starts a session for `user`: stores the token's hash, sets the cookie.
async fn start_session(state: &AppState, user: User, status: StatusCode) -> ApiResult<Response> {
    let token = new_token(SESSION_PREFIX)?;
    let ttl = state.config().session_ttl;
    let expires_at = Timestamp::now().plus_millis(ttl.as_millis() as i64);
    state
        .store()
        .create_session(&user.id, &hash_secret(&token), expires_at)
        .await?;
    let cookie = session_cookie(state, &token, ttl.as_secs());
    let body = SessionCreated {
        user,
        token,
        expires_at,
    };
    Ok((status, [(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

fn session_cookie(state: &AppState, token: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config().secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = SignUp,
    responses(
        (status = 201, description = "Account created and signed in", body = SessionCreated),
        (status = 409, description = "`email_taken`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many sign-ups from this address this hour, with Retry-After", body = ErrorBody),
    ))]
async fn sign_up(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    JsonBody(body): JsonBody<SignUp>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email)?;
    let display_name = DisplayName::parse(&body.display_name)?;
    let password = Password::parse(&body.password)?;
    // Before the password is hashed: each hash takes 19 MiB and a core's
    // tens of milliseconds.
    let address = peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let key = format!("sign-up:address:{address}");
    let closed = state.closed_keys();
    let counted = match closed.closed_for(&key) {
        Some(wait) => Err(wait),
        None => {
            let limit = state.config().sign_ups_per_address;
            let counted = state
                .store()
                .throttle_hit(&key, limit, SIGN_UP_WINDOW)
                .await?;
            if let Err(wait) = counted {
                tracing::warn!(%address, "sign-ups from this address limited");
                closed.close(&key, wait);
            }
            counted
        }
    };
    if let Err(wait) = counted {
        metrics::counter!("hawker_sign_ups_refused_total").increment(1);
        return Err(ApiError::from(Code::RateLimited).retry_after(wait));
    }
    let password_hash = hash_password(password).await?;
    let user = state
        .store()
        .create_user(NewUser {
            email,
            display_name,
            password_hash,
            role: Role::Buyer,
        })
        .await?;
    tracing::info!(user = %user.id, "account created");
    start_session(&state, user, StatusCode::CREATED).await
}

/// Signs in with email and password. A wrong password and an unknown email get the
/// same answer in the same time. Failures only are counted: from one address
/// for one account, each one past the first few doubles the wait before the
/// next try from there; from one address in all, a hard limit per 15 minutes
/// closes that address alone. The right password from elsewhere always works.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "accounts", request_body = SignIn,
    responses(
        (status = 201, description = "Signed in", body = SessionCreated),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with Retry-After", body = ErrorBody),
    ))]
async fn sign_in(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    JsonBody(body): JsonBody<SignIn>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|_| Code::InvalidCredentials)?;
    let address = peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let address_key = format!("sign-in:address:{address}");
    let pair_key = format!("sign-in:account:{}:{address}", email.as_str());
    let config = state.config();
    let store = state.store();
    // Counted in the database, so that every node shares the count; a node
    // that found an address closed remembers it until it reopens.
    let closed = state.closed_keys();
    let refused = match closed.closed_for(&address_key) {
        Some(wait) => Some(wait),
        None => match store.throttle_peek(&address_key, SIGN_IN_WINDOW).await? {
            Some((started, failures))
                if failures >= i64::from(config.sign_in_failures_per_address) =>
            {
                tracing::warn!(%address, failures, "sign-ins from this address refused");
                let ends = started.plus_millis(SIGN_IN_WINDOW.as_millis() as i64);
                closed.close(&address_key, seconds_until(ends));
                Some(seconds_until(ends))
            }
            _ => None,
        },
    };
    if let Some(wait) = refused {
        metrics::counter!("hawker_sign_ins_refused_total", "limit" => "per_address").increment(1);
        return Err(ApiError::from(Code::RateLimited).retry_after(wait));
    }
    let pair = store.throttle_peek(&pair_key, SIGN_IN_WINDOW).await?;
    if let Some((last, failures)) = pair
        && let Some(wait) = sign_in_delay(failures, config.sign_in_free_failures)
    {
        let until = last.plus_millis(wait.as_millis() as i64);
        if until > Timestamp::now() {
            tracing::warn!(%address, failures, "sign-in to one account from this address delayed");
            metrics::counter!("hawker_sign_ins_refused_total", "limit" => "delay").increment(1);
            return Err(ApiError::from(Code::RateLimited).retry_after(seconds_until(until)));
        }
    }
    let (user, hash) = store.user_by_email(&email).await?.unzip();
    let verified = verify_password(body.password, hash).await;
    let Some(user) = user.filter(|_| verified) else {
        store
            .throttle_hit(&address_key, u32::MAX, SIGN_IN_WINDOW)
            .await?
            .ok();
        store.throttle_strike(&pair_key, SIGN_IN_WINDOW).await?;
        return Err(Code::InvalidCredentials.into());
    };
    // Only a pair with failures has a row to clear: a plain sign-in writes
    // nothing here.
    if pair.is_some() {
        store.throttle_clear(&pair_key).await?;
    }
    start_session(&state, user, StatusCode::CREATED).await
}

/// How long after the last of `failures` a next try waits: nothing for the
/// first `free`, then 1 s, doubling each time, up to the window.
fn sign_in_delay(failures: i64, free: u32) -> Option<Duration> {
    let past = u32::try_from(failures - i64::from(free)).ok()?;
    let seconds = 1u64.checked_shl(past).unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(SIGN_IN_WINDOW))
}

fn seconds_until(at: Timestamp) -> u64 {
    let ms = at.as_millis() - Timestamp::now().as_millis();
    u64::try_from(ms.div_euclid(1000) + 1).unwrap_or(1).max(1)
}

/// Ends the current session and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "accounts",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 409, description = "`not_a_session`: signed in with an API token", body = ErrorBody),
    ))]
async fn sign_out(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Response> {
    let Credential::Session(id) = current.credential else {
        return Err(Code::NotASession.into());
    };
    state.store().delete_session(&id).await?;
    state.credentials_changed(&current.user.id).await;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session_cookie(&state, "", 0))],
    )
        .into_response())
}

/// The signed-in account and the shops it owns.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Me),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
async fn me(State(state): State<AppState>, current: CurrentUser) -> ApiResult<Json<Me>> {
    let shops = state.store().shops_owned_by(&current.user.id).await?;
    Ok(Json(Me {
        user: current.user,
        shops,
    }))
}

/// Creates a personal API token for a seller. The secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", request_body = CreateToken,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = TokenCreated),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 403, description = "`seller_only`", body = ErrorBody),
    ))]
async fn create_token(
    State(state): State<AppState>,
    current: CurrentUser,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    current.require_seller()?;
    let name = TokenName::parse(&body.name)?;
    let secret = new_token(API_TOKEN_PREFIX)?;
    let token = state
        .store()
        .create_api_token(&current.user.id, &name, &hash_secret(&secret))
        .await?;
    tracing::info!(user = %current.user.id, token = %token.id, "API token created");
    Ok((StatusCode::CREATED, Json(TokenCreated { token, secret })))
}

/// The caller's API tokens, revoked ones included; never their secrets.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = TokenList),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
async fn list_tokens(
    State(state): State<AppState>,
    current: CurrentUser,
) -> ApiResult<Json<TokenList>> {
    let items = state.store().api_tokens(&current.user.id).await?;
    Ok(Json(TokenList { items }))
}

/// Revokes one of the caller's tokens; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Token id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such live token of yours", body = ErrorBody),
    ))]
async fn revoke_token(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store()
        .revoke_api_token(&current.user.id, &TokenId::from_string(id))
        .await?;
    state.credentials_changed(&current.user.id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Used by `hawker admin create-user`: the same rules as sign-up.
pub async fn create_account(
    store: &store::Store,
    email: &str,
    display_name: &str,
    password: &str,
    role: Role,
) -> ApiResult<User> {
    store
        .create_user(NewUser {
            email: Email::parse(email)?,
            display_name: DisplayName::parse(display_name)?,
            password_hash: hash_password(Password::parse(password)?).await?,
            role,
        })
        .await
        .map_err(ApiError::from)
}
