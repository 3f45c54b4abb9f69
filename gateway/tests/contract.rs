//! The committed OpenAPI document is the one the code generates, and the
//! limits it states are the ones the gateway enforces. Regenerate with
//! `./dev openapi` (or `UPDATE_OPENAPI=1 cargo test -p gateway --test
//! contract`).

use std::path::PathBuf;

use api::limits::*;
use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[test]
fn committed_openapi_document_matches_the_code() {
    let generated = gateway::openapi::document_json();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run ./dev openapi (or UPDATE_OPENAPI=1 cargo test -p gateway --test contract) and commit it"
    );
}

#[test]
fn the_document_states_the_enforced_limits() {
    let doc: Value = serde_json::from_str(&gateway::openapi::document_json()).expect("json");
    let schema = |name: &str, property: &str| -> Value {
        doc["components"]["schemas"][name]["properties"][property].clone()
    };
    let number = |value: &Value| value.as_i64().expect("a number");
    let cases: [(&str, &str, &str, i64); 20] = [
        ("NewUser", "name", "maxLength", MAX_NAME_CHARS as i64),
        ("NewUser", "email", "maxLength", MAX_EMAIL_BYTES as i64),
        (
            "NewUser",
            "password",
            "minLength",
            MIN_PASSWORD_CHARS as i64,
        ),
        (
            "NewUser",
            "password",
            "maxLength",
            MAX_PASSWORD_CHARS as i64,
        ),
        ("Login", "email", "maxLength", MAX_EMAIL_BYTES as i64),
        ("Login", "password", "maxLength", MAX_PASSWORD_CHARS as i64),
        ("NewConcert", "title", "maxLength", MAX_TITLE_CHARS as i64),
        ("NewConcert", "schedules", "maxItems", MAX_SCHEDULES as i64),
        (
            "NewSchedule",
            "seat_count",
            "maximum",
            MAX_SEATS_PER_SCHEDULE.into(),
        ),
        ("NewSchedule", "price", "maximum", MAX_PRICE),
        (
            "NewProduct",
            "name",
            "maxLength",
            MAX_PRODUCT_NAME_CHARS as i64,
        ),
        (
            "NewProduct",
            "category",
            "maxLength",
            MAX_CATEGORY_CHARS as i64,
        ),
        ("NewProduct", "price", "maximum", MAX_PRICE),
        ("NewProduct", "stocks", "maxItems", MAX_SIZES as i64),
        ("NewStock", "size", "maxLength", MAX_SIZE_CHARS as i64),
        ("NewStock", "quantity", "maximum", MAX_STOCK_QUANTITY.into()),
        ("Charge", "amount", "maximum", MAX_CHARGE_AMOUNT),
        ("PlaceOrder", "items", "maxItems", MAX_ORDER_ITEMS as i64),
        ("OrderLine", "quantity", "maximum", MAX_ITEM_QUANTITY.into()),
        (
            "SetQuantity",
            "quantity",
            "maximum",
            MAX_ITEM_QUANTITY.into(),
        ),
    ];
    for (name, property, keyword, expected) in cases {
        assert_eq!(
            number(&schema(name, property)[keyword]),
            expected,
            "{name}.{property} {keyword}"
        );
    }
    let limit = doc["paths"]["/v1/concerts"]["get"]["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
        .expect("limit parameter");
    assert_eq!(number(&limit["schema"]["maximum"]), PAGE_MAX);
    let cursor = doc["paths"]["/v1/concerts"]["get"]["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "cursor"))
        .expect("cursor parameter");
    assert_eq!(
        number(&cursor["schema"]["maxLength"]),
        MAX_CURSOR_CHARS as i64
    );
    // The email rule refuses every control character (C0, DEL and C1), as
    // the gateway does (found by schemathesis: C1 was documented as valid).
    let email = doc["components"]["schemas"]["NewUser"]["properties"]["email"]["pattern"]
        .as_str()
        .expect("email pattern");
    assert_eq!(
        email.matches(r"\u0000-\u001F\u007F-\u009F").count(),
        3,
        "{email}"
    );
    // The body keeps its schemas' shape rules too: unknown fields are refused.
    assert_eq!(
        doc["components"]["schemas"]["NewUser"]["additionalProperties"],
        false
    );
}

/// Every operation states the error answers it can give, with the one
/// error body.
#[test]
fn every_operation_documents_its_errors() {
    let doc: Value = serde_json::from_str(&gateway::openapi::document_json()).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("operations") {
            let responses = &operation["responses"];
            for status in ["400", "404", "422", "500", "503"] {
                assert!(
                    responses.get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
}

/// Operation ids name one operation each (generated clients and
/// schemathesis' links refer to operations by them).
#[test]
fn operation_ids_are_unique() {
    let doc: Value = serde_json::from_str(&gateway::openapi::document_json()).expect("json");
    let mut seen = std::collections::HashMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id} names both {other} and {method} {path}");
            }
        }
    }
}
