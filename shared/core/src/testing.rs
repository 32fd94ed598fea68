//! Helpers for tests in this and the crates above it: where the repository is, and the
//! sample EventBridge events it keeps as fixtures.

/// The workspace root of the checkout the tests run in: the nearest ancestor holding
/// `Cargo.lock` of the crate under test (`CARGO_MANIFEST_DIR` as cargo and nextest set it
/// when they run a test). Read at run time, not with `env!`: a target directory shared by
/// several checkouts (CI's cache) may hold a build made in another one.
pub fn repo_root() -> std::path::PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let crate_dir = std::path::PathBuf::from(crate_dir);
    crate_dir.ancestors().find(|d| d.join("Cargo.lock").is_file()).unwrap_or(&crate_dir).to_path_buf()
}

/// A sample EventBridge event from `tests/fixtures/events/` (real events in the exact
/// shape AWS sends them).
pub fn sample_event(name: &str) -> serde_json::Value {
    let path = repo_root().join("tests/fixtures/events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
