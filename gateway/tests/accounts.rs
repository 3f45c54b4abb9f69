//! Accounts: sign-up with a password, login, credentials that expire and
//! rotate, and the rate limits of the public calls.

mod common;

use std::time::{Duration, Instant, SystemTime};

use gateway::auth::Signer;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use testkit::stack::{Options, Stack};
use testkit::{Api, TEST_PASSWORD};

use common::{assert_error, charge_path, gateway};

const HOUR: Duration = Duration::from_secs(3600);

/// A sign-up body with a unique email.
fn signup(name: &str, password: &str) -> Value {
    let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
    json!({"name": name, "email": email, "password": password})
}

/// A login body.
fn login(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_lost_the_credential_logs_in_and_carries_on() -> anyhow::Result<()> {
    let h = gateway().await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    assert!(alice.expires_at > chrono::Utc::now() + chrono::Duration::hours(3));

    // The email in any case, the password as signed up with.
    let session = h
        .api
        .login(&alice.email.to_uppercase(), TEST_PASSWORD)
        .await?;
    assert_eq!(session.user_id, alice.id);
    assert!(session.expires_at > chrono::Utc::now() + chrono::Duration::hours(3));
    let balance = format!("/v1/users/{}/balance", alice.id);
    let (status, body) = h.api.get(&balance, &session.token).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .api
        .post(
            &charge_path(&alice),
            Some(&session.token),
            &[],
            &json!({"amount": 500}),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // A credential from login is its user's only.
    let bobs = h.api.login(&bob.email, TEST_PASSWORD).await?;
    assert_error!(
        h.api.get(&balance, &bobs.token).await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    assert_error!(
        h.api
            .post(
                &charge_path(&alice),
                Some(&bobs.token),
                &[],
                &json!({"amount": 5})
            )
            .await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    assert_error!(
        h.api
            .get(&format!("/v1/users/{}/cart", alice.id), &bobs.token)
            .await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );

    // The password is kept as an Argon2id hash, nowhere as itself.
    let stored = sqlx::query_scalar!("SELECT password FROM users WHERE id = $1", alice.id)
        .fetch_one(&h.env.pool)
        .await?
        .unwrap_or_default();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(TEST_PASSWORD));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_refuses_a_bad_password_and_changes_nothing() -> anyhow::Result<()> {
    let h = gateway().await?;
    for (password, case) in [("short", "too short"), ("", "empty")] {
        let reply = assert_error!(
            h.api
                .post_public("/v1/users", &signup("a", password))
                .await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            "{case}"
        );
        assert_eq!(reply["error"]["field"], "password", "{case}");
    }
    let long = "x".repeat(257);
    assert_error!(
        h.api.post_public("/v1/users", &signup("a", &long)).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );
    let missing = json!({"name": "a", "email": "a@example.com"});
    assert_error!(
        h.api.post_public("/v1/users", &missing).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        "no password"
    );
    let users = sqlx::query_scalar!(r#"SELECT count(*) AS "users!" FROM users"#)
        .fetch_one(&h.env.pool)
        .await?;
    assert_eq!(users, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_are_limited_and_compared_in_their_stored_form() -> anyhow::Result<()> {
    let h = gateway().await?;
    // 205 characters as sent, 405 once lowercased (`İ` becomes `i̇`): past
    // the 255 a stored email may have. Refused, not a 500, and nothing kept.
    let long = format!("{}@a.co", "\u{130}".repeat(200));
    let reply = assert_error!(
        h.api
            .post_public(
                "/v1/users",
                &json!({"name": "a", "email": long, "password": TEST_PASSWORD})
            )
            .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED"
    );
    assert_eq!(reply["error"]["field"], "email");
    let users = sqlx::query_scalar!(r#"SELECT count(*) AS "users!" FROM users"#)
        .fetch_one(&h.env.pool)
        .await?;
    assert_eq!(users, 0);

    // One address in two normalisation forms (precomposed `é`, then `e`
    // and a combining accent) and two cases is one account.
    let tag = uuid::Uuid::new_v4().simple();
    let composed = format!("ren\u{e9}-{tag}@example.com");
    let decomposed = format!("RENE\u{301}-{tag}@EXAMPLE.COM");
    let (status, _) = h
        .api
        .post_public(
            "/v1/users",
            &json!({"name": "René", "email": composed, "password": TEST_PASSWORD}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    assert_error!(
        h.api
            .post_public(
                "/v1/users",
                &json!({"name": "René", "email": decomposed, "password": TEST_PASSWORD}),
            )
            .await?,
        StatusCode::CONFLICT,
        "EMAIL_TAKEN"
    );
    h.api.login(&decomposed, TEST_PASSWORD).await?;
    Ok(())
}

/// Median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_email_and_a_wrong_password_get_the_same_answer_in_the_same_time(
) -> anyhow::Result<()> {
    // The cost a deployment runs with (the suites' stacks hash cheaply):
    // what a lookup that skipped the hash would save is then visible.
    let h = Stack::start(Options::without_workers().gateway(|config| {
        config.password_hash_memory_kib = 19_456;
        config.password_hash_iterations = 2;
    }))
    .await?;
    let (status, alice) = h
        .api
        .post_public("/v1/users", &signup("alice", TEST_PASSWORD))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    let email = alice["email"].as_str().unwrap_or_default().to_owned();
    let cases = [
        ("wrong password", login(&email, "not the password")),
        ("unknown email", login("nobody@example.com", TEST_PASSWORD)),
    ];
    let mut times: [Vec<Duration>; 2] = Default::default();
    let mut answers: [Option<Value>; 2] = Default::default();
    for _ in 0..5 {
        for (i, (case, body)) in cases.iter().enumerate() {
            let started = Instant::now();
            let answer = h.api.post_public("/v1/sessions", body).await?;
            times[i].push(started.elapsed());
            let reply = assert_error!(
                answer,
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "{case}"
            );
            answers[i] = Some(reply);
        }
    }
    assert_eq!(answers[0], answers[1], "the same body either way");
    let [wrong_password, unknown_email] = times.map(median);
    // A lookup without the hash answers in a fraction of the time.
    let ratio = unknown_email.as_secs_f64() / wrong_password.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "unknown email {unknown_email:?} against wrong password {wrong_password:?}"
    );
    Ok(())
}

const OLD_SECRET: &str = "old-auth-secret-0123456789abcdef0123";
const RETIRED_SECRET: &str = "retired-auth-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_retired_credentials_are_refused_and_the_previous_key_holds(
) -> anyhow::Result<()> {
    // The signing key has rotated: OLD_SECRET signed until now and is kept
    // for its credentials; RETIRED_SECRET was dropped before.
    let h = Stack::start(Options::without_workers().gateway(|config| {
        config.auth_previous_secrets = vec![SecretString::from(OLD_SECRET)];
    }))
    .await?;
    let alice = h.api.create_user("alice").await?;
    let balance = format!("/v1/users/{}/balance", alice.id);
    let (status, body) = h.api.get(&balance, &alice.token).await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    let before_rotation = Signer::new(OLD_SECRET, [], HOUR).issue(alice.id);
    let (status, body) = h.api.get(&balance, &before_rotation.token).await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "the previous key still verifies: {body}"
    );

    let retired = Signer::new(RETIRED_SECRET, [], HOUR).issue(alice.id);
    assert_error!(
        h.api.get(&balance, &retired.token).await?,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "signed with a retired key"
    );

    let current = Signer::new(testkit::TEST_AUTH_SECRET, [], HOUR);
    let expired = current.issue_at(alice.id, SystemTime::now() - 2 * HOUR);
    assert_error!(
        h.api.get(&balance, &expired.token).await?,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "expired an hour ago"
    );
    let expired_old = Signer::new(OLD_SECRET, [], HOUR)
        .issue_at(alice.id, SystemTime::now() - 2 * HOUR)
        .token;
    assert_error!(
        h.api.get(&balance, &expired_old).await?,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "the previous key's credential, expired"
    );
    Ok(())
}

/// Posts `body` to `path` without a credential; the status, the
/// `Retry-After` seconds if any, and the body.
async fn post_raw(
    api: &Api,
    path: &str,
    body: &Value,
) -> anyhow::Result<(StatusCode, Option<u64>, Value)> {
    let response = api.http.post(api.url(path)).json(body).send().await?;
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (status, body) = Api::read(response).await?;
    Ok((status, retry_after, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_signups_or_logins_get_429_with_retry_after_and_the_limit_resets(
) -> anyhow::Result<()> {
    // Two a window of four seconds: one back every two seconds.
    let h = Stack::start(Options::without_workers().gateway(|config| {
        config.rate_limit_window_secs = 4;
        config.signups_per_address = 2;
        config.logins_per_account = 2;
    }))
    .await?;
    let count_users = || async {
        sqlx::query_scalar!(r#"SELECT count(*) AS "users!" FROM users"#)
            .fetch_one(&h.env.pool)
            .await
    };

    // Sign-ups per address.
    let mut emails = Vec::new();
    for name in ["alice", "bob"] {
        let (status, _, body) = post_raw(&h.api, "/v1/users", &signup(name, TEST_PASSWORD)).await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        emails.push(body["email"].as_str().unwrap_or_default().to_owned());
    }
    let carol = signup("carol", TEST_PASSWORD);
    let (status, retry_after, body) = post_raw(&h.api, "/v1/users", &carol).await?;
    assert_eq!(
        (status, common::code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
        "{body}"
    );
    let wait = retry_after.expect("Retry-After on a 429");
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    assert_eq!(count_users().await?, 2, "a refused sign-up creates nobody");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, body) = post_raw(&h.api, "/v1/users", &carol).await?;
    assert_eq!(status, StatusCode::CREATED, "after Retry-After: {body}");

    // Logins per account, wrong passwords and right ones alike.
    let (alice, bob) = (&emails[0], &emails[1]);
    for _ in 0..2 {
        let (status, _, body) = post_raw(&h.api, "/v1/sessions", &login(alice, "guess")).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, retry_after, body) =
        post_raw(&h.api, "/v1/sessions", &login(alice, TEST_PASSWORD)).await?;
    assert_eq!(
        (status, common::code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
        "the third attempt on one account: {body}"
    );
    let (status, _, body) = post_raw(&h.api, "/v1/sessions", &login(bob, TEST_PASSWORD)).await?;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another account has its own count: {body}"
    );
    tokio::time::sleep(Duration::from_secs(
        retry_after.expect("Retry-After on a 429"),
    ))
    .await;
    let (status, _, body) = post_raw(&h.api, "/v1/sessions", &login(alice, TEST_PASSWORD)).await?;
    assert_eq!(status, StatusCode::CREATED, "after Retry-After: {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_guessing_a_password_cannot_lock_its_owner_out() -> anyhow::Result<()> {
    // Behind a proxy: the client address is the last X-Forwarded-For entry.
    let h = Stack::start(Options::without_workers().gateway(|config| {
        config.logins_per_account = 2;
        config.logins_per_account_all_addresses = 4;
        config.trust_forwarded_for = true;
    }))
    .await?;
    let owner = h.api.create_user("owner").await?;
    let from = |address: &'static str, password: &str| {
        let call = h
            .api
            .http
            .post(h.api.url("/v1/sessions"))
            .header("x-forwarded-for", address)
            .json(&login(&owner.email, password));
        async move { Api::read(call.send().await?).await }
    };
    for _ in 0..2 {
        let (status, body) = from("203.0.113.9", "guess").await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_error!(
        from("203.0.113.9", "guess").await?,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "the stranger's third try"
    );
    let (status, body) = from("198.51.100.7", TEST_PASSWORD).await?;
    assert_eq!(status, StatusCode::CREATED, "the owner, from home: {body}");
    // Guesses from yet more addresses meet the account's ceiling (four in
    // all: the stranger's two and the owner's one are three).
    let (status, body) = from("192.0.2.1", "guess").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_error!(
        from("192.0.2.2", "guess").await?,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "past the ceiling"
    );
    Ok(())
}
