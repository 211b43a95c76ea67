-- The client address an order came from, and the indexes that count what a
-- buyer and an address hold unpaid (the caps on unpaid reservations).
ALTER TABLE orders ADD COLUMN placed_from TEXT;
CREATE INDEX orders_unpaid_buyer ON orders (buyer_id) WHERE status = 'reserved';
CREATE INDEX orders_unpaid_from ON orders (placed_from)
    WHERE status = 'reserved' AND placed_from IS NOT NULL;
