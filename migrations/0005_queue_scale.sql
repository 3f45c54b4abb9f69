-- The waiting line at a rush's scale: a place in line is a number of its
-- schedule's own (1, 2, 3, ... in join order), and each schedule keeps the
-- number its line has been admitted through, so a position is one
-- subtraction and admission an index range step, whatever the line's length.

-- Each schedule numbers its line with a sequence of its own: taking a number
-- holds no row lock (a counter row would let one join commit at a time).
-- Numbers a failed join took are never given out again; such gaps, like the
-- places of people who left, count as ahead of you until admission passes
-- them (a position is an upper bound).
CREATE FUNCTION queue_line_sequence(schedule_id BIGINT) RETURNS regclass
LANGUAGE sql STABLE PARALLEL SAFE
RETURN ('queue_line_' || schedule_id)::regclass;

-- The second half of a schedule's advisory lock key (the first half is the
-- application's queue lock class): joins hold it shared while they take a
-- place, admission exclusively while it admits.
CREATE FUNCTION queue_line_key(schedule_id BIGINT) RETURNS INT4
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (schedule_id % 2147483647)::INT4;

CREATE FUNCTION create_queue_line() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %I AS BIGINT', 'queue_line_' || NEW.id);
    INSERT INTO queue_lines (concert_schedule_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;

-- Per schedule: how far its line has moved. Every place numbered up to
-- `admitted_through` is admitted, or was left or never taken; a WAITING
-- place `n` has at most `n - admitted_through` people up to and including
-- it. Admission moves it forward under the schedule's advisory lock.
CREATE TABLE queue_lines (
    concert_schedule_id BIGINT      PRIMARY KEY REFERENCES concert_schedules (id),
    admitted_through    BIGINT      NOT NULL DEFAULT 0,
    -- Admitted per second, smoothed over the last rounds that admitted
    -- anyone: how fast the line moves, for the polling interval.
    admit_rate          DOUBLE PRECISION NOT NULL DEFAULT 0,
    admitted_at         TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TRIGGER concert_schedules_queue_line AFTER INSERT ON concert_schedules
    FOR EACH ROW EXECUTE FUNCTION create_queue_line();

-- The place in its schedule's line, and when a waiting place is given up
-- for lost: its holder has not asked for it by then (every poll moves it
-- on, by the interval the answer asked for plus a grace).
ALTER TABLE reservation_queue ADD COLUMN line_no BIGINT;
ALTER TABLE reservation_queue ADD COLUMN poll_deadline TIMESTAMPTZ;

-- Lines and places for what exists: the places in join order.
DO $$
DECLARE s RECORD;
BEGIN
    FOR s IN SELECT id FROM concert_schedules LOOP
        EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %I AS BIGINT', 'queue_line_' || s.id);
        INSERT INTO queue_lines (concert_schedule_id) VALUES (s.id) ON CONFLICT DO NOTHING;
    END LOOP;
END $$;
UPDATE reservation_queue q SET line_no = n.line_no
FROM (SELECT id, row_number() OVER (PARTITION BY concert_schedule_id ORDER BY queue_no) AS line_no
      FROM reservation_queue) n
WHERE q.id = n.id;
UPDATE queue_lines l
SET admitted_through = coalesce(
        (SELECT min(line_no) - 1 FROM reservation_queue
         WHERE concert_schedule_id = l.concert_schedule_id AND status = 'WAITING'),
        (SELECT max(line_no) FROM reservation_queue
         WHERE concert_schedule_id = l.concert_schedule_id),
        0);
DO $$
DECLARE s RECORD;
BEGIN
    FOR s IN SELECT concert_schedule_id AS id, max(line_no) AS last
             FROM reservation_queue GROUP BY concert_schedule_id LOOP
        PERFORM setval(queue_line_sequence(s.id), s.last);
    END LOOP;
END $$;
UPDATE reservation_queue SET poll_deadline = now() + interval '10 minutes' WHERE status = 'WAITING';
ALTER TABLE reservation_queue ALTER COLUMN line_no SET NOT NULL;

-- Admission steps through a line in place order; the old index ordered by
-- the global join number.
DROP INDEX reservation_queue_waiting_idx;
CREATE INDEX reservation_queue_waiting_idx
    ON reservation_queue (concert_schedule_id, line_no) WHERE status = 'WAITING';
CREATE UNIQUE INDEX reservation_queue_line_no ON reservation_queue (concert_schedule_id, line_no);
CREATE INDEX reservation_queue_abandoned_idx
    ON reservation_queue (poll_deadline) WHERE status = 'WAITING';
