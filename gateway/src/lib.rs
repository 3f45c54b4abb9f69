//! The HTTP gateway: authenticates and validates calls, publishes
//! state-changing requests to Kafka, serves reads and request outcomes.
//! It never writes the tables the lanes own.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod pending;
pub mod publish;
pub mod queue;
pub mod routes;
pub mod state;
pub mod validate;
pub mod waiter;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use config::GatewayConfig;
use state::AppState;

/// A built gateway, ready to serve.
pub struct Gateway {
    state: AppState,
    pending: pending::PendingQueue,
    liveness: queue::LivenessQueue,
    max_body_bytes: usize,
}

impl Gateway {
    /// Connects (lazily) to Postgres and creates the Kafka producer.
    pub fn build(config: &GatewayConfig) -> anyhow::Result<Self> {
        config.check_secrets()?;
        // Install the recorder before the first request is counted.
        let _ = platform::observability::metrics_handle();
        let pool = platform::db::pool(
            &config.common.database_url,
            config.common.database_max_connections,
        )?;
        let producer = platform::kafka::producer(&config.common)?;
        let waiter = waiter::OutcomeWaiter::new(config.outcome_cache_entries, config.long_poll_max);
        let (pending_writer, pending) = pending::channel(
            Duration::from_millis(config.pending_row_after_ms),
            waiter.clone(),
        );
        let (lines, liveness) = queue::QueueLines::new(
            config.poll_policy(),
            config.queue_pace_entries,
            config.long_poll_max,
        );
        let state = AppState {
            pool,
            producer,
            topics: config.common.topics(),
            signer: config.signer(),
            request_ids: config.request_ids(),
            passwords: auth::password::Passwords::new(config.password_cost())?,
            limits: auth::limits::RateLimits::new(config.limit_settings()),
            admin_token: Arc::from(config.admin_token()),
            waiter,
            pending: pending_writer,
            seat_schedules: routes::reservations::SeatSchedules::default(),
            queue: lines,
            produce_timeout: Duration::from_millis(config.common.kafka_produce_timeout_ms),
            max_wait: Duration::from_millis(config.request_wait_max_ms),
            retention: config.common.retention(),
            business_tz: Arc::from(config.business_tz.as_str()),
            shutdown: CancellationToken::new(),
        };
        Ok(Self {
            state,
            pending,
            liveness,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The router with every middleware applied.
    pub fn router(&self) -> Router {
        let x_request_id = axum::http::HeaderName::from_static("x-request-id");
        let document: Arc<str> = Arc::from(openapi::document_json());
        let (routes, _) = routes::router().split_for_parts();
        routes
            .route(
                "/openapi.json",
                axum::routing::get(move || {
                    let document = document.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            document.to_string(),
                        )
                    }
                }),
            )
            .fallback(|| async { error::ApiError::NotFound("route") })
            .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
            // `limit_body` is the one limit (it answers 413 after a bounded
            // drain); axum's own default of 2 MiB would only shadow it.
            .layer(DefaultBodyLimit::disable())
            .layer(middleware::from_fn_with_state(
                self.max_body_bytes,
                extract::limit_body,
            ))
            .layer(middleware::from_fn(record_metrics))
            .layer(
                TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    // `http_request_id` names this HTTP exchange (`x-request-id`);
                    // `request_id` and `trace_id` are recorded once the call is
                    // accepted as a request: the id its outcome is polled by and
                    // the trace the lanes continue from `traceparent`.
                    let http_request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "http",
                        method = %request.method(),
                        uri = %request.uri(),
                        http_request_id,
                        request_id = tracing::field::Empty,
                        trace_id = tracing::field::Empty,
                    )
                }),
            )
            .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
            .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `cancel` fires, then drains in-flight calls
    /// (long-polls answer at once with the status as it is).
    pub async fn serve(
        mut self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        self.state.shutdown = cancel.clone();
        let router = self.router();
        let waiter = tokio::spawn(
            self.state
                .waiter
                .clone()
                .run(self.state.pool.clone(), cancel.clone()),
        );
        let lines = tokio::spawn(
            self.state
                .queue
                .clone()
                .listen(self.state.pool.clone(), cancel.clone()),
        );
        let liveness = tokio::spawn(self.liveness.run(self.state.pool.clone(), cancel.clone()));
        let limits = tokio::spawn(self.state.limits.clone().run(cancel.clone()));
        // The PENDING writer outlives the graceful shutdown: calls still in
        // flight when `cancel` fires get their rows written, and so do the
        // deferred rows of requests still undecided.
        let pending_stop = CancellationToken::new();
        let pending = tokio::spawn(
            self.pending
                .run(self.state.pool.clone(), pending_stop.clone()),
        );
        tracing::info!(addr = %listener.local_addr()?, "gateway listening");
        // The peer address is what rate limits count by (unless a proxy's
        // `X-Forwarded-For` is trusted).
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .await?;
        cancel.cancel();
        pending_stop.cancel();
        let _ = waiter.await;
        let _ = lines.await;
        let _ = liveness.await;
        let _ = limits.await;
        let _ = pending.await;
        self.state.producer_flush();
        Ok(())
    }
}

impl AppState {
    fn producer_flush(&self) {
        use rdkafka::producer::Producer;
        let _ = self.producer.current().flush(Duration::from_secs(5));
    }
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
