-- Hold then pay, as a synchronous service applies them: two transactions on
-- the next unsold seat, the same statements the lanes run.
\set uid random(1, :users)
SELECT nextval('bench_seat_seq') AS seat \gset
BEGIN;
SELECT concert_schedule_id, price FROM seats WHERE id = :seat FOR UPDATE;
SELECT id FROM reservations WHERE seat_id = :seat AND status IN ('PENDING', 'CONFIRMED') FOR UPDATE;
INSERT INTO reservations (user_id, concert_schedule_id, seat_id, status, total_amount, expires_at)
SELECT :uid, concert_schedule_id, id, 'PENDING', price, now() + interval '5 minutes' FROM seats WHERE id = :seat
RETURNING id AS reservation \gset
UPDATE seats SET is_reserved = true, version = version + 1, updated_at = now() WHERE id = :seat;
UPDATE concert_schedules SET available_seats_count = available_seats_count - 1, version = version + 1
WHERE id = (SELECT concert_schedule_id FROM seats WHERE id = :seat);
END;
BEGIN;
SELECT id, user_id, status, total_amount, expires_at FROM reservations WHERE id = :reservation FOR UPDATE;
SELECT id, balance FROM balances WHERE user_id = :uid FOR UPDATE;
INSERT INTO payments (reservation_id, user_id, amount, method, status, paid_at)
VALUES (:reservation, :uid, 1000, 'BALANCE', 'SUCCESS', now()) RETURNING id AS payment \gset
UPDATE balances SET balance = balance - 1000, version = version + 1, updated_at = now() WHERE user_id = :uid;
INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after, reason, payment_id)
SELECT id, user_id, 'USE', 1000, balance, 'reservation payment', :payment FROM balances WHERE user_id = :uid;
UPDATE reservations SET status = 'CONFIRMED', confirmed_at = now(), version = version + 1 WHERE id = :reservation;
END;
