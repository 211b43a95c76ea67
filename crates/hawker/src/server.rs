//! Start-up and shutdown: the store opened and migrated, the node
//! (`hawker-node`, which starts every long-running task) run until a signal.

use std::time::Instant;

use anyhow::Context;
use domain::account::Role;
use store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let options = StoreOptions {
        max_connections: config.db_pool_size,
        ..StoreOptions::default()
    };
    Store::open(config.database_url.as_deref(), &config.data_dir, &options)
        .await
        .context("opening the database")
}

/// A random 24-character password for generated accounts.
pub fn generate_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// On a database without accounts, creates an admin and writes its credentials
/// to a file only the owner can read (never to the log).
async fn first_run_admin(store: &Store, config: &Config) -> anyhow::Result<()> {
    if store.count_users().await? > 0 {
        return Ok(());
    }
    let password = generate_password()?;
    let email = "admin@hawker.localhost";
    match api::create_account(store, email, "Admin", &password, Role::Admin).await {
        Ok(_) => {}
        // Another node starting on the same empty database made it first.
        Err(e) if e.code == api::Code::EmailTaken => return Ok(()),
        Err(e) => anyhow::bail!("creating the first admin: {}", e.message),
    }
    let path = config.data_dir.join("initial-admin.txt");
    write_private(&path, &format!("email: {email}\npassword: {password}\n"))?;
    tracing::info!(file = %path.display(), "created the first admin account; its password is in the file");
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Runs the server until a signal; with `demo`, seeds the demo first and keeps a
/// simulated crowd selling in its room.
pub async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = open_store(&config).await?;
    let applied = store.migrate().await.context("migrating the database")?;
    if !applied.is_empty() {
        tracing::info!(
            ?applied,
            backend = store.backend().as_str(),
            "applied migrations"
        );
    }
    first_run_admin(&store, &config).await?;
    let demo_room = if demo {
        Some(
            crate::demo::seed(&store, &config)
                .await
                .context("seeding the demo")?,
        )
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("listening on {}", config.http_addr))?;
    let addr = listener.local_addr()?;
    let rtmp = tokio::net::TcpListener::bind(config.rtmp_addr)
        .await
        .with_context(|| format!("listening for RTMP on {}", config.rtmp_addr))?;
    let rtmp_addr = rtmp.local_addr()?;

    let shutdown = CancellationToken::new();
    let settings = node::Settings {
        api: config.api.clone(),
        shutdown_grace: config.shutdown_grace,
        recording_retention: config.recording_retention,
        nats: config.nats.clone(),
    };
    let mut node = node::Node::start(store.clone(), settings, listener, rtmp, shutdown.clone())
        .await
        .context("starting the node")?;
    if let Some(room) = demo_room {
        node.spawn(crate::demo::broadcast(
            node.state.media().clone(),
            rtmp_addr,
            room,
            shutdown.clone(),
        ));
        node.spawn(loadgen::crowd::flash_sales(
            crate::demo::crowd(addr),
            shutdown.clone(),
        ));
        node.spawn(loadgen::crowd::chat(
            crate::demo::chatter(addr),
            shutdown.clone(),
        ));
    }
    // Register the handlers before saying we are ready: a SIGTERM that arrives
    // right after must drain, not kill.
    node.spawn(stop_on_signal(Signals::register()?, shutdown.clone()));

    tracing::info!(
        %addr,
        rtmp = %rtmp_addr,
        backend = store.backend().as_str(),
        data_dir = %config.data_dir.display(),
        ms = started.elapsed().as_millis() as u64,
        "Hawker is ready at http://{addr}"
    );
    let served = node.run().await;
    store.close().await;
    tracing::info!("stopped");
    served.context("serving HTTP")
}

/// SIGINT and SIGTERM, listened for from the moment they are registered.
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM (or returns when it is cancelled
/// elsewhere).
pub(crate) async fn stop_on_signal(mut signals: Signals, shutdown: CancellationToken) {
    tokio::select! {
        _ = signals.interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        _ = signals.terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        () = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}
