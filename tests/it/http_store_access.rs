//! Issue 10: HTTP code touches no store. The `steward` crate's HTTP modules reach a tenant
//! only through its handle (Capture, Inbound) and the tenants facade; the store field of
//! `AppState` is private to `tenants`, and this grep over `src/http` catches the rest (an
//! import of the store's handle types, a flush awaited by hand).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The store-access words a line may not contain (`Store` as a type, not an error
/// variant such as `EnqueueError::Store`).
fn store_access(line: &str) -> Option<&'static str> {
    let code = line.split("//").next().unwrap_or_default();
    for word in [
        "TenantStore",
        "sled",
        ".durable(",
        "registry()",
        "state.store.",
    ] {
        if code.contains(word) {
            return Some(word);
        }
    }
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find("Store") {
        let start = from + at;
        let end = start + "Store".len();
        let word_before =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let word_after =
            end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        let error_variant = code[..start].ends_with("Error::");
        if !word_before && !word_after && !error_variant {
            return Some("Store");
        }
        from = end;
    }
    None
}

#[test]
fn no_http_module_touches_the_store() {
    // Goal: HTTP code reaches a tenant only through its handle, Capture, Inbound and the tenants facade (issue 10); any store access under src/http fails here.
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http"),
        &mut files,
    );
    assert!(files.len() >= 10, "src/http not found: {files:?}");
    let mut hits = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if let Some(word) = store_access(line) {
                hits.push(format!(
                    "{}:{}: `{word}` in {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "store access under src/http:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_store_access_check_sees_what_it_must() {
    // Goal: the grep above is not vacuous: each forbidden form is caught, error variants and prose are not.
    for line in [
        "let s: TenantStore = x;",
        "use steward_actors::store::{Store, Lane};",
        "handle.sled()",
        "store.durable().await?;",
        "state.store.registry()",
    ] {
        assert!(store_access(line).is_some(), "{line}");
    }
    for line in [
        "EnqueueError::Store(err) => x,",
        "// the Store is behind the facade",
        "state.stores.dead_letter(id, 1)",
        "StoreError",
    ] {
        assert!(store_access(line).is_none(), "{line}");
    }
}
