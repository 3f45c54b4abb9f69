//! The committed `docs/asyncapi.yaml` is the document the code generates
//! (`schemas::asyncapi::document`). `./dev asyncapi` (or
//! `UPDATE_ASYNCAPI=1 cargo test -p schemas --test asyncapi`) rewrites it
//! after a message type, topic or header changed.

use std::path::PathBuf;

const REGENERATE: &str = "run ./dev asyncapi (UPDATE_ASYNCAPI=1 cargo test -p schemas --test asyncapi) and commit docs/asyncapi.yaml";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/asyncapi.yaml")
}

fn rendered() -> String {
    let yaml = serde_yaml_ng::to_string(&schemas::asyncapi::document()).expect("render YAML");
    format!(
        "# Generated from the schemas crate (schemas::asyncapi::document); do not edit.\n\
         # Rewrite with ./dev asyncapi, validate with ./dev asyncapi --check.\n{yaml}"
    )
}

#[test]
fn committed_asyncapi_document_matches_the_code() {
    let path = path();
    let rendered = rendered();
    if std::env::var_os("UPDATE_ASYNCAPI").is_some() {
        std::fs::write(&path, &rendered).expect("write docs/asyncapi.yaml");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("docs/asyncapi.yaml is missing; {REGENERATE}"));
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "docs/asyncapi.yaml differs from the generated document from line {}: {REGENERATE}",
            line + 1
        );
    }
}

/// The YAML reads back as the same document (nothing is lost or retyped by
/// the rendering, e.g. a string that YAML would read as a number).
#[test]
fn the_yaml_reads_back_as_the_document() {
    let back: serde_json::Value =
        serde_yaml_ng::from_str(&rendered()).expect("parse rendered YAML");
    let document = serde_json::to_value(schemas::asyncapi::document()).expect("document as JSON");
    assert_eq!(back, document);
}
