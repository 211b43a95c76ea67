//! How much unpaid stock one buyer, and one client address, may hold: a
//! script with free accounts must not keep a shop's stock reserved, ten
//! minutes at a time, over and over.
//!
//! A batch reads what its buyers and addresses hold unpaid in its own
//! transaction, after locking its buyers' rows on PostgreSQL (in id order,
//! as the variants are), so two batches on two nodes cannot both give one
//! buyer the last place. Addresses are not locked: two batches of one
//! address's buyers running at once may pass its cap by the orders of one
//! batch. SQLite's single writer makes both exact. An auction win is never
//! counted here: it is an obligation, not a reservation.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use domain::ids::UserId;

use crate::db::{Exec, Execute, Params, fetch_all};
use crate::error::Result;
use crate::row::Get;

/// The caps, each over the reservations not yet paid (nor lapsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpaidCaps {
    pub orders_per_buyer: i64,
    pub units_per_buyer: i64,
    pub orders_per_address: i64,
}

impl Default for UnpaidCaps {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl UnpaidCaps {
    pub const DEFAULT: Self = Self {
        orders_per_buyer: 10,
        units_per_buyer: 50,
        orders_per_address: 30,
    };
}

/// How a purchase reserves: how long it waits for payment, and how much one
/// buyer and one address may hold unpaid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservations {
    pub window: Duration,
    pub caps: UnpaidCaps,
}

impl Reservations {
    /// `window` long, under the default caps.
    pub const fn lasting(window: Duration) -> Self {
        Self {
            window,
            caps: UnpaidCaps::DEFAULT,
        }
    }
}

/// What a batch's buyers and addresses hold unpaid, kept up to date as the
/// batch reserves.
pub(crate) struct Holds {
    caps: UnpaidCaps,
    /// Orders and units per buyer.
    buyers: HashMap<String, (i64, i64)>,
    addresses: HashMap<String, i64>,
}

impl Holds {
    /// Reads what `taps` (buyer, client address) hold now.
    pub(crate) async fn read<'a>(
        e: &mut impl Execute,
        caps: UnpaidCaps,
        taps: impl Iterator<Item = (&'a UserId, Option<&'a str>)>,
    ) -> Result<Self> {
        let mut buyers = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for (buyer, from) in taps {
            buyers.insert(buyer.as_str());
            addresses.extend(from);
        }
        let mut holds = Self {
            caps,
            buyers: HashMap::new(),
            addresses: HashMap::new(),
        };
        if buyers.is_empty() {
            return Ok(holds);
        }
        if let Exec::Postgres(c) = e.exec() {
            let ids: Vec<&str> = buyers.iter().copied().collect();
            sqlx::query("SELECT id FROM users WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE")
                .bind(ids)
                .fetch_all(c)
                .await?;
        }
        for (buyer, orders, units) in held(e, "o.buyer_id", &buyers).await? {
            holds.buyers.insert(buyer, (orders, units));
        }
        if !addresses.is_empty() {
            for (address, orders, _) in held(e, "o.placed_from", &addresses).await? {
                holds.addresses.insert(address, orders);
            }
        }
        Ok(holds)
    }

    /// Takes a place for an order of `units` units by `buyer` from `from`;
    /// `false`, and nothing taken, when that would pass a cap.
    pub(crate) fn take(&mut self, buyer: &UserId, from: Option<&str>, units: i64) -> bool {
        let caps = self.caps;
        let (orders, held) = self.buyers.get(buyer.as_str()).copied().unwrap_or((0, 0));
        let by_address = from.map_or(0, |a| self.addresses.get(a).copied().unwrap_or(0));
        if orders >= caps.orders_per_buyer
            || held + units > caps.units_per_buyer
            || (from.is_some() && by_address >= caps.orders_per_address)
        {
            return false;
        }
        self.buyers
            .insert(buyer.as_str().to_owned(), (orders + 1, held + units));
        if let Some(address) = from {
            self.addresses.insert(address.to_owned(), by_address + 1);
        }
        true
    }
}

/// (who, unpaid orders, their units) for each of `keys` in the column `by`.
async fn held(
    e: &mut impl Execute,
    by: &'static str,
    keys: &BTreeSet<&str>,
) -> Result<Vec<(String, i64, i64)>> {
    let mut p = Params::new(e);
    let marks: Vec<String> = keys.iter().map(|_| p.next()).collect();
    let sql = format!(
        "SELECT {by} AS who, CAST(COUNT(DISTINCT o.id) AS BIGINT) AS orders,
             CAST(SUM(l.quantity) AS BIGINT) AS units
         FROM orders o JOIN order_lines l ON l.order_id = o.id
         WHERE o.status = 'reserved' AND {by} IN ({})
         GROUP BY {by}",
        marks.join(", ")
    );
    fetch_all!(
        e,
        {
            let mut q = sqlx::query(&sql);
            for key in keys {
                q = q.bind(*key);
            }
            q
        },
        holding
    )
}

fn holding<R: Get>(r: &R) -> Result<(String, i64, i64)> {
    Ok((r.text("who")?, r.int("orders")?, r.int("units")?))
}
