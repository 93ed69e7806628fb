//! The packaging in `deploy/` speaks of metrics the code defines: every metric the Grafana
//! dashboard and the Prometheus alert rules name is one Steward's code records (a
//! `steward_…` name in its sources) or one of the process collector's. (`.ci/run` checks
//! the rules with promtool and the systemd unit with `systemd-analyze verify`.)

use std::collections::BTreeSet;
use std::path::Path;

/// The process collector's metrics (metrics-process, as Prometheus's own clients name them).
const PROCESS_METRICS: [&str; 9] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_heap_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// Words of `text` made of `[a-z0-9_]` that start with `steward_` or `process_`.
fn metric_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|word| word.starts_with("steward_") || word.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// `steward_…` names quoted in the Rust sources under `dir` (the metric name constants).
fn defined_in(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            defined_in(&path, names);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for quoted in text.split('"').skip(1).step_by(2) {
                if quoted.starts_with("steward_")
                    && quoted
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    names.insert(quoted.to_string());
                }
            }
        }
    }
}

fn defined_metrics() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = BTreeSet::new();
    defined_in(&root.join("src"), &mut names);
    defined_in(&root.join("actors/src"), &mut names);
    names.extend(PROCESS_METRICS.iter().map(|name| name.to_string()));
    names
}

/// The names in `exprs` that are not defined (a histogram's `_bucket`, `_sum` and `_count`
/// series belong to its name).
fn undefined(exprs: &[String], defined: &BTreeSet<String>) -> BTreeSet<String> {
    let known = |name: &str| {
        defined.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| defined.contains(base))
            })
    };
    exprs
        .iter()
        .flat_map(|expr| metric_words(expr))
        .filter(|name| !known(name))
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/steward.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect()
}

fn rule_exprs() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/steward-rules.yml");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_string())
        .collect()
}

#[test]
fn the_dashboard_and_the_alert_rules_name_only_metrics_the_code_defines() {
    // Goal: each metric in deploy/grafana/steward.json and deploy/prometheus/steward-rules.yml is recorded by Steward (its name is in the sources) or by the process collector; the check itself reports a made-up name.
    let defined = defined_metrics();
    assert!(defined.contains("steward_lane_depth"), "{defined:?}");
    let dashboard = dashboard_exprs();
    let rules = rule_exprs();
    assert!(dashboard.len() >= 10, "{dashboard:?}");
    assert!(rules.len() >= 5, "{rules:?}");
    let named: BTreeSet<String> = dashboard
        .iter()
        .chain(&rules)
        .flat_map(|e| metric_words(e))
        .collect();
    assert!(named.len() >= 15, "the dashboard and rules name {named:?}");
    assert_eq!(
        undefined(&dashboard, &defined),
        BTreeSet::new(),
        "dashboard"
    );
    assert_eq!(undefined(&rules, &defined), BTreeSet::new(), "alert rules");
    let made_up = vec!["rate(steward_made_up_total[5m])".to_string()];
    assert_eq!(
        undefined(&made_up, &defined),
        BTreeSet::from(["steward_made_up_total".to_string()])
    );
}
