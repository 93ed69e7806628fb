//! The crate's layering, checked on its source: the actors stand on the hub, the shell,
//! messages, ports and the store; no actor imports another; nothing below imports upward.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The five children; each may use only the modules below the actors.
const ACTORS: [&str; 5] = ["capture", "queue", "submitter", "inbound", "reconciler"];
/// Owns the children: may use the actors too.
const SUPERVISOR: &str = "supervisor";
/// The handle on a tenant: may use the supervisor (to start it), never an actor.
const RUNTIME: &str = "runtime";

/// Top-level module → the other top-level modules its production code names (`crate::x`).
fn module_imports() -> BTreeMap<String, BTreeSet<String>> {
    let source_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![source_dir.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&source_dir).expect("under src");
            let file_name = relative.file_name().unwrap().to_string_lossy();
            let is_test_file = file_name.ends_with("tests.rs")
                || relative
                    .components()
                    .any(|part| part.as_os_str() == "model_tests");
            if !file_name.ends_with(".rs") || is_test_file || relative == Path::new("lib.rs") {
                continue;
            }
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).expect("source readable");
            // Inline test modules sit at the end of a file and may use anything.
            let production = text.split("#[cfg(test)]").next().unwrap_or("");
            let names = imports.entry(module.clone()).or_default();
            for line in production.lines() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for (index, _) in line.match_indices("crate::") {
                    let rest = &line[index + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        names.insert(name);
                    }
                }
            }
        }
    }
    imports
}

fn is_upper(module: &str) -> bool {
    ACTORS.contains(&module) || module == SUPERVISOR || module == RUNTIME
}

#[test]
fn actors_import_only_the_layers_below_them() {
    // Goal: no actor names another actor, the hub/shell/messages/ports/store name no actor,
    // supervisor or runtime, and only the runtime names the supervisor.
    let imports = module_imports();
    assert!(imports.contains_key("hub") && imports.contains_key("submitter"));
    let mut violations = Vec::new();
    for (module, names) in &imports {
        for name in names {
            let allowed = match module.as_str() {
                RUNTIME => !ACTORS.contains(&name.as_str()) && name != RUNTIME,
                SUPERVISOR => name != RUNTIME,
                _ => !is_upper(name),
            };
            if !allowed {
                violations.push(format!("{module} uses crate::{name}"));
            }
        }
    }
    assert!(violations.is_empty(), "layering broken: {violations:?}");
}

#[test]
fn modules_form_no_import_cycle() {
    // Goal: the modules' import graph is acyclic (a cycle names its modules).
    let imports = module_imports();
    // Depth-first search; `on_path` holds the current chain.
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        on_path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), Vec<String>> {
        if let Some(start) = on_path.iter().position(|m| m == module) {
            let mut cycle = on_path[start..].to_vec();
            cycle.push(module.to_string());
            return Err(cycle);
        }
        if !done.insert(module.to_string()) {
            return Ok(());
        }
        on_path.push(module.to_string());
        for name in imports.get(module).into_iter().flatten() {
            visit(name, imports, on_path, done)?;
        }
        on_path.pop();
        Ok(())
    }
    let mut done = BTreeSet::new();
    for module in imports.keys() {
        if let Err(cycle) = visit(module, &imports, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_reads_crate_paths() {
    // Goal: the two checks above are not vacuous: the parser finds the `crate::` names this
    // crate has (the supervisor names every actor), so an upward edge would be seen.
    let imports = module_imports();
    let supervisor = &imports[SUPERVISOR];
    for actor in ACTORS {
        assert!(supervisor.contains(actor), "supervisor should name {actor}");
    }
    assert!(imports["child"].contains("hub"));
}
