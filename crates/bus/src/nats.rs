//! The bus on NATS with JetStream. Under a prefix `p` (one per cluster; tests
//! take one each):
//! - `p.shop.{id}`, `p.sessions`: core NATS broadcasts.
//! - `p.room.{id}.in`: a room's inputs, kept by the stream `p_room_inputs`
//!   (two minutes at most).
//! - `p.room.{id}.log`: a room's numbered batches, kept by `p_room_log` (the
//!   last 1,024 per room, an hour at most); appended with
//!   `Nats-Expected-Last-Subject-Sequence`, so two sequencers cannot both write.
//! - `p.lease.{id}`: who sequences a room, in `p_leases` (one message per
//!   room, gone after [`LEASE`]), taken and renewed the same way.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, HeaderMap, header};
use bytes::Bytes;
use domain::ids::RoomId;
use futures_util::StreamExt;

use crate::{
    AppendError, BusError, Entries, EntriesInner, Entry, LEASE, Start, Subscription,
    SubscriptionInner, Topic,
};

/// Where the cluster's NATS is, and the prefix of its subjects and streams.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    /// Letters, digits, `_` and `-`: `hawker` unless several clusters share
    /// one NATS (the tests do).
    pub prefix: String,
}

/// Batches a room's log keeps.
const LOG_PER_ROOM: i64 = 1024;
const LOG_AGE: Duration = Duration::from_secs(3600);
const INPUT_AGE: Duration = Duration::from_secs(120);
/// The largest batch (the sequencer cuts its batches well below it).
pub const MAX_BATCH_BYTES: i32 = 1 << 20;
/// How long a reader waits before it tries the server again.
const RETRY: Duration = Duration::from_millis(250);

pub(crate) struct Nats {
    client: Client,
    js: Context,
    prefix: String,
    inputs: stream::Stream,
    log: stream::Stream,
    leases: stream::Stream,
}

fn unreachable(e: impl std::fmt::Display) -> BusError {
    BusError::Unreachable(e.to_string())
}

impl Nats {
    pub(crate) async fn connect(settings: &NatsSettings) -> Result<Self, BusError> {
        let prefix = settings.prefix.clone();
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(BusError::Unreachable(format!(
                "the NATS prefix {prefix:?} must be letters, digits, _ and -"
            )));
        }
        let client = async_nats::ConnectOptions::new()
            .name("hawker")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(3)))
            .connect(settings.url.as_str())
            .await
            .map_err(|e| BusError::Unreachable(format!("{}: {e}", settings.url)))?;
        let js = jetstream::new(client.clone());
        let make = |name: &str, subject: &str, per_subject: i64, age: Duration| stream::Config {
            name: format!("{prefix}_{name}"),
            subjects: vec![format!("{prefix}.{subject}")],
            max_messages_per_subject: per_subject,
            max_age: age,
            max_message_size: MAX_BATCH_BYTES,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        };
        let jetstream_error = |e: &dyn std::fmt::Display| {
            BusError::Unreachable(format!("JetStream on {}: {e}", settings.url))
        };
        let inputs = js
            .get_or_create_stream(make("room_inputs", "room.*.in", 10_000, INPUT_AGE))
            .await
            .map_err(|e| jetstream_error(&e))?;
        let log = js
            .get_or_create_stream(make("room_log", "room.*.log", LOG_PER_ROOM, LOG_AGE))
            .await
            .map_err(|e| jetstream_error(&e))?;
        let leases = js
            .get_or_create_stream(make("leases", "lease.*", 1, LEASE))
            .await
            .map_err(|e| jetstream_error(&e))?;
        Ok(Self {
            client,
            js,
            prefix,
            inputs,
            log,
            leases,
        })
    }

    pub(crate) fn ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn subject(&self, topic: &Topic) -> String {
        format!("{}.{}", self.prefix, topic.subject())
    }

    fn log_subject(&self, room: &RoomId) -> String {
        format!("{}.room.{room}.log", self.prefix)
    }

    pub(crate) async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusError> {
        if !self.ready() {
            return Err(BusError::Unreachable("not connected to NATS".into()));
        }
        let subject = self.subject(topic);
        match topic {
            // Kept until the sequencer reads it: answered once JetStream has it.
            Topic::Room(_) => {
                self.js
                    .publish(subject, payload)
                    .await
                    .map_err(unreachable)?
                    .await
                    .map_err(unreachable)?;
            }
            Topic::Shop(_) | Topic::Sessions | Topic::Streams => {
                self.client
                    .publish(subject, payload)
                    .await
                    .map_err(unreachable)?;
            }
        }
        Ok(())
    }

    pub(crate) async fn subscribe(&self, topic: &Topic) -> Result<Subscription, BusError> {
        let subscriber = self
            .client
            .subscribe(self.subject(topic))
            .await
            .map_err(unreachable)?;
        Ok(Subscription(SubscriptionInner::Nats(subscriber)))
    }

    pub(crate) async fn inputs(&self, room: &RoomId, from: Start) -> Result<Entries, BusError> {
        let first = match from {
            Start::After(position) => DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            },
            Start::Recent(age) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::now_utc() - age,
            },
        };
        let subject = self.subject(&Topic::Room(room.clone()));
        Ok(Entries(EntriesInner::Nats(Box::new(
            Reader::open(self.inputs.clone(), subject, first).await?,
        ))))
    }

    pub(crate) async fn log(&self, room: &RoomId) -> Result<Entries, BusError> {
        Ok(Entries(EntriesInner::Nats(Box::new(
            Reader::open(self.log.clone(), self.log_subject(room), DeliverPolicy::All).await?,
        ))))
    }

    pub(crate) async fn last(&self, room: &RoomId) -> Result<Option<Entry>, BusError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self
            .log
            .get_last_raw_message_by_subject(&self.log_subject(room))
            .await
        {
            Ok(message) => Ok(Some(Entry {
                position: message.sequence,
                payload: message.payload,
            })),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unreachable(e)),
        }
    }

    pub(crate) async fn append(
        &self,
        room: &RoomId,
        expected: u64,
        payload: Bytes,
    ) -> Result<u64, AppendError> {
        self.conditional(self.log_subject(room), expected, payload)
            .await
    }

    pub(crate) async fn lease(
        &self,
        room: &RoomId,
        expected: u64,
        holder: &str,
    ) -> Result<u64, AppendError> {
        let subject = format!("{}.lease.{room}", self.prefix);
        self.conditional(subject, expected, Bytes::copy_from_slice(holder.as_bytes()))
            .await
    }

    pub(crate) async fn release(&self, lease: u64) -> Result<(), BusError> {
        self.leases
            .delete_message(lease)
            .await
            .map(|_| ())
            .map_err(unreachable)
    }

    /// Publishes to `subject` if its last message is at `expected` (0: none).
    async fn conditional(
        &self,
        subject: String,
        expected: u64,
        payload: Bytes,
    ) -> Result<u64, AppendError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| AppendError::Bus(unreachable(e)))?
            .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(AppendError::Conflict),
            Err(e) => Err(AppendError::Bus(unreachable(e))),
        }
    }
}

type Messages = async_nats::jetstream::consumer::pull::Ordered;

/// An ordered consumer of `subject` from `start` (a free function: a reader
/// holding its messages is `Send` but not `Sync`).
async fn consumer(
    stream: &stream::Stream,
    subject: &str,
    start: DeliverPolicy,
) -> Result<Messages, BusError> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: start,
            ..Default::default()
        })
        .await
        .map_err(unreachable)?;
    consumer.messages().await.map_err(unreachable)
}

/// An ordered consumer of one subject of a stream, opened again from where it
/// was whenever the server drops it (a restart, a lost connection).
pub(crate) struct Reader {
    stream: stream::Stream,
    subject: String,
    /// Where the next consumer starts.
    start: DeliverPolicy,
    messages: Option<Messages>,
}

impl Reader {
    async fn open(
        stream: stream::Stream,
        subject: String,
        start: DeliverPolicy,
    ) -> Result<Self, BusError> {
        let mut reader = Self {
            stream,
            subject,
            start,
            messages: None,
        };
        reader.messages = Some(consumer(&reader.stream, &reader.subject, reader.start).await?);
        Ok(reader)
    }

    pub(crate) async fn next(&mut self) -> Option<Entry> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match consumer(&self.stream, &self.subject, self.start).await {
                    Ok(messages) => self.messages = Some(messages),
                    Err(e) => {
                        tracing::debug!(subject = %self.subject, error = %e, "the bus is not answering");
                        metrics::counter!("bus_failed_total", "op" => "read").increment(1);
                        tokio::time::sleep(RETRY).await;
                    }
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    let Ok(info) = message.info() else { continue };
                    let position = info.stream_sequence;
                    self.start = DeliverPolicy::ByStartSequence {
                        start_sequence: position + 1,
                    };
                    return Some(Entry {
                        position,
                        payload: message.message.payload,
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(subject = %self.subject, error = %e, "a bus reader lost its consumer");
                    metrics::counter!("bus_failed_total", "op" => "read").increment(1);
                    self.messages = None;
                    tokio::time::sleep(RETRY).await;
                }
                None => self.messages = None,
            }
        }
    }
}
