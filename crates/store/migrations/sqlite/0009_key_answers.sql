-- An Idempotency-Key's answer is kept as what happened (outcome: made,
-- started, refused, failed) and its document, no longer as an HTTP status:
-- the API turns it into a status. Answers kept before keep their bodies.
ALTER TABLE idempotency_keys ADD COLUMN outcome TEXT
    CHECK (outcome IN ('made', 'started', 'refused', 'failed'));
UPDATE idempotency_keys SET outcome = CASE
        WHEN status = 201 THEN 'made'
        WHEN status = 202 THEN 'started'
        ELSE 'failed'
    END
    WHERE status IS NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN status;
