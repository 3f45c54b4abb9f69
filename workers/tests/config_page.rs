//! `docs/configuration.md`'s table of variables is generated from the
//! `clap` definitions of the gateway's and the workers' configurations:
//! this test fails while the committed page differs, and rewrites it with
//! `UPDATE_DOCS=1 cargo test -p workers --test config_page`.

use clap::CommandFactory;

const BEGIN: &str = "<!-- generated from the code by workers/tests/config_page.rs; \
                     UPDATE_DOCS=1 cargo test -p workers --test config_page rewrites it -->\n";
const END: &str = "<!-- end of the generated table -->\n";

#[test]
fn the_configuration_page_lists_every_variable_with_its_default() -> anyhow::Result<()> {
    let table = platform::config::variables_table(&[
        ("gateway", gateway::config::GatewayConfig::command()),
        ("workers", workers::config::WorkersConfig::command()),
    ]);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let page = std::fs::read_to_string(&path)?;
    let (Some(begin), Some(end)) = (page.find(BEGIN), page.find(END)) else {
        anyhow::bail!("docs/configuration.md lacks the markers of its generated table");
    };
    let fresh = format!("{}{BEGIN}{table}{}", &page[..begin], &page[end..]);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &fresh)?;
        return Ok(());
    }
    assert!(
        page == fresh,
        "docs/configuration.md differs from the code's configuration; rerun with UPDATE_DOCS=1"
    );
    // Every variable of both processes is on the page, with its default.
    for name in [
        "DATABASE_URL",
        "GATEWAY_ADDR",
        "WORKERS_ADDR",
        "BUSINESS_TZ",
        "AUTH_SECRET",
    ] {
        assert!(table.contains(&format!("| `{name}` |")), "{name} missing");
    }
    assert!(table.contains("| `KAFKA_BROKERS` | gateway, workers |"));
    Ok(())
}
