#!/usr/bin/env python3
"""Fixtures for contract fuzzing: creates, through the gateway, a user with
a balance, a schedule with held seats, a product with stock, an order and a
cart line, then writes a schemathesis configuration whose credentials and
dictionaries point generated calls at those real rows.

Usage: fixtures.py BASE_URL ADMIN_TOKEN OUT_TOML

Only the standard library: it runs before anything is installed.
"""

import json
import sys
import time
import urllib.error
import urllib.request
import uuid


def call(base, method, path, token=None, body=None, headers=None):
    """One call; (status, decoded body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def expect(status, body, want, what):
    if status != want:
        sys.exit(f"fuzz fixtures: {what}: expected {want}, got {status} {body}")
    return body


def decided(base, token, request_id, what):
    """Long-polls a request until it is decided; its outcome."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = call(base, "GET", f"/v1/requests/{request_id}?wait_ms=5000", token)
        if status == 200 and body["status"] != "PENDING":
            if body["status"] != "SUCCEEDED":
                sys.exit(f"fuzz fixtures: {what}: {body}")
            return body
        if status == 404:
            time.sleep(0.05)
    sys.exit(f"fuzz fixtures: {what}: no outcome within 60 s")


def submit(base, token, path, body=None, headers=None, what=""):
    status, accepted = call(base, "POST", path, token, body, headers)
    accepted = expect(status, accepted, 202, what)
    return accepted["request_id"], decided(base, token, accepted["request_id"], what)


def main():
    base, admin, out = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    suffix = uuid.uuid4().hex[:12]

    email, password = f"fuzz-{suffix}@example.com", f"fuzz-password-{suffix}"
    status, user = call(base, "POST", "/v1/users", body={"name": "fuzz", "email": email, "password": password})
    user = expect(status, user, 201, "create user")
    token, user_id = user["token"], user["id"]
    request_ids = [submit(base, token, f"/v1/users/{user_id}/balance/charge", {"amount": 1_000_000}, what="charge")[0]]

    # Two schedules: holds go to one, payments to the other. A payment that
    # succeeds expires its queue token, so holds keep a token of their own.
    status, concert = call(base, "POST", "/v1/admin/concerts", admin, {
        "title": "Fuzz concert",
        "schedules": [
            {"starts_at": "2030-06-01T19:00:00Z", "seat_count": 40, "price": 10_000},
            {"starts_at": "2030-06-02T19:00:00Z", "seat_count": 10, "price": 10_000},
        ],
    })
    concert = expect(status, concert, 201, "create concert")
    schedule_ids = [schedule["id"] for schedule in concert["schedules"]]

    def seats_of(schedule_id):
        status, seats = call(base, "GET", f"/v1/schedules/{schedule_id}/seats")
        return [seat["id"] for seat in expect(status, seats, 200, "seats")["items"]]

    def active_token(schedule_id):
        status, joined = call(base, "POST", "/v1/queue/tokens", token, {"schedule_id": schedule_id})
        if status not in (200, 201):
            sys.exit(f"fuzz fixtures: join queue: {status} {joined}")
        # Poll as the answers ask: long-poll near the front, and wait
        # poll_after_ms between calls.
        deadline = time.monotonic() + 30
        place = joined["token"]
        while joined["status"] != "ACTIVE":
            if time.monotonic() > deadline or joined["status"] != "WAITING":
                sys.exit(f"fuzz fixtures: queue token not ACTIVE: {joined}")
            time.sleep(joined["poll_after_ms"] / 1000)
            status, answer = call(base, "GET", f"/v1/queue/tokens/{place}?wait_ms=10000", token)
            if status == 429:
                joined["poll_after_ms"] = 1000
                continue
            joined = expect(status, answer, 200, "queue token")
        return place

    def hold(seat_id, queue_token):
        request_id, outcome = submit(base, token, "/v1/reservations", {"seat_id": seat_id},
                                     {"X-Queue-Token": queue_token}, "hold")
        request_ids.append(request_id)
        return outcome["result"]["reservation_id"]

    hold_seats, pay_seats = seats_of(schedule_ids[0]), seats_of(schedule_ids[1])
    hold_token, pay_token = active_token(schedule_ids[0]), active_token(schedule_ids[1])
    held = [hold(seat_id, hold_token) for seat_id in hold_seats[:2]]
    payable = [hold(seat_id, pay_token) for seat_id in pay_seats[:3]]
    reservation_ids = held + payable

    status, product = call(base, "POST", "/v1/admin/products", admin, {
        "name": "Fuzz tee", "category": "fuzz", "price": 1_000,
        "stocks": [{"size": "S", "quantity": 100_000}, {"size": "M", "quantity": 100_000}],
    })
    product = expect(status, product, 201, "create product")
    stock_ids = [stock["id"] for stock in product["stocks"]]
    request_id, outcome = submit(base, token, "/v1/orders",
                                 {"items": [{"product_stock_id": stock_ids[0], "quantity": 1}]}, what="order")
    request_ids.append(request_id)
    order_ids = [outcome["result"]["order_id"]]
    status, cart = call(base, "PUT", f"/v1/users/{user_id}/cart/items/{stock_ids[1]}", token, {"quantity": 1})
    expect(status, cart, 200, "cart line")

    def ints(values):
        return "[" + ", ".join(str(v) for v in values) + "]"

    def strs(values):
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    # The `{id}` (or `{token}`) of each path family, bound to its rows.
    path_bindings = "\n".join(
        f"""[[operations]]
include-path-regex = "^/v1/{family}/\\\\{{{name}\\\\}}"
parameters = {{ "path.{name}" = {{ dictionary = "{dictionary}", probability = 0.8 }} }}
"""
        for family, name, dictionary in [
            ("users", "id", "users"),
            ("concerts", "id", "concerts"),
            ("schedules", "id", "schedules"),
            ("reservations", "id", "reservations"),
            ("orders", "id", "orders"),
            ("products", "id", "products"),
            ("requests", "id", "requests"),
            ("queue/tokens", "token", "tokens"),
        ]
    )

    # A bound value is used with the given probability; the rest of the
    # cases stay generated, so refusals (404, 403, 422) are still fuzzed.
    config = f"""# Written by tools/fuzz/fixtures.py for `./dev fuzz`; rows of this run.
[auth.openapi.user]
bearer = {json.dumps(token)}

[auth.openapi.admin]
bearer = {json.dumps(admin)}

[dictionaries]
users = {{ values = {ints([user_id])} }}
concerts = {{ values = {ints([concert["id"]])} }}
schedules = {{ values = {ints(schedule_ids)} }}
hold_seats = {{ values = {ints(hold_seats[2:])} }}
reservations = {{ values = {ints(reservation_ids)} }}
payable = {{ values = {ints(payable)} }}
products = {{ values = {ints([product["id"]])} }}
stocks = {{ values = {ints(stock_ids)} }}
orders = {{ values = {ints(order_ids)} }}
requests = {{ values = {strs(request_ids)} }}
tokens = {{ values = {strs([hold_token, pay_token])} }}
hold_token = {{ values = {strs([hold_token])} }}
pay_token = {{ values = {strs([pay_token])} }}
emails = {{ values = {strs([email])} }}
passwords = {{ values = {strs([password])} }}

[parameters]
"body.schedule_id" = {{ dictionary = "schedules", probability = 0.7 }}
"body.items[*].product_stock_id" = {{ dictionary = "stocks", probability = 0.7 }}
"path.stock_id" = {{ dictionary = "stocks", probability = 0.7 }}

[[operations]]
include-operation-id = "hold_seat"
parameters = {{ "body.seat_id" = {{ dictionary = "hold_seats", probability = 0.7 }}, "header.X-Queue-Token" = {{ dictionary = "hold_token", probability = 0.8 }} }}

[[operations]]
include-operation-id = "login"
parameters = {{ "body.email" = {{ dictionary = "emails", probability = 0.7 }}, "body.password" = {{ dictionary = "passwords", probability = 0.7 }} }}

[[operations]]
include-operation-id = "pay_reservation"
parameters = {{ "body.reservation_id" = {{ dictionary = "payable", probability = 0.7 }}, "header.X-Queue-Token" = {{ dictionary = "pay_token", probability = 0.8 }} }}

{path_bindings}"""
    with open(out, "w", encoding="utf-8") as fd:
        fd.write(config)
    print(f"fixtures: user {user_id}, schedules {schedule_ids}, reservations {reservation_ids}, "
          f"stocks {stock_ids}, order {order_ids[0]}")


if __name__ == "__main__":
    main()
