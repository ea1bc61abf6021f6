//! `docs/crd-reference.md` is generated from the types; this test fails when it drifts.
//! `make crds` (or `UPDATE_SNAPSHOTS=1 cargo test -p falco-api --test reference`) rewrites it.

use std::path::Path;

#[test]
fn committed_crd_reference_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/crd-reference.md");
    let generated = falco_api::reference::markdown(&falco_api::all_crds());
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/crd-reference.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/crd-reference.md is out of date with crates/falco-api: run `make crds`"
    );
}
