-- Platform tables every lane shares: request outcomes, the outbox and the
-- consumed offsets. Migrations are append-only: never edit a released file.

-- One row per accepted request. The gateway inserts it PENDING after Kafka
-- acknowledged the record; the lane that applies it writes the outcome in the
-- same transaction as the effects and the offset.
CREATE TABLE requests (
    id             UUID PRIMARY KEY,
    type           TEXT        NOT NULL,
    user_id        BIGINT,
    status         TEXT        NOT NULL DEFAULT 'PENDING'
                   CHECK (status IN ('PENDING', 'SUCCEEDED', 'REJECTED', 'FAILED')),
    result         JSONB,
    error_code     TEXT,
    error_message  TEXT,
    topic          TEXT,
    kafka_partition INT,
    kafka_offset   BIGINT,
    accepted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at   TIMESTAMPTZ
);
CREATE INDEX requests_user_idx ON requests (user_id, accepted_at DESC);

-- Events written in the business transaction, published by the outbox relay.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    event_id    UUID        NOT NULL UNIQUE,
    topic       TEXT        NOT NULL,
    event_key   TEXT        NOT NULL,
    payload     JSONB       NOT NULL,
    request_id  UUID,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Next offset to consume per consumer group and partition. A lane reads it on
-- assignment and advances it in the transaction that applied the records.
CREATE TABLE consumer_offsets (
    consumer_group  TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    kafka_partition INT         NOT NULL,
    next_offset     BIGINT      NOT NULL CHECK (next_offset >= 0),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
