//! The HTTP edge: credentials, malformed and invalid input, body limits,
//! unknown routes and methods, and the served OpenAPI document. Every
//! refused call must publish nothing.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use testkit::{scalar, Api};

use common::{assert_error, charge_path, gateway, seat_and_users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_scoped_to_their_user() -> anyhow::Result<()> {
    let h = gateway().await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    let charge = json!({"amount": 1000});
    let alice_balance = format!("/v1/users/{}/balance", alice.id);

    assert_error!(
        h.api.post_as(&bob, &charge_path(&alice), &charge).await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    assert_error!(
        h.api.get(&alice_balance, &bob.token).await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    assert_error!(
        h.api.post_public(&charge_path(&alice), &charge).await?,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED"
    );
    // Bob's claims under Alice's signature.
    let mut forged: Vec<&str> = alice.token.split('.').collect();
    forged[1] = bob.token.split('.').nth(1).unwrap_or_default();
    let forged = forged.join(".");
    assert_error!(
        h.api
            .get(&format!("/v1/users/{}/balance", bob.id), &forged)
            .await?,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED"
    );
    assert_error!(
        h.api
            .post_as(
                &alice,
                "/v1/admin/concerts",
                &json!({"title": "x", "schedules": []})
            )
            .await?,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED"
    );

    // The admin may read any user's balance.
    let (status, reply) = h.api.get(&alice_balance, &h.api.admin_token).await?;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["balance"], 0);

    assert_eq!(h.env.total_records()?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_code_and_publishes_nothing() -> anyhow::Result<()> {
    let h = gateway().await?;
    let (schedule_id, _, alice, _) = seat_and_users(&h).await?;
    let token = h.api.join_queue(&alice, schedule_id).await?;
    h.activate(&token).await?;
    let charge_path = charge_path(&alice);

    let raw = |body: &str, content_type: &str| {
        let call = h
            .api
            .http
            .post(h.api.url(&charge_path))
            .bearer_auth(&alice.token)
            .header("content-type", content_type.to_owned())
            .header("x-queue-token", token.clone())
            .body(body.to_owned());
        async move { Api::read(call.send().await?).await }
    };
    assert_error!(
        raw("{\"amount\": ", "application/json").await?,
        StatusCode::BAD_REQUEST,
        "INVALID_JSON"
    );
    assert_error!(
        raw("{\"amount\": 5}", "text/plain").await?,
        StatusCode::BAD_REQUEST,
        "INVALID_JSON"
    );
    assert_error!(
        raw("{\"amount\": \"lots\"}", "application/json").await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );

    for amount in [-500, 0, 10_000_001] {
        let reply = assert_error!(
            h.api
                .post_as(&alice, &charge_path, &json!({"amount": amount}))
                .await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            "{amount}"
        );
        assert_eq!(reply["error"]["field"], "amount");
    }
    assert_error!(
        h.api.post_as(&alice, &charge_path, &json!({})).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );

    // A seat is paid for from the balance, so a free one is refused.
    let concerts =
        || sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM concerts"#).fetch_one(&h.env.pool);
    let before = concerts().await?;
    let free = json!({"title": "Free", "schedules": [
        {"starts_at": "2030-05-01T19:00:00+09:00", "seat_count": 3, "price": 0}]});
    let reply = assert_error!(
        h.api
            .post("/v1/admin/concerts", Some(&h.api.admin_token), &[], &free)
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );
    assert_eq!(reply["error"]["field"], "schedules[0].price");
    assert_eq!(concerts().await?, before, "nothing created");

    let queue = [("X-Queue-Token", token.as_str())];
    for (path, body, status, code) in [
        (
            "/v1/reservations",
            json!({"seat_id": 987_654_321}),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "/v1/reservations",
            json!({"seat_id": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
        ),
        (
            "/v1/payments",
            json!({"reservation_id": 424_242}),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
    ] {
        assert_error!(
            h.api.post(path, Some(&alice.token), &queue, &body).await?,
            status,
            code,
            "{path} {body}"
        );
    }

    // The gateway refuses an oversized body without reading it and closes
    // the connection, so this call must not leave it in the client's pool
    // for the next one (which then failed now and then with a reset).
    let huge = format!("{{\"amount\": 5, \"pad\": \"{}\"}}", "x".repeat(64 * 1024));
    let oversized = h
        .api
        .http
        .post(h.api.url(&charge_path))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .header("x-queue-token", token.clone())
        .header("connection", "close")
        .body(huge)
        .send();
    assert_error!(
        Api::read(oversized.await?).await?,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE"
    );

    assert_error!(
        h.api.get("/v1/reservations/abc", &alice.token).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );
    assert_error!(
        h.api
            .post_public(
                "/v1/users",
                &json!({"name": "", "email": "nope", "password": "long enough"})
            )
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );
    let (status, reply) = h
        .api
        .post_public(
            "/v1/users",
            &json!({"name": "a", "email": "no-at-sign", "password": "long enough"}),
        )
        .await?;
    assert_eq!(reply["error"]["field"], "email", "{status} {reply}");
    assert_error!(
        h.api
            .post_as(&alice, "/v1/queue/tokens", &json!({"schedule_id": 999_999}))
            .await?,
        StatusCode::NOT_FOUND,
        "NOT_FOUND"
    );
    assert_error!(
        h.api
            .post(
                &charge_path,
                Some(&alice.token),
                &[("Idempotency-Key", "")],
                &json!({"amount": 5}),
            )
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );

    let email = format!("dup-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, _) = h
        .api
        .post_public(
            "/v1/users",
            &json!({"name": "a", "email": email, "password": "long enough"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    assert_error!(
        h.api
            .post_public(
                "/v1/users",
                &json!({"name": "b", "email": email, "password": "long enough"})
            )
            .await?,
        StatusCode::CONFLICT,
        "EMAIL_TAKEN"
    );

    assert_error!(
        h.api.get("/v1/no-such-route", &alice.token).await?,
        StatusCode::NOT_FOUND,
        "NOT_FOUND"
    );
    let response = h.api.http.delete(h.api.url("/v1/users")).send().await?;
    assert_error!(
        Api::read(response).await?,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED"
    );

    assert_eq!(h.env.total_records()?, 0, "bad input publishes nothing");
    assert_eq!(scalar!(h, "SELECT count(*) FROM requests").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_with_the_field_named() -> anyhow::Result<()> {
    let h = gateway().await?;
    // NUL, and any other control character in a text field.
    for name in ["a\u{0}b", "tab\there", "bell\u{7}"] {
        let reply = assert_error!(
            h.api
                .post_public(
                    "/v1/users",
                    &json!({"name": name, "email": "nul@example.com", "password": "long enough"})
                )
                .await?,
            StatusCode::BAD_REQUEST,
            "INVALID_TEXT",
            "{name:?}"
        );
        assert_eq!(reply["error"]["field"], "name");
    }
    let reply = assert_error!(
        h.api
            .post(
                "/v1/admin/products",
                Some(h.api.admin_token.as_str()),
                &[],
                &json!({"name": "Tee", "category": "tops", "price": 1000,
                        "stocks": [{"size": "M", "quantity": 1}, {"size": "L\u{0}", "quantity": 1}]}),
            )
            .await?,
        StatusCode::BAD_REQUEST,
        "INVALID_TEXT"
    );
    assert_eq!(reply["error"]["field"], "stocks[1].size");
    assert_error!(
        h.api.get_public("/v1/products?category=%00").await?,
        StatusCode::BAD_REQUEST,
        "INVALID_TEXT"
    );
    // An escaped backslash before "u0000" is text, not a NUL.
    let (status, reply) = h
        .api
        .post_public(
            "/v1/users",
            &json!({"name": "a\\u0000b", "email": "text@example.com", "password": "long enough"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let users = sqlx::query_scalar!(r#"SELECT count(*) AS "users!" FROM users"#)
        .fetch_one(&h.env.pool)
        .await?;
    assert_eq!(users, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_even_when_the_client_sends_it_whole() -> anyhow::Result<()>
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = gateway().await?;
    let address = h.api.base.trim_start_matches("http://").to_owned();
    // Within the bounded drain (limit + 1 MiB). A client over a network is
    // still writing when the server answers; one that stops reading and
    // closes makes the client's next write fail.
    let body = format!(
        "{{\"name\": \"{}\", \"email\": \"big@example.com\"}}",
        "x".repeat(256 * 1024)
    );
    // What Python's httpx and many JVM clients do: write the whole request,
    // then read the answer, and give up if the write fails.
    for _ in 0..3 {
        let stream = tokio::net::TcpStream::connect(&address).await?;
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST /v1/users HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let request: Vec<u8> = head.into_bytes().into_iter().chain(body.bytes()).collect();
        let written = tokio::spawn(async move {
            for chunk in request.chunks(16 * 1024) {
                writer.write_all(chunk).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            writer.flush().await?;
            anyhow::Ok(writer)
        });
        let written = tokio::time::timeout(Duration::from_secs(10), written).await??;
        // Kept open until the answer is read: a half-closed connection is
        // one the server may drop.
        let _writer =
            written.map_err(|e| anyhow::anyhow!("the client could not send its body: {e}"))?;
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await?;
        read.map_err(|e| anyhow::anyhow!("the client saw {e} instead of the 413"))?;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    }
    Ok(())
}

/// The contract's input rules at the edge: lines naming one stock are
/// merged, integers may be written `2.0`, lists page by cursor until
/// `next` is null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_the_documented_input_rules() -> anyhow::Result<()> {
    let h = gateway().await?;
    let alice = h.api.create_user("alice").await?;
    let (_, stocks) = h
        .api
        .create_product("Cap", "hats", 1_000, &[("S", 10)])
        .await?;
    let (status, reply) = h
        .api
        .post_as(
            &alice,
            "/v1/orders",
            &json!({"items": [{"product_stock_id": stocks[0], "quantity": 1},
                              {"product_stock_id": stocks[0], "quantity": 2.0}]}),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let records = testkit::topics::read_all(
        &h.env.common,
        &h.env.common.topics().name(schemas::Topic::OrderRequests),
    )?;
    assert_eq!(records.len(), 1);
    let published = records[0].json().unwrap_or_default();
    assert_eq!(
        published["payload"]["items"],
        json!([{"product_stock_id": stocks[0], "quantity": 3}]),
        "one line per stock, quantities added"
    );
    assert_error!(
        h.api
            .post_as(
                &alice,
                "/v1/orders",
                &json!({"items": [{"product_stock_id": stocks[0], "quantity": 1.5}]}),
            )
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );

    for i in 0..5 {
        h.api
            .create_product(&format!("P{i}"), "pages", 100, &[("S", 1)])
            .await?;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/products?category=pages&limit=2".to_owned();
    loop {
        let (status, page) = h.api.get(&path, &alice.token).await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|p| p["name"].as_str().unwrap_or("").to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/products?category=pages&limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["P0", "P1", "P2", "P3", "P4"]);
    let reply = assert_error!(
        h.api
            .get("/v1/products?cursor=not-a-cursor", &alice.token)
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );
    assert_eq!(reply["error"]["field"], "cursor");

    // `wait_ms` is an int64 of 0 or more, as documented (found by
    // schemathesis: a number past int64 was taken as a u64).
    let id = uuid::Uuid::new_v4();
    for wait in ["-1", "9223372036854775808", "15548317028459726848"] {
        assert_error!(
            h.api
                .get(&format!("/v1/requests/{id}?wait_ms={wait}"), &alice.token)
                .await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            "wait_ms={wait}"
        );
    }
    let (status, _) = h
        .api
        .get(
            &format!("/v1/requests/{id}?wait_ms=9223372036854775807"),
            &alice.token,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "the largest int64 is taken");
    Ok(())
}

/// A running gateway serves the document the code generates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_its_openapi_document() -> anyhow::Result<()> {
    let h = gateway().await?;
    let served = reqwest::get(h.api.url("/openapi.json")).await?;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.text().await?, gateway::openapi::document_json());
    Ok(())
}
