//! Settings, from lowest to highest precedence: built-in defaults, the TOML file
//! given by `--config`, `HAWKER_*` environment variables, command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "hawker",
    version,
    about = "Self-hosted live shopping: stream, chat and sell in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start Hawker: the HTTP API on embedded SQLite unless --database-url says otherwise
    Serve(Settings),
    /// Start Hawker with a demo shop, products and accounts (safe to run again)
    Demo(Settings),
    /// Apply the database migrations this binary carries, then exit
    Migrate(Settings),
    /// Run the payments sandbox: a card processor's test mode that nodes reach
    /// over HTTP (--payments-url), with a durable ledger and signed webhooks
    PaymentsSandbox(SandboxArgs),
    /// Administrative tasks
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an account (an admin with --admin)
    CreateUser(CreateUser),
    /// Compare the payment provider's charges and refunds with the store's,
    /// fix what can be fixed safely and report the rest
    Reconcile(Reconcile),
}

#[derive(Args)]
pub struct Reconcile {
    /// How far back to look, in hours
    #[arg(long, default_value_t = 24)]
    pub since_hours: u64,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Args)]
pub struct SandboxArgs {
    /// Address the sandbox's API listens on
    #[arg(long, env = "HAWKER_SANDBOX_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    /// The ledger file: every charge, refund, key and webhook, kept across restarts
    #[arg(
        long,
        env = "HAWKER_SANDBOX_LEDGER",
        default_value = "./hawker-data/payments-sandbox.jsonl"
    )]
    pub ledger: PathBuf,
    /// Where webhooks go (a node, or the load balancer before the nodes);
    /// several, comma-separated, are tried in turn
    #[arg(long, env = "HAWKER_SANDBOX_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_url: Vec<String>,
    /// The secret webhooks are signed with: the nodes' --payment-webhook-secret
    #[arg(long, env = "HAWKER_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: String,
    /// The bearer token callers must send: the nodes' --payments-api-key
    #[arg(long, env = "HAWKER_PAYMENTS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Milliseconds an asynchronous test card takes to settle
    #[arg(long, default_value_t = 1000)]
    pub async_delay_ms: u64,
    /// Milliseconds before the first webhook retry; doubled on each attempt
    #[arg(long, default_value_t = 500)]
    pub retry_base_ms: u64,
    /// Share of calls (0 to 1) that get a random fault: a delay, a failure
    /// before or after the work, no answer, the webhook first or twice
    #[arg(long, default_value_t = 0.0)]
    pub chaos_rate: f64,
    /// Seed of the faults' random choices
    #[arg(long, default_value_t = 1)]
    pub chaos_seed: u64,
    /// Log filter
    #[arg(long, env = "HAWKER_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Args)]
pub struct CreateUser {
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub display_name: String,
    /// Make the account an administrator
    #[arg(long)]
    pub admin: bool,
    /// Read the password from the first line of standard input; otherwise one is
    /// generated and printed once
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting, each optional here so that the layers can be merged; the
/// defaults are applied in [`Settings::resolve`].
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with any of these settings (same names, with underscores)
    #[arg(long, env = "HAWKER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database and uploaded images [default: ./hawker-data]
    #[arg(long, env = "HAWKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the HTTP server listens on [default: 127.0.0.1:8080]
    #[arg(long, env = "HAWKER_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address the RTMP ingest listens on [default: 127.0.0.1:1935]
    #[arg(long, env = "HAWKER_RTMP_ADDR")]
    pub rtmp_addr: Option<SocketAddr>,
    /// Days a recording is kept; 0 keeps them until deleted [default: 0]
    #[arg(long, env = "HAWKER_RECORDING_RETENTION_DAYS")]
    pub recording_retention_days: Option<u64>,
    /// Milliseconds an HTTP-FLV viewer waits to write several frames at once;
    /// fewer writes per viewer for that much latency [default: 0]
    #[arg(long, env = "HAWKER_HTTPFLV_MERGE_MS")]
    pub httpflv_merge_ms: Option<u64>,
    /// Seconds a stream whose encoder went away waits for it to come back
    /// before it ends; a reconnect within them continues the same playlist;
    /// 0 ends the stream with its encoder [default: 5]
    #[arg(long, env = "HAWKER_RECONNECT_GRACE")]
    pub reconnect_grace: Option<u64>,
    /// LL-HLS partial segment target, in milliseconds [default: 200]
    #[arg(long, env = "HAWKER_HLS_PART_MS")]
    pub hls_part_ms: Option<u64>,
    /// Milliseconds between reads of the encoders' sockets, all together;
    /// fewer wake-ups for at most that much latency [default: 10]
    #[arg(long, env = "HAWKER_RTMP_TICK_MS")]
    pub rtmp_tick_ms: Option<u64>,
    /// Where images and recordings go: file:///path of a folder every node
    /// shares, or s3://bucket[/prefix] (credentials and region from the
    /// AWS_* variables) [default: the data directory]
    #[arg(long, env = "HAWKER_OBJECT_STORE_URL", hide_env_values = true)]
    pub object_store_url: Option<String>,
    /// http(s)://host:port of the S3-compatible server an s3:// URL is on
    /// [default: AWS]
    #[arg(long, env = "HAWKER_OBJECT_STORE_ENDPOINT")]
    pub object_store_endpoint: Option<String>,
    /// A secret every node of the cluster is given, with which a node pulls
    /// a stream from the node its encoder reached, to play it from every
    /// node [default: none: a stream plays from its own node only]
    #[arg(long, env = "HAWKER_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// http://host:port at which the other nodes reach this one
    /// [default: http://{http-addr}]
    #[arg(long, env = "HAWKER_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// postgres://user@host/db to use PostgreSQL [default: SQLite in the data directory]
    #[arg(long, env = "HAWKER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// nats://host:port of the cluster's NATS (with JetStream): every node
    /// given the same serves the same rooms [default: a bus inside this
    /// process, for one node alone]
    #[arg(long, env = "HAWKER_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Prefix of the cluster's NATS subjects and streams, so that several
    /// clusters can share one NATS [default: hawker]
    #[arg(long, env = "HAWKER_NATS_PREFIX")]
    pub nats_prefix: Option<String>,
    /// Database connections (PostgreSQL) or reader connections (SQLite) [default: 8]
    #[arg(long, env = "HAWKER_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
    /// Log format [default: text]
    #[arg(long, env = "HAWKER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, such as `info` or `hawker=debug,sqlx=warn` [default: info]
    #[arg(long, env = "HAWKER_LOG")]
    pub log: Option<String>,
    /// Seconds that requests in flight get to finish on shutdown [default: 10]
    #[arg(long, env = "HAWKER_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Seconds after which a request is answered with `timeout` [default: 30]
    #[arg(long, env = "HAWKER_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// Days a sign-in lasts [default: 30]
    #[arg(long, env = "HAWKER_SESSION_DAYS")]
    pub session_days: Option<u64>,
    /// Mark the session cookie Secure; set it when serving over HTTPS [default: false]
    #[arg(long, env = "HAWKER_SECURE_COOKIES", num_args = 0..=1, default_missing_value = "true")]
    pub secure_cookies: Option<bool>,
    /// Largest JSON request body, in bytes [default: 1048576]
    #[arg(long, env = "HAWKER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest image upload, in bytes [default: 10485760]
    #[arg(long, env = "HAWKER_MAX_IMAGE_BYTES")]
    pub max_image_bytes: Option<usize>,
    /// Failed sign-ins to one account from one address before each next
    /// try from there waits, 1 s and doubling [default: 5]
    #[arg(long, env = "HAWKER_SIGN_IN_FREE_FAILURES")]
    pub sign_in_free_failures: Option<u32>,
    /// Failed sign-ins from one client address per 15 minutes, past which
    /// that address is refused [default: 50]
    #[arg(long, env = "HAWKER_SIGN_IN_FAILURES_PER_ADDRESS")]
    pub sign_in_failures_per_address: Option<u32>,
    /// Accounts created from one client address per hour [default: 10]
    #[arg(long, env = "HAWKER_SIGN_UPS_PER_ADDRESS")]
    pub sign_ups_per_address: Option<u32>,
    /// Minutes a reserved order waits for payment before its stock returns [default: 10]
    #[arg(long, env = "HAWKER_RESERVATION_MINUTES")]
    pub reservation_minutes: Option<u64>,
    /// Seconds a flash-sale tap's order waits for payment [default: 180]
    #[arg(long, env = "HAWKER_FLASH_RESERVATION_SECONDS")]
    pub flash_reservation_seconds: Option<u64>,
    /// Unpaid reserved orders one buyer may hold [default: 10]
    #[arg(long, env = "HAWKER_MAX_UNPAID_ORDERS")]
    pub max_unpaid_orders: Option<i64>,
    /// Units in the unpaid reserved orders of one buyer [default: 50]
    #[arg(long, env = "HAWKER_MAX_UNPAID_UNITS")]
    pub max_unpaid_units: Option<i64>,
    /// Unpaid reserved orders placed from one client address [default: 30]
    #[arg(long, env = "HAWKER_MAX_UNPAID_ORDERS_PER_ADDRESS")]
    pub max_unpaid_orders_per_address: Option<i64>,
    /// The payment provider's API, such as a `hawker payments-sandbox`; every
    /// node of a deployment needs the same [default: a sandbox inside this
    /// process, its ledger in the data directory]
    #[arg(long, env = "HAWKER_PAYMENTS_URL")]
    pub payments_url: Option<String>,
    /// The bearer token the payment provider's API takes
    #[arg(long, env = "HAWKER_PAYMENTS_API_KEY", hide_env_values = true)]
    pub payments_api_key: Option<String>,
    /// Secret the payment provider signs its webhooks with; give every node
    /// the same one [default: random per process]
    #[arg(long, env = "HAWKER_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub payment_webhook_secret: Option<String>,
    /// Milliseconds one call to the payment provider may take [default: 10000]
    #[arg(long, env = "HAWKER_PAYMENTS_TIMEOUT_MS")]
    pub payments_timeout_ms: Option<u64>,
    /// Seconds after which a payment or refund with no answer from the
    /// provider is settled from the provider's record [default: 60]
    #[arg(long, env = "HAWKER_PAYMENTS_SETTLE_AFTER")]
    pub payments_settle_after: Option<u64>,
    /// Minutes between reconciliations of the last day's payments and
    /// refunds with the provider's [default: 5]
    #[arg(long, env = "HAWKER_RECONCILE_MINUTES")]
    pub reconcile_minutes: Option<u64>,
    /// Open RTMP connections, in all [default: 1000]
    #[arg(long, env = "HAWKER_RTMP_MAX_CONNECTIONS")]
    pub rtmp_max_connections: Option<usize>,
    /// Open RTMP connections from one address [default: 10]
    #[arg(long, env = "HAWKER_RTMP_MAX_CONNECTIONS_PER_ADDRESS")]
    pub rtmp_max_connections_per_address: Option<usize>,
    /// Seconds an RTMP connection has to publish after it is accepted,
    /// however busy it keeps itself [default: 10]
    #[arg(long, env = "HAWKER_RTMP_PUBLISH_TIMEOUT")]
    pub rtmp_publish_timeout: Option<u64>,
    /// Longest RTMP message, in bytes, before the connection publishes
    /// [default: 65536]
    #[arg(long, env = "HAWKER_RTMP_MAX_MESSAGE_BEFORE_PUBLISH")]
    pub rtmp_max_message_before_publish: Option<usize>,
    /// Longest RTMP message, in bytes, once publishing: a keyframe must fit
    /// [default: 8388608]
    #[arg(long, env = "HAWKER_RTMP_MAX_MESSAGE")]
    pub rtmp_max_message: Option<usize>,
    /// AMF values one RTMP command or metadata message may hold [default: 1024]
    #[arg(long, env = "HAWKER_RTMP_MAX_AMF_VALUES")]
    pub rtmp_max_amf_values: Option<usize>,
    /// Bytes for an encoder that it has not read, past which it is
    /// disconnected [default: 1048576]
    #[arg(long, env = "HAWKER_RTMP_MAX_PENDING_OUTPUT")]
    pub rtmp_max_pending_output: Option<usize>,
    /// Seconds a client has to send a request's headers [default: 10]
    #[arg(long, env = "HAWKER_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<u64>,
    /// Open HTTP connections, in all, WebSockets and HTTP-FLV included
    /// [default: 16000]
    #[arg(long, env = "HAWKER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open HTTP connections from one address (a trusted proxy's count in
    /// the total only) [default: 256]
    #[arg(long, env = "HAWKER_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Room WebSockets from one client address [default: 100]
    #[arg(long, env = "HAWKER_MAX_WEBSOCKETS_PER_ADDRESS")]
    pub max_websockets_per_address: Option<usize>,
    /// HTTP-FLV viewers from one client address [default: 20]
    #[arg(long, env = "HAWKER_MAX_FLV_VIEWERS_PER_ADDRESS")]
    pub max_flv_viewers_per_address: Option<usize>,
    /// Comma-separated addresses and ranges (CIDR) of the proxies in front:
    /// from them, the client's address is read from Forwarded or
    /// X-Forwarded-For [default: none]
    #[arg(long, env = "HAWKER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// A bearer token /metrics asks for [default: none: /metrics is open]
    #[arg(long, env = "HAWKER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Group commit for flash-sale purchases; `false` only to measure the naive
    /// path against it (bench/flash-sale) [default: true]
    #[arg(long, env = "HAWKER_INVENTORY_BATCHING")]
    pub inventory_batching: Option<bool>,
}

/// Settings with every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub rtmp_addr: SocketAddr,
    /// Recordings older than this are deleted; `None` keeps them.
    pub recording_retention: Option<Duration>,
    pub database_url: Option<String>,
    pub nats: Option<bus::NatsSettings>,
    pub db_pool_size: u32,
    pub log_format: LogFormat,
    pub log: String,
    pub shutdown_grace: Duration,
    pub api: api::ApiConfig,
}

macro_rules! merge {
    ($high:expr, $low:expr, $($field:ident),*) => {
        Settings {
            config: $high.config.clone(),
            $($field: $high.$field.clone().or_else(|| $low.$field.clone()),)*
        }
    };
}

impl Settings {
    /// Applies the TOML file under these settings, then the defaults.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        let s = merge!(
            self,
            file,
            data_dir,
            http_addr,
            rtmp_addr,
            recording_retention_days,
            hls_part_ms,
            rtmp_tick_ms,
            httpflv_merge_ms,
            reconnect_grace,
            object_store_url,
            object_store_endpoint,
            cluster_secret,
            advertise_url,
            database_url,
            nats_url,
            nats_prefix,
            db_pool_size,
            log_format,
            log,
            shutdown_grace,
            request_timeout,
            session_days,
            secure_cookies,
            max_body_bytes,
            max_image_bytes,
            sign_in_free_failures,
            sign_in_failures_per_address,
            sign_ups_per_address,
            reservation_minutes,
            flash_reservation_seconds,
            max_unpaid_orders,
            max_unpaid_units,
            max_unpaid_orders_per_address,
            payments_url,
            payments_api_key,
            payment_webhook_secret,
            payments_timeout_ms,
            payments_settle_after,
            reconcile_minutes,
            rtmp_max_connections,
            rtmp_max_connections_per_address,
            rtmp_publish_timeout,
            rtmp_max_message_before_publish,
            rtmp_max_message,
            rtmp_max_amf_values,
            rtmp_max_pending_output,
            header_read_timeout,
            max_connections,
            max_connections_per_address,
            max_websockets_per_address,
            max_flv_viewers_per_address,
            trusted_proxies,
            metrics_token,
            inventory_batching
        );
        let data_dir = s
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./hawker-data"));
        let mut api = api::ApiConfig::new(data_dir.clone());
        apply_limits(&s, &mut api)?;
        if let Some(days) = s.session_days {
            api.session_ttl = Duration::from_secs(days.max(1) * 24 * 3600);
        }
        if let Some(secure) = s.secure_cookies {
            api.secure_cookies = secure;
        }
        if let Some(n) = s.max_body_bytes {
            api.max_body_bytes = n;
        }
        if let Some(n) = s.max_image_bytes {
            api.max_image_bytes = n;
        }
        if let Some(secs) = s.request_timeout {
            api.request_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = s.sign_in_free_failures {
            api.sign_in_free_failures = n;
        }
        if let Some(n) = s.sign_in_failures_per_address {
            api.sign_in_failures_per_address = n.max(1);
        }
        if let Some(n) = s.sign_ups_per_address {
            api.sign_ups_per_address = n.max(1);
        }
        if let Some(minutes) = s.reservation_minutes {
            api.reservation_window = Duration::from_secs(minutes.max(1) * 60);
        }
        api.payments_url = s.payments_url.filter(|s| !s.is_empty());
        api.payments_api_key = s.payments_api_key.filter(|s| !s.is_empty());
        api.payment_webhook_secret = s.payment_webhook_secret.filter(|s| !s.is_empty());
        if let Some(ms) = s.payments_timeout_ms {
            api.payments_timeout = Duration::from_millis(ms.max(100));
        }
        if let Some(secs) = s.payments_settle_after {
            api.upkeep.settle_after = Duration::from_secs(secs.max(1));
        }
        if let Some(minutes) = s.reconcile_minutes {
            api.upkeep.reconcile_every = Duration::from_secs(minutes.max(1) * 60);
        }
        if let Some(batching) = s.inventory_batching {
            api.inventory_batching = batching;
        }
        api.object_store_url = s.object_store_url;
        api.object_store_endpoint = s.object_store_endpoint;
        api.cluster_secret = s.cluster_secret.filter(|s| !s.is_empty());
        if let Some(url) = s.advertise_url {
            api.media.advertise_url = url.trim_end_matches('/').to_owned();
        }
        if let Some(seconds) = s.reconnect_grace {
            api.media.reconnect_grace = Duration::from_secs(seconds.min(300));
        }
        if let Some(ms) = s.httpflv_merge_ms {
            api.media.flv_merge = Duration::from_millis(ms.min(1000));
        }
        if let Some(ms) = s.rtmp_tick_ms {
            api.media.ingest_tick = Duration::from_millis(ms.clamp(1, 100));
        }
        if let Some(ms) = s.hls_part_ms {
            api.media.hls.part_target_ms = ms.clamp(50, 2000) as i64;
        }
        Ok(Config {
            data_dir,
            http_addr: s
                .http_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            rtmp_addr: s
                .rtmp_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1935))),
            recording_retention: s
                .recording_retention_days
                .filter(|d| *d > 0)
                .map(|d| Duration::from_secs(d * 24 * 3600)),
            database_url: s.database_url.filter(|u| !u.is_empty()),
            nats: s
                .nats_url
                .filter(|u| !u.is_empty())
                .map(|url| bus::NatsSettings {
                    url,
                    prefix: s.nats_prefix.unwrap_or_else(|| "hawker".to_owned()),
                }),
            db_pool_size: s.db_pool_size.unwrap_or(8).max(1),
            log_format: s.log_format.unwrap_or(LogFormat::Text),
            log: s.log.unwrap_or_else(|| "info".to_owned()),
            shutdown_grace: Duration::from_secs(s.shutdown_grace.unwrap_or(10)),
            api,
        })
    }
}

/// The limits of the ports facing the internet (`docs/operations.md`).
fn apply_limits(s: &Settings, api: &mut api::ApiConfig) -> anyhow::Result<()> {
    let rtmp = &mut api.media.rtmp;
    let set = |slot: &mut usize, value: Option<usize>| {
        if let Some(n) = value {
            *slot = n.max(1);
        }
    };
    set(&mut rtmp.max_connections, s.rtmp_max_connections);
    set(
        &mut rtmp.max_connections_per_address,
        s.rtmp_max_connections_per_address,
    );
    set(
        &mut rtmp.max_message_before_publish,
        s.rtmp_max_message_before_publish,
    );
    set(&mut rtmp.max_message, s.rtmp_max_message);
    set(&mut rtmp.max_amf_values, s.rtmp_max_amf_values);
    set(&mut rtmp.max_pending_output, s.rtmp_max_pending_output);
    if let Some(secs) = s.rtmp_publish_timeout {
        rtmp.publish_timeout = Duration::from_secs(secs.max(1));
    }
    let http = &mut api.http;
    if let Some(secs) = s.header_read_timeout {
        http.header_read_timeout = Duration::from_secs(secs.max(1));
    }
    set(&mut http.max_connections, s.max_connections);
    set(
        &mut http.max_connections_per_address,
        s.max_connections_per_address,
    );
    set(
        &mut http.max_websockets_per_address,
        s.max_websockets_per_address,
    );
    set(
        &mut http.max_flv_viewers_per_address,
        s.max_flv_viewers_per_address,
    );
    if let Some(ranges) = &s.trusted_proxies {
        api.trusted_proxies = ranges
            .iter()
            .filter(|r| !r.trim().is_empty())
            .map(|r| {
                domain::net::Cidr::parse(r).map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    api.metrics_token = s.metrics_token.clone().filter(|t| !t.is_empty());
    if let Some(secs) = s.flash_reservation_seconds {
        api.flash_reservation_window = Duration::from_secs(secs.max(10));
    }
    let caps = &mut api.unpaid_caps;
    for (slot, value) in [
        (&mut caps.orders_per_buyer, s.max_unpaid_orders),
        (&mut caps.units_per_buyer, s.max_unpaid_units),
        (
            &mut caps.orders_per_address,
            s.max_unpaid_orders_per_address,
        ),
    ] {
        if let Some(n) = value {
            *slot = n.max(1);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hawker.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9000\"\nlog = \"debug\"\ndb_pool_size = 3\n",
        )
        .unwrap();
        let cli = Settings {
            config: Some(file),
            http_addr: Some("127.0.0.1:9100".parse().unwrap()),
            ..Settings::default()
        };
        let c = cli.resolve().unwrap();
        assert_eq!(c.http_addr.port(), 9100);
        assert_eq!(c.log, "debug");
        assert_eq!(c.db_pool_size, 3);
        assert_eq!(c.data_dir, PathBuf::from("./hawker-data"));
    }

    #[test]
    fn unknown_file_settings_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hawker.toml");
        std::fs::write(&file, "http_adr = \"127.0.0.1:9000\"\n").unwrap();
        let cli = Settings {
            config: Some(file),
            ..Settings::default()
        };
        let err = format!("{:#}", cli.resolve().unwrap_err());
        assert!(err.contains("http_adr"), "{err}");
    }

    /// `--help` states each default; this keeps the text and the code in step.
    #[test]
    fn help_lists_the_real_defaults_and_variables() {
        let c = Settings::default().resolve().unwrap();
        let mut cmd = Cli::command();
        let serve = cmd.find_subcommand_mut("serve").unwrap();
        let help = serve.render_long_help().to_string();
        for expected in [
            format!("[default: {}]", c.data_dir.display()),
            format!("[default: {}]", c.http_addr),
            format!("[default: {}]", c.db_pool_size),
            format!("[default: {}]", c.log),
            format!("[default: {}]", c.shutdown_grace.as_secs()),
            format!("[default: {}]", c.api.request_timeout.as_secs()),
            format!("[default: {}]", c.api.session_ttl.as_secs() / 86400),
            format!("[default: {}]", c.api.secure_cookies),
            format!("[default: {}]", c.api.max_body_bytes),
            format!("[default: {}]", c.api.max_image_bytes),
            format!("[default: {}]", c.api.sign_in_free_failures),
            format!("[default: {}]", c.api.sign_in_failures_per_address),
            format!("[default: {}]", c.api.sign_ups_per_address),
            format!("[default: {}]", c.api.reservation_window.as_secs() / 60),
            format!("[default: {}]", c.api.flash_reservation_window.as_secs()),
            format!("[default: {}]", c.api.unpaid_caps.orders_per_buyer),
            format!("[default: {}]", c.api.unpaid_caps.units_per_buyer),
            format!("[default: {}]", c.api.unpaid_caps.orders_per_address),
            format!("[default: {}]", c.api.inventory_batching),
            format!("[default: {}]", c.api.payments_timeout.as_millis()),
            format!("[default: {}]", c.api.upkeep.settle_after.as_secs()),
            format!("[default: {}]", c.api.upkeep.reconcile_every.as_secs() / 60),
            format!("[default: {}]", c.api.media.rtmp.max_connections),
            format!(
                "[default: {}]",
                c.api.media.rtmp.max_connections_per_address
            ),
            format!("[default: {}]", c.api.media.rtmp.publish_timeout.as_secs()),
            format!("[default: {}]", c.api.media.rtmp.max_message_before_publish),
            format!("[default: {}]", c.api.media.rtmp.max_message),
            format!("[default: {}]", c.api.media.rtmp.max_amf_values),
            format!("[default: {}]", c.api.media.rtmp.max_pending_output),
            format!("[default: {}]", c.api.http.header_read_timeout.as_secs()),
            format!("[default: {}]", c.api.http.max_connections),
            format!("[default: {}]", c.api.http.max_connections_per_address),
            format!("[default: {}]", c.api.http.max_websockets_per_address),
            format!("[default: {}]", c.api.http.max_flv_viewers_per_address),
        ] {
            assert!(help.contains(&expected), "--help lacks {expected}");
        }
        for var in [
            "HAWKER_DATA_DIR",
            "HAWKER_HTTP_ADDR",
            "HAWKER_DATABASE_URL",
            "HAWKER_CONFIG",
            "HAWKER_LOG_FORMAT",
        ] {
            assert!(help.contains(var), "--help lacks {var}");
        }
    }
}
