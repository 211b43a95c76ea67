//! Flash-sale events for the room: `sale.started`, `sale.stock`, `sale.sold_out`,
//! `sale.ended` on the bus. Stock changes are coalesced per sale into at most
//! one `sale.stock` every [`TICK`], always ending on the true count: a storm of
//! thousands of purchases a second is a handful of events, and the last one a
//! viewer sees is right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::Bus;
use domain::event::{RoomEvent, SaleState};
use domain::ids::SaleId;
use domain::sale::{FlashSale, SaleStatus};
use tokio::sync::watch;

/// The shortest gap between two `sale.stock` events of one sale.
pub const TICK: Duration = Duration::from_millis(250);
/// A sale's ticker stops after this long without a change.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct SaleEvents {
    bus: Bus,
    tickers: Arc<Mutex<HashMap<SaleId, watch::Sender<FlashSale>>>>,
}

impl SaleEvents {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            tickers: Arc::default(),
        }
    }

    /// What the inventory batchers tell when a sale's stock changed.
    pub fn observer(&self) -> store::StockObserver {
        let events = self.clone();
        std::sync::Arc::new(move |sale| events.stock_changed(sale))
    }

    /// Publishes that a sale started (it is live now) or ended (any other status).
    pub async fn started_or_ended(&self, sale: &FlashSale) {
        let state = SaleState::new(sale);
        let event = if sale.status == SaleStatus::Live {
            RoomEvent::SaleStarted(state)
        } else {
            RoomEvent::SaleEnded(state)
        };
        self.bus.announce_room(&sale.room_id, &event).await;
    }

    /// A sale's stock changed: its ticker publishes the latest state soon.
    pub fn stock_changed(&self, sale: &FlashSale) {
        let mut tickers = self.tickers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ticker) = tickers.get(&sale.id)
            && ticker.send(sale.clone()).is_ok()
        {
            return;
        }
        // No ticker, or it stopped for idleness: start one.
        let (tx, rx) = watch::channel(sale.clone());
        tickers.insert(sale.id.clone(), tx);
        tokio::spawn(run_ticker(self.clone(), rx));
    }
}

async fn run_ticker(events: SaleEvents, mut latest: watch::Receiver<FlashSale>) {
    let mut announced_sold_out = false;
    loop {
        let sale = latest.borrow_and_update().clone();
        let room = &sale.room_id;
        let bus = &events.bus;
        bus.announce_room(room, &RoomEvent::SaleStock(SaleState::new(&sale)))
            .await;
        if sale.status == SaleStatus::SoldOut && !announced_sold_out {
            bus.announce_room(room, &RoomEvent::SaleSoldOut(SaleState::new(&sale)))
                .await;
            announced_sold_out = true;
        }
        if sale.status != SaleStatus::SoldOut {
            announced_sold_out = false;
        }
        tokio::time::sleep(TICK).await;
        // A change during the sleep is published right away: the trailing edge.
        match tokio::time::timeout(IDLE, latest.changed()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
