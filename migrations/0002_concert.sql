-- Concert booking domain (seeds 000 and 001).

CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    email       VARCHAR(255) NOT NULL UNIQUE,
    -- Credentials are signed bearer tokens; a password login may fill this.
    password    VARCHAR(255),
    name        VARCHAR(100) NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE TABLE balances (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT      NOT NULL UNIQUE REFERENCES users (id),
    balance     BIGINT      NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    version     BIGINT      NOT NULL DEFAULT 0
);

CREATE TABLE concerts (
    id          BIGSERIAL PRIMARY KEY,
    title       VARCHAR(255) NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE TABLE concert_schedules (
    id                     BIGSERIAL PRIMARY KEY,
    concert_id             BIGINT      NOT NULL REFERENCES concerts (id),
    starts_at              TIMESTAMPTZ NOT NULL,
    available_seats_count  INT         NOT NULL CHECK (available_seats_count >= 0),
    version                BIGINT      NOT NULL DEFAULT 0,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX concert_schedules_concert_idx ON concert_schedules (concert_id, starts_at);

CREATE TABLE seats (
    id                   BIGSERIAL PRIMARY KEY,
    concert_schedule_id  BIGINT      NOT NULL REFERENCES concert_schedules (id),
    seat_no              INT         NOT NULL CHECK (seat_no > 0),
    seat_number          VARCHAR(20) NOT NULL,
    price                BIGINT      NOT NULL CHECK (price >= 0),
    -- True while the seat has a live (PENDING or CONFIRMED) reservation.
    is_reserved          BOOLEAN     NOT NULL DEFAULT false,
    version              BIGINT      NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (concert_schedule_id, seat_no)
);

CREATE TABLE reservations (
    id                   BIGSERIAL PRIMARY KEY,
    user_id              BIGINT      NOT NULL REFERENCES users (id),
    concert_schedule_id  BIGINT      NOT NULL REFERENCES concert_schedules (id),
    seat_id              BIGINT      NOT NULL REFERENCES seats (id),
    status               TEXT        NOT NULL
                         CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    total_amount         BIGINT      NOT NULL CHECK (total_amount >= 0),
    expires_at           TIMESTAMPTZ NOT NULL,
    -- Set when the hold-expiry scheduler published the expire request.
    expiry_requested_at  TIMESTAMPTZ,
    confirmed_at         TIMESTAMPTZ,
    cancelled_at         TIMESTAMPTZ,
    version              BIGINT      NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The invariant: at most one live reservation per seat. A cancelled or expired
-- reservation frees the seat for the next one.
CREATE UNIQUE INDEX reservations_one_live_per_seat
    ON reservations (seat_id) WHERE status IN ('PENDING', 'CONFIRMED');
CREATE INDEX reservations_user_idx ON reservations (user_id, id DESC);
CREATE INDEX reservations_pending_expiry_idx
    ON reservations (expires_at) WHERE status = 'PENDING';

CREATE TABLE payments (
    id              BIGSERIAL PRIMARY KEY,
    reservation_id  BIGINT      UNIQUE REFERENCES reservations (id),
    user_id         BIGINT      NOT NULL REFERENCES users (id),
    amount          BIGINT      NOT NULL CHECK (amount >= 0),
    method          TEXT        NOT NULL DEFAULT 'BALANCE' CHECK (method IN ('BALANCE', 'CARD')),
    status          TEXT        NOT NULL
                    CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED', 'REFUNDED')),
    paid_at         TIMESTAMPTZ,
    refunded_at     TIMESTAMPTZ,
    version         BIGINT      NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payments_user_idx ON payments (user_id, id DESC);

CREATE TABLE balance_histories (
    id             BIGSERIAL PRIMARY KEY,
    balance_id     BIGINT      NOT NULL REFERENCES balances (id),
    user_id        BIGINT      NOT NULL REFERENCES users (id),
    type           TEXT        NOT NULL CHECK (type IN ('CHARGE', 'USE', 'REFUND')),
    amount         BIGINT      NOT NULL CHECK (amount > 0),
    balance_after  BIGINT      NOT NULL CHECK (balance_after >= 0),
    reason         VARCHAR(255),
    payment_id     BIGINT      REFERENCES payments (id),
    request_id     UUID,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX balance_histories_user_idx ON balance_histories (user_id, id DESC);

-- The waiting queue per schedule. Tokens are admitted in queue_no order.
CREATE TABLE reservation_queue (
    id                   BIGSERIAL PRIMARY KEY,
    user_id              BIGINT      NOT NULL REFERENCES users (id),
    concert_schedule_id  BIGINT      NOT NULL REFERENCES concert_schedules (id),
    token                UUID        NOT NULL UNIQUE,
    queue_no             BIGSERIAL   NOT NULL,
    status               TEXT        NOT NULL DEFAULT 'WAITING'
                         CHECK (status IN ('WAITING', 'ACTIVE', 'EXPIRED', 'PROCESSED')),
    activated_at         TIMESTAMPTZ,
    expires_at           TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX reservation_queue_waiting_idx
    ON reservation_queue (concert_schedule_id, queue_no) WHERE status = 'WAITING';
CREATE INDEX reservation_queue_active_idx
    ON reservation_queue (concert_schedule_id, expires_at) WHERE status = 'ACTIVE';
-- One live place in line per user and schedule.
CREATE UNIQUE INDEX reservation_queue_one_live_per_user
    ON reservation_queue (user_id, concert_schedule_id) WHERE status IN ('WAITING', 'ACTIVE');
