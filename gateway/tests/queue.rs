//! The waiting queue over HTTP: places in join order however many join at
//! once, the polling contract (intervals that grow with the distance, 429
//! for a poll too soon, long-polls held at the front and woken by
//! admission), and places given up when nobody asks for them.

mod common;

use std::time::{Duration, Instant};

use api::concert::{JoinQueue, QueueToken};
use api::status::QueueStatus;
use futures::{stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use testkit::api::User;
use testkit::stack::{Options, Stack};

use common::{assert_error, gateway};

/// `user` joins `schedule_id`'s line.
async fn join(h: &Stack, user: &User, schedule_id: i64) -> anyhow::Result<QueueToken> {
    Ok(h.api
        .as_user(user)
        .join_queue(&JoinQueue { schedule_id })
        .await?)
}

/// The tokens of `schedule_id` that are ACTIVE, by place.
async fn active(h: &Stack, schedule_id: i64) -> anyhow::Result<Vec<uuid::Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT token FROM reservation_queue
         WHERE concert_schedule_id = $1 AND status = 'ACTIVE' ORDER BY line_no",
        schedule_id
    )
    .fetch_all(&h.env.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joiners_are_admitted_in_join_order() -> anyhow::Result<()> {
    let h = gateway().await?;
    let schedule_id = h.api.create_schedule(5, 10_000).await?;
    let users: Vec<User> = stream::iter(0..100)
        .map(|i| {
            let api = &h.api;
            async move { api.create_user(&format!("fan{i}")).await }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;

    // Everyone joins at once, and joins again: the same place.
    let mut joined: Vec<QueueToken> = stream::iter(&users)
        .map(|user| async {
            let first = join(&h, user, schedule_id).await?;
            let again = join(&h, user, schedule_id).await?;
            assert_eq!((again.token, again.position), (first.token, first.position));
            anyhow::Ok(first)
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    // The places are the join order: 1 to 100, each once.
    joined.sort_by_key(|t| t.position);
    let places: Vec<i64> = joined.iter().filter_map(|t| t.position).collect();
    assert_eq!(places, (1..=100).collect::<Vec<i64>>());

    // Admission takes the front of the line, 25 more at a time.
    let in_line: Vec<uuid::Uuid> = joined.iter().map(|t| t.token).collect();
    for round in 1..=4 {
        assert_eq!(h.admit(schedule_id, 25 * round).await?, 25);
        assert_eq!(
            active(&h, schedule_id).await?,
            in_line[..25 * round as usize]
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_token_is_told_when_to_poll_and_a_long_poll_wakes_on_admission(
) -> anyhow::Result<()> {
    // A second per place, and only the first place's long-polls held.
    let h = Stack::start(Options::without_workers().gateway(|c| {
        c.queue_poll_ms_per_place = 1_000;
        c.queue_long_poll_places = 1;
    }))
    .await?;
    let schedule_id = h.api.create_schedule(5, 10_000).await?;
    let mut users = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..3 {
        let user = h.api.create_user(&format!("fan{i}")).await?;
        let token = join(&h, &user, schedule_id).await?;
        // The further back, the longer the interval.
        assert_eq!(token.position, Some(i + 1));
        assert_eq!(token.poll_after_ms, Some((i + 1) * 1_000));
        users.push(user);
        tokens.push(token.token);
    }

    // A poll after joining is answered; the next one, sooner than three
    // quarters of its interval, is refused with when to come back.
    let third = h.api.as_user(&users[2]);
    assert_eq!(
        third.queue_token(tokens[2]).await?.poll_after_ms,
        Some(3_000)
    );
    let path = format!("/v1/queue/tokens/{}", tokens[2]);
    let response = h
        .api
        .http
        .get(h.api.url(&path))
        .bearer_auth(&users[2].token)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert_error!(
        h.api.get(&path, &users[2].token).await?,
        StatusCode::TOO_MANY_REQUESTS,
        "POLLED_TOO_SOON"
    );

    // Behind the front, a long-poll is answered at once.
    let second = h.api.as_user(&users[1]);
    let started = Instant::now();
    let answer = second
        .queue_token_waiting(tokens[1], Duration::from_secs(20))
        .await?;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        (answer.status, answer.poll_after_ms),
        (QueueStatus::Waiting, Some(2_000))
    );

    // At the front it is held, and admission wakes it.
    let (first, front) = (h.api.as_user(&users[0]), tokens[0]);
    let long_poll = tokio::spawn(async move {
        let started = Instant::now();
        let answer = first
            .queue_token_waiting(front, Duration::from_secs(20))
            .await;
        (answer, started.elapsed())
    });
    testkit::eventually(
        "the long-poll to be held",
        Duration::from_secs(10),
        || async {
            Ok(h.api
                .metrics()
                .await?
                .lines()
                .any(|l| l.starts_with("gateway_queue_long_polls_waiting") && l.ends_with(" 1"))
                .then_some(()))
        },
    )
    .await?;
    assert_eq!(h.admit(schedule_id, 1).await?, 1);
    let (answer, took) = long_poll.await?;
    let answer = answer?;
    assert_eq!(answer.status, QueueStatus::Active);
    assert!(
        took < Duration::from_secs(10),
        "woken by admission: {took:?}"
    );
    // The line moved: the second is now first (a patient client waits out
    // its pace, as `Retry-After` says).
    let second = second.patient(Duration::from_secs(5));
    assert_eq!(second.queue_token(tokens[1]).await?.position, Some(1));
    Ok(())
}

/// The status of `token` as stored (a read that is no poll).
async fn stored_status(h: &Stack, token: uuid::Uuid) -> anyhow::Result<QueueStatus> {
    Ok(sqlx::query_scalar!(
        r#"SELECT status AS "status: QueueStatus" FROM reservation_queue WHERE token = $1"#,
        token
    )
    .fetch_one(&h.env.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_nobody_asks_for_is_given_up() -> anyhow::Result<()> {
    let h = Stack::start(Options::without_workers().gateway(|c| {
        c.queue_poll_min_ms = 300;
        c.queue_poll_ms_per_place = 0;
        c.queue_abandon_secs = 1;
    }))
    .await?;
    let schedule_id = h.api.create_schedule(5, 10_000).await?;
    let leaver = h.api.create_user("leaver").await?;
    let stayer = h.api.create_user("stayer").await?;
    let left = join(&h, &leaver, schedule_id).await?.token;
    let kept = join(&h, &stayer, schedule_id).await?.token;

    // The stayer polls as asked; the leaver never does.
    let client = h.api.as_user(&stayer);
    let polling = tokio::spawn(async move {
        loop {
            let state = client.queue_token(kept).await?;
            let pause = state.poll_after_ms.unwrap_or(300) as u64;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    });
    testkit::eventually(
        "the leaver's place to be given up",
        Duration::from_secs(20),
        || async {
            h.admission_round(0).await?;
            Ok((stored_status(&h, left).await? == QueueStatus::Expired).then_some(()))
        },
    )
    .await?;
    assert!(
        !polling.is_finished(),
        "the stayer polled as asked, never refused"
    );
    polling.abort();
    assert_eq!(stored_status(&h, kept).await?, QueueStatus::Waiting);

    // Admission passes the place given up: the stayer is next.
    assert_eq!(h.admit(schedule_id, 1).await?, 1);
    assert_eq!(active(&h, schedule_id).await?, [kept]);
    Ok(())
}
