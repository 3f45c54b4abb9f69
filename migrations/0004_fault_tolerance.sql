-- Fault tolerance: idempotency fingerprints, log-incarnation checks, the
-- outbox relay's lease, and pruning support.

-- What an Idempotency-Key call asked for (hash of its route parameters and
-- body): the same key with another body is refused instead of being taken
-- for a retry. NULL for calls without a key and for rows lanes wrote.
ALTER TABLE requests ADD COLUMN fingerprint BYTEA;

-- Pruning walks requests by acceptance time. BRIN: tiny, and accepted_at is
-- never updated, so deciding a request stays a HOT update.
CREATE INDEX requests_accepted_brin ON requests USING brin (accepted_at);
CREATE INDEX stats_counted_orders_counted_brin ON stats_counted_orders USING brin (counted_at);

-- Digest of the record just before next_offset (the last one applied). A
-- lane re-reads that record when it takes the partition over; a different
-- record at that offset means the log was recreated under the stored offset.
ALTER TABLE consumer_offsets ADD COLUMN last_record_digest BIGINT;

-- Leases of jobs that must run in one process at a time (the outbox relay).
-- A holder renews its lease inside every transaction that acts on it and
-- checks the token there: once another process has taken the lease over
-- (token + 1), the old holder's next renewal fails and it stops.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      UUID        NOT NULL,
    token       BIGINT      NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
