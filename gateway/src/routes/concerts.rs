//! Concert catalogue: list concerts, schedules and seats; admin set-up.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::Page;
use crate::state::AppState;

/// Largest number of seats one schedule may have.
const MAX_SEATS_PER_SCHEDULE: i32 = 10_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/concerts", get(list_concerts))
        .route("/v1/concerts/{id}/schedules", get(list_schedules))
        .route("/v1/schedules/{id}/seats", get(list_seats))
        .route("/v1/admin/concerts", post(create_concert))
}

/// `?available=true` filter.
#[derive(Debug, Deserialize)]
pub struct Availability {
    #[serde(default)]
    available: bool,
}

async fn list_concerts(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = page.bounds();
    let rows: Vec<(i64, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, title, created_at FROM concerts ORDER BY id LIMIT $1 OFFSET $2")
            .bind(limit)
            .bind(offset)
            .fetch_all(&state.pool)
            .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, title, created_at)| json!({"id": id, "title": title, "created_at": created_at}))
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn list_schedules(
    State(state): State<AppState>,
    ApiPath(concert_id): ApiPath<i64>,
    ApiQuery(filter): ApiQuery<Availability>,
) -> ApiResult<Json<Value>> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM concerts WHERE id = $1)")
        .bind(concert_id)
        .fetch_one(&state.pool)
        .await?;
    if !exists {
        return Err(ApiError::NotFound("concert"));
    }
    let rows: Vec<(i64, DateTime<Utc>, i32, i64)> = sqlx::query_as(
        "SELECT s.id, s.starts_at, s.available_seats_count,
                (SELECT count(*) FROM seats WHERE concert_schedule_id = s.id)
         FROM concert_schedules s
         WHERE s.concert_id = $1 AND (NOT $2 OR s.available_seats_count > 0)
         ORDER BY s.starts_at, s.id",
    )
    .bind(concert_id)
    .bind(filter.available)
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, starts_at, available, total)| {
            json!({"id": id, "concert_id": concert_id, "starts_at": starts_at,
                   "available_seats": available, "total_seats": total})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn list_seats(
    State(state): State<AppState>,
    ApiPath(schedule_id): ApiPath<i64>,
    ApiQuery(filter): ApiQuery<Availability>,
) -> ApiResult<Json<Value>> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM concert_schedules WHERE id = $1)")
            .bind(schedule_id)
            .fetch_one(&state.pool)
            .await?;
    if !exists {
        return Err(ApiError::NotFound("schedule"));
    }
    let rows: Vec<(i64, i32, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT s.id, s.seat_no, s.seat_number, s.price, r.status
         FROM seats s
         LEFT JOIN reservations r ON r.seat_id = s.id AND r.status IN ('PENDING', 'CONFIRMED')
         WHERE s.concert_schedule_id = $1 AND (NOT $2 OR r.id IS NULL)
         ORDER BY s.seat_no",
    )
    .bind(schedule_id)
    .bind(filter.available)
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, seat_no, seat_number, price, live)| {
            let status = match live.as_deref() {
                None => "AVAILABLE",
                Some("PENDING") => "HELD",
                Some(_) => "RESERVED",
            };
            json!({"id": id, "schedule_id": schedule_id, "seat_no": seat_no,
                   "seat_number": seat_number, "price": price, "status": status})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// Body of `POST /v1/admin/concerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConcert {
    title: String,
    schedules: Vec<NewSchedule>,
}

/// One schedule of a new concert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    starts_at: DateTime<Utc>,
    seat_count: i32,
    price: i64,
}

async fn create_concert(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<NewConcert>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let title = body.title.trim();
    if title.is_empty() || title.chars().count() > 255 {
        return Err(ApiError::invalid("title", "must be 1 to 255 characters"));
    }
    if body.schedules.is_empty() || body.schedules.len() > 100 {
        return Err(ApiError::invalid(
            "schedules",
            "must hold 1 to 100 schedules",
        ));
    }
    for schedule in &body.schedules {
        if !(1..=MAX_SEATS_PER_SCHEDULE).contains(&schedule.seat_count) {
            return Err(ApiError::invalid(
                "schedules.seat_count",
                format!("must be 1 to {MAX_SEATS_PER_SCHEDULE}"),
            ));
        }
        if !(0..=100_000_000).contains(&schedule.price) {
            return Err(ApiError::invalid(
                "schedules.price",
                "must be 0 to 100000000",
            ));
        }
    }
    let mut tx = state.pool.begin().await?;
    let concert_id: i64 =
        sqlx::query_scalar("INSERT INTO concerts (title) VALUES ($1) RETURNING id")
            .bind(title)
            .fetch_one(&mut *tx)
            .await?;
    let mut schedules = Vec::with_capacity(body.schedules.len());
    for schedule in &body.schedules {
        let schedule_id: i64 = sqlx::query_scalar(
            "INSERT INTO concert_schedules (concert_id, starts_at, available_seats_count)
             VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(concert_id)
        .bind(schedule.starts_at)
        .bind(schedule.seat_count)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO seats (concert_schedule_id, seat_no, seat_number, price)
             SELECT $1, n, 'S' || lpad(n::text, 3, '0'), $3 FROM generate_series(1, $2) AS n",
        )
        .bind(schedule_id)
        .bind(schedule.seat_count)
        .bind(schedule.price)
        .execute(&mut *tx)
        .await?;
        schedules.push(json!({"id": schedule_id, "starts_at": schedule.starts_at,
                              "seat_count": schedule.seat_count, "price": schedule.price}));
    }
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": concert_id, "title": title, "schedules": schedules})),
    ))
}
