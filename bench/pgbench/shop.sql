-- A two-line order (one hot item, one cold) as a synchronous service applies
-- it, daily stats included: one transaction.
\set uid random(1, :users)
\set hot random(1, 3)
\set cold random(4, 23)
BEGIN;
SELECT id, quantity FROM product_stocks WHERE id IN (:hot, :cold) ORDER BY id FOR NO KEY UPDATE;
SELECT id, balance FROM balances WHERE user_id = :uid FOR UPDATE;
UPDATE product_stocks SET quantity = quantity - 1, version = version + 1, updated_at = now()
WHERE id IN (:hot, :cold) AND quantity >= 1;
INSERT INTO orders (user_id, status, total_amount, order_date) VALUES (:uid, 'PAID', 1500, now())
RETURNING id AS order_id \gset
INSERT INTO order_items (order_id, product_stock_id, product_id, size, quantity, unit_price)
SELECT :order_id, s.id, s.product_id, s.size, 1, p.price
FROM product_stocks s JOIN products p ON p.id = s.product_id WHERE s.id IN (:hot, :cold);
INSERT INTO payments (order_id, user_id, amount, method, status, paid_at)
VALUES (:order_id, :uid, 1500, 'BALANCE', 'SUCCESS', now()) RETURNING id AS payment_id \gset
UPDATE balances SET balance = balance - 1500, version = version + 1, updated_at = now() WHERE user_id = :uid;
INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after, reason, payment_id)
SELECT id, user_id, 'USE', 1500, balance, 'order payment', :payment_id FROM balances WHERE user_id = :uid;
INSERT INTO product_order_stats AS s (product_id, order_date, total_orders, total_quantity, total_sales_amount)
SELECT st.product_id, (now() AT TIME ZONE 'Asia/Seoul')::date, 1, 1, p.price
FROM product_stocks st JOIN products p ON p.id = st.product_id WHERE st.id IN (:hot, :cold) ORDER BY st.product_id
ON CONFLICT (product_id, order_date) DO UPDATE SET total_orders = s.total_orders + 1,
    total_quantity = s.total_quantity + 1, total_sales_amount = s.total_sales_amount + EXCLUDED.total_sales_amount;
END;
