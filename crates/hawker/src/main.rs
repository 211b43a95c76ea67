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

use crate::config::{AdminCommand, Cli, Command, Config, LogFormat};

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

fn init_logs(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter {:?}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
