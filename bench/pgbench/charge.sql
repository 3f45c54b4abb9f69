-- One charge as a synchronous service applies it: one transaction that locks
-- the balance, adds to it and writes the history row.
\set uid random(1, :users)
BEGIN;
SELECT id, balance FROM balances WHERE user_id = :uid FOR UPDATE;
UPDATE balances SET balance = balance + 500, version = version + 1, updated_at = now() WHERE user_id = :uid;
INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after, reason)
SELECT id, user_id, 'CHARGE', 500, balance, 'charge' FROM balances WHERE user_id = :uid;
END;
