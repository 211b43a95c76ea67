//! The `hawker` binary: reads settings, starts the parts, and stops them all on
//! one cancellation token when SIGINT or SIGTERM arrives.

/// glibc's allocator spends a fifth of a busy server's time in its arena locks;
/// mimalloc's per-thread heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod demo;
mod server;

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use domain::account::Role;

use crate::config::{AdminCommand, Cli, Command, Config, LogFormat, SandboxArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hawker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hawker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(settings) => {
            let config = settings.resolve()?;
            init_logs(&config)?;
            server::serve(config, false).await
        }
        Command::Demo(settings) => {
            let config = settings.resolve()?;
            init_logs(&config)?;
            server::serve(config, true).await
        }
        Command::Migrate(settings) => {
            let config = settings.resolve()?;
            init_logs(&config)?;
            let store = server::open_store(&config).await?;
            let applied = store.migrate().await.context("migrating the database")?;
            if applied.is_empty() {
                println!("The {} database is up to date.", store.backend().as_str());
            } else {
                println!(
                    "Applied migrations {applied:?} to the {} database.",
                    store.backend().as_str()
                );
            }
            store.close().await;
            Ok(())
        }
        Command::PaymentsSandbox(args) => sandbox(args).await,
        Command::Admin {
            command: AdminCommand::Reconcile(args),
        } => {
            let config = args.settings.resolve()?;
            init_logs(&config)?;
            reconcile(&config, args.since_hours).await
        }
        Command::Admin {
            command: AdminCommand::CreateUser(args),
        } => {
            let config = args.settings.resolve()?;
            init_logs(&config)?;
            let store = server::open_store(&config).await?;
            store.migrate().await.context("migrating the database")?;
            let (password, generated) = if args.password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (server::generate_password()?, true)
            };
            let role = if args.admin { Role::Admin } else { Role::Buyer };
            let user =
                api::create_account(&store, &args.email, &args.display_name, &password, role)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {}", e.code.as_str(), e.message))?;
            println!(
                "Created {} {} ({}).",
                role.as_str(),
                user.email.as_str(),
                user.id
            );
            if generated {
                println!("Password (shown once): {password}");
            }
            store.close().await;
            Ok(())
        }
    }
}

/// `hawker payments-sandbox`: serves until SIGINT or SIGTERM.
async fn sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    init_filter(&args.log, LogFormat::Text)?;
    if let Some(dir) = args.ledger.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut settings = sandbox::Settings::new(args.webhook_secret.into_bytes());
    settings.ledger = Some(args.ledger);
    settings.webhook_urls = args.webhook_url;
    settings.api_key = args.api_key.filter(|k| !k.is_empty());
    settings.async_delay = std::time::Duration::from_millis(args.async_delay_ms);
    settings.retry_base = std::time::Duration::from_millis(args.retry_base_ms.max(1));
    settings.chaos_rate = args.chaos_rate.clamp(0.0, 1.0);
    settings.chaos_seed = args.chaos_seed;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sandbox =
        sandbox::Sandbox::open(settings, shutdown.clone()).context("opening the ledger")?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    tracing::info!(addr = %args.addr, "payments sandbox listening");
    tokio::spawn(server::stop_on_signal(
        server::Signals::register()?,
        shutdown,
    ));
    sandbox::serve(listener, sandbox).await?;
    Ok(())
}

/// `hawker admin reconcile`: one reconciliation of the last `hours`, printed
/// as JSON; fails when something could not be fixed.
async fn reconcile(config: &Config, hours: u64) -> anyhow::Result<()> {
    let url = config.api.payments_url.clone().context(
        "reconcile needs --payments-url: a node's own sandbox is reconciled by the node itself",
    )?;
    let store = server::open_store(config).await?;
    let provider = api::payments::Provider::new(api::payments::ProviderSettings {
        url,
        api_key: config.api.payments_api_key.clone(),
        webhook_secret: Vec::new(),
        timeout: config.api.payments_timeout,
    });
    let to = domain::Timestamp::now();
    let from = to.plus_millis(-((hours.max(1) * 3600 * 1000) as i64));
    let report = api::payments::upkeep::reconcile(&store, &provider, from, to)
        .await
        .context("reconciling")?;
    store.close().await;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.mismatches.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} mismatches could not be fixed", report.mismatches.len())
    }
}

fn init_logs(config: &Config) -> anyhow::Result<()> {
    init_filter(&config.log, config.log_format)
}

fn init_filter(log: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .with_context(|| format!("invalid log filter {log:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
