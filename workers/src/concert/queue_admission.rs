//! Queue admission, one round a tick: expire ACTIVE tokens past their time,
//! drop WAITING places nobody asks for any more, then admit each schedule's
//! line in place order up to its ACTIVE limit.
//!
//! Every step is an index range step, so a round costs what it changes, not
//! the length of the lines: the schedules with people waiting come from a
//! skip scan of the waiting index, and a schedule's next places are the
//! first rows of that index after its `admitted_through`.
//!
//! Order: a join takes its place number and inserts its row under a shared
//! advisory lock of its schedule (`queue_line_lock`); admission takes that
//! lock exclusively. So while a schedule is being admitted, every place
//! numbered so far is visible (committed) or never will be, and admission
//! never passes a place whose join is still in flight.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

pub use platform::db::QUEUE_ADMITTED_CHANNEL;
use platform::db::QUEUE_LINE_LOCK_CLASS;

/// Advisory lock key of the admission round (one process runs it at a time).
const ROUND_LOCK: (i32, i32) = (QUEUE_LINE_LOCK_CLASS + 1, 0);

/// Most places one round admits per schedule (a round holds the schedule's
/// lock while it admits, and joins wait for it).
pub const ADMIT_BATCH_MAX: i64 = 5_000;

/// Most abandoned places one round drops.
const ABANDON_BATCH_MAX: i64 = 10_000;

/// Admission settings.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// How many tokens per schedule may be ACTIVE at once.
    pub active_limit: i64,
    /// How long a token stays ACTIVE.
    pub active_ttl: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// ACTIVE tokens past their time, now EXPIRED.
    pub expired: u64,
    /// WAITING places nobody asked for in time, now EXPIRED.
    pub abandoned: u64,
    /// Places admitted (now ACTIVE).
    pub admitted: u64,
    /// Whether this process ran the round (another one may hold it).
    pub ran: bool,
}

/// One admission round. Safe with several worker processes: one runs the
/// round at a time, and each schedule's admission holds its line's lock.
pub async fn admit(pool: &PgPool, settings: Admission) -> Result<Round, sqlx::Error> {
    // The round's lock lives in a transaction of its own, held open while
    // the schedules are admitted in theirs.
    let mut round_lock = pool.begin().await?;
    let ran = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1, $2) AS "locked!""#,
        ROUND_LOCK.0,
        ROUND_LOCK.1
    )
    .fetch_one(&mut *round_lock)
    .await?;
    if !ran {
        return Ok(Round::default());
    }
    let mut round = Round {
        ran,
        ..Round::default()
    };
    round.expired = sqlx::query!(
        "UPDATE reservation_queue SET status = 'EXPIRED', updated_at = now()
         WHERE status = 'ACTIVE' AND expires_at <= now()"
    )
    .execute(pool)
    .await?
    .rows_affected();
    round.abandoned = drop_abandoned(pool).await?;
    for schedule_id in schedules_waiting(pool).await? {
        let mut tx = pool.begin().await?;
        round.admitted += admit_schedule(&mut tx, schedule_id, settings).await?;
        tx.commit().await?;
    }
    round_lock.commit().await?;
    if round.expired > 0 || round.abandoned > 0 || round.admitted > 0 {
        metrics::counter!("queue_tokens_admitted_total").increment(round.admitted);
        metrics::counter!("queue_tokens_expired_total").increment(round.expired);
        metrics::counter!("queue_places_abandoned_total").increment(round.abandoned);
        tracing::debug!(?round, "queue admission round");
    }
    Ok(round)
}

/// Drops WAITING places whose holders stopped asking (`poll_deadline`
/// passed). Rows a gateway is refreshing right now are left for the next
/// round.
async fn drop_abandoned(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE reservation_queue SET status = 'EXPIRED', updated_at = now()
         WHERE id IN (SELECT id FROM reservation_queue
                      WHERE status = 'WAITING' AND poll_deadline < now()
                      ORDER BY poll_deadline LIMIT $1 FOR UPDATE SKIP LOCKED)",
        ABANDON_BATCH_MAX
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// The schedules with anyone waiting: a skip scan of the waiting index,
/// one index probe per schedule.
async fn schedules_waiting(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH RECURSIVE s AS (
               (SELECT concert_schedule_id AS id FROM reservation_queue
                WHERE status = 'WAITING' ORDER BY concert_schedule_id LIMIT 1)
               UNION ALL
               SELECT (SELECT concert_schedule_id FROM reservation_queue
                       WHERE status = 'WAITING' AND concert_schedule_id > s.id
                       ORDER BY concert_schedule_id LIMIT 1)
               FROM s WHERE s.id IS NOT NULL
           )
           SELECT id AS "id!" FROM s WHERE id IS NOT NULL"#
    )
    .fetch_all(pool)
    .await
}

/// Admits schedule `schedule_id`'s next places in line, as many as its
/// ACTIVE limit has room for, moves its `admitted_through` and tells the
/// gateways. Returns how many were admitted.
pub async fn admit_schedule(
    tx: &mut PgConnection,
    schedule_id: i64,
    settings: Admission,
) -> Result<u64, sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock($1, queue_line_key($2))",
        QUEUE_LINE_LOCK_CLASS,
        schedule_id
    )
    .execute(&mut *tx)
    .await?;
    let active = sqlx::query_scalar!(
        r#"SELECT count(*) AS "active!" FROM reservation_queue
           WHERE concert_schedule_id = $1 AND status = 'ACTIVE'"#,
        schedule_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let room = (settings.active_limit - active).min(ADMIT_BATCH_MAX);
    if room <= 0 {
        return Ok(0);
    }
    let admitted = sqlx::query_scalar!(
        "WITH next AS (
             SELECT id FROM reservation_queue
             WHERE concert_schedule_id = $1 AND status = 'WAITING'
             ORDER BY line_no LIMIT $2 FOR UPDATE
         )
         UPDATE reservation_queue q
         SET status = 'ACTIVE', activated_at = now(), updated_at = now(),
             expires_at = now() + make_interval(secs => $3)
         FROM next WHERE q.id = next.id AND q.status = 'WAITING'
         RETURNING q.line_no",
        schedule_id,
        room,
        settings.active_ttl.as_secs_f64()
    )
    .fetch_all(&mut *tx)
    .await?;
    let Some(&through) = admitted.iter().max() else {
        return Ok(0);
    };
    let count = admitted.len() as i64;
    // The line's pace: admitted per second since the last round that
    // admitted anyone (the first round counts as a second's worth),
    // smoothed.
    sqlx::query!(
        "UPDATE queue_lines SET
             admitted_through = greatest(admitted_through, $2),
             admit_rate = 0.7 * admit_rate + 0.3 * $3 / greatest(
                 extract(epoch FROM now() - coalesce(admitted_at, now() - interval '1 second'))
                     ::float8,
                 0.05),
             admitted_at = now(), updated_at = now()
         WHERE concert_schedule_id = $1",
        schedule_id,
        through,
        count as f64
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "SELECT pg_notify($1, $2)",
        QUEUE_ADMITTED_CHANNEL,
        format!("{schedule_id}:{through}")
    )
    .execute(&mut *tx)
    .await?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::PgPool;
    use tokio::task::JoinSet;
    use uuid::Uuid;

    use super::*;
    use crate::fixtures::user_with_balance;

    const SETTINGS: Admission = Admission {
        active_limit: 10,
        active_ttl: Duration::from_secs(600),
    };

    async fn schedule(pool: &PgPool) -> i64 {
        crate::fixtures::schedule(pool, 10, 1_000).await.0
    }

    /// Takes a place at the end of `schedule_id`'s line for a new user in
    /// `tx`, as the gateway's join does (under the line's shared lock);
    /// returns its token.
    async fn take_place(tx: &mut PgConnection, user_id: i64, schedule_id: i64) -> Uuid {
        sqlx::query_scalar!(
            "WITH line AS (SELECT pg_advisory_xact_lock_shared($3, queue_line_key($2)))
             INSERT INTO reservation_queue (user_id, concert_schedule_id, token, line_no, poll_deadline)
             SELECT $1, $2, gen_random_uuid(), nextval(queue_line_sequence($2)),
                    now() + interval '1 hour'
             FROM line RETURNING token",
            user_id,
            schedule_id,
            QUEUE_LINE_LOCK_CLASS
        )
        .fetch_one(&mut *tx)
        .await
        .expect("place")
    }

    /// `n` new users join `schedule_id`'s line one after the other; their
    /// tokens in line order.
    async fn join(pool: &PgPool, schedule_id: i64, n: usize) -> Vec<Uuid> {
        let mut tokens = Vec::with_capacity(n);
        for _ in 0..n {
            let user = user_with_balance(pool, 0).await;
            let mut conn = pool.acquire().await.expect("connection");
            tokens.push(take_place(&mut conn, user, schedule_id).await);
        }
        tokens
    }

    /// A line as the tests look at it.
    #[derive(Debug)]
    struct Line {
        /// Its ACTIVE tokens, in line order.
        active: Vec<Uuid>,
        admitted_through: i64,
        admit_rate: f64,
    }

    async fn line(pool: &PgPool, schedule_id: i64) -> Line {
        sqlx::query_as!(
            Line,
            r#"SELECT coalesce(array_agg(q.token ORDER BY q.line_no)
                                FILTER (WHERE q.status = 'ACTIVE'), '{}') AS "active!",
                      l.admitted_through, l.admit_rate
               FROM queue_lines l
               LEFT JOIN reservation_queue q ON q.concert_schedule_id = l.concert_schedule_id
               WHERE l.concert_schedule_id = $1
               GROUP BY l.concert_schedule_id"#,
            schedule_id
        )
        .fetch_one(pool)
        .await
        .expect("line")
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn admission_follows_the_line_and_never_exceeds_the_limit(pool: PgPool) {
        let schedule_id = schedule(&pool).await;
        let tokens = join(&pool, schedule_id, 30).await;

        // Four processes admit the schedule at once (each transaction open
        // before any admits).
        let mut admitters = JoinSet::new();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(4));
        for _ in 0..4 {
            let (pool, start) = (pool.clone(), start.clone());
            admitters.spawn(async move {
                let mut tx = pool.begin().await.expect("begin");
                start.wait().await;
                let admitted = admit_schedule(&mut tx, schedule_id, SETTINGS).await;
                tx.commit().await.expect("commit");
                admitted.expect("admit")
            });
        }
        let admitted: u64 = admitters.join_all().await.into_iter().sum();
        assert_eq!(admitted, 10);
        let now = line(&pool, schedule_id).await;
        assert_eq!(
            (now.active.as_slice(), now.admitted_through),
            (&tokens[..10], 10)
        );

        // Three admitted tokens are spent (a payment expires its token):
        // the next three in line, and the line's pace is known.
        sqlx::query!(
            "UPDATE reservation_queue SET status = 'EXPIRED' WHERE token = ANY($1)",
            &tokens[..3]
        )
        .execute(&pool)
        .await
        .expect("spend");
        let round = admit(&pool, SETTINGS).await.expect("round");
        assert_eq!((round.ran, round.admitted), (true, 3));
        let now = line(&pool, schedule_id).await;
        assert_eq!(
            (now.active.as_slice(), now.admitted_through),
            (&tokens[3..13], 13)
        );
        assert!(now.admit_rate > 0.0, "{now:?}");
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn admission_waits_for_a_join_in_flight_and_never_passes_it(pool: PgPool) {
        let schedule_id = schedule(&pool).await;
        let (slow_user, fast_user) = (
            user_with_balance(&pool, 0).await,
            user_with_balance(&pool, 0).await,
        );
        // The slow join has its place number but has not committed yet; a
        // later join commits meanwhile with the next number.
        let mut slow = pool.begin().await.expect("begin");
        let first = take_place(&mut slow, slow_user, schedule_id).await;
        let mut fast = pool.begin().await.expect("begin");
        let second = take_place(&mut fast, fast_user, schedule_id).await;
        fast.commit().await.expect("commit");

        let settings = Admission {
            active_limit: 1,
            ..SETTINGS
        };
        let admission = tokio::spawn({
            let pool = pool.clone();
            async move { admit(&pool, settings).await.expect("round") }
        });
        // Admission waits for the line's lock while the slow join holds it.
        loop {
            let waiting = sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"#
            )
            .fetch_one(&pool)
            .await
            .expect("locks");
            if waiting > 0 {
                break;
            }
            assert!(
                !admission.is_finished(),
                "admission passed a join in flight"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slow.commit().await.expect("commit");
        let round = admission.await.expect("admission");
        assert_eq!(round.admitted, 1);
        // First in line, first admitted.
        assert_eq!(line(&pool, schedule_id).await.active, [first]);
        assert_ne!(first, second);
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn places_nobody_asks_for_are_dropped_and_passed(pool: PgPool) {
        let schedule_id = schedule(&pool).await;
        let tokens = join(&pool, schedule_id, 3).await;
        sqlx::query!(
            "UPDATE reservation_queue SET poll_deadline = now() - interval '1 second'
             WHERE token = $1",
            tokens[0]
        )
        .execute(&pool)
        .await
        .expect("leave");
        let settings = Admission {
            active_limit: 1,
            ..SETTINGS
        };
        let round = admit(&pool, settings).await.expect("round");
        assert_eq!((round.abandoned, round.admitted), (1, 1));
        let now = line(&pool, schedule_id).await;
        // Every place up to the admitted one is passed.
        assert_eq!(
            (now.active.as_slice(), now.admitted_through),
            (&tokens[1..2], 2)
        );
        let left = sqlx::query_scalar!(
            r#"SELECT status AS "status: api::status::QueueStatus" FROM reservation_queue
               WHERE token = $1"#,
            tokens[0]
        )
        .fetch_one(&pool)
        .await
        .expect("status");
        assert_eq!(left, api::status::QueueStatus::Expired);
    }
}
