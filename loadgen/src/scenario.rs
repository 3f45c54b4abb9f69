//! The scenarios: a seed step that creates their own catalogue and users,
//! and the request each client sends.

use std::time::Instant;

use tokio::sync::Semaphore;

use client::api::concert::{HoldSeat, PayReservation};
use client::api::outcomes::RequestResult;
use client::api::shop::{OrderLine, PlaceOrder, SetQuantity};
use client::api::status::RequestStatus;
use client::api::users::Charge;
use client::api::RequestOutcome;
use client::{Client, Submitted};
use futures::stream::{self, StreamExt, TryStreamExt};
use schemas::requests::MAX_CHARGE_AMOUNT;
use testkit::api::User;
use testkit::Api;
use uuid::Uuid;

use crate::report::{Calls, Sample};
use crate::{Cli, ScenarioName};

/// A seeded scenario.
pub struct Scenario {
    /// Which one.
    pub name: ScenarioName,
    /// Users with, where needed, their ACTIVE queue token.
    pub users: Vec<(User, Option<Uuid>)>,
    /// Seats to hold (rush: the seats of one schedule; booking: one per request).
    pub seats: Vec<i64>,
    /// The schedule of the seats.
    pub schedule_id: i64,
    /// Hot stocks (shop).
    pub hot: Vec<i64>,
    /// Cold stocks (shop).
    pub cold: Vec<i64>,
    /// Every how many booking pairs is cancelled once paid (0: none).
    pub cancel_every: u64,
    /// Every how many orders goes through the cart (0: none).
    pub cart_every: u64,
    /// One per user: a user's cart serves one checkout at a time.
    carts: Vec<tokio::sync::Mutex<()>>,
}

async fn users(
    api: &Api,
    n: usize,
    balance: i64,
    schedule: Option<i64>,
) -> anyhow::Result<Vec<(User, Option<Uuid>)>> {
    stream::iter(0..n)
        .map(|i| async move {
            let user = api
                .create_user(&format!("load{i}"))
                .await
                .map_err(|e| match testkit::api::refusal_code(&e) {
                    Some("RATE_LIMITED") => e.context(
                        "the gateway limits sign-ups per address: run it with SIGNUPS_PER_ADDRESS=0 for load",
                    ),
                    _ => e,
                })?;
            if balance > 0 {
                let id = api.charge(&user, balance.min(MAX_CHARGE_AMOUNT)).await?;
                api.outcome(&user.token, id).await?;
            }
            let token = match schedule {
                Some(schedule_id) => {
                    let token = api.join_queue(&user, schedule_id).await?;
                    api.wait_active(&user, &token).await?;
                    Some(token.parse()?)
                }
                None => None,
            };
            anyhow::Ok((user, token))
        })
        .buffer_unordered(64)
        .try_collect()
        .await
}

impl Scenario {
    /// Creates what the scenario needs through the gateway.
    pub async fn seed(cli: &Cli, api: &Api) -> anyhow::Result<Self> {
        let mut scenario = Scenario {
            name: cli.scenario,
            users: Vec::new(),
            seats: Vec::new(),
            schedule_id: 0,
            hot: Vec::new(),
            cold: Vec::new(),
            cancel_every: cli.cancel_every,
            cart_every: cli.cart_every,
            carts: Vec::new(),
        };
        match cli.scenario {
            ScenarioName::Charge => {
                scenario.users = users(api, cli.users, 0, None).await?;
            }
            ScenarioName::Rush => {
                scenario.schedule_id = api.create_schedule(cli.seats, 1_000).await?;
                scenario.seats = api.seat_ids(scenario.schedule_id).await?;
                scenario.users =
                    users(api, cli.requests as usize, 0, Some(scenario.schedule_id)).await?;
            }
            ScenarioName::Booking => {
                let seats = i32::try_from(cli.requests.min(10_000)).unwrap_or(10_000);
                scenario.schedule_id = api.create_schedule(seats, 1_000).await?;
                scenario.seats = api.seat_ids(scenario.schedule_id).await?;
                // A payment expires its queue token, so every hold-then-pay
                // pair gets its own user and token.
                scenario.users =
                    users(api, scenario.seats.len(), 1_000, Some(scenario.schedule_id)).await?;
            }
            ScenarioName::Shop => {
                let stock = i32::try_from(cli.requests).unwrap_or(i32::MAX) / 2;
                scenario.catalogue(api, stock, 100_000).await?;
                scenario.users = users(api, cli.users, 5_000_000, None).await?;
            }
            ScenarioName::Mixed => {
                // Stock for hours of orders; seats for every user to hold
                // one at a time (a hold is cancelled before the next).
                scenario.catalogue(api, 1_000_000, 1_000_000).await?;
                let seats = i32::try_from(cli.users.clamp(1, 10_000)).unwrap_or(10_000);
                scenario.schedule_id = api.create_schedule(seats, 1_000).await?;
                scenario.seats = api.seat_ids(scenario.schedule_id).await?;
                scenario.users =
                    users(api, cli.users, 5_000_000, Some(scenario.schedule_id)).await?;
            }
        }
        scenario.carts = (0..scenario.users.len())
            .map(|_| tokio::sync::Mutex::new(()))
            .collect();
        Ok(scenario)
    }

    /// Three hot products of `hot_stock` units and twenty cold ones of
    /// `cold_stock`.
    async fn catalogue(
        &mut self,
        api: &Api,
        hot_stock: i32,
        cold_stock: i32,
    ) -> anyhow::Result<()> {
        for i in 0..3 {
            let (_, ids) = api
                .create_product(&format!("hot{i}"), "hot", 1_000, &[("F", hot_stock)])
                .await?;
            self.hot.extend(ids);
        }
        for i in 0..20 {
            let (_, ids) = api
                .create_product(&format!("cold{i}"), "cold", 500, &[("F", cold_stock)])
                .await?;
            self.cold.extend(ids);
        }
        Ok(())
    }

    /// What request `i` is: the scenario's kind, or for `mixed` one of
    /// charge, order and hold-then-cancel by `i`.
    fn kind(&self, i: u64) -> Kind {
        let every = |n: u64| n > 0 && i % n == n - 1;
        match self.name {
            ScenarioName::Charge => Kind::Charge,
            ScenarioName::Rush => Kind::Hold { stride: 7919 },
            ScenarioName::Booking => Kind::HoldThenPay {
                cancel: every(self.cancel_every),
            },
            ScenarioName::Shop => Kind::Order {
                cart: every(self.cart_every),
            },
            ScenarioName::Mixed => match i % 5 {
                0..=2 => Kind::Charge,
                3 => Kind::Order { cart: false },
                _ => Kind::HoldThenCancel,
            },
        }
    }

    /// Requests a fixed-count run sends.
    pub fn request_count(&self, cli: &Cli) -> u64 {
        match self.name {
            ScenarioName::Rush => self.users.len() as u64,
            ScenarioName::Booking => cli.requests.min(self.seats.len() as u64),
            _ => cli.requests,
        }
    }

    /// Sends request `i` and follows it to its outcome. Each POST takes a
    /// slot of `posting` until its answer; latencies count from `due` (open
    /// loop) or from when the first POST got its slot.
    pub async fn run_one(
        &self,
        api: &Api,
        posting: &Semaphore,
        i: u64,
        started: Instant,
        due: Option<Instant>,
    ) -> Sample {
        let n = self.users.len().max(1);
        let (user, token) = &self.users[i as usize % n];
        let client = api.as_user(user);
        let kind = self.kind(i);
        // A cart checkout holds its user's cart until it is decided.
        let _cart = match kind {
            Kind::Order { cart: true } => Some(self.carts[i as usize % n].lock().await),
            _ => None,
        };
        let Ok(slot) = posting.acquire().await else {
            return Sample::failed("ERROR");
        };
        let sent = due.unwrap_or_else(Instant::now);
        let token = token.unwrap_or_default();
        let first = match kind {
            Kind::Charge => accepted(client.charge(user.id, &Charge { amount: 500 }).await),
            Kind::Hold { .. } | Kind::HoldThenPay { .. } | Kind::HoldThenCancel => {
                // A rush scatters users over few seats; the others take the
                // seats in turn (a mixed run: each user its own seat).
                let seat_id = match kind {
                    Kind::Hold { stride } => self.seats[(i as usize * stride) % self.seats.len()],
                    Kind::HoldThenCancel => self.seats[(i as usize % n) % self.seats.len()],
                    _ => self.seats[i as usize % self.seats.len()],
                };
                accepted(client.hold(&HoldSeat { seat_id }, token).await)
            }
            Kind::Order { cart } => {
                let hot = self.hot[i as usize % self.hot.len()];
                let cold = self.cold[(i as usize * 7) % self.cold.len()];
                let line = |product_stock_id, quantity| OrderLine {
                    product_stock_id,
                    quantity,
                };
                let order = PlaceOrder {
                    items: vec![line(hot, 1), line(cold, 1 + (i % 2) as i32)],
                };
                if cart {
                    match fill_cart(&client, user.id, &order).await {
                        Ok(()) => accepted(client.checkout(user.id).await),
                        Err(error) => Err(failure_code(&error)),
                    }
                } else {
                    accepted(client.order(&order).await)
                }
            }
        };
        drop(slot);
        let (at, first) = match first {
            Ok(accepted) => accepted,
            Err(code) => return Sample::failed(code),
        };
        let mut calls = Calls::default();
        calls.push(&first);
        let outcome = match follow(&client, first.request_id).await {
            Ok(outcome) => outcome,
            Err(code) => return Sample::failed(code).with(calls),
        };
        let Some(RequestResult::Held(held)) = &outcome.result else {
            return Sample::decided(started, sent, at, code_of(&outcome)).with(calls);
        };
        // Hold won: pay for it (booking) or give it back (mixed); the pair
        // completes with the second request.
        let Ok(slot) = posting.acquire().await else {
            return Sample::failed("ERROR");
        };
        let second = match kind {
            Kind::HoldThenPay { .. } => {
                let pay = PayReservation {
                    reservation_id: held.reservation_id,
                };
                accepted(client.pay(&pay, token).await)
            }
            Kind::HoldThenCancel => accepted(client.cancel_reservation(held.reservation_id).await),
            _ => return Sample::decided(started, sent, at, code_of(&outcome)).with(calls),
        };
        drop(slot);
        let outcome = match followed(&client, &mut calls, second).await {
            Ok(outcome) => outcome,
            Err(code) => return Sample::failed(code).with(calls),
        };
        // Paid, and one of every `cancel_every`: cancel it, which refunds
        // the payment; the cancellation's outcome is the sample's.
        if kind != (Kind::HoldThenPay { cancel: true })
            || !matches!(outcome.result, Some(RequestResult::Paid(_)))
        {
            return Sample::decided(started, sent, at, code_of(&outcome)).with(calls);
        }
        let Ok(slot) = posting.acquire().await else {
            return Sample::failed("ERROR");
        };
        let third = accepted(client.cancel_reservation(held.reservation_id).await);
        drop(slot);
        match followed(&client, &mut calls, third).await {
            Ok(outcome) => Sample::decided(started, sent, at, code_of(&outcome)).with(calls),
            Err(code) => Sample::failed(code).with(calls),
        }
    }
}

/// Follows an accepted `call` (recorded in `calls`) to its outcome; the
/// code of a call that was refused, or whose outcome did not come.
async fn followed(
    client: &Client,
    calls: &mut Calls,
    call: Result<(Instant, Submitted), String>,
) -> Result<RequestOutcome, String> {
    let (_, submitted) = call?;
    calls.push(&submitted);
    follow(client, submitted.request_id).await
}

/// Empties `user_id`'s cart and puts `order`'s lines in it.
async fn fill_cart(client: &Client, user_id: i64, order: &PlaceOrder) -> Result<(), client::Error> {
    client.clear_cart(user_id).await?;
    for line in &order.items {
        let quantity = SetQuantity {
            quantity: line.quantity,
        };
        client
            .set_cart_item(user_id, line.product_stock_id, &quantity)
            .await?;
    }
    Ok(())
}

/// What one request of a scenario does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A charge of 500.
    Charge,
    /// A hold of a seat picked with `stride` (a rush).
    Hold { stride: usize },
    /// A hold, then its payment, then (`cancel`) its cancellation.
    HoldThenPay { cancel: bool },
    /// A hold, then its cancellation.
    HoldThenCancel,
    /// A two-line order, placed at once or (`cart`) through the cart.
    Order { cart: bool },
}

/// `SUCCEEDED`, or the code of the refusal or failure.
fn code_of(outcome: &RequestOutcome) -> String {
    match (&outcome.status, &outcome.error) {
        (RequestStatus::Succeeded, _) => "SUCCEEDED".into(),
        (_, Some(error)) => error.code.clone(),
        _ => "UNKNOWN".into(),
    }
}

/// The moment a call was accepted, or the code its sample records: the
/// HTTP status of a refusal (`HTTP_503` when patience ran out), `ERROR`
/// when no answer came. A patient client repeats a call under an
/// `Idempotency-Key` of its own, so every repeat is the same request; an
/// impatient one (`--patience-secs 0`, the benchmark's) sends no key and
/// never repeats.
fn accepted(call: Result<Submitted, client::Error>) -> Result<(Instant, Submitted), String> {
    match call {
        Ok(submitted) => Ok((Instant::now(), submitted)),
        Err(error) => Err(failure_code(&error)),
    }
}

/// The code a failed call's sample records: the HTTP status of a refusal,
/// `NO_OUTCOME` when the outcome did not come in time, `ERROR` when no
/// answer came.
fn failure_code(error: &client::Error) -> String {
    match error {
        client::Error::NoOutcome { .. } => "NO_OUTCOME".to_owned(),
        error => error
            .status()
            .map_or_else(|| "ERROR".to_owned(), |s| format!("HTTP_{}", s.as_u16())),
    }
}

/// Long-polls the outcome of `id` (through gateway restarts and outages,
/// while the client's patience lasts for each poll).
async fn follow(client: &Client, id: Uuid) -> Result<RequestOutcome, String> {
    client
        .wait_outcome(id)
        .await
        .map_err(|error| failure_code(&error))
}
