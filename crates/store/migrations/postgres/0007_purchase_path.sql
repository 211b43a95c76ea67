-- The purchase path writes hundreds of orders in one transaction, and each
-- foreign key on those rows is a query and a row lock per row, on the same few
-- parent rows every purchase shares (the sale, its room, shop and variant, and
-- each buyer's account): on a flash sale's batch the checks cost more than the
-- inserts (bench/flash-sale: 8.6k against 5.5k confirmed orders per second).
-- These parents are never deleted (accounts, shops, rooms, sales and variants
-- are closed or archived, not removed), and the purchase path takes every one
-- of these ids from a row it has just read or locked in the same transaction
-- (the sale's claim, the variants' shelf read, the signed-in buyer), so the
-- checks proved again what the transaction had just established. The store
-- suite checks for orphans after its storms (store::testing::orphans).
-- The rows that belong to an order keep their key to it; SQLite, where a check
-- is a cheap index probe and nothing is locked, keeps all of its keys.
ALTER TABLE orders
    DROP CONSTRAINT orders_buyer_id_fkey,
    DROP CONSTRAINT orders_shop_id_fkey,
    DROP CONSTRAINT orders_room_id_fkey,
    DROP CONSTRAINT orders_sale_id_fkey;
ALTER TABLE order_lines DROP CONSTRAINT order_lines_variant_id_fkey;
ALTER TABLE order_events DROP CONSTRAINT order_events_actor_id_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_user_id_fkey;
ALTER TABLE sale_buyers
    DROP CONSTRAINT sale_buyers_sale_id_fkey,
    DROP CONSTRAINT sale_buyers_buyer_id_fkey;
