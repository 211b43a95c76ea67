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
use store::OrderChange;
use store::testing::TestDatabase;

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
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::TestDatabase::sqlite().await;
                super::$name(&db.store).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::TestDatabase::postgres().await;
                super::$name(&db.store).await;
            })*
        }
    };
}

conformance!(
    migrations_are_idempotent,
    users_and_sessions,
    api_tokens,
    shops,
    products_and_variants,
    product_writes_are_atomic,
    stock_ledger,
    stock_never_goes_negative_under_concurrency,
    rooms,
    sale_lifecycle_moves_stock_through_the_ledger,
    a_batch_allocates_exactly_what_is_left,
    one_buyers_taps_in_one_batch_respect_the_limit,
    a_storm_sells_exactly_the_quantity,
    parallel_taps_cannot_pass_the_per_buyer_limit,
    a_batch_of_regular_orders_takes_all_lines_or_none,
    a_storm_of_regular_orders_takes_exactly_the_shelf,
    idempotency_keys,
    due_sales_are_found,
    unpaid_reservations_expire_and_give_their_units_back,
    a_reservation_waits_for_a_payment_in_progress,
    orders_pay_ship_refund_and_cancel,
    chat_is_kept_in_batches,
    pins_replace_each_other_and_keep_their_timeline,
    room_stats_add_up_the_nodes_samples_and_the_chat,
    moderation_is_kept,
);

async fn user(store: &Store, email: &str) -> UserId {
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

async fn shop(store: &Store, owner: &UserId, handle: &str) -> domain::catalog::Shop {
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
async fn room_of(store: &Store, shop: &domain::catalog::Shop) -> domain::room::Room {
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

fn variant(sku: &str, price: i64, stock: i64) -> NewVariant {
    let mut options = BTreeMap::new();
    options.insert("size".to_owned(), sku.to_owned());
    NewVariant {
        sku: Sku::parse(sku).unwrap(),
        options: OptionValues::parse(&options).unwrap(),
        price: Money::parse(price, "EUR").unwrap(),
        stock,
    }
}

fn product(shop: &domain::catalog::Shop, title: &str, variants: Vec<NewVariant>) -> NewProduct {
    NewProduct {
        shop: shop.id.clone(),
        title: Title::parse(title).unwrap(),
        description: Description::parse("Soft.").unwrap(),
        status: ProductStatus::Active,
        images: vec![],
        variants,
    }
}

fn page(limit: u32, after: Option<String>) -> PageRequest {
    PageRequest { after, limit }
}

async fn migrations_are_idempotent(store: &Store) {
    assert!(store.migrate().await.unwrap().is_empty());
    store.ping().await.unwrap();
}

async fn users_and_sessions(store: &Store) {
    let id = user(store, "Ann@Example.com").await;
    let again = store
        .create_user(NewUser {
            email: Email::parse("ann@example.com").unwrap(),
            display_name: DisplayName::parse("Other").unwrap(),
            password_hash: "x".into(),
            role: Role::Buyer,
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(Conflict::Email))));
    let (found, hash) = store
        .user_by_email(&Email::parse("ANN@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id);
    assert_eq!(hash, "$argon2id$stand-in");
    assert_eq!(store.count_users().await.unwrap(), 1);

    let now = Timestamp::now();
    let session = store
        .create_session(&id, "live-hash", now.plus_millis(60_000))
        .await
        .unwrap();
    store
        .create_session(&id, "old-hash", now.plus_millis(-1))
        .await
        .unwrap();
    let (sid, u) = store.session_user("live-hash", now).await.unwrap().unwrap();
    assert_eq!((sid.clone(), u.id), (session.clone(), id.clone()));
    assert!(store.session_user("old-hash", now).await.unwrap().is_none());
    assert_eq!(store.delete_expired_sessions(now).await.unwrap(), 1);
    store.delete_session(&sid).await.unwrap();
    assert!(
        store
            .session_user("live-hash", now)
            .await
            .unwrap()
            .is_none()
    );

    store.set_role(&id, Role::Admin).await.unwrap();
    assert_eq!(store.user(&id).await.unwrap().unwrap().role, Role::Admin);
}

async fn api_tokens(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let name = TokenName::parse("OBS").unwrap();
    let token = store.create_api_token(&ann, &name, "h1").await.unwrap();
    assert_eq!(store.token_user("h1").await.unwrap().unwrap().1.id, ann);
    assert!(matches!(
        store.revoke_api_token(&bob, &token.id).await,
        Err(StoreError::NotFound)
    ));
    store.revoke_api_token(&ann, &token.id).await.unwrap();
    assert!(store.token_user("h1").await.unwrap().is_none());
    assert!(matches!(
        store.revoke_api_token(&ann, &token.id).await,
        Err(StoreError::NotFound)
    ));
    let listed = store.api_tokens(&ann).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    assert!(store.api_tokens(&bob).await.unwrap().is_empty());
}

async fn shops(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let s = shop(store, &ann, "anns").await;
    assert_eq!(store.user(&ann).await.unwrap().unwrap().role, Role::Seller);
    assert_eq!(store.shop("anns").await.unwrap().unwrap().id, s.id);
    assert_eq!(
        store
            .shop(s.id.as_str())
            .await
            .unwrap()
            .unwrap()
            .handle
            .as_str(),
        "anns"
    );
    let bob = user(store, "bob@example.com").await;
    let taken = store
        .create_shop(NewShop {
            owner: bob.clone(),
            handle: Handle::parse("anns").unwrap(),
            name: ShopName::parse("Bob").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            description: Description::parse("").unwrap(),
        })
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(Conflict::Handle))));
    assert_eq!(store.user(&bob).await.unwrap().unwrap().role, Role::Buyer);
    let updated = store
        .update_shop(
            &s.id,
            ShopPatch {
                name: Some(ShopName::parse("Ann & Co").unwrap()),
                ..ShopPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name.as_str(), "Ann & Co");
    assert_eq!(updated.handle.as_str(), "anns");
    assert_eq!(store.shops_owned_by(&ann).await.unwrap().len(), 1);
    let listed = store.shops(&page(10, None)).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, s.id);
}

async fn products_and_variants(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let s = shop(store, &ann, "anns").await;
    store
        .add_image(&s.id, "abc123", "image/png", 10)
        .await
        .unwrap();
    store
        .add_image(&s.id, "abc123", "image/png", 10)
        .await
        .unwrap();
    let mut new = product(
        &s,
        "Tee",
        vec![variant("TEE-S", 1999, 5), variant("TEE-M", 2099, 0)],
    );
    new.images = vec!["abc123".into()];
    let p = store.create_product(new, &ann).await.unwrap();
    assert_eq!(p.images, vec!["abc123".to_owned()]);
    assert_eq!(p.variants.len(), 2);
    assert_eq!(p.variants[0].sku.as_str(), "TEE-S");
    assert_eq!(p.variants[0].stock_on_hand, 5);
    assert_eq!(p.variants[1].price.amount, 2099);
    assert_eq!(store.product(&p.id).await.unwrap().unwrap(), p);
    assert_eq!(
        store.image_content_type("abc123").await.unwrap().as_deref(),
        Some("image/png")
    );

    let mut draft = product(&s, "Secret", vec![variant("SEC", 100, 1)]);
    draft.status = ProductStatus::Draft;
    let d = store.create_product(draft, &ann).await.unwrap();
    for i in 0..3 {
        store
            .create_product(
                product(&s, &format!("P{i}"), vec![variant(&format!("P{i}"), 1, 1)]),
                &ann,
            )
            .await
            .unwrap();
    }
    let active = [ProductStatus::Active];
    let first = store
        .products(&s.id, &active, &page(2, None))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.items[0].title.as_str(), "P2", "newest first");
    assert!(first.items.iter().all(|p| !p.variants.is_empty()));
    let second = store
        .products(&s.id, &active, &page(2, first.next))
        .await
        .unwrap();
    let titles: Vec<_> = second.items.iter().map(|p| p.title.as_str()).collect();
    assert_eq!(titles, ["P0", "Tee"], "the draft is not listed");
    assert!(second.next.is_none());
    let all = [
        ProductStatus::Draft,
        ProductStatus::Active,
        ProductStatus::Archived,
    ];
    let everything = store.products(&s.id, &all, &page(100, None)).await.unwrap();
    assert_eq!(everything.items.len(), 5);

    let archived = store
        .update_product(
            &d.id,
            ProductPatch {
                status: Some(ProductStatus::Archived),
                images: Some(vec!["abc123".into()]),
                ..ProductPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(archived.status, ProductStatus::Archived);
    assert_eq!(archived.title.as_str(), "Secret");
    assert_eq!(archived.images.len(), 1);

    let added = store
        .add_variant(&p.id, variant("TEE-L", 2199, 7), &ann)
        .await
        .unwrap();
    assert_eq!(added.stock_on_hand, 7);
    let reloaded = store.product(&p.id).await.unwrap().unwrap();
    assert_eq!(reloaded.variants.last().unwrap().id, added.id);
    let dup = store.add_variant(&p.id, variant("TEE-L", 1, 1), &ann).await;
    assert!(matches!(dup, Err(StoreError::Conflict(Conflict::Sku))));

    let repriced = store
        .update_variant(
            &added.id,
            VariantPatch {
                price: Some(Money::parse(2500, "EUR").unwrap()),
                ..VariantPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(repriced.price.amount, 2500);
    assert_eq!(repriced.sku.as_str(), "TEE-L");
    let (v, owner) = store.variant(&added.id).await.unwrap().unwrap();
    assert_eq!((v.stock_on_hand, owner), (7, s.id.clone()));
    assert!(
        store
            .product(&ProductId::from_string("prod_nope"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn product_writes_are_atomic(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let s = shop(store, &ann, "anns").await;
    let dup = product(&s, "Dup", vec![variant("A", 1, 3), variant("A", 1, 3)]);
    assert!(matches!(
        store.create_product(dup, &ann).await,
        Err(StoreError::Conflict(Conflict::Sku))
    ));
    let mut unknown = product(&s, "Img", vec![variant("B", 1, 1)]);
    unknown.images = vec!["not-uploaded".into()];
    assert!(matches!(
        store.create_product(unknown, &ann).await,
        Err(StoreError::UnknownImage(_))
    ));
    let all = [
        ProductStatus::Draft,
        ProductStatus::Active,
        ProductStatus::Archived,
    ];
    assert!(
        store
            .products(&s.id, &all, &page(10, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The SKUs of the failed writes are free again: nothing half-written survived.
    store
        .create_product(product(&s, "Ok", vec![variant("A", 1, 1)]), &ann)
        .await
        .unwrap();
}

async fn stock_ledger(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let s = shop(store, &ann, "anns").await;
    let p = store
        .create_product(product(&s, "Tee", vec![variant("T", 1, 3)]), &ann)
        .await
        .unwrap();
    let v = &p.variants[0].id;
    let line = store
        .adjust_stock(
            v,
            StockDelta::parse(10).unwrap(),
            AdjustmentReason::Received,
            "pallet 7",
            &ann,
        )
        .await
        .unwrap();
    assert_eq!(line.on_hand_after, 13);
    let short = store
        .adjust_stock(
            v,
            StockDelta::parse(-14).unwrap(),
            AdjustmentReason::Damaged,
            "",
            &ann,
        )
        .await;
    assert!(matches!(
        short,
        Err(StoreError::InsufficientStock { on_hand: 13 })
    ));
    store
        .adjust_stock(
            v,
            StockDelta::parse(-13).unwrap(),
            AdjustmentReason::Damaged,
            "flood",
            &ann,
        )
        .await
        .unwrap();
    let ledger = store.stock_ledger(v, &page(2, None)).await.unwrap();
    let deltas: Vec<_> = ledger
        .items
        .iter()
        .map(|a| (a.delta, a.on_hand_after))
        .collect();
    assert_eq!(deltas, [(-13, 0), (10, 13)]);
    assert_eq!(ledger.items[0].note, "flood");
    let rest = store.stock_ledger(v, &page(2, ledger.next)).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].reason, AdjustmentReason::Initial);
    assert_eq!(store.variant(v).await.unwrap().unwrap().0.stock_on_hand, 0);
}

async fn stock_never_goes_negative_under_concurrency(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let s = shop(store, &ann, "anns").await;
    let p = store
        .create_product(product(&s, "Hot", vec![variant("H", 1, 50)]), &ann)
        .await
        .unwrap();
    let v = p.variants[0].id.clone();
    let tasks: Vec<_> = (0..120)
        .map(|_| {
            let (store, v, ann) = (store.clone(), v.clone(), ann.clone());
            tokio::spawn(async move {
                store
                    .adjust_stock(
                        &v,
                        StockDelta::parse(-1).unwrap(),
                        AdjustmentReason::Correction,
                        "",
                        &ann,
                    )
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::InsufficientStock { on_hand: 0 }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(store.variant(&v).await.unwrap().unwrap().0.stock_on_hand, 0);
    let ledger = store.stock_ledger(&v, &page(100, None)).await.unwrap();
    assert_eq!(ledger.items.len(), 51);
    assert_eq!(ledger.items.iter().map(|a| a.delta).sum::<i64>(), 0);
}

async fn rooms(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let s = shop(store, &ann, "anns").await;
    let start = Timestamp::parse_rfc3339("2030-01-01T10:00:00Z").unwrap();
    let room = store
        .create_room(NewRoom {
            shop: s.id.clone(),
            title: Title::parse("Friday drop").unwrap(),
            description: Description::parse("").unwrap(),
            cover_image: Some("img".into()),
            scheduled_start: Some(start),
            stream_key_hash: "k1".into(),
        })
        .await
        .unwrap();
    assert_eq!(room.status, RoomStatus::Scheduled);
    assert_eq!(room.scheduled_start, Some(start));
    let cleared = store
        .update_room(
            &room.id,
            RoomPatch {
                cover_image: Some(None),
                title: Some(Title::parse("Friday drop!").unwrap()),
                ..RoomPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.cover_image, None);
    assert_eq!(cleared.scheduled_start, Some(start));
    assert_eq!(cleared.title.as_str(), "Friday drop!");

    let live = store
        .set_room_status(&room.id, RoomStatus::Scheduled, RoomStatus::Live)
        .await
        .unwrap();
    assert!(live.started_at.is_some());
    let stale = store
        .set_room_status(&room.id, RoomStatus::Scheduled, RoomStatus::Live)
        .await;
    assert!(
        matches!(stale, Err(StoreError::NotFound)),
        "a lost race changes nothing"
    );
    let filter = RoomFilter {
        status: Some(RoomStatus::Live),
        ..RoomFilter::default()
    };
    assert_eq!(
        store
            .rooms(&filter, &page(10, None))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let ended = store
        .set_room_status(&room.id, RoomStatus::Live, RoomStatus::Ended)
        .await
        .unwrap();
    assert!(ended.ended_at.is_some());
    assert!(
        store
            .rooms(&filter, &page(10, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let by_shop = RoomFilter {
        shop: Some(s.id.clone()),
        ..RoomFilter::default()
    };
    assert_eq!(
        store
            .rooms(&by_shop, &page(10, None))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    assert_eq!(
        store.stream_key_hash(&room.id).await.unwrap().as_deref(),
        Some("k1")
    );
    store.set_stream_key_hash(&room.id, "k2").await.unwrap();
    assert_eq!(
        store.stream_key_hash(&room.id).await.unwrap().as_deref(),
        Some("k2")
    );
}

/// A seller with a product of `stock` units and a scheduled sale of `quantity`
/// of them at 9.99 EUR, `limit` per buyer, open from a second ago for an hour.
async fn sale_setup(
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
async fn another_sale(store: &Store, like: &SaleId, quantity: i64, limit: i64) -> SaleId {
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

async fn buyers(store: &Store, n: usize) -> Vec<UserId> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(user(store, &format!("buyer{i}@example.com")).await);
    }
    out
}

fn tap(buyer: &UserId, n: i64) -> Claim {
    Claim {
        buyer: buyer.clone(),
        quantity: BuyQuantity::parse("quantity", n).unwrap(),
        idempotency: None,
    }
}

const WINDOW: Duration = Duration::from_secs(600);

async fn sale_lifecycle_moves_stock_through_the_ledger(store: &Store) {
    let (seller, variant, sale) = sale_setup(store, 10, 6, 2).await;
    let buyer = user(store, "b@example.com").await;
    let scheduled = store
        .claim_batch(&sale, &[tap(&buyer, 1)], WINDOW)
        .await
        .unwrap();
    assert!(matches!(
        scheduled[0],
        ClaimOutcome::Refused(Refusal::NotLive)
    ));

    let live = store.start_sale(&sale, &seller).await.unwrap();
    assert_eq!((live.status, live.available), (SaleStatus::Live, 6));
    assert_eq!(
        store
            .variant(&variant)
            .await
            .unwrap()
            .unwrap()
            .0
            .stock_on_hand,
        4
    );
    assert!(matches!(
        store.start_sale(&sale, &seller).await,
        Err(StoreError::WrongState)
    ));

    let got = store
        .claim_batch(&sale, &[tap(&buyer, 2)], WINDOW)
        .await
        .unwrap();
    let ClaimOutcome::Reserved(order) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(order.total, Money::parse(1998, "EUR").unwrap());
    assert_eq!(order.lines[0].sku, "HOT");
    let stored = store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(
        &stored,
        order.as_ref(),
        "what was answered is what was committed"
    );

    let ended = store
        .close_sale(&sale, SaleStatus::Ended, &seller)
        .await
        .unwrap();
    assert_eq!((ended.status, ended.available), (SaleStatus::Ended, 4));
    // The four unsold units are back on the shelf; the two sold are not.
    assert_eq!(
        store
            .variant(&variant)
            .await
            .unwrap()
            .unwrap()
            .0
            .stock_on_hand,
        8
    );
    let ledger = store.stock_ledger(&variant, &page(10, None)).await.unwrap();
    let reasons: Vec<_> = ledger.items.iter().map(|a| (a.reason, a.delta)).collect();
    assert_eq!(
        reasons,
        [
            (AdjustmentReason::SaleReturned, 4),
            (AdjustmentReason::SaleAllocated, -6),
            (AdjustmentReason::Initial, 10)
        ]
    );
    assert!(matches!(
        store
            .close_sale(&sale, SaleStatus::Cancelled, &seller)
            .await,
        Err(StoreError::WrongState)
    ));
    let after = store
        .claim_batch(&sale, &[tap(&buyer, 1)], WINDOW)
        .await
        .unwrap();
    assert!(matches!(after[0], ClaimOutcome::Refused(Refusal::NotLive)));

    // A sale larger than the shelf cannot start, and nothing moves.
    let big = another_sale(store, &sale, 9, 1).await;
    assert!(matches!(
        store.start_sale(&big, &seller).await,
        Err(StoreError::InsufficientStock { on_hand: 8 })
    ));
    assert_eq!(
        store.sale(&big).await.unwrap().unwrap().status,
        SaleStatus::Scheduled
    );
    assert_eq!(
        store
            .variant(&variant)
            .await
            .unwrap()
            .unwrap()
            .0
            .stock_on_hand,
        8
    );
}

async fn a_batch_allocates_exactly_what_is_left(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 50, 5, 10).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let b = buyers(store, 4).await;
    // 3 fits, the next 3 does not (2 left), the 2 after it does: nothing oversold,
    // nothing stranded.
    let got = store
        .claim_batch(
            &sale,
            &[tap(&b[0], 3), tap(&b[1], 3), tap(&b[2], 2), tap(&b[3], 1)],
            WINDOW,
        )
        .await
        .unwrap();
    assert_eq!(
        kinds(&got),
        ["reserved", "sold_out", "reserved", "sold_out"]
    );
    let s = store.sale(&sale).await.unwrap().unwrap();
    assert_eq!((s.available, s.status), (0, SaleStatus::SoldOut));
    assert_eq!(
        store.sale_tally(&sale).await.unwrap(),
        SaleTally {
            orders: 2,
            units: 5
        }
    );

    // Units claimed for a refused tap go back: 3 + 3 wanted with 5 left, one fits.
    let sale2 = another_sale(store, &sale, 5, 10).await;
    store.start_sale(&sale2, &seller).await.unwrap();
    let got = store
        .claim_batch(&sale2, &[tap(&b[0], 3), tap(&b[1], 3)], WINDOW)
        .await
        .unwrap();
    assert!(matches!(got[0], ClaimOutcome::Reserved(_)));
    assert!(matches!(got[1], ClaimOutcome::Refused(Refusal::SoldOut)));
    let s = store.sale(&sale2).await.unwrap().unwrap();
    assert_eq!((s.available, s.status), (2, SaleStatus::Live));
}

fn kinds(outcomes: &[ClaimOutcome]) -> Vec<&'static str> {
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

async fn one_buyers_taps_in_one_batch_respect_the_limit(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 50, 4, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let b = buyers(store, 3).await;
    // Each buyer's first tap is served before anyone's second: ann's third tap
    // passes her limit, and once the units are gone her second is sold out.
    let got = store
        .claim_batch(
            &sale,
            &[
                tap(&b[0], 1),
                tap(&b[0], 1),
                tap(&b[0], 1),
                tap(&b[1], 2),
                tap(&b[2], 1),
            ],
            WINDOW,
        )
        .await
        .unwrap();
    assert_eq!(
        kinds(&got),
        ["reserved", "sold_out", "sold_out", "reserved", "reserved"]
    );
    // A buyer at the limit is refused however the taps are batched; units a
    // refusal gave back serve the taps after it.
    let sale2 = another_sale(store, &sale, 10, 2).await;
    store.start_sale(&sale2, &seller).await.unwrap();
    let first = store
        .claim_batch(&sale2, &[tap(&b[0], 2)], WINDOW)
        .await
        .unwrap();
    assert_eq!(kinds(&first), ["reserved"]);
    let got = store
        .claim_batch(
            &sale2,
            &[tap(&b[0], 1), tap(&b[1], 1), tap(&b[1], 1), tap(&b[1], 1)],
            WINDOW,
        )
        .await
        .unwrap();
    assert_eq!(kinds(&got), ["limit", "reserved", "reserved", "limit"]);
    let s = store.sale(&sale2).await.unwrap().unwrap();
    assert_eq!(s.available, 6);
    assert_eq!(
        store.sale_tally(&sale2).await.unwrap(),
        SaleTally {
            orders: 3,
            units: 4
        }
    );
}

async fn a_storm_sells_exactly_the_quantity(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 1000, 100, 1).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let crowd = buyers(store, 1500).await;
    let inventory = Inventory::new(store.clone(), WINDOW);
    let taps: Vec<_> = crowd
        .iter()
        .map(|b| {
            let (inventory, sale, claim) = (inventory.clone(), sale.clone(), tap(b, 1));
            tokio::spawn(async move { inventory.buy(&sale, claim).await })
        })
        .collect();
    let (mut reserved, mut sold_out) = (0, 0);
    let mut orders = std::collections::HashSet::new();
    for t in taps {
        match t.await.unwrap().unwrap() {
            ClaimOutcome::Reserved(order) => {
                reserved += 1;
                assert!(orders.insert(order.id.clone()));
            }
            ClaimOutcome::Refused(Refusal::SoldOut) => sold_out += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((reserved, sold_out), (100, 1400));
    assert_eq!(store::testing::orphans(store).await.unwrap(), 0);
    let s = store.sale(&sale).await.unwrap().unwrap();
    assert_eq!((s.available, s.status), (0, SaleStatus::SoldOut));
    assert_eq!(
        store.sale_tally(&sale).await.unwrap(),
        SaleTally {
            orders: 100,
            units: 100
        }
    );
    for id in orders.iter().take(5) {
        assert!(
            store.order(id).await.unwrap().is_some(),
            "every answered order is stored"
        );
    }
}

/// An order at list price of `lines` (variant, units), sorted as the API sorts them.
fn regular(buyer: &UserId, lines: &[(&VariantId, i64)]) -> RegularOrder {
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
    }
}

fn keyed(mut order: RegularOrder, key: &str, hash: &str) -> RegularOrder {
    order.idempotency = Some(OrderKey {
        key: key.into(),
        request_hash: hash.into(),
    });
    order
}

fn order_kinds(outcomes: &[OrderOutcome]) -> Vec<&'static str> {
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

async fn on_hand(store: &Store, v: &VariantId) -> i64 {
    store.variant(v).await.unwrap().unwrap().0.stock_on_hand
}

async fn a_batch_of_regular_orders_takes_all_lines_or_none(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let anns = shop(store, &ann, "anns").await;
    let bobs = shop(store, &bob, "bobs").await;
    let p = store
        .create_product(
            product(
                &anns,
                "Tee",
                vec![variant("A", 1000, 10), variant("B", 500, 3)],
            ),
            &ann,
        )
        .await
        .unwrap();
    let (a, b) = (&p.variants[0].id, &p.variants[1].id);
    let other = store
        .create_product(product(&bobs, "Mug", vec![variant("C", 700, 9)]), &bob)
        .await
        .unwrap();
    let c = &other.variants[0].id;
    let nope = VariantId::from_string("var_nope");
    let buyer = user(store, "buyer@example.com").await;
    let batch = [
        regular(&buyer, &[(a, 4)]),
        regular(&buyer, &[(a, 4), (b, 2)]),
        // 2 of A are left: refused whole.
        regular(&buyer, &[(a, 4)]),
        // 1 of B is left: refused whole, and its 2 of A stay for the next.
        regular(&buyer, &[(a, 2), (b, 2)]),
        regular(&buyer, &[(a, 2)]),
        regular(&buyer, &[(a, 1), (&nope, 1)]),
        regular(&buyer, &[(b, 1), (c, 1)]),
        keyed(regular(&buyer, &[(b, 1)]), "k1", "h"),
        keyed(regular(&buyer, &[(b, 1)]), "k1", "h"),
    ];
    let got = store.reserve_batch(&batch, WINDOW).await.unwrap();
    assert_eq!(
        order_kinds(&got),
        [
            "reserved",
            "reserved",
            "out_of_stock",
            "out_of_stock",
            "reserved",
            "unknown",
            "mixed",
            "reserved",
            "duplicate"
        ]
    );
    assert_eq!(
        got[2..4]
            .iter()
            .map(|o| match o {
                OrderOutcome::Refused(Refusal::OutOfStock { variant, on_hand }) =>
                    (variant.clone(), *on_hand),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>(),
        [(a.clone(), 2), (b.clone(), 1)]
    );
    assert_eq!(
        (
            on_hand(store, a).await,
            on_hand(store, b).await,
            on_hand(store, c).await
        ),
        (0, 0, 9)
    );
    let OrderOutcome::Reserved(second) = &got[1] else {
        panic!()
    };
    assert_eq!(second.lines.len(), 2);
    assert_eq!(second.total.amount, 4 * 1000 + 2 * 500, "list prices");
    assert_eq!(second.shop_id, anns.id);
    assert!(store.order(&second.id).await.unwrap().is_some());
    // Every line that left the shelf has its ledger line, with the stock it left.
    let ledger = store.stock_ledger(a, &page(10, None)).await.unwrap();
    let taken: Vec<_> = ledger
        .items
        .iter()
        .filter(|l| l.reason == AdjustmentReason::Reserved)
        .map(|l| (l.delta, l.on_hand_after))
        .collect();
    assert_eq!(taken, [(-2, 0), (-4, 2), (-4, 6)]);
    let ledger = store.stock_ledger(b, &page(10, None)).await.unwrap();
    assert_eq!(ledger.items[0].delta, -1);
    assert_eq!(ledger.items[1].note, second.id.as_str());

    // The key's answer was recorded with its order: a retry is replayed, a
    // different request with the key is refused, and a refusal is recorded too.
    let OrderOutcome::Reserved(keyed_order) = &got[7] else {
        panic!()
    };
    let again = store
        .reserve_batch(
            &[
                keyed(regular(&buyer, &[(b, 1)]), "k1", "h"),
                keyed(regular(&buyer, &[(b, 1)]), "k2", "h"),
            ],
            WINDOW,
        )
        .await
        .unwrap();
    assert_eq!(order_kinds(&again), ["replay", "out_of_stock"]);
    let reused = store
        .reserve_batch(&[keyed(regular(&buyer, &[(a, 1)]), "k1", "other")], WINDOW)
        .await
        .unwrap();
    assert_eq!(order_kinds(&reused), ["reused"]);
    let OrderOutcome::Earlier(Earlier::Replay(answer)) = &again[0] else {
        panic!()
    };
    assert_eq!(
        answer,
        &store::Answer::Made(serde_json::to_string(keyed_order.as_ref()).unwrap())
    );
    let refused = store
        .reserve_batch(&[keyed(regular(&buyer, &[(b, 1)]), "k2", "h")], WINDOW)
        .await
        .unwrap();
    assert!(
        matches!(
            &refused[0],
            OrderOutcome::Earlier(Earlier::Replay(store::Answer::Refused(
                Refusal::OutOfStock { .. }
            )))
        ),
        "{refused:?}"
    );
}

async fn a_storm_of_regular_orders_takes_exactly_the_shelf(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let s = shop(store, &ann, "anns").await;
    let p = store
        .create_product(
            product(
                &s,
                "Hot",
                vec![variant("H", 100, 60), variant("X", 100, 1000)],
            ),
            &ann,
        )
        .await
        .unwrap();
    let (hot, extra) = (p.variants[0].id.clone(), p.variants[1].id.clone());
    let crowd = buyers(store, 400).await;
    let inventory = Inventory::new(store.clone(), WINDOW);
    // Every other buyer also takes a unit of another variant in the same order.
    let taps: Vec<_> = crowd
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let order = if i % 2 == 0 {
                regular(b, &[(&hot, 1)])
            } else {
                regular(b, &[(&hot, 1), (&extra, 1)])
            };
            let inventory = inventory.clone();
            tokio::spawn(async move { inventory.order(order).await })
        })
        .collect();
    let (mut reserved, mut refused, mut extras) = (0, 0, 0);
    for t in taps {
        match t.await.unwrap().unwrap() {
            OrderOutcome::Reserved(order) => {
                reserved += 1;
                extras += order.lines.len() - 1;
            }
            OrderOutcome::Refused(Refusal::OutOfStock { on_hand: 0, .. }) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((reserved, refused), (60, 340));
    assert_eq!(on_hand(store, &hot).await, 0);
    assert_eq!(on_hand(store, &extra).await, 1000 - extras as i64);
    let ledger = store.stock_ledger(&hot, &page(100, None)).await.unwrap();
    assert_eq!(
        ledger.items.iter().map(|l| l.delta).sum::<i64>(),
        0,
        "60 in, 60 out"
    );
    assert_eq!(store::testing::orphans(store).await.unwrap(), 0);
}

async fn parallel_taps_cannot_pass_the_per_buyer_limit(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 100, 50, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let greedy = user(store, "greedy@example.com").await;
    let inventory = Inventory::new(store.clone(), WINDOW);
    let taps: Vec<_> = (0..20)
        .map(|_| {
            let (inventory, sale, claim) = (inventory.clone(), sale.clone(), tap(&greedy, 1));
            tokio::spawn(async move { inventory.buy(&sale, claim).await })
        })
        .collect();
    let mut reserved = 0;
    for t in taps {
        match t.await.unwrap().unwrap() {
            ClaimOutcome::Reserved(_) => reserved += 1,
            ClaimOutcome::Refused(Refusal::LimitReached) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reserved, 2);
    // Also straight through one batch, and across two batches.
    let other = user(store, "other@example.com").await;
    let got = store
        .claim_batch(&sale, &[tap(&other, 2), tap(&other, 1)], WINDOW)
        .await
        .unwrap();
    assert!(matches!(got[0], ClaimOutcome::Reserved(_)));
    assert!(matches!(
        got[1],
        ClaimOutcome::Refused(Refusal::LimitReached)
    ));
    let too_many = store
        .claim_batch(&sale, &[tap(&other, 3)], WINDOW)
        .await
        .unwrap();
    assert!(matches!(
        too_many[0],
        ClaimOutcome::Refused(Refusal::LimitReached)
    ));
    assert_eq!(
        store.sale_tally(&sale).await.unwrap(),
        SaleTally {
            orders: 3,
            units: 4
        }
    );
    assert_eq!(store.sale(&sale).await.unwrap().unwrap().available, 46);
}

async fn idempotency_keys(store: &Store) {
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let long = Duration::from_secs(60);
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::Fresh
    );
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::InUse
    );
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h2", long)
            .await
            .unwrap(),
        KeyState::Reused
    );
    assert_eq!(
        store
            .begin_idempotent(&bob, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::Fresh,
        "keys are per user"
    );
    store
        .finish_idempotent(&ann, "k1", &store::Answer::Made("{\"id\":1}".into()))
        .await
        .unwrap();
    assert_eq!(
        store
            .begin_idempotent(&ann, "k1", "h1", long)
            .await
            .unwrap(),
        KeyState::Replay(store::Answer::Made("{\"id\":1}".into()))
    );
    // An unfinished request older than any request may run was abandoned; one
    // caller takes it over.
    store.begin_idempotent(&ann, "k2", "h", long).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        store
            .begin_idempotent(&ann, "k2", "h", Duration::ZERO)
            .await
            .unwrap(),
        KeyState::Abandoned
    );
    store.forget_idempotent(&ann, "k2").await.unwrap();
    assert_eq!(
        store
            .begin_idempotent(&ann, "k2", "other", long)
            .await
            .unwrap(),
        KeyState::Fresh
    );
    assert_eq!(store.delete_expired_idempotency_keys().await.unwrap(), 0);

    // The key on an order finds it again.
    let (seller, _, sale) = sale_setup(store, 10, 5, 5).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let key = store::ClaimKey {
        key: "buy-1".into(),
        request_hash: "h".into(),
    };
    let mut claim = tap(&ann, 1);
    claim.idempotency = Some(key);
    // The same key twice in one batch: one order, and the other tap is refused.
    let got = store
        .claim_batch(&sale, &[claim.clone(), claim.clone()], WINDOW)
        .await
        .unwrap();
    let ClaimOutcome::Reserved(order) = &got[0] else {
        panic!("{got:?}")
    };
    assert!(matches!(got[1], ClaimOutcome::Earlier(Earlier::InUse)));
    let body = serde_json::to_string(order.as_ref()).unwrap();
    // A retry in a later batch gets the first answer, recorded with the order.
    let again = store
        .claim_batch(&sale, &[claim.clone()], WINDOW)
        .await
        .unwrap();
    match &again[0] {
        ClaimOutcome::Earlier(Earlier::Replay(replayed)) => {
            assert_eq!(replayed, &store::Answer::Made(body.clone()))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .begin_idempotent(&ann, "buy-1", "h", long)
            .await
            .unwrap(),
        KeyState::Replay(store::Answer::Made(body))
    );
    let mut changed = claim;
    if let Some(k) = changed.idempotency.as_mut() {
        k.request_hash = "other".into();
    }
    let reused = store.claim_batch(&sale, &[changed], WINDOW).await.unwrap();
    assert!(matches!(reused[0], ClaimOutcome::Earlier(Earlier::Reused)));
    assert_eq!(
        store.sale_tally(&sale).await.unwrap().orders,
        1,
        "one order for one key"
    );
    let mine = store.orders_of_buyer(&ann, &page(10, None)).await.unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(mine.items[0].history.len(), 1);
}

async fn due_sales_are_found(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 10, 5, 5).await;
    let now = Timestamp::now();
    let due = store.due_sales(now).await.unwrap();
    assert_eq!(due.len(), 1, "scheduled and past its start");
    assert_eq!(
        (due[0].0.id.clone(), due[0].1.clone()),
        (sale.clone(), seller.clone())
    );
    store.start_sale(&sale, &seller).await.unwrap();
    assert!(
        store.due_sales(now).await.unwrap().is_empty(),
        "live and before its end"
    );
    let later = now.plus_millis(2 * 3_600_000);
    assert_eq!(
        store.due_sales(later).await.unwrap().len(),
        1,
        "live and past its end"
    );
}

async fn a_reservation_waits_for_a_payment_in_progress(store: &Store) {
    use domain::order::PaymentStatus;
    let (seller, _, sale) = sale_setup(store, 10, 3, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let got = store
        .claim_batch(&sale, &[tap(&ann, 1), tap(&bob, 1)], Duration::ZERO)
        .await
        .unwrap();
    let (ClaimOutcome::Reserved(anns), ClaimOutcome::Reserved(bobs)) = (&got[0], &got[1]) else {
        panic!("{got:?}")
    };
    for (order, payer, intent) in [(anns, &ann, "pi_ann"), (bobs, &bob, "pi_bob")] {
        store
            .record_payment(store::NewPayment {
                order: &order.id,
                provider: "test",
                intent_id: intent,
                amount: order.total,
                status: PaymentStatus::Processing,
                failure_code: None,
                payer,
                reason: "processing".into(),
            })
            .await
            .unwrap();
    }
    let due = anns.expires_at.unwrap().max(bobs.expires_at.unwrap());
    assert!(
        store
            .expire_reservations(due.plus_millis(1000), 100)
            .await
            .unwrap()
            .is_empty(),
        "reservations wait for the provider's answer"
    );
    // Bob's card is declined: his reservation expires as any unpaid one.
    store
        .settle_payment("test", "evt_bob", "pi_bob", false, Some("card_declined"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .expire_reservations(due.plus_millis(1000), 100)
            .await
            .unwrap(),
        vec![store::Expired {
            order: bobs.id.clone(),
            sale: Some(sale.clone())
        }]
    );
    // Ann's answer does not come in time: her reservation goes once the hold
    // is over.
    assert_eq!(
        store
            .expire_reservations(due.plus_millis(store::PAYMENT_HOLD_MS + 1), 100)
            .await
            .unwrap(),
        vec![store::Expired {
            order: anns.id.clone(),
            sale: Some(sale.clone())
        }]
    );
    // Then it comes, a success: the order stays expired, says so in its
    // history, and the money is due back, once.
    let settled = store
        .settle_payment("test", "evt_ann", "pi_ann", true, None)
        .await
        .unwrap()
        .unwrap();
    assert!(settled.reversal_due);
    assert_eq!(settled.order.status, domain::order::OrderStatus::Expired);
    assert!(
        settled
            .order
            .history
            .last()
            .unwrap()
            .reason
            .contains("refunded"),
        "{:?}",
        settled.order.history
    );
    let now = Timestamp::now();
    let lease = Duration::from_secs(60);
    let claimed = store.claim_reversals(now, lease, 10).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|p| p.provider_payment_id.as_str())
            .collect::<Vec<_>>(),
        ["pi_ann"]
    );
    assert!(
        store
            .claim_reversals(now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "claimed by the first"
    );
    // A refund that failed is claimed again when the lease runs out...
    let later = now.plus_millis(61_000);
    let again = store.claim_reversals(later, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    // ...and one that was recorded never again.
    store
        .reversal_refunded(&again[0].id, "re_test_1")
        .await
        .unwrap();
    assert!(
        store
            .claim_reversals(later.plus_millis(120_000), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn unpaid_reservations_expire_and_give_their_units_back(store: &Store) {
    let (seller, variant, sale) = sale_setup(store, 10, 3, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let got = store
        .claim_batch(&sale, &[tap(&ann, 2), tap(&bob, 1)], Duration::ZERO)
        .await
        .unwrap();
    let ClaimOutcome::Reserved(anns) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(
        store.sale(&sale).await.unwrap().unwrap().status,
        SaleStatus::SoldOut
    );

    // Not yet due: nothing happens.
    let before = anns.expires_at.unwrap().plus_millis(-1);
    assert!(
        store
            .expire_reservations(before, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let expired = store
        .expire_reservations(Timestamp::now(), 100)
        .await
        .unwrap();
    assert_eq!(expired.len(), 2);
    assert!(
        store
            .expire_reservations(Timestamp::now(), 100)
            .await
            .unwrap()
            .is_empty(),
        "once only"
    );
    let s = store.sale(&sale).await.unwrap().unwrap();
    assert_eq!(
        (s.available, s.status),
        (3, SaleStatus::Live),
        "the units are back on sale"
    );
    assert_eq!(
        store.sale_tally(&sale).await.unwrap(),
        SaleTally {
            orders: 0,
            units: 0
        }
    );
    let order = store.order(&anns.id).await.unwrap().unwrap();
    assert_eq!(order.status, domain::order::OrderStatus::Expired);
    let last = order.history.last().unwrap();
    assert_eq!(
        (last.status, last.actor_id.is_none()),
        (domain::order::OrderStatus::Expired, true)
    );
    // Ann's limit counts only what she holds: she can buy 2 again.
    let again = store
        .claim_batch(&sale, &[tap(&ann, 2)], WINDOW)
        .await
        .unwrap();
    assert!(matches!(again[0], ClaimOutcome::Reserved(_)));

    // After the sale closed, a lapsed reservation goes back to the shelf.
    let late = store
        .claim_batch(&sale, &[tap(&bob, 1)], Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(late[0], ClaimOutcome::Reserved(_)));
    let closed = store
        .close_sale(&sale, SaleStatus::Ended, &seller)
        .await
        .unwrap();
    assert_eq!(closed.available, 0);
    let shelf = store
        .variant(&variant)
        .await
        .unwrap()
        .unwrap()
        .0
        .stock_on_hand;
    assert_eq!(
        store
            .expire_reservations(Timestamp::now(), 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .variant(&variant)
            .await
            .unwrap()
            .unwrap()
            .0
            .stock_on_hand,
        shelf + 1
    );
    let ledger = store.stock_ledger(&variant, &page(1, None)).await.unwrap();
    assert_eq!(
        ledger.items[0].reason,
        AdjustmentReason::ReservationReleased
    );
    assert_eq!(ledger.items[0].actor_id, seller);
    // Ann's order (10 minutes to pay) is untouched.
    assert_eq!(
        store.sale_tally(&sale).await.unwrap(),
        SaleTally {
            orders: 1,
            units: 2
        }
    );
}

fn change(event: domain::order::OrderEvent, actor: &UserId, reason: &str) -> OrderChange {
    OrderChange {
        event,
        actor: Some(actor.clone()),
        reason: reason.to_owned(),
        shipment: None,
        restock: false,
    }
}

async fn orders_pay_ship_refund_and_cancel(store: &Store) {
    use domain::order::{OrderError, OrderEvent, OrderStatus, Shipment};
    let (seller, variant, sale) = sale_setup(store, 10, 5, 5).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let got = store
        .claim_batch(&sale, &[tap(&ann, 2), tap(&ann, 1)], WINDOW)
        .await
        .unwrap();
    let (ClaimOutcome::Reserved(first), ClaimOutcome::Reserved(second)) = (&got[0], &got[1]) else {
        panic!("{got:?}")
    };
    let eur = |a| Money::parse(a, "EUR").unwrap();

    let wrong = store
        .change_order(&first.id, change(OrderEvent::Pay(eur(1)), &ann, "card"))
        .await;
    assert!(matches!(
        wrong,
        Err(StoreError::Order(OrderError::WrongAmount { .. }))
    ));
    let paid = store
        .change_order(&first.id, change(OrderEvent::Pay(eur(1998)), &ann, "card"))
        .await
        .unwrap();
    assert_eq!(
        (paid.status, paid.paid.amount, paid.expires_at),
        (OrderStatus::Paid, 1998, None)
    );
    assert!(matches!(
        store
            .change_order(&first.id, change(OrderEvent::Pay(eur(1998)), &ann, "again"))
            .await,
        Err(StoreError::Order(OrderError::Transition { .. }))
    ));
    // Paid orders do not expire.
    assert!(
        store
            .expire_reservations(Timestamp::now().plus_millis(3_600_000), 10)
            .await
            .unwrap()
            .iter()
            .any(|e| e.order == second.id)
    );

    let mut ship = change(OrderEvent::Fulfill, &seller, "shipped");
    ship.shipment = Some(Shipment {
        carrier: "DHL".into(),
        tracking_number: "JD0142".into(),
    });
    let shipped = store.change_order(&first.id, ship).await.unwrap();
    assert_eq!(shipped.status, OrderStatus::Fulfilled);
    assert_eq!(shipped.shipment.as_ref().unwrap().tracking_number, "JD0142");

    let mut partial = change(OrderEvent::Refund(eur(500)), &seller, "scratched");
    partial.restock = true;
    assert!(
        matches!(
            store.change_order(&first.id, partial).await,
            Err(StoreError::Order(_))
        ),
        "restock needs a full refund"
    );
    let part = store
        .change_order(
            &first.id,
            change(OrderEvent::Refund(eur(500)), &seller, "scratched"),
        )
        .await
        .unwrap();
    assert_eq!(
        (part.status, part.refunded.amount),
        (OrderStatus::PartiallyRefunded, 500)
    );
    assert!(matches!(
        store
            .change_order(
                &first.id,
                change(OrderEvent::Refund(eur(1499)), &seller, "too much")
            )
            .await,
        Err(StoreError::Order(OrderError::RefundTooLarge { .. }))
    ));
    let shelf = store
        .variant(&variant)
        .await
        .unwrap()
        .unwrap()
        .0
        .stock_on_hand;
    let mut rest = change(OrderEvent::Refund(eur(1498)), &seller, "returned");
    rest.restock = true;
    let refunded = store.change_order(&first.id, rest).await.unwrap();
    assert_eq!(
        (refunded.status, refunded.refunded.amount),
        (OrderStatus::Refunded, 1998)
    );
    assert_eq!(
        store
            .variant(&variant)
            .await
            .unwrap()
            .unwrap()
            .0
            .stock_on_hand,
        shelf + 2
    );
    let history: Vec<_> = refunded
        .history
        .iter()
        .map(|h| (h.status, h.amount.map(|m| m.amount)))
        .collect();
    assert_eq!(
        history,
        [
            (OrderStatus::Reserved, None),
            (OrderStatus::Paid, Some(1998)),
            (OrderStatus::Fulfilled, None),
            (OrderStatus::PartiallyRefunded, Some(500)),
            (OrderStatus::Refunded, Some(1498)),
        ]
    );
    assert_eq!(refunded.history[2].actor_id.as_ref(), Some(&seller));
}

async fn chat_is_kept_in_batches(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 1, 1, 1).await;
    let room = store.sale(&sale).await.unwrap().unwrap().room_id;
    let at = Timestamp::now();
    let batch: Vec<store::ChatRecord> = (0..3)
        .map(|i| store::ChatRecord {
            id: domain::ids::MessageId::generate(),
            room: room.clone(),
            user: seller.clone(),
            moderator: i == 2,
            seq: 10 + i,
            text: format!("hello {i}"),
            at,
        })
        .collect();
    store.save_chat(&batch).await.unwrap();
    store.save_chat(&[]).await.unwrap();
    let recent = store.recent_chat(&room, 2).await.unwrap();
    let records: Vec<_> = recent.iter().map(|c| c.record.clone()).collect();
    assert_eq!(records, batch[1..]);
    let name = store.user(&seller).await.unwrap().unwrap().display_name;
    assert!(
        recent.iter().all(|c| c.name == name.as_str()),
        "each message comes with its author's name"
    );
}

async fn room_stats_add_up_the_nodes_samples_and_the_chat(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 1, 1, 1).await;
    let room = store.sale(&sale).await.unwrap().unwrap().room_id;
    let empty = store.room_stats(&room, 10_000).await.unwrap();
    assert_eq!(empty, store::RoomStats::default());
    let sample = |at: i64, viewers: i64, likes: i64| store::RoomSample {
        room: room.clone(),
        at: Timestamp::from_millis(at),
        viewers,
        likes,
    };
    // Two nodes sample the same intervals; a third interval saw one node only.
    store
        .record_room_samples(&[sample(1_000_000, 3, 2), sample(1_000_000, 4, 1)])
        .await
        .unwrap();
    store
        .record_room_samples(&[sample(1_010_000, 5, 0), sample(1_020_000, 2, 7)])
        .await
        .unwrap();
    store.record_room_samples(&[]).await.unwrap();
    let chat: Vec<store::ChatRecord> = [1_000_500, 1_001_000, 1_021_000]
        .into_iter()
        .enumerate()
        .map(|(i, at)| store::ChatRecord {
            id: domain::ids::MessageId::generate(),
            room: room.clone(),
            user: seller.clone(),
            moderator: false,
            seq: i as i64,
            text: format!("hello {i}"),
            at: Timestamp::from_millis(at),
        })
        .collect();
    store.save_chat(&chat).await.unwrap();
    let stats = store.room_stats(&room, 10_000).await.unwrap();
    let series: Vec<(i64, i64, i64, i64)> = stats
        .series
        .iter()
        .map(|p| (p.at, p.viewers, p.likes, p.messages))
        .collect();
    assert_eq!(
        series,
        [
            (1_000_000, 7, 3, 2),
            (1_010_000, 5, 0, 0),
            (1_020_000, 2, 7, 1)
        ]
    );
    assert_eq!(
        (
            stats.peak_viewers,
            stats.likes,
            stats.messages,
            stats.chatters
        ),
        (7, 10, 3, 1)
    );
    assert_eq!(
        (stats.orders, stats.paid_orders, stats.buyers, stats.revenue),
        (0, 0, 0, 0)
    );
}

async fn pins_replace_each_other_and_keep_their_timeline(store: &Store) {
    let seller = user(store, "seller@example.com").await;
    let s = shop(store, &seller, "anns").await;
    let a = store
        .create_product(product(&s, "A", vec![variant("A", 100, 1)]), &seller)
        .await
        .unwrap();
    let b = store
        .create_product(product(&s, "B", vec![variant("B", 100, 1)]), &seller)
        .await
        .unwrap();
    let room = room_of(store, &s).await;
    assert_eq!(store.current_pin(&room.id).await.unwrap(), None);
    assert!(!store.unpin(&room.id).await.unwrap());
    let at = store.pin_product(&room.id, &a.id, &seller).await.unwrap();
    assert_eq!(
        store.current_pin(&room.id).await.unwrap(),
        Some((a.id.clone(), at))
    );
    let at = store.pin_product(&room.id, &b.id, &seller).await.unwrap();
    assert_eq!(
        store.current_pin(&room.id).await.unwrap(),
        Some((b.id.clone(), at))
    );
    assert!(store.unpin(&room.id).await.unwrap());
    assert_eq!(store.current_pin(&room.id).await.unwrap(), None);
    // Pins racing each other: one wins, none fails.
    let racing: Vec<_> = (0..8)
        .map(|i| {
            let (store, room, seller) = (store.clone(), room.id.clone(), seller.clone());
            let product = if i % 2 == 0 {
                a.id.clone()
            } else {
                b.id.clone()
            };
            tokio::spawn(async move { store.pin_product(&room, &product, &seller).await })
        })
        .collect();
    for pin in racing {
        pin.await.unwrap().unwrap();
    }
    assert!(store.current_pin(&room.id).await.unwrap().is_some());
}

async fn moderation_is_kept(store: &Store) {
    use domain::room::SanctionKind;
    let (seller, _, sale) = sale_setup(store, 1, 1, 1).await;
    let sale = store.sale(&sale).await.unwrap().unwrap();
    let (room, shop) = (sale.room_id, sale.shop_id);
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;

    assert!(!store.is_moderator(&shop, &ann).await.unwrap());
    store.appoint_moderator(&shop, &ann).await.unwrap();
    store.appoint_moderator(&shop, &ann).await.unwrap();
    assert!(store.is_moderator(&shop, &ann).await.unwrap());
    assert_eq!(
        store.moderators(&shop).await.unwrap(),
        std::slice::from_ref(&ann)
    );
    assert!(store.dismiss_moderator(&shop, &ann).await.unwrap());
    assert!(!store.dismiss_moderator(&shop, &ann).await.unwrap());

    let words = vec!["scam".to_owned(), "spam".to_owned()];
    store.set_blocked_words(&shop, &words).await.unwrap();
    assert_eq!(store.blocked_words(&shop).await.unwrap(), words);
    store.set_blocked_words(&shop, &[]).await.unwrap();
    assert!(store.blocked_words(&shop).await.unwrap().is_empty());

    let past = Timestamp::now().plus_millis(-1000);
    store
        .sanction(&room, &bob, SanctionKind::Mute, Some(past), &seller)
        .await
        .unwrap();
    assert!(
        store.sanctions(&room).await.unwrap().is_empty(),
        "a mute that ended"
    );
    let ban = store
        .sanction(&room, &bob, SanctionKind::Ban, None, &seller)
        .await
        .unwrap();
    assert_eq!(store.sanctions(&room).await.unwrap(), [ban]);
    assert!(store.lift_sanction(&room, &bob).await.unwrap());
    assert!(store.sanctions(&room).await.unwrap().is_empty());

    assert_eq!(store.slow_mode(&room).await.unwrap(), 0);
    store.set_slow_mode(&room, 30).await.unwrap();
    assert_eq!(store.slow_mode(&room).await.unwrap(), 30);

    let message = store::ChatRecord {
        id: domain::ids::MessageId::generate(),
        room: room.clone(),
        user: bob.clone(),
        moderator: false,
        seq: 1,
        text: "hello".into(),
        at: Timestamp::now(),
    };
    store
        .save_chat(std::slice::from_ref(&message))
        .await
        .unwrap();
    assert!(store.delete_chat(&room, message.id.as_str()).await.unwrap());
    assert!(!store.delete_chat(&room, message.id.as_str()).await.unwrap());
    assert!(store.recent_chat(&room, 10).await.unwrap().is_empty());
}

/// Two requests with one key at the same moment, on PostgreSQL: the batch that
/// found the key free but could not write it (the other request's transaction
/// wrote it first) is rolled back and served again, and then answers with the
/// first request's answer: no second order, no units taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_loses_a_race_for_a_key_is_served_again() {
    use sqlx::Connection;
    let db = TestDatabase::postgres().await;
    let store = &db.store;
    let (seller, _, sale) = sale_setup(store, 10, 5, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let mut other = sqlx::PgConnection::connect(db.url.as_deref().unwrap())
        .await
        .unwrap();
    let mut first = other.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, outcome, body, created_at)
         VALUES ($1, 'race', 'h', 'made', '{\"first\":true}', $2)",
    )
    .bind(ann.as_str())
    .bind(Timestamp::now().as_millis())
    .execute(&mut *first)
    .await
    .unwrap();
    let mut claim = tap(&ann, 1);
    claim.idempotency = Some(store::ClaimKey {
        key: "race".into(),
        request_hash: "h".into(),
    });
    let batch = {
        let (store, sale) = (store.clone(), sale.clone());
        tokio::spawn(async move { store.claim_batch(&sale, &[claim], WINDOW).await })
    };
    // The batch finds the key free and waits on the uncommitted row: its
    // connection shows up in PostgreSQL as waiting for a lock.
    let mut watcher = sqlx::PgConnection::connect(db.url.as_deref().unwrap())
        .await
        .unwrap();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            !batch.is_finished(),
            "the batch waits for the first request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !batch.is_finished(),
        "the batch waits for the first request"
    );
    first.commit().await.unwrap();
    let got = batch.await.unwrap().unwrap();
    match &got[0] {
        ClaimOutcome::Earlier(Earlier::Replay(answer)) => {
            assert_eq!(answer, &store::Answer::Made("{\"first\":true}".into()))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.sale_tally(&sale).await.unwrap().orders, 0);
    assert_eq!(store.sale(&sale).await.unwrap().unwrap().available, 5);
    // Without foreign keys on the purchase path, the orphan check sees a key
    // whose user does not exist.
    assert_eq!(store::testing::orphans(store).await.unwrap(), 0);
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at)
         VALUES ('usr_gone', 'k', 'h', 0)",
    )
    .execute(&mut other)
    .await
    .unwrap();
    assert_eq!(store::testing::orphans(store).await.unwrap(), 1);
}
