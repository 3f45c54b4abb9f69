//! The committed JSON Schemas in `schemas/json/` match the types. Run with
//! `UPDATE_SCHEMAS=1` to rewrite them after changing a message type.

use std::path::PathBuf;

#[test]
fn committed_json_schemas_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    for (file, schema) in schemas::json_schemas() {
        let path = dir.join(file);
        let rendered = serde_json::to_string_pretty(&schema).expect("render") + "\n";
        if update {
            std::fs::write(&path, &rendered).expect("write schema");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run UPDATE_SCHEMAS=1 cargo test -p schemas",
                path.display()
            )
        });
        assert_eq!(
            committed, rendered,
            "{file} is stale; run UPDATE_SCHEMAS=1 cargo test -p schemas"
        );
    }
}
