//! Orders at list price, batched per variant.

use super::*;

pub(crate) async fn a_batch_of_regular_orders_takes_all_lines_or_none(store: &Store) {
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
    let got = store.reserve_batch(&batch, &WINDOW).await.unwrap();
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
            &WINDOW,
        )
        .await
        .unwrap();
    assert_eq!(order_kinds(&again), ["replay", "out_of_stock"]);
    let reused = store
        .reserve_batch(&[keyed(regular(&buyer, &[(a, 1)]), "k1", "other")], &WINDOW)
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
        .reserve_batch(&[keyed(regular(&buyer, &[(b, 1)]), "k2", "h")], &WINDOW)
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

pub(crate) async fn a_storm_of_regular_orders_takes_exactly_the_shelf(store: &Store) {
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
    let inventory = Inventory::new(store.clone(), WINDOW, WINDOW);
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
