//! Hawker's HTTP API: the JSON API under `/api/v1/`, sessions and tokens, the
//! OpenAPI document, health and metrics endpoints, and uploaded images.
//!
//! Only this crate knows about HTTP. It turns requests into domain values, calls
//! the store, and answers in one error shape (`error.rs`). It never reaches into
//! the database itself.

mod auth;
pub mod edge;
mod error;
mod extract;
mod idempotency;
mod middleware;
mod ops;
pub mod payments;
mod routes;
mod sale_events;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use store::Store;
use tokio_util::sync::CancellationToken;

pub use auth::{hash_secret, stream_key_matches};
pub use error::{ApiError, Code};
pub use routes::accounts::create_account;
pub use routes::images::save_image;
pub use sale_events::{SaleEvents, TICK as SALE_EVENT_TICK};
pub use server::{HttpLimits, serve};

/// Settings the API needs; the binary fills them from flags, env and TOML.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The node's own files; uploaded images live under `{data_dir}/images`
    /// unless `object_store_url` says otherwise.
    pub data_dir: PathBuf,
    /// `file:///path` (a folder every node shares) or `s3://bucket[/prefix]`:
    /// where images and recordings go.
    pub object_store_url: Option<String>,
    /// The S3-compatible server an `s3://` URL is on (AWS's own if unset).
    pub object_store_endpoint: Option<String>,
    /// What nodes show each other to pull a stream from its origin
    /// (`crate::edge`); without it, a stream plays from its origin only.
    pub cluster_secret: Option<String>,
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (when served over HTTPS).
    pub secure_cookies: bool,
    /// Largest JSON body accepted.
    pub max_body_bytes: usize,
    /// Largest image upload accepted.
    pub max_image_bytes: usize,
    /// Requests that take longer are answered with `timeout`.
    pub request_timeout: Duration,
    /// Failed sign-ins to one account from one address before each next try
    /// from there waits (1 s, doubling).
    pub sign_in_free_failures: u32,
    /// Failed sign-ins from one address per 15 minutes, past which it is refused.
    pub sign_in_failures_per_address: u32,
    /// Accounts created from one address per hour.
    pub sign_ups_per_address: u32,
    /// How long a reserved order waits for payment before its stock returns.
    pub reservation_window: Duration,
    /// The same for a flash-sale tap: shorter, since a sale's units are
    /// wanted by many.
    pub flash_reservation_window: Duration,
    /// How many unpaid reservations one buyer and one address may hold.
    pub unpaid_caps: store::UnpaidCaps,
    /// The payment provider's API (`hawker payments-sandbox`); unset, each
    /// node runs a sandbox of its own inside its process.
    pub payments_url: Option<String>,
    /// The bearer token the provider's API takes.
    pub payments_api_key: Option<String>,
    /// The key the provider signs its webhooks with; every node of a
    /// deployment needs the same. Random per process when unset.
    pub payment_webhook_secret: Option<String>,
    /// How long the in-process sandbox's asynchronous cards take to answer.
    pub payment_async_delay: Duration,
    /// How long one call to the provider may take.
    pub payments_timeout: Duration,
    /// Settling what a fault left open, and reconciliation.
    pub upkeep: payments::upkeep::UpkeepSettings,
    /// Group commit for flash-sale taps; off only to measure the naive path.
    pub inventory_batching: bool,
    /// What a room WebSocket may do and how slow it may be.
    pub live: live::Limits,
    /// RTMP ingest, LL-HLS, HTTP-FLV and recordings.
    pub media: media::Settings,
    /// A connection whose sent data stays unacknowledged this long (its peer
    /// stopped reading or vanished) is dropped by the kernel (TCP_USER_TIMEOUT).
    pub send_timeout: Duration,
    /// The port encoders publish to, for the `publish_url` the API shows sellers.
    pub rtmp_port: u16,
    /// What HTTP connections may cost, and how many there may be.
    pub http: HttpLimits,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` say who the client is.
    pub trusted_proxies: Vec<domain::net::Cidr>,
    /// The bearer token `/metrics` asks for; open to all when `None`.
    pub metrics_token: Option<String>,
}

impl ApiConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            secure_cookies: false,
            max_body_bytes: 1024 * 1024,
            max_image_bytes: 10 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            sign_in_free_failures: 5,
            sign_in_failures_per_address: 50,
            sign_ups_per_address: 10,
            reservation_window: Duration::from_secs(10 * 60),
            flash_reservation_window: Duration::from_secs(3 * 60),
            unpaid_caps: store::UnpaidCaps::default(),
            payments_url: None,
            payments_api_key: None,
            payment_webhook_secret: None,
            payment_async_delay: Duration::from_secs(1),
            payments_timeout: Duration::from_secs(10),
            upkeep: payments::upkeep::UpkeepSettings {
                settle_after: Duration::from_secs(60),
                reconcile_every: Duration::from_secs(300),
                reconcile_window: Duration::from_secs(24 * 3600),
            },
            inventory_batching: true,
            live: live::Limits::default(),
            media: media::Settings::default(),
            send_timeout: Duration::from_secs(30),
            rtmp_port: 1935,
            http: HttpLimits::default(),
            trusted_proxies: Vec::new(),
            metrics_token: None,
            object_store_url: None,
            object_store_endpoint: None,
            cluster_secret: None,
            data_dir,
        }
    }
}

struct Inner {
    store: Store,
    credentials: extract::CredentialCache,
    /// Which room each sale is in (it never changes), to check taps without a read.
    sale_rooms:
        std::sync::Mutex<std::collections::HashMap<domain::ids::SaleId, domain::ids::RoomId>>,
    bus: bus::Bus,
    hub: live::Hub,
    media: media::Media,
    objects: objects::Objects,
    sale_events: SaleEvents,
    inventory: store::Inventory,
    payments: payments::Provider,
    /// Room WebSockets per client address.
    websockets: domain::net::Gate,
    /// HTTP-FLV viewers per client address.
    flv_viewers: domain::net::Gate,
    /// Throttle keys this node found closed, and until when.
    closed: ClosedKeys,
    config: ApiConfig,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// The parts the API serves from, built by the composition root (`hawker-node`).
pub struct Parts {
    pub store: Store,
    pub bus: bus::Bus,
    pub hub: live::Hub,
    pub media: media::Media,
    /// Where images are kept.
    pub objects: objects::Objects,
    pub sale_events: SaleEvents,
    pub inventory: store::Inventory,
    pub payments: payments::Provider,
    pub config: ApiConfig,
}

/// Shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(parts: Parts) -> Self {
        let config = parts.config;
        let http = &config.http;
        Self(Arc::new(Inner {
            websockets: domain::net::Gate::new(
                http.max_connections,
                http.max_websockets_per_address,
            ),
            flv_viewers: domain::net::Gate::new(
                http.max_connections,
                http.max_flv_viewers_per_address,
            ),
            closed: ClosedKeys::default(),
            credentials: extract::CredentialCache::default(),
            sale_rooms: std::sync::Mutex::default(),
            hub: parts.hub,
            media: parts.media,
            objects: parts.objects,
            bus: parts.bus,
            sale_events: parts.sale_events,
            metrics: middleware::metrics_handle(),
            inventory: parts.inventory,
            payments: parts.payments,
            store: parts.store,
            config,
        }))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn config(&self) -> &ApiConfig {
        &self.0.config
    }

    pub fn objects(&self) -> &objects::Objects {
        &self.0.objects
    }

    /// The payment provider orders are paid through.
    pub fn payment_provider(&self) -> &payments::Provider {
        &self.0.payments
    }

    /// Throttle keys this node found closed: a flood from one address is
    /// refused here, without a write to the database for each request.
    pub(crate) fn closed_keys(&self) -> &ClosedKeys {
        &self.0.closed
    }

    /// The room WebSockets open, counted per client address.
    pub(crate) fn websockets(&self) -> &domain::net::Gate {
        &self.0.websockets
    }

    /// The HTTP-FLV viewers watching, counted per client address.
    pub(crate) fn flv_viewers(&self) -> &domain::net::Gate {
        &self.0.flv_viewers
    }

    pub(crate) fn credentials(&self) -> &extract::CredentialCache {
        &self.0.credentials
    }

    /// A user signed out, revoked a token or changed role: this node forgets
    /// their cached credentials at once, and every node that hears it too.
    pub(crate) async fn credentials_changed(&self, user: &domain::ids::UserId) {
        self.credentials().forget_user(user);
        let event = domain::event::SessionEvent::CredentialsChanged { user: user.clone() };
        self.bus().announce_sessions(&event).await;
    }

    /// The room a sale is in, remembered after the first read.
    pub(crate) async fn sale_room(
        &self,
        sale: &domain::ids::SaleId,
    ) -> Result<Option<domain::ids::RoomId>, ApiError> {
        let known = self
            .0
            .sale_rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sale)
            .cloned();
        if known.is_some() {
            return Ok(known);
        }
        let Some(found) = self.store().sale(sale).await? else {
            return Ok(None);
        };
        let mut rooms = self.0.sale_rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.len() >= 100_000 {
            rooms.clear();
        }
        rooms.insert(sale.clone(), found.room_id.clone());
        Ok(Some(found.room_id))
    }

    /// Room events: what the live rooms subscribe to.
    pub fn bus(&self) -> &bus::Bus {
        &self.0.bus
    }

    /// The live rooms of this node.
    pub fn hub(&self) -> &live::Hub {
        &self.0.hub
    }

    /// The video streams of this node.
    pub fn media(&self) -> &media::Media {
        &self.0.media
    }

    pub(crate) fn sale_events(&self) -> &SaleEvents {
        &self.0.sale_events
    }

    /// Units of a sale came back (a reservation lapsed, an order was
    /// cancelled): while the sale is open, its room hears the new stock, and a
    /// sold-out sale that is live again says so.
    pub(crate) async fn units_returned(&self, sale: &domain::ids::SaleId) {
        use domain::sale::SaleStatus;
        match self.store().sale(sale).await {
            Ok(Some(sale)) if matches!(sale.status, SaleStatus::Live | SaleStatus::SoldOut) => {
                self.sale_events().stock_changed(&sale);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%sale, error = %e, "cannot read a sale whose units came back"),
        }
    }

    /// The flash-sale batchers.
    pub fn inventory(&self) -> &store::Inventory {
        &self.0.inventory
    }
}

/// The whole HTTP surface with its middleware.
pub fn router(state: AppState) -> Router {
    let (api, mut openapi) = routes::api_router(state.config()).split_for_parts();
    routes::document_common_errors(&mut openapi);
    let openapi = Arc::new(openapi);
    let app = Router::new()
        .merge(api)
        .merge(ops::router(openapi))
        .merge(routes::images::serve_router())
        .merge(routes::video::media_router())
        .merge(edge::router())
        .merge(routes::pages::router())
        .fallback(|| async { ApiError::from(Code::RouteNotFound) })
        .method_not_allowed_fallback(|| async { ApiError::from(Code::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .with_state(state.clone());
    middleware::wrap(app, state)
}

/// Every second until `shutdown`: starts sales whose start has come, ends those
/// whose end has, and expires unpaid reservations past their window. Several
/// nodes may run it: the store's conditional updates let one of them make
/// each change.
pub async fn run_selling_clock(state: AppState, shutdown: CancellationToken) {
    use domain::sale::SaleStatus;
    let store = state.store().clone();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = domain::Timestamp::now();
        match store.expire_reservations(now, 500).await {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(orders = expired.len(), "reservations expired");
                metrics::counter!("hawker_reservations_expired_total")
                    .increment(expired.len() as u64);
                let sales: std::collections::HashSet<_> =
                    expired.into_iter().filter_map(|e| e.sale).collect();
                for sale in sales {
                    state.units_returned(&sale).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "selling clock: cannot expire reservations"),
        }
        let due = match store.due_sales(now).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "selling clock: cannot read due sales");
                continue;
            }
        };
        for (sale, owner) in due {
            let result = if sale.ends_at <= now {
                store.close_sale(&sale.id, SaleStatus::Ended, &owner).await
            } else {
                match store.start_sale(&sale.id, &owner).await {
                    Err(store::StoreError::InsufficientStock { on_hand }) => {
                        tracing::warn!(sale = %sale.id, on_hand, "sale cannot start: not enough stock; cancelled");
                        store
                            .close_sale(&sale.id, SaleStatus::Cancelled, &owner)
                            .await
                    }
                    other => other,
                }
            };
            match result {
                Ok(s) => {
                    tracing::info!(sale = %s.id, status = s.status.as_str(), "selling clock");
                    state.sale_events().started_or_ended(&s).await;
                }
                // Another node or the seller got there first.
                Err(store::StoreError::WrongState) => {}
                Err(e) => tracing::warn!(sale = %sale.id, error = %e, "selling clock"),
            }
        }
    }
}

/// Forgets the cached credentials of every user whose sign-ins changed on any
/// node, and takes their rights from room sockets opened with a credential
/// that no longer signs in, until `shutdown`. `sessions` was subscribed to before the server took
/// its first request.
pub async fn follow_sessions(
    state: AppState,
    mut sessions: bus::Subscription,
    shutdown: CancellationToken,
) {
    loop {
        let payload = tokio::select! {
            () = shutdown.cancelled() => return,
            payload = sessions.next() => payload,
        };
        let Some(payload) = payload else { return };
        match domain::event::SessionEvent::decode(&payload) {
            Ok(domain::event::SessionEvent::CredentialsChanged { user }) => {
                state.credentials().forget_user(&user);
                metrics::counter!("api_credentials_forgotten_total").increment(1);
                // Room sockets opened with a credential that no longer
                // signs in lose the user's rights.
                match state.store().credential_hashes(&user).await {
                    Ok(valid) => state.hub().signed_out(&user, valid.into_iter().collect()),
                    Err(e) => {
                        tracing::warn!(%user, error = %e, "cannot tell which sockets signed out")
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "a sessions event was skipped"),
        }
    }
}

/// Throttle keys found closed, each until its window reopens.
#[derive(Default)]
pub(crate) struct ClosedKeys(
    std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
);

impl ClosedKeys {
    /// Seconds until `key` reopens, if it is closed.
    pub(crate) fn closed_for(&self, key: &str) -> Option<u64> {
        let keys = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let left = keys
            .get(key)?
            .checked_duration_since(std::time::Instant::now())?;
        Some(left.as_secs().max(1))
    }

    /// `key` is closed for `seconds`.
    pub(crate) fn close(&self, key: &str, seconds: u64) {
        let mut keys = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if keys.len() >= 100_000 {
            keys.retain(|_, until| *until > now);
        }
        keys.insert(key.to_owned(), now + Duration::from_secs(seconds));
    }
}

/// The window of the sign-in throttles.
pub(crate) const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The window of the sign-up throttle.
pub(crate) const SIGN_UP_WINDOW: Duration = Duration::from_secs(3600);

/// Deletes expired sessions, throttle windows and idempotency keys every hour
/// until `shutdown`.
pub async fn sweep_sessions(store: Store, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {
                match store.delete_expired_sessions(domain::Timestamp::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "expired sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "could not remove expired sessions"),
                }
                if let Err(e) = store.delete_expired_throttles(SIGN_UP_WINDOW.max(SIGN_IN_WINDOW)).await {
                    tracing::warn!(error = %e, "could not remove old throttle windows");
                }
                if let Err(e) = store.delete_expired_idempotency_keys().await {
                    tracing::warn!(error = %e, "could not remove expired idempotency keys");
                }
            }
        }
    }
}
