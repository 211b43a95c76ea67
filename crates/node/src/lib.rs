//! The composition root: one node of Hawker, every part built and every
//! long-running task started in one place, under one cancellation token. The
//! binary runs it and the integration tests start the same thing, so what is
//! tested is what runs.
//!
//! It owns no behaviour of its own: it wires the store, the bus, the live
//! rooms, the video streams, the inventory and the payment provider into the
//! API, and starts the HTTP server, the RTMP listener, the selling clock and
//! the sweepers.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use api::{ApiConfig, AppState, Parts, SaleEvents};
use store::Store;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// What a node is told, beyond the API's own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: ApiConfig,
    /// How long requests in flight may finish after the shutdown begins.
    pub shutdown_grace: Duration,
    /// Recordings older than this are deleted (hourly); kept for ever when `None`.
    pub recording_retention: Option<Duration>,
    /// The cluster's NATS: rooms, shops and sessions shared with the other
    /// nodes. `None`: the bus is in this process, for one node alone.
    pub nats: Option<bus::NatsSettings>,
}

/// A running node.
pub struct Node {
    pub state: AppState,
    /// Where the HTTP API is served.
    pub http_addr: SocketAddr,
    /// Where encoders publish: `rtmp://{rtmp_addr}/live/{stream_key}`.
    pub rtmp_addr: SocketAddr,
    /// The payment provider's API: `--payments-url`, or the sandbox this
    /// node runs inside its process.
    pub payments_url: String,
    shutdown: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    tasks: JoinSet<()>,
}

/// Builds the API's parts on `store` and `bus`, paying through `provider`.
fn assemble(
    store: Store,
    bus: bus::Bus,
    config: ApiConfig,
    objects: objects::Objects,
    provider: api::payments::ProviderSettings,
    shutdown: &CancellationToken,
) -> AppState {
    let sale_events = SaleEvents::new(bus.clone());
    let reserving = |window| store::Reservations {
        window,
        caps: config.unpaid_caps,
    };
    let inventory = store::Inventory::new(
        store.clone(),
        reserving(config.reservation_window),
        reserving(config.flash_reservation_window),
    )
    .observed_by(sale_events.observer());
    let inventory = if config.inventory_batching {
        inventory
    } else {
        inventory.without_batching()
    };
    AppState::new(Parts {
        hub: live::Hub::new(store.clone(), bus.clone(), config.live.clone(), shutdown),
        media: media::Media::new(
            store.clone(),
            bus.clone(),
            objects.clone(),
            config.media.clone(),
        ),
        payments: api::payments::Provider::new(provider),
        objects,
        bus,
        sale_events,
        inventory,
        store,
        config,
    })
}

impl Node {
    /// Builds the node on a migrated `store` and starts it: HTTP on `http`,
    /// RTMP on `rtmp`, the selling clock, the session and recording sweepers.
    /// Everything stops once `shutdown` is cancelled (see [`Node::run`]).
    pub async fn start(
        store: Store,
        mut settings: Settings,
        http: TcpListener,
        rtmp: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let http_addr = http.local_addr()?;
        let rtmp_addr = rtmp.local_addr()?;
        settings.api.rtmp_port = rtmp_addr.port();
        if settings.api.media.advertise_url.is_empty() {
            settings.api.media.advertise_url = format!("http://{http_addr}");
        }
        let mut tasks = JoinSet::new();
        let provider = payments(&settings.api, http_addr, &mut tasks, &shutdown).await?;
        let payments_url = provider.url.clone();
        let upkeep = settings.api.upkeep.clone();
        let bus = match &settings.nats {
            // A node that cannot reach its cluster's NATS does not start: it
            // would serve its rooms to its own viewers only.
            Some(nats) => bus::Bus::nats(nats)
                .await
                .map_err(|e| std::io::Error::other(format!("connecting to NATS: {e}")))?,
            None => bus::Bus::in_process(),
        };
        let objects = objects::Objects::open(
            settings.api.object_store_url.as_deref(),
            settings.api.object_store_endpoint.as_deref(),
            &settings.api.data_dir,
        )
        .map_err(|e| std::io::Error::other(format!("opening the file storage: {e}")))?;
        let state = assemble(
            store.clone(),
            bus,
            settings.api,
            objects,
            provider,
            &shutdown,
        );
        let sessions = state
            .bus()
            .subscribe(&bus::Topic::Sessions)
            .await
            .map_err(std::io::Error::other)?;
        tasks.spawn(api::follow_sessions(
            state.clone(),
            sessions,
            shutdown.clone(),
        ));
        let moves = state
            .bus()
            .subscribe(&bus::Topic::Streams)
            .await
            .map_err(std::io::Error::other)?;
        tasks.spawn(state.media().clone().follow_moves(moves, shutdown.clone()));
        tasks.spawn(state.media().clone().end_lapsed_streams(shutdown.clone()));
        tasks.spawn(api::edge::follow_copies(state.clone(), shutdown.clone()));
        if let Some(fetcher) = api::edge::fetcher(&state) {
            state.media().fetch_streams_with(fetcher);
        }
        tasks.spawn(api::sweep_sessions(store, shutdown.clone()));
        tasks.spawn(api::run_selling_clock(state.clone(), shutdown.clone()));
        tasks.spawn(api::payments::upkeep::run(
            state.clone(),
            upkeep,
            shutdown.clone(),
        ));
        tasks.spawn(media::ingest::serve(
            rtmp,
            state.media().clone(),
            shutdown.clone(),
        ));
        tasks.spawn(keep_recordings(
            state.media().recorder().clone(),
            settings.recording_retention,
            shutdown.clone(),
        ));
        let http = tokio::spawn(api::serve(
            http,
            state.clone(),
            shutdown.clone(),
            settings.shutdown_grace,
        ));
        Ok(Self {
            state,
            http_addr,
            rtmp_addr,
            payments_url,
            shutdown,
            http,
            tasks,
        })
    }

    /// Runs another long-running task of this node (the demo's encoder and
    /// crowd, the signal listener); it must end once the token is cancelled.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// The token that stops the node.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Waits until the HTTP server has drained (after the token is
    /// cancelled, or if it fails), then for every other task.
    pub async fn run(mut self) -> std::io::Result<()> {
        let served = (&mut self.http)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        served
    }
}

/// The payment provider the node pays through: the one at `--payments-url`,
/// or a sandbox of its own on loopback, its ledger in the data directory and
/// its webhooks sent to this node.
async fn payments(
    config: &ApiConfig,
    http: SocketAddr,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> std::io::Result<api::payments::ProviderSettings> {
    let webhook_secret = match &config.payment_webhook_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => {
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
            secret
        }
    };
    let url = match &config.payments_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = if http.ip().is_unspecified() {
                format!("127.0.0.1:{}", http.port())
            } else {
                http.to_string()
            };
            let mut settings = sandbox::Settings::new(webhook_secret.clone());
            settings.ledger = Some(config.data_dir.join("payments-sandbox.jsonl"));
            settings.webhook_urls = vec![format!("http://{host}/api/v1/payments/webhooks/test")];
            settings.api_key = config.payments_api_key.clone();
            settings.async_delay = config.payment_async_delay;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let sandbox = sandbox::Sandbox::open(settings, shutdown.clone())?;
            tasks.spawn(async move {
                if let Err(e) = sandbox::serve(listener, sandbox).await {
                    tracing::error!(error = %e, "the payments sandbox stopped");
                }
            });
            url
        }
    };
    Ok(api::payments::ProviderSettings {
        url,
        api_key: config.payments_api_key.clone(),
        webhook_secret,
        timeout: config.payments_timeout,
    })
}

/// Closes recordings whose node died (any node's, within 40 s), and deletes
/// recordings past their retention, hourly.
async fn keep_recordings(
    recorder: media::record::Recorder,
    retention: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut swept: Option<std::time::Instant> = None;
    loop {
        recorder.recover(media::record::ABANDONED_AFTER).await;
        if let Some(keep) = retention
            && swept.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600))
        {
            recorder.sweep(keep).await;
            swept = Some(std::time::Instant::now());
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}
