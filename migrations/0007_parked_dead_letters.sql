-- Dead letters the dead-letter topic can never take (larger than the
-- producer's limit, a producer that failed for good): parked here with
-- their reason instead of surviving only in a log line. `workers dlq
-- parked` lists them.
CREATE TABLE parked_dead_letters (
    id               BIGSERIAL PRIMARY KEY,
    origin_topic     TEXT        NOT NULL,
    origin_partition INT         NOT NULL,
    origin_offset    BIGINT      NOT NULL,
    record_key       TEXT,
    payload          BYTEA       NOT NULL,
    reason           TEXT        NOT NULL,
    error            TEXT        NOT NULL,
    parked_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (origin_topic, origin_partition, origin_offset)
);
