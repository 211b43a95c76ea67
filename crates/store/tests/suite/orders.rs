//! Orders after the purchase: due sales, expiry, payment, shipping, refunds.

use super::*;

pub(crate) async fn due_sales_are_found(store: &Store) {
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

pub(crate) async fn a_reservation_waits_for_a_payment_in_progress(store: &Store) {
    use domain::order::PaymentStatus;
    let (seller, _, sale) = sale_setup(store, 10, 3, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let got = store
        .claim_batch(
            &sale,
            &[tap(&ann, 1), tap(&bob, 1)],
            &Reservations::lasting(Duration::ZERO),
        )
        .await
        .unwrap();
    let (ClaimOutcome::Reserved(anns), ClaimOutcome::Reserved(bobs)) = (&got[0], &got[1]) else {
        panic!("{got:?}")
    };
    let mut attempts = Vec::new();
    for (order, payer) in [(anns, &ann), (bobs, &bob)] {
        let begun = store
            .begin_payment(store::NewPayment {
                order: &order.id,
                provider: "test",
                amount: order.total,
                payer,
                request_key: "pay-1",
            })
            .await
            .unwrap();
        let store::Begun::New(attempt) = begun else {
            panic!("{begun:?}")
        };
        attempts.push(attempt.id);
    }
    let answer = |intent, status, failure_code| store::ChargeAnswer {
        intent_id: intent,
        status,
        failure_code,
        card_last4: "4242",
    };
    // Ann's charge is still being made; Bob's is processing.
    store
        .record_charge(
            &attempts[1],
            answer("pi_bob", PaymentStatus::Processing, None),
            None,
        )
        .await
        .unwrap();
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
    let webhook = Some(("test", "evt_bob"));
    let declined = answer("pi_bob", PaymentStatus::Failed, Some("card_declined"));
    let recorded = store
        .record_charge(&attempts[1], declined.clone(), webhook)
        .await
        .unwrap();
    assert!(recorded.changed);
    assert!(store.webhook_seen("test", "evt_bob").await.unwrap());
    let again = store
        .record_charge(&attempts[1], declined, webhook)
        .await
        .unwrap();
    assert!(!again.changed, "an answer that comes twice changes nothing");
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
        .record_charge(
            &attempts[0],
            answer("pi_ann", PaymentStatus::Succeeded, None),
            None,
        )
        .await
        .unwrap();
    assert!(settled.reversed);
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
            .map(|p| p.provider_payment_id.as_deref().unwrap())
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

pub(crate) async fn unpaid_reservations_expire_and_give_their_units_back(store: &Store) {
    let (seller, variant, sale) = sale_setup(store, 10, 3, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let got = store
        .claim_batch(
            &sale,
            &[tap(&ann, 2), tap(&bob, 1)],
            &Reservations::lasting(Duration::ZERO),
        )
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
        .claim_batch(&sale, &[tap(&ann, 2)], &WINDOW)
        .await
        .unwrap();
    assert!(matches!(again[0], ClaimOutcome::Reserved(_)));

    // After the sale closed, a lapsed reservation goes back to the shelf.
    let late = store
        .claim_batch(
            &sale,
            &[tap(&bob, 1)],
            &Reservations::lasting(Duration::ZERO),
        )
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

pub(crate) async fn orders_pay_ship_refund_and_cancel(store: &Store) {
    use domain::order::{OrderError, OrderEvent, OrderStatus, Shipment};
    let (seller, variant, sale) = sale_setup(store, 10, 5, 5).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let got = store
        .claim_batch(&sale, &[tap(&ann, 2), tap(&ann, 1)], &WINDOW)
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

/// One attempt at a time per order; a key finds its own attempt again; a
/// charge for an order already paid is reversed, not dropped.
pub(crate) async fn payment_attempts_are_one_at_a_time(store: &Store) {
    use domain::order::{OrderStatus, PaymentStatus};
    let (seller, _, sale) = sale_setup(store, 10, 3, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let got = store
        .claim_batch(
            &sale,
            &[tap(&ann, 1)],
            &Reservations::lasting(Duration::ZERO),
        )
        .await
        .unwrap();
    let ClaimOutcome::Reserved(order) = &got[0] else {
        panic!("{got:?}")
    };
    let begin = |key| {
        store.begin_payment(store::NewPayment {
            order: &order.id,
            provider: "test",
            amount: order.total,
            payer: &ann,
            request_key: key,
        })
    };
    let store::Begun::New(first) = begin("k1").await.unwrap() else {
        panic!("a first attempt")
    };
    assert!(matches!(begin("k2").await.unwrap(), store::Begun::Busy));
    let store::Begun::Earlier(same) = begin("k1").await.unwrap() else {
        panic!("the key's own attempt")
    };
    assert_eq!(same.id, first.id);
    let paid = store
        .record_charge(
            &first.id,
            store::ChargeAnswer {
                intent_id: "pi_1",
                status: PaymentStatus::Succeeded,
                failure_code: None,
                card_last4: "4242",
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(paid.order.status, OrderStatus::Paid);
    assert!(!paid.reversed);
    // A second charge that turns up for the paid order (an attempt closed as
    // abandoned whose charge the provider made after all) is reversed.
    let store::Begun::New(second) = begin("k3").await.unwrap() else {
        panic!("the first is settled: a new attempt may start")
    };
    assert!(store.abandon_payment(&second.id).await.unwrap());
    let found = store
        .record_charge(
            &second.id,
            store::ChargeAnswer {
                intent_id: "pi_2",
                status: PaymentStatus::Succeeded,
                failure_code: None,
                card_last4: "4242",
            },
            None,
        )
        .await
        .unwrap();
    assert!(found.reversed && found.changed);
    assert_eq!(found.order.status, OrderStatus::Paid);
    assert_eq!(store.reversals_pending().await.unwrap(), 1);
    assert_eq!(
        store
            .succeeded_payment(&order.id)
            .await
            .unwrap()
            .unwrap()
            .id,
        first.id,
        "the payment that paid, not the reversed one"
    );
}

/// Refund claims never add up to more than was paid, a claim is completed
/// once, and a released claim frees its amount.
pub(crate) async fn refund_claims_never_exceed_the_payment(store: &Store) {
    use domain::order::{OrderStatus, PaymentStatus, RefundStatus};
    let (seller, _, sale) = sale_setup(store, 10, 3, 2).await;
    store.start_sale(&sale, &seller).await.unwrap();
    let ann = user(store, "ann@example.com").await;
    let got = store
        .claim_batch(
            &sale,
            &[tap(&ann, 2)],
            &Reservations::lasting(Duration::ZERO),
        )
        .await
        .unwrap();
    let ClaimOutcome::Reserved(order) = &got[0] else {
        panic!("{got:?}")
    };
    let store::Begun::New(attempt) = store
        .begin_payment(store::NewPayment {
            order: &order.id,
            provider: "test",
            amount: order.total,
            payer: &ann,
            request_key: "pay",
        })
        .await
        .unwrap()
    else {
        panic!("an attempt")
    };
    let paid = store
        .record_charge(
            &attempt.id,
            store::ChargeAnswer {
                intent_id: "pi_r",
                status: PaymentStatus::Succeeded,
                failure_code: None,
                card_last4: "4242",
            },
            None,
        )
        .await
        .unwrap();
    let total = order.total;
    let half = Money {
        amount: total.amount / 2,
        currency: total.currency,
    };
    let payment = paid.payment.clone();
    let claim = |key: &'static str, amount| {
        store.claim_refund(store::NewRefund {
            payment: &payment,
            amount,
            reason: "damaged",
            restock: false,
            actor: &seller,
            request_key: key,
        })
    };
    let first = claim("r1", half).await.unwrap();
    assert_eq!(first.refund.status, RefundStatus::Pending);
    let second = claim("r2", half).await.unwrap();
    assert!(
        matches!(
            claim("r3", half).await,
            Err(store::StoreError::Order(
                domain::order::OrderError::RefundTooLarge { .. }
            ))
        ),
        "two pending halves leave nothing to claim"
    );
    assert_eq!(claim("r1", half).await.unwrap().refund.id, first.refund.id);
    let (done, order_now) = store
        .complete_refund(&first.refund.id, "re_1")
        .await
        .unwrap();
    assert_eq!(done.refund.status, RefundStatus::Succeeded);
    assert_eq!(order_now.status, OrderStatus::PartiallyRefunded);
    let (_, twice) = store
        .complete_refund(&first.refund.id, "re_1")
        .await
        .unwrap();
    assert_eq!(twice.refunded, half, "completed once");
    store.fail_refund(&second.refund.id).await.unwrap();
    let third = claim("r4", half).await.unwrap();
    store
        .complete_refund(&third.refund.id, "re_2")
        .await
        .unwrap();
    let last = store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(last.status, OrderStatus::Refunded);
    assert_eq!(last.refunded, total);
}
