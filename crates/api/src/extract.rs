//! Request extractors that answer in the API's error shape.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use domain::Timestamp;
use domain::account::{Role, User};
use domain::ids::SessionId;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::{API_TOKEN_PREFIX, SESSION_COOKIE, SESSION_PREFIX, hash_secret};
use crate::error::{ApiError, Code};

/// A JSON body; its rejections become `invalid_json`, `invalid_body`,
/// `unsupported_media_type` or `payload_too_large`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// Query parameters; a malformed query is `invalid_query`.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    Session(SessionId),
    Token,
}

/// The signed-in caller. Rejects with `unauthenticated` when there is none.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    pub credential: Credential,
    /// The hash of the secret presented (session or token).
    pub secret_hash: String,
}

impl CurrentUser {
    pub fn require_seller(&self) -> Result<(), ApiError> {
        match self.user.role {
            Role::Seller | Role::Admin => Ok(()),
            Role::Buyer => Err(Code::SellerOnly.into()),
        }
    }
}

/// The caller if signed in, or `None`. A bearer token that is wrong is still an
/// error (the client meant to sign in); a stale cookie is simply ignored.
pub struct MaybeUser(pub Option<CurrentUser>);

enum Presented {
    Bearer(String),
    Cookie(String),
    Nothing,
}

fn presented(parts: &Parts) -> Presented {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        return Presented::Bearer(token.to_owned());
    }
    let cookie = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned());
    cookie.map_or(Presented::Nothing, Presented::Cookie)
}

/// Whether a cookie-authenticated request may act: reads always; writes only
/// when the browser says they come from this origin. SameSite=Lax keeps the cookie
/// off cross-site posts already; this also stops sibling subdomains ("same-site")
/// and browsers that ignore SameSite.
fn same_origin_write(parts: &Parts) -> bool {
    use axum::http::Method;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return matches!(site, "same-origin" | "none");
    }
    same_origin(&parts.headers)
}

/// Whether a browser's request comes from a page of this site, by its `Origin`
/// and `Host`. A request without `Origin` is not a cross-origin browser request.
pub(crate) fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, origin_host)| origin_host == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Signed-in callers, remembered for a few seconds so that a client in a busy
/// room does not cost a database read per request. A node forgets a user's
/// entries at once when they sign out, revoke a token or change role on it, and
/// every node that hears it on the bus's `sessions` topic does too; a node that
/// misses it notices within [`CredentialCache::TTL`].
#[derive(Default)]
pub struct CredentialCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (CurrentUser, std::time::Instant)>>,
}

impl CredentialCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(10);
    const MAX: usize = 100_000;

    fn get(&self, hash: &str) -> Option<CurrentUser> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(user, _)| user.clone())
    }

    fn put(&self, hash: String, user: CurrentUser) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::MAX {
            entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if entries.len() >= Self::MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (user, std::time::Instant::now()));
    }

    /// Forgets every credential of `user` on this node.
    pub fn forget_user(&self, user: &domain::ids::UserId) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (cached, _)| cached.user.id != *user);
    }
}

async fn resolve(state: &AppState, token: &str) -> Result<Option<CurrentUser>, ApiError> {
    let hash = hash_secret(token);
    if let Some(user) = state.credentials().get(&hash) {
        return Ok(Some(user));
    }
    let found = lookup(state, token, &hash).await?;
    if let Some(user) = &found {
        state.credentials().put(hash, user.clone());
    }
    Ok(found)
}

async fn lookup(
    state: &AppState,
    token: &str,
    hash: &str,
) -> Result<Option<CurrentUser>, ApiError> {
    let store = state.store();
    if token.starts_with(SESSION_PREFIX) {
        let found = store.session_user(hash, Timestamp::now()).await?;
        return Ok(found.map(|(id, user)| CurrentUser {
            user,
            credential: Credential::Session(id),
            secret_hash: hash.to_owned(),
        }));
    }
    if token.starts_with(API_TOKEN_PREFIX) {
        let found = store.token_user(hash).await?;
        return Ok(found.map(|(_, user)| CurrentUser {
            user,
            credential: Credential::Token,
            secret_hash: hash.to_owned(),
        }));
    }
    Ok(None)
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = match presented(parts) {
            Presented::Nothing => None,
            Presented::Cookie(_) if !same_origin_write(parts) => {
                return Err(ApiError::new(
                    Code::Forbidden,
                    "A cookie-signed request that changes something must come from this site.",
                ));
            }
            Presented::Cookie(token) => resolve(state, &token).await?,
            Presented::Bearer(token) => match resolve(state, &token).await? {
                Some(user) => Some(user),
                None => {
                    return Err(ApiError::new(
                        Code::Unauthenticated,
                        "The bearer token is unknown, expired or revoked.",
                    ));
                }
            },
        };
        Ok(Self(user))
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        MaybeUser::from_request_parts(parts, state)
            .await?
            .0
            .ok_or_else(|| Code::Unauthenticated.into())
    }
}

/// The client's IP address: the TCP peer's, or what a trusted proxy says
/// (`--trusted-proxies`); `None` where the request did not come through
/// [`crate::serve`].
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(crate::server::ClientIp::of(&parts.extensions)))
    }
}
