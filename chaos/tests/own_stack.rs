//! The chaos run measures only what it started: it refuses to run when a
//! port it needs is held by another process.

#[tokio::test]
async fn refuses_a_broker_port_it_did_not_start() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let settings = <chaos::Settings as clap::Parser>::try_parse_from([
        "chaos",
        "--quick",
        "--broker-port",
        &port.to_string(),
        "--log-dir",
        std::env::temp_dir()
            .join("chaos-refusal")
            .to_str()
            .unwrap_or("/tmp/chaos-refusal"),
    ])?;
    let refused = chaos::run(settings).await;
    let message = format!("{:#}", refused.expect_err("the run refuses"));
    assert!(
        message.contains(&format!("127.0.0.1:{port} is taken")),
        "{message}"
    );
    Ok(())
}
