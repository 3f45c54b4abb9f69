-- A rush hold as a synchronous service applies it: one transaction on one of
-- the last 50 seats; once a seat is taken the insert finds it live and adds
-- nothing (the SEAT_TAKEN path).
\set uid random(1, :users)
\set seat random(:seats - 49, :seats)
BEGIN;
SELECT concert_schedule_id, price FROM seats WHERE id = :seat FOR UPDATE;
SELECT id FROM reservations WHERE seat_id = :seat AND status IN ('PENDING', 'CONFIRMED') FOR UPDATE;
INSERT INTO reservations (user_id, concert_schedule_id, seat_id, status, total_amount, expires_at)
SELECT :uid, s.concert_schedule_id, s.id, 'PENDING', s.price, now() + interval '5 minutes' FROM seats s
WHERE s.id = :seat
  AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.seat_id = :seat AND r.status IN ('PENDING', 'CONFIRMED'));
UPDATE seats SET is_reserved = true, version = version + 1, updated_at = now() WHERE id = :seat AND NOT is_reserved;
END;
