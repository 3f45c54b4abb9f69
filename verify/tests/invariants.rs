//! The checker catches what it claims to: each invariant holds on a
//! consistent database and is reported broken once a row breaks it.

use std::time::Duration;

use anyhow::Context;
use testkit::TestEnv;

/// Runs a fixture script of several statements (`query!` takes one).
async fn exec(env: &TestEnv, sql: &str) -> anyhow::Result<()> {
    // Dynamic SQL: multi-statement fixture scripts.
    sqlx::raw_sql(sql).execute(&env.pool).await?;
    Ok(())
}

async fn broken(env: &TestEnv) -> anyhow::Result<Vec<String>> {
    let checks = verify::invariants::check(&env.pool, "Asia/Seoul", Duration::ZERO).await?;
    Ok(checks
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect())
}

/// One way to break an invariant, and to mend it again.
struct Case<'a> {
    /// The invariant it breaks.
    name: &'a str,
    /// Statements that break it.
    break_it: &'a str,
    /// Statements that restore the consistent world.
    mend_it: &'a str,
}

/// The cases of `fixtures/broken_invariants.sql`.
fn cases(script: &str) -> anyhow::Result<Vec<Case<'_>>> {
    script
        .split("\n-- case: ")
        .skip(1)
        .map(|case| {
            let (name, statements) = case.split_once('\n').context("a case's name")?;
            let (break_it, mend_it) = statements
                .split_once("\n-- mend\n")
                .with_context(|| format!("{name}: no -- mend"))?;
            Ok(Case {
                name: name.trim(),
                break_it,
                mend_it,
            })
        })
        .collect()
}

#[tokio::test]
async fn each_invariant_is_reported_broken_when_a_row_breaks_it() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    exec(&env, include_str!("fixtures/consistent_world.sql")).await?;
    assert_eq!(broken(&env).await?, Vec::<String>::new());

    let cases = cases(include_str!("fixtures/broken_invariants.sql"))?;
    // A case for every invariant but those a table constraint guarantees.
    let all = verify::invariants::check(&env.pool, "Asia/Seoul", Duration::ZERO).await?;
    let can_fail: Vec<&str> = all
        .keys()
        .map(String::as_str)
        .filter(|name| !verify::invariants::constraint_backed(name))
        .collect();
    let with_case: Vec<&str> = cases.iter().map(|case| case.name).collect();
    assert_eq!(
        can_fail,
        {
            let mut sorted = with_case.clone();
            sorted.sort_unstable();
            sorted
        },
        "a case per invariant that can fail"
    );
    for Case {
        name,
        break_it,
        mend_it,
    } in cases
    {
        exec(&env, break_it).await?;
        let found = broken(&env).await?;
        assert!(
            found.iter().any(|n| n == name),
            "{name} not caught: {found:?}"
        );
        exec(&env, mend_it).await?;
        assert_eq!(
            broken(&env).await?,
            Vec::<String>::new(),
            "after mending {name}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_ambiguous_call_resolves_only_to_one_decided_request_with_its_effect(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    exec(&env, include_str!("fixtures/consistent_world.sql")).await?;
    let call = |id: &str| -> anyhow::Result<verify::ambiguous::Call> {
        Ok(verify::ambiguous::Call {
            request_id: id.parse()?,
            key: Some("k".into()),
            answers: vec!["503 KAFKA_UNAVAILABLE".into()],
        })
    };
    let charge = "00000000-0000-0000-0000-000000000001";
    let hold = "00000000-0000-0000-0000-000000000011";
    let order = "00000000-0000-0000-0000-000000000021";
    let resolve = |calls: Vec<verify::ambiguous::Call>| {
        let pool = env.pool.clone();
        async move { verify::ambiguous::resolve(&pool, &calls).await }
    };
    let all = resolve(vec![call(charge)?, call(hold)?, call(order)?]).await?;
    assert_eq!((all.calls, all.resolved), (3, 3), "{:?}", all.problems);

    // The charge applied twice under its one id.
    exec(
        &env,
        "INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after, request_id)
         VALUES (1, 1, 'CHARGE', 100, 190, '00000000-0000-0000-0000-000000000001')",
    )
    .await?;
    let twice = resolve(vec![call(charge)?]).await?;
    assert_eq!(twice.resolved, 0);
    said(&twice, 0, "2 effects");

    // A request given up by its lane, and one never recorded.
    exec(
        &env,
        "UPDATE requests SET status = 'FAILED' WHERE id = '00000000-0000-0000-0000-000000000021'",
    )
    .await?;
    let dropped = resolve(vec![
        call(order)?,
        call("00000000-0000-0000-0000-0000000000ff")?,
    ])
    .await?;
    assert_eq!(dropped.resolved, 0);
    said(&dropped, 0, "is FAILED");
    said(&dropped, 1, "no request row");

    // A hold answered SUCCEEDED whose reservation is not there.
    exec(
        &env,
        "UPDATE requests SET result = '{\"reservation_id\": 99, \"seat_id\": 1}'
         WHERE id = '00000000-0000-0000-0000-000000000011'",
    )
    .await?;
    let lost = resolve(vec![call(hold)?]).await?;
    said(&lost, 0, "0 effects");
    Ok(())
}

/// Asserts that problem `i` of `resolution` says `text`.
fn said(resolution: &verify::ambiguous::Resolution, i: usize, text: &str) {
    assert!(
        resolution.problems.get(i).is_some_and(|p| p.contains(text)),
        "problem {i} should say {text:?}: {:?}",
        resolution.problems
    );
}
