//! The storage conformance suite: every test runs against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::collections::BTreeMap;

use domain::Timestamp;
use domain::account::{DisplayName, Email, Role, TokenName};
use domain::catalog::{Description, Handle, OptionValues, ProductStatus, ShopName, Sku, Title};
use domain::ids::{ProductId, UserId};
use domain::money::{Currency, Money};
use domain::room::RoomStatus;
use domain::stock::{AdjustmentReason, StockDelta};
use std::time::Duration;
use store::testing::TestDatabase;
use store::{OrderChange, Reservations};

use domain::ids::{SaleId, VariantId};
use domain::sale::{BuyQuantity, SaleQuantity, SaleStatus};
use store::{
    Claim, ClaimOutcome, Conflict, Earlier, Inventory, KeyState, NewProduct, NewRoom, NewSale,
    NewShop, NewUser, NewVariant, OrderKey, OrderOutcome, PageRequest, ProductPatch, Refusal,
    RegularLine, RegularOrder, RoomFilter, RoomPatch, SaleTally, ShopPatch, Store, StoreError,
    VariantPatch,
};

/// Runs each listed test once on SQLite and once on PostgreSQL.
macro_rules! conformance {
    ($($area:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::TestDatabase::sqlite().await;
                super::$area::$name(&db.store).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::TestDatabase::postgres().await;
                super::$area::$name(&db.store).await;
            })*
        }
    };
}

mod accounts;
mod catalog;
mod checkout;
mod keys;
mod live;
mod orders;
mod sales;

conformance!(
    accounts::migrations_are_idempotent,
    accounts::users_and_sessions,
    accounts::api_tokens,
    accounts::throttle_windows,
    catalog::shops,
    catalog::products_and_variants,
    catalog::product_writes_are_atomic,
    catalog::stock_ledger,
    catalog::stock_never_goes_negative_under_concurrency,
    catalog::rooms,
    sales::sale_lifecycle_moves_stock_through_the_ledger,
    sales::a_batch_allocates_exactly_what_is_left,
    sales::one_buyers_taps_in_one_batch_respect_the_limit,
    sales::a_storm_sells_exactly_the_quantity,
    sales::parallel_taps_cannot_pass_the_per_buyer_limit,
    checkout::a_batch_of_regular_orders_takes_all_lines_or_none,
    checkout::a_storm_of_regular_orders_takes_exactly_the_shelf,
    keys::idempotency_keys,
    orders::due_sales_are_found,
    orders::unpaid_reservations_expire_and_give_their_units_back,
    orders::a_reservation_waits_for_a_payment_in_progress,
    orders::payment_attempts_are_one_at_a_time,
    orders::refund_claims_never_exceed_the_payment,
    orders::orders_pay_ship_refund_and_cancel,
    live::chat_is_kept_in_batches,
    live::pins_replace_each_other_and_keep_their_timeline,
    live::room_stats_add_up_the_nodes_samples_and_the_chat,
    live::moderation_is_kept,
    live::the_newest_claim_of_a_stream_origin_wins,
);

pub(crate) async fn user(store: &Store, email: &str) -> UserId {
    store
        .create_user(NewUser {
            email: Email::parse(email).unwrap(),
            display_name: DisplayName::parse("Ann").unwrap(),
            password_hash: "$argon2id$stand-in".into(),
            role: Role::Buyer,
        })
        .await
        .unwrap()
        .id
}

pub(crate) async fn shop(store: &Store, owner: &UserId, handle: &str) -> domain::catalog::Shop {
    store
        .create_shop(NewShop {
            owner: owner.clone(),
            handle: Handle::parse(handle).unwrap(),
            name: ShopName::parse("Ann's").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            description: Description::parse("").unwrap(),
        })
        .await
        .unwrap()
}

/// A room titled "Live" in `shop`.
pub(crate) async fn room_of(store: &Store, shop: &domain::catalog::Shop) -> domain::room::Room {
    store
        .create_room(NewRoom {
            shop: shop.id.clone(),
            title: Title::parse("Live").unwrap(),
            description: Description::parse("").unwrap(),
            cover_image: None,
            scheduled_start: None,
            stream_key_hash: "k".into(),
        })
        .await
        .unwrap()
}

pub(crate) fn variant(sku: &str, price: i64, stock: i64) -> NewVariant {
    let mut options = BTreeMap::new();
    options.insert("size".to_owned(), sku.to_owned());
    NewVariant {
        sku: Sku::parse(sku).unwrap(),
        options: OptionValues::parse(&options).unwrap(),
        price: Money::parse(price, "EUR").unwrap(),
        stock,
    }
}

pub(crate) fn product(
    shop: &domain::catalog::Shop,
    title: &str,
    variants: Vec<NewVariant>,
) -> NewProduct {
    NewProduct {
        shop: shop.id.clone(),
        title: Title::parse(title).unwrap(),
        description: Description::parse("Soft.").unwrap(),
        status: ProductStatus::Active,
        images: vec![],
        variants,
    }
}

pub(crate) fn page(limit: u32, after: Option<String>) -> PageRequest {
    PageRequest { after, limit }
}

/// A seller with a product of `stock` units and a scheduled sale of `quantity`
/// of them at 9.99 EUR, `limit` per buyer, open from a second ago for an hour.
pub(crate) async fn sale_setup(
    store: &Store,
    stock: i64,
    quantity: i64,
    limit: i64,
) -> (UserId, VariantId, SaleId) {
    let seller = user(store, "seller@example.com").await;
    let s = shop(store, &seller, "anns").await;
    let p = store
        .create_product(
            product(&s, "Hot", vec![variant("HOT", 1999, stock)]),
            &seller,
        )
        .await
        .unwrap();
    let room = room_of(store, &s).await;
    let now = Timestamp::now();
    let sale = store
        .create_sale(NewSale {
            room: room.id,
            shop: s.id,
            variant: p.variants[0].id.clone(),
            price: Money::parse(999, "EUR").unwrap(),
            quantity: SaleQuantity::parse(quantity).unwrap(),
            per_buyer_limit: limit,
            starts_at: now.plus_millis(-1000),
            ends_at: now.plus_millis(3_600_000),
        })
        .await
        .unwrap();
    (seller, p.variants[0].id.clone(), sale.id)
}

/// Another sale in the same room on the same variant, open from a second ago.
pub(crate) async fn another_sale(
    store: &Store,
    like: &SaleId,
    quantity: i64,
    limit: i64,
) -> SaleId {
    let first = store.sale(like).await.unwrap().unwrap();
    let now = Timestamp::now();
    store
        .create_sale(NewSale {
            room: first.room_id,
            shop: first.shop_id,
            variant: first.variant_id,
            price: Money::parse(1, "EUR").unwrap(),
            quantity: SaleQuantity::parse(quantity).unwrap(),
            per_buyer_limit: limit,
            starts_at: now.plus_millis(-1000),
            ends_at: now.plus_millis(60_000),
        })
        .await
        .unwrap()
        .id
}

pub(crate) async fn buyers(store: &Store, n: usize) -> Vec<UserId> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(user(store, &format!("buyer{i}@example.com")).await);
    }
    out
}

pub(crate) fn tap(buyer: &UserId, n: i64) -> Claim {
    Claim {
        buyer: buyer.clone(),
        quantity: BuyQuantity::parse("quantity", n).unwrap(),
        idempotency: None,
        from: None,
    }
}

pub(crate) const WINDOW: Reservations = Reservations::lasting(Duration::from_secs(600));

pub(crate) fn kinds(outcomes: &[ClaimOutcome]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            ClaimOutcome::Reserved(_) => "reserved",
            ClaimOutcome::Refused(Refusal::SoldOut) => "sold_out",
            ClaimOutcome::Refused(Refusal::LimitReached) => "limit",
            ClaimOutcome::Refused(Refusal::NotLive) => "not_live",
            ClaimOutcome::Refused(other) => panic!("a tap refused as an order: {other:?}"),
            ClaimOutcome::Earlier(Earlier::InUse) => "duplicate",
            ClaimOutcome::Earlier(Earlier::Replay { .. }) => "replay",
            ClaimOutcome::Earlier(Earlier::Reused) => "reused",
        })
        .collect()
}

/// An order at list price of `lines` (variant, units), sorted as the API sorts them.
pub(crate) fn regular(buyer: &UserId, lines: &[(&VariantId, i64)]) -> RegularOrder {
    let mut lines: Vec<RegularLine> = lines
        .iter()
        .map(|(v, n)| RegularLine {
            variant: (*v).clone(),
            quantity: BuyQuantity::parse("quantity", *n).unwrap(),
        })
        .collect();
    lines.sort_by(|a, b| a.variant.as_str().cmp(b.variant.as_str()));
    RegularOrder {
        buyer: buyer.clone(),
        room: None,
        lines,
        idempotency: None,
        from: None,
    }
}

pub(crate) fn keyed(mut order: RegularOrder, key: &str, hash: &str) -> RegularOrder {
    order.idempotency = Some(OrderKey {
        key: key.into(),
        request_hash: hash.into(),
    });
    order
}

pub(crate) fn order_kinds(outcomes: &[OrderOutcome]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            OrderOutcome::Reserved(_) => "reserved",
            OrderOutcome::Refused(Refusal::OutOfStock { .. }) => "out_of_stock",
            OrderOutcome::Refused(Refusal::UnknownVariant { .. }) => "unknown",
            OrderOutcome::Refused(Refusal::MixedShops) => "mixed",
            OrderOutcome::Refused(other) => panic!("an order refused as a tap: {other:?}"),
            OrderOutcome::Earlier(Earlier::InUse) => "duplicate",
            OrderOutcome::Earlier(Earlier::Replay { .. }) => "replay",
            OrderOutcome::Earlier(Earlier::Reused) => "reused",
        })
        .collect()
}

pub(crate) async fn on_hand(store: &Store, v: &VariantId) -> i64 {
    store.variant(v).await.unwrap().unwrap().0.stock_on_hand
}

pub(crate) fn change(
    event: domain::order::OrderEvent,
    actor: &UserId,
    reason: &str,
) -> OrderChange {
    OrderChange {
        event,
        actor: Some(actor.clone()),
        reason: reason.to_owned(),
        shipment: None,
        restock: false,
    }
}
