#!/usr/bin/env python3
"""Reads the system's events with a stock Kafka client, as a downstream
consumer would (the contract: docs/asyncapi.yaml).

    pip install confluent-kafka==2.16.1
    python3 docs/examples/read_events.py [--group G] [--until-idle SECONDS] [TOPIC ...]

Topics default to reservation-events. KAFKA_BROKERS (default 127.0.0.1:9092)
and TOPIC_PREFIX (default empty) are read from the environment, as the
services read them. Without --group each run uses a fresh consumer group and
reads the topics from their start.
"""

import argparse
import json
import os
import sys
import time
import uuid
from collections import OrderedDict

from confluent_kafka import Consumer

# Versions of the payloads this reader understands.
KNOWN_VERSIONS = {1}


class Seen:
    """The event ids read lately. Repeats are whole copies of an event that
    follow it closely, so a bounded window suffices for printing; a reader
    whose effects must happen once stores the ids with its effects."""

    def __init__(self, size=100_000):
        self.ids = OrderedDict()
        self.size = size

    def first_time(self, event_id):
        if event_id in self.ids:
            return False
        self.ids[event_id] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="*", default=["reservation-events"])
    parser.add_argument("--group", default=f"read-events-{uuid.uuid4()}")
    parser.add_argument("--until-idle", type=float, default=None,
                        help="stop once nothing arrived for this many seconds")
    args = parser.parse_args()

    prefix = os.environ.get("TOPIC_PREFIX", "")
    consumer = Consumer({
        "bootstrap.servers": os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092"),
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        # Offsets are committed only for records handled (at least once).
        "enable.auto.offset.store": False,
    })
    consumer.subscribe([prefix + topic for topic in args.topics])
    seen = Seen()
    last = time.monotonic()
    try:
        while args.until_idle is None or time.monotonic() - last < args.until_idle:
            record = consumer.poll(1.0)
            if record is None:
                continue
            if record.error():
                print(f"error: {record.error()}", file=sys.stderr)
                continue
            last = time.monotonic()
            headers = {k: v.decode() for k, v in record.headers() or []}
            # The event-id header equals the envelope's event_id: a repeat is
            # dropped before its value is parsed.
            if seen.first_time(headers["event-id"]):
                event = json.loads(record.value())
                if event["version"] in KNOWN_VERSIONS:
                    print(f"{record.topic()} key={record.key().decode()} "
                          f"{event['type']} {json.dumps(event['payload'])}", flush=True)
                else:
                    print(f"skipped {event['type']} version {event['version']}", file=sys.stderr)
            consumer.store_offsets(record)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
