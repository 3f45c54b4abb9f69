-- Baseline database for the same-run comparison: the business tables of the
-- real schema, seeded like the loadgen scenarios. psql variables: users, seats.
INSERT INTO users (email, name)
SELECT 'bench' || g || '@example.com', 'bench' || g FROM generate_series(1, :users) AS g;
INSERT INTO balances (user_id, balance) SELECT id, 1000000000 FROM users;
INSERT INTO concerts (title) VALUES ('Bench concert');
INSERT INTO concert_schedules (concert_id, starts_at, available_seats_count)
SELECT id, now() + interval '30 days', :seats FROM concerts;
INSERT INTO seats (concert_schedule_id, seat_no, seat_number, price)
SELECT s.id, g, 'S' || g, 1000 FROM concert_schedules s, generate_series(1, :seats) AS g;
CREATE SEQUENCE bench_seat_seq;
-- Shop: 3 hot products (stock ids 1-3) and 20 cold ones (stock ids 4-23).
INSERT INTO products (name, category, price)
SELECT CASE WHEN g <= 3 THEN 'hot' ELSE 'cold' END || g, CASE WHEN g <= 3 THEN 'hot' ELSE 'cold' END,
       CASE WHEN g <= 3 THEN 1000 ELSE 500 END
FROM generate_series(1, 23) AS g;
INSERT INTO product_stocks (product_id, size, quantity) SELECT id, 'F', 1000000 FROM products ORDER BY id;
