//! Flash sales: their lifecycle and the batched claims of taps.

use super::*;

pub(crate) async fn sale_lifecycle_moves_stock_through_the_ledger(store: &Store) {
    let (seller, variant, sale) = sale_setup(store, 10, 6, 2).await;
    let buyer = user(store, "b@example.com").await;
    let scheduled = store
        .claim_batch(&sale, &[tap(&buyer, 1)], &WINDOW)
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
        .claim_batch(&sale, &[tap(&buyer, 2)], &WINDOW)
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
        .claim_batch(&sale, &[tap(&buyer, 1)], &WINDOW)
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

pub(crate) async fn a_batch_allocates_exactly_what_is_left(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 50, 5, 10).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let b = buyers(store, 4).await;
    // 3 fits, the next 3 does not (2 left), the 2 after it does: nothing oversold,
    // nothing stranded.
    let got = store
        .claim_batch(
            &sale,
            &[tap(&b[0], 3), tap(&b[1], 3), tap(&b[2], 2), tap(&b[3], 1)],
            &WINDOW,
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
        .claim_batch(&sale2, &[tap(&b[0], 3), tap(&b[1], 3)], &WINDOW)
        .await
        .unwrap();
    assert!(matches!(got[0], ClaimOutcome::Reserved(_)));
    assert!(matches!(got[1], ClaimOutcome::Refused(Refusal::SoldOut)));
    let s = store.sale(&sale2).await.unwrap().unwrap();
    assert_eq!((s.available, s.status), (2, SaleStatus::Live));
}

pub(crate) async fn one_buyers_taps_in_one_batch_respect_the_limit(store: &Store) {
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
            &WINDOW,
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
        .claim_batch(&sale2, &[tap(&b[0], 2)], &WINDOW)
        .await
        .unwrap();
    assert_eq!(kinds(&first), ["reserved"]);
    let got = store
        .claim_batch(
            &sale2,
            &[tap(&b[0], 1), tap(&b[1], 1), tap(&b[1], 1), tap(&b[1], 1)],
            &WINDOW,
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

pub(crate) async fn a_storm_sells_exactly_the_quantity(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 1000, 100, 1).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let crowd = buyers(store, 1500).await;
    let inventory = Inventory::new(store.clone(), WINDOW, WINDOW);
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

pub(crate) async fn parallel_taps_cannot_pass_the_per_buyer_limit(store: &Store) {
    let (seller, _, sale) = sale_setup(store, 100, 50, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let greedy = user(store, "greedy@example.com").await;
    let inventory = Inventory::new(store.clone(), WINDOW, WINDOW);
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
            // Taps of one batch past the buyer's unpaid orders count first.
            ClaimOutcome::Refused(Refusal::LimitReached | Refusal::TooManyUnpaid) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reserved, 2);
    // Also straight through one batch, and across two batches.
    let other = user(store, "other@example.com").await;
    let got = store
        .claim_batch(&sale, &[tap(&other, 2), tap(&other, 1)], &WINDOW)
        .await
        .unwrap();
    assert!(matches!(got[0], ClaimOutcome::Reserved(_)));
    assert!(matches!(
        got[1],
        ClaimOutcome::Refused(Refusal::LimitReached)
    ));
    let too_many = store
        .claim_batch(&sale, &[tap(&other, 3)], &WINDOW)
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
