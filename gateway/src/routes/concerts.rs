//! Concert catalogue: list concerts, schedules and seats; admin set-up.

use api::concert::{
    Availability, Concert, CreatedConcert, CreatedSchedule, NewConcert, Schedule, Seat,
};
use api::status::SeatStatus;
use api::{Cursor, Items, Paged};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::page;
use crate::state::AppState;

/// Concerts, by id.
#[utoipa::path(get, path = "/v1/concerts", operation_id = "list_concerts", tag = "concerts", params(Cursor),
    responses((status = 200, description = "A page of concerts", body = Paged<Concert>)))]
pub(crate) async fn list_concerts(
    State(state): State<AppState>,
    ApiQuery(cursor): ApiQuery<Cursor>,
) -> ApiResult<Json<Paged<Concert>>> {
    let page = page::ascending(&cursor)?;
    let rows = sqlx::query_as!(
        Concert,
        "SELECT id, title, created_at FROM concerts WHERE id > $1 ORDER BY id LIMIT $2",
        page.past,
        page.fetch(),
    )
    .fetch_all(&state.pool);
    page.answer(rows, |c| c.id).await
}

/// A concert's schedules, by start (at most 100: not paged).
#[utoipa::path(get, path = "/v1/concerts/{id}/schedules", operation_id = "list_schedules", tag = "concerts",
    params(("id" = i64, Path, description = "The concert"), Availability),
    responses((status = 200, description = "The schedules", body = Items<Schedule>)))]
pub(crate) async fn list_schedules(
    State(state): State<AppState>,
    ApiPath(concert_id): ApiPath<i64>,
    ApiQuery(filter): ApiQuery<Availability>,
) -> ApiResult<Json<Items<Schedule>>> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM concerts WHERE id = $1) AS "exists!""#,
        concert_id,
    )
    .fetch_one(&state.pool)
    .await?;
    if !exists {
        return Err(ApiError::NotFound("concert"));
    }
    let items = sqlx::query_as!(
        Schedule,
        r#"SELECT s.id, s.concert_id, s.starts_at, s.available_seats_count AS available_seats,
                (SELECT count(*) FROM seats WHERE concert_schedule_id = s.id) AS "total_seats!"
         FROM concert_schedules s
         WHERE s.concert_id = $1 AND (NOT $2 OR s.available_seats_count > 0)
         ORDER BY s.starts_at, s.id"#,
        concert_id,
        filter.available,
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Items { items }))
}

/// A schedule's seats, by number (at most 10,000: not paged).
#[utoipa::path(get, path = "/v1/schedules/{id}/seats", operation_id = "list_seats", tag = "concerts",
    params(("id" = i64, Path, description = "The schedule"), Availability),
    responses((status = 200, description = "The seats", body = Items<Seat>)))]
pub(crate) async fn list_seats(
    State(state): State<AppState>,
    ApiPath(schedule_id): ApiPath<i64>,
    ApiQuery(filter): ApiQuery<Availability>,
) -> ApiResult<Json<Items<Seat>>> {
    require_schedule(&state, schedule_id).await?;
    let items = sqlx::query_as!(
        Seat,
        r#"SELECT s.id, s.concert_schedule_id AS schedule_id, s.seat_no, s.seat_number, s.price,
                CASE WHEN r.status IS NULL THEN 'AVAILABLE'
                     WHEN r.status = 'PENDING' THEN 'HELD'
                     ELSE 'RESERVED' END AS "status!: SeatStatus"
         FROM seats s
         LEFT JOIN reservations r ON r.seat_id = s.id AND r.status IN ('PENDING', 'CONFIRMED')
         WHERE s.concert_schedule_id = $1 AND (NOT $2 OR r.id IS NULL)
         ORDER BY s.seat_no"#,
        schedule_id,
        filter.available,
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Items { items }))
}

/// Refuses with 404 unless schedule `id` exists.
pub(crate) async fn require_schedule(state: &AppState, id: i64) -> ApiResult<()> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM concert_schedules WHERE id = $1) AS "exists!""#,
        id,
    )
    .fetch_one(&state.pool)
    .await?;
    if !exists {
        return Err(ApiError::NotFound("schedule"));
    }
    Ok(())
}

/// Sets up a concert with its schedules and seats (admin).
#[utoipa::path(post, path = "/v1/admin/concerts", operation_id = "create_concert", tag = "admin", request_body = NewConcert,
    security(("admin" = [])),
    responses((status = 201, description = "Created", body = CreatedConcert)))]
pub(crate) async fn create_concert(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<NewConcert>,
) -> ApiResult<(StatusCode, Json<CreatedConcert>)> {
    let title = body.title.trim();
    let mut tx = state.pool.begin().await?;
    let concert_id = sqlx::query_scalar!(
        "INSERT INTO concerts (title) VALUES ($1) RETURNING id",
        title
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut schedules = Vec::with_capacity(body.schedules.len());
    for schedule in &body.schedules {
        let schedule_id = sqlx::query_scalar!(
            "INSERT INTO concert_schedules (concert_id, starts_at, available_seats_count)
             VALUES ($1, $2, $3) RETURNING id",
            concert_id,
            schedule.starts_at,
            schedule.seat_count,
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO seats (concert_schedule_id, seat_no, seat_number, price)
             SELECT $1::int8, n, 'S' || lpad(n::text, 3, '0'), $3::int8
             FROM generate_series(1, $2::int4) AS n",
            schedule_id,
            schedule.seat_count,
            schedule.price,
        )
        .execute(&mut *tx)
        .await?;
        schedules.push(CreatedSchedule {
            id: schedule_id,
            starts_at: schedule.starts_at,
            seat_count: schedule.seat_count,
            price: schedule.price,
        });
    }
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedConcert {
            id: concert_id,
            title: title.to_owned(),
            schedules,
        }),
    ))
}
