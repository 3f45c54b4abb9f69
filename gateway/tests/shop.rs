//! The shop: products, the cart and orders. Refused calls get stable codes
//! and publish nothing; products read back with their stock per size.

mod common;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::Api;

use common::{assert_error, gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_bad_input_gets_a_stable_code_and_publishes_nothing() -> anyhow::Result<()> {
    let h = gateway().await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    let (product_id, stocks) = h
        .api
        .create_product("Tee", "tops", 9_000, &[("S", 3), ("M", 0)])
        .await?;
    let order = |items: Value| json!({ "items": items });

    for (items, why) in [
        (json!([]), "empty"),
        (
            json!([{"product_stock_id": stocks[0], "quantity": 0}]),
            "zero quantity",
        ),
        (
            json!([{"product_stock_id": stocks[0], "quantity": -2}]),
            "negative quantity",
        ),
        (
            json!([{"product_stock_id": stocks[0], "quantity": 600}, {"product_stock_id": stocks[0], "quantity": 600}]),
            "same stock twice, over 1,000 together",
        ),
    ] {
        assert_error!(
            h.api.post_as(&alice, "/v1/orders", &order(items)).await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            "{why}"
        );
    }
    assert_error!(
        h.api
            .post_as(
                &alice,
                "/v1/orders",
                &order(json!([{"product_stock_id": 99_999, "quantity": 1}])),
            )
            .await?,
        StatusCode::NOT_FOUND,
        "NOT_FOUND"
    );
    assert_error!(
        h.api
            .post_public(
                "/v1/orders",
                &order(json!([{"product_stock_id": stocks[0], "quantity": 1}])),
            )
            .await?,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED"
    );

    let put = |bearer: &str, stock_id: i64, body: Value| {
        let call = h
            .api
            .http
            .put(
                h.api
                    .url(&format!("/v1/users/{}/cart/items/{stock_id}", alice.id)),
            )
            .bearer_auth(bearer.to_owned())
            .json(&body);
        async move { Api::read(call.send().await?).await }
    };
    assert_error!(
        put(&bob.token, stocks[0], json!({"quantity": 1})).await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    assert_error!(
        put(&alice.token, stocks[0], json!({"quantity": 1001})).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );
    assert_error!(
        put(&alice.token, 424_242, json!({"quantity": 1})).await?,
        StatusCode::NOT_FOUND,
        "NOT_FOUND"
    );
    let reply = assert_error!(
        h.api
            .post_as(
                &alice,
                &format!("/v1/users/{}/cart/checkout", alice.id),
                &json!({}),
            )
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        "empty cart"
    );
    assert_eq!(reply["error"]["field"], "cart");

    for (product, why) in [
        (
            json!({"name": "X", "category": "c", "price": -1, "stocks": [{"size": "S", "quantity": 1}]}),
            "negative price",
        ),
        (
            json!({"name": "X", "category": "c", "price": 1, "stocks": [{"size": "S", "quantity": 1}, {"size": "S", "quantity": 2}]}),
            "one size twice",
        ),
    ] {
        assert_error!(
            h.api
                .post(
                    "/v1/admin/products",
                    Some(h.api.admin_token.as_str()),
                    &[],
                    &product
                )
                .await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            "{why}"
        );
    }

    // Reads: the product with stock per size, category filter, paging.
    let (status, product) = h
        .api
        .get(&format!("/v1/products/{product_id}"), &alice.token)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        product["stocks"],
        json!([{"id": stocks[0], "size": "S", "quantity": 3}, {"id": stocks[1], "size": "M", "quantity": 0}])
    );
    for (category, count) in [("tops", 1), ("shoes", 0)] {
        let (_, listed) = h
            .api
            .get(&format!("/v1/products?category={category}"), &alice.token)
            .await?;
        assert_eq!(listed["items"].as_array().map(Vec::len), Some(count));
    }
    assert_error!(
        h.api
            .get("/v1/stats/products/daily?date=yesterday", &alice.token)
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );

    assert_eq!(
        h.env.total_records()?,
        0,
        "bad shop input publishes nothing"
    );
    Ok(())
}
