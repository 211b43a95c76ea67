//! What the sandbox has done, kept in memory and appended to a file (one JSON
//! record per line, synced before anything is answered), so a restarted
//! sandbox knows every charge, refund, idempotency key and undelivered
//! webhook it had. A change is written first and applied to memory after, so
//! a failed write changes nothing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::wire::{Event, Intent, Refund, Target, Window};

/// When a processing intent settles, and how.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settle {
    pub at: i64,
    pub succeeds: bool,
}

/// The answer first given to an idempotency key, replayed to every retry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Kept {
    pub hash: String,
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Intent {
        intent: Intent,
        settle: Option<Settle>,
    },
    Refund {
        refund: Refund,
    },
    Key {
        target: Target,
        key: String,
        kept: Kept,
    },
    Event {
        event: Event,
    },
    Delivered {
        event: String,
    },
}

#[derive(Default)]
pub struct Ledger {
    file: Option<File>,
    intents: HashMap<String, Intent>,
    intent_order: Vec<String>,
    refunds: HashMap<String, Refund>,
    refund_order: Vec<String>,
    by_metadata: HashMap<(String, String), Vec<String>>,
    keys: HashMap<(Target, String), Kept>,
    settling: HashMap<String, Settle>,
    undelivered: HashMap<String, Event>,
    last_created: i64,
}

impl Ledger {
    /// A ledger kept only in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Opens the ledger at `path`, replaying what it holds. A last line cut
    /// short by a crash is ignored (it was never answered).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut ledger = Self::default();
        if let Ok(file) = File::open(path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                match serde_json::from_str::<Record>(&line) {
                    Ok(record) => ledger.apply(record),
                    Err(e) => {
                        tracing::warn!(error = %e, "payments sandbox: skipped a torn ledger line")
                    }
                }
            }
        }
        ledger.file = Some(OpenOptions::new().create(true).append(true).open(path)?);
        Ok(ledger)
    }

    /// Writes `records` durably, then applies them.
    pub fn commit(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        if let Some(file) = &mut self.file {
            let mut buf = Vec::new();
            for record in &records {
                serde_json::to_writer(&mut buf, record)?;
                buf.push(b'\n');
            }
            file.write_all(&buf)?;
            file.sync_data()?;
        }
        for record in records {
            self.apply(record);
        }
        Ok(())
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Intent { intent, settle } => {
                self.last_created = self.last_created.max(intent.created);
                match settle {
                    Some(settle) => self.settling.insert(intent.id.clone(), settle),
                    None => self.settling.remove(&intent.id),
                };
                if !self.intents.contains_key(&intent.id) {
                    self.intent_order.push(intent.id.clone());
                    for (k, v) in &intent.metadata {
                        self.by_metadata
                            .entry((k.clone(), v.clone()))
                            .or_default()
                            .push(intent.id.clone());
                    }
                }
                self.intents.insert(intent.id.clone(), intent);
            }
            Record::Refund { refund } => {
                self.last_created = self.last_created.max(refund.created);
                if !self.refunds.contains_key(&refund.id) {
                    self.refund_order.push(refund.id.clone());
                }
                self.refunds.insert(refund.id.clone(), refund);
            }
            Record::Key { target, key, kept } => {
                self.keys.insert((target, key), kept);
            }
            Record::Event { event } => {
                self.undelivered.insert(event.id.clone(), event);
            }
            Record::Delivered { event } => {
                self.undelivered.remove(&event);
            }
        }
    }

    /// A creation time for something made now: never before the last one, so
    /// the lists' order is the order things were made.
    pub fn stamp(&self, now: i64) -> i64 {
        now.max(self.last_created)
    }

    pub fn kept(&self, target: Target, key: &str) -> Option<&Kept> {
        self.keys.get(&(target, key.to_owned()))
    }

    pub fn intent(&self, id: &str) -> Option<&Intent> {
        self.intents.get(id)
    }

    pub fn refund(&self, id: &str) -> Option<&Refund> {
        self.refunds.get(id)
    }

    pub fn settling(&self) -> impl Iterator<Item = (&String, &Settle)> {
        self.settling.iter()
    }

    pub fn settle_of(&self, intent: &str) -> Option<Settle> {
        self.settling.get(intent).copied()
    }

    pub fn undelivered(&self) -> impl Iterator<Item = &Event> {
        self.undelivered.values()
    }

    pub fn intents_tagged(&self, key: &str, value: &str) -> Vec<Intent> {
        self.by_metadata
            .get(&(key.to_owned(), value.to_owned()))
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.intents.get(id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn intents_in(&self, window: &Window) -> (Vec<Intent>, bool) {
        page(&self.intent_order, &self.intents, window, |i| i.created)
    }

    pub fn refunds_in(&self, window: &Window) -> (Vec<Refund>, bool) {
        page(&self.refund_order, &self.refunds, window, |r| r.created)
    }
}

/// The page of `order` (ids by creation time) that `window` asks for.
fn page<T: Clone>(
    order: &[String],
    items: &HashMap<String, T>,
    window: &Window,
    created: impl Fn(&T) -> i64,
) -> (Vec<T>, bool) {
    let limit = window.limit.unwrap_or(100).clamp(1, 100);
    let at = |i: usize| created(&items[&order[i]]);
    let mut start = window
        .created_gte
        .map_or(0, |t| order.partition_point(|id| created(&items[id]) < t));
    if let Some(after) = &window.starting_after
        && let Some(i) = order.iter().position(|id| id == after)
    {
        start = start.max(i + 1);
    }
    let mut data = Vec::new();
    let mut i = start;
    while i < order.len() && window.created_lt.is_none_or(|t| at(i) < t) {
        if data.len() == limit {
            return (data, true);
        }
        data.push(items[&order[i]].clone());
        i += 1;
    }
    (data, false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::wire::IntentStatus;

    fn intent(id: &str, created: i64) -> Record {
        Record::Intent {
            intent: Intent {
                id: id.into(),
                amount: 100,
                currency: "eur".into(),
                status: IntentStatus::Succeeded,
                last_payment_error: None,
                card_last4: "4242".into(),
                amount_refunded: 0,
                metadata: [("payment".to_owned(), format!("pay_{id}"))].into(),
                created,
            },
            settle: None,
        }
    }

    #[test]
    fn a_reopened_ledger_holds_what_was_committed_and_pages_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        {
            let mut ledger = Ledger::open(&path).unwrap();
            ledger
                .commit(
                    (1..=5)
                        .map(|i| intent(&format!("pi_{i}"), i * 10))
                        .collect(),
                )
                .unwrap();
        }
        // A crash cut the last line short.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"record\":\"intent\",\"int")
            .unwrap();
        let ledger = Ledger::open(&path).unwrap();
        let ids = |(items, more): (Vec<Intent>, bool)| {
            (items.into_iter().map(|i| i.id).collect::<Vec<_>>(), more)
        };
        let window = Window {
            created_gte: Some(20),
            created_lt: Some(50),
            ..Window::default()
        };
        assert_eq!(
            ids(ledger.intents_in(&window)),
            (vec!["pi_2".into(), "pi_3".into(), "pi_4".into()], false)
        );
        let first = Window {
            limit: Some(2),
            ..window.clone()
        };
        assert_eq!(
            ids(ledger.intents_in(&first)),
            (vec!["pi_2".into(), "pi_3".into()], true)
        );
        let next = Window {
            starting_after: Some("pi_3".into()),
            ..first
        };
        assert_eq!(ids(ledger.intents_in(&next)), (vec!["pi_4".into()], false));
        assert_eq!(ledger.intents_tagged("payment", "pay_pi_5").len(), 1);
        assert_eq!(ledger.stamp(0), 50);
    }
}
