//! Shops, products, variants, the stock ledger and rooms.

use super::*;

pub(crate) async fn shops(store: &Store) {
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

pub(crate) async fn products_and_variants(store: &Store) {
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

pub(crate) async fn product_writes_are_atomic(store: &Store) {
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

pub(crate) async fn stock_ledger(store: &Store) {
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

pub(crate) async fn stock_never_goes_negative_under_concurrency(store: &Store) {
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

pub(crate) async fn rooms(store: &Store) {
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
