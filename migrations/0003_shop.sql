-- Shop domain (seed 002): products with stock per size, carts, orders paid
-- from the balance, and per-product daily statistics.

CREATE TABLE products (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(255) NOT NULL,
    category    VARCHAR(100) NOT NULL,
    price       BIGINT       NOT NULL CHECK (price >= 0),
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX products_category_idx ON products (category, id);

CREATE TABLE product_stocks (
    id          BIGSERIAL PRIMARY KEY,
    product_id  BIGINT      NOT NULL REFERENCES products (id),
    size        VARCHAR(20) NOT NULL,
    quantity    INT         NOT NULL CHECK (quantity >= 0),
    version     BIGINT      NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (product_id, size)
);

CREATE TABLE user_carts (
    id                BIGSERIAL PRIMARY KEY,
    user_id           BIGINT      NOT NULL REFERENCES users (id),
    product_id        BIGINT      NOT NULL REFERENCES products (id),
    product_stock_id  BIGINT      NOT NULL REFERENCES product_stocks (id),
    quantity          INT         NOT NULL CHECK (quantity > 0),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, product_stock_id)
);

CREATE TABLE orders (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT      NOT NULL REFERENCES users (id),
    status        TEXT        NOT NULL CHECK (status IN ('PENDING_PAYMENT', 'PAID')),
    total_amount  BIGINT      NOT NULL CHECK (total_amount >= 0),
    order_date    TIMESTAMPTZ,
    request_id    UUID        UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_idx ON orders (user_id, id DESC);

CREATE TABLE order_items (
    id                BIGSERIAL PRIMARY KEY,
    order_id          BIGINT NOT NULL REFERENCES orders (id),
    product_stock_id  BIGINT NOT NULL REFERENCES product_stocks (id),
    product_id        BIGINT NOT NULL REFERENCES products (id),
    size              VARCHAR(20) NOT NULL,
    quantity          INT    NOT NULL CHECK (quantity > 0),
    unit_price        BIGINT NOT NULL CHECK (unit_price >= 0)
);
CREATE INDEX order_items_order_idx ON order_items (order_id);

-- A payment pays either a reservation or an order.
ALTER TABLE payments ADD COLUMN order_id BIGINT UNIQUE REFERENCES orders (id);
ALTER TABLE payments ADD CONSTRAINT payments_pays_one_thing
    CHECK ((reservation_id IS NULL) <> (order_id IS NULL));

CREATE TABLE product_order_stats (
    id                  BIGSERIAL PRIMARY KEY,
    product_id          BIGINT      NOT NULL REFERENCES products (id),
    order_date          DATE        NOT NULL,
    total_orders        INT         NOT NULL DEFAULT 0,
    total_quantity      BIGINT      NOT NULL DEFAULT 0,
    total_sales_amount  BIGINT      NOT NULL DEFAULT 0,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (product_id, order_date)
);
CREATE INDEX product_order_stats_date_idx ON product_order_stats (order_date, product_id);

-- Orders the stats lane has counted. The outbox relay publishes at least
-- once, so an `order.paid` event can arrive twice; it counts once.
CREATE TABLE stats_counted_orders (
    order_id    BIGINT      PRIMARY KEY,
    counted_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
