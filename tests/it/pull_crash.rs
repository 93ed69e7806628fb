//! Pull under kill -9 (issue 13): staff edits keep flowing into an external sandbox while the
//! engine is killed (SIGKILL) and restarted on the same data dir, again and again, during
//! delivery; at the end every record's latest version is in the NDJSON files and the
//! Postgres rows — nothing lost.
//!
//! Size: 10 cycles (CI), 20 with `STEWARD_FULL_PULL_TESTS=1`. Prints one `PULL CRASH:` line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::common::TestApp;
use crate::confirm_support::api_key;
use crate::external_sandbox::ExternalSandbox;
use crate::pg_support::{unique_schema, PgCluster};
use crate::pull_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_crash_kill9_loop_during_delivery_loses_no_change() {
    // Goal: ≥ 10 (full: 20) kill -9 cycles while staff edits flow and the engine delivers to
    // NDJSON and Postgres → after restart and a backstop poll, both hold every record's latest
    // version (deletes applied): 0 lost.
    let started = Instant::now();
    let cycles = sized(10, 20);
    let id = "pull-crash";
    let sandbox = ExternalSandbox::start();
    sandbox
        .create_org(id, &api_key(id), 360_000, json!({"seed": 5}))
        .await;
    let mut app = TestApp::spawn(engine_options(&[])).await;
    let files = tempfile::tempdir().unwrap();
    let schema = unique_schema("pull_crash");
    let cluster = PgCluster::shared();
    let mut body = pull_tenant(
        id,
        json!({"events": ["gift", "contact"], "destinations": {
            "warehouse": {"kind": "postgres", "dsn": cluster.dsn(), "schema": schema, "batch_max": 50},
            "files": ndjson_destination(files.path(), 4_096),
        }}),
    );
    body["virtuous"]["base_url"] = json!(sandbox.url);
    app.create_tenant(&body).await;
    wait_for_subscription(
        &sandbox.client,
        &sandbox.url,
        id,
        &["giftDelete", "contactDelete"],
    )
    .await;
    import_gifts(
        &sandbox.client,
        &sandbox.url,
        id,
        &api_key(id),
        OTHER_TOOL,
        "crash-",
        150,
    )
    .await;
    let (gifts, contacts) = sandbox_ids(&sandbox.client, &sandbox.url, id).await;

    // Staff keep editing, whatever the engine is doing.
    let stop = Arc::new(AtomicBool::new(false));
    let editor = {
        let stop = Arc::clone(&stop);
        let (client, url) = (sandbox.client.clone(), sandbox.url.clone());
        tokio::spawn(async move {
            let mut plan = EditPlan::new(5, gifts, contacts);
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let edits = plan.next_edits(4);
                let answered = staff_edits(&client, &url, id, &edits).await;
                plan.applied(&edits, &answered);
                sent += edits.len();
                // Pacing of the load, not a wait for a result.
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            (plan, sent)
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut heads = Vec::new();
    for _ in 0..cycles {
        // Let it deliver for a while (the kill's timing), then SIGKILL and restart.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1_200))).await;
        let head = destinations(&app, id).await["destinations"][0]["head"]
            .as_u64()
            .unwrap_or(0);
        heads.push(head);
        app.kill9();
        app.start().await;
    }
    stop.store(true, Ordering::SeqCst);
    let (plan, edits_sent) = editor.await.unwrap();

    let report = backstop_now(&app, id).await;
    let expected = sandbox_latest(&sandbox.client, &sandbox.url, id, &plan.deleted).await;
    let postgres = cluster.connect().await;
    let converge = Duration::from_secs(90);
    wait_for_state(converge, "NDJSON after the kills", &expected, || async {
        ndjson_seen(files.path()).newest
    })
    .await;
    wait_for_state(converge, "Postgres after the kills", &expected, || {
        pg_state(&postgres, &schema)
    })
    .await;
    let ndjson = ndjson_seen(files.path());
    let stats = sandbox.stats(id).await;
    let list = destinations(&app, id).await;
    for name in ["warehouse", "files"] {
        assert_eq!(destination(&list, name)["dead_lettered"], 0, "{list}");
    }
    assert!(
        heads.windows(2).filter(|pair| pair[1] > pair[0]).count() >= cycles / 2,
        "changes were being logged between most kills: heads {heads:?}"
    );
    eprintln!(
        "PULL CRASH: {cycles} kill -9 cycles, {edits_sent} staff edits, {} records ({} deleted), \
         lost 0, log heads at the kills {heads:?}, NDJSON {} lines ({} repeats, {} shown older \
         after newer), webhooks sent {} / failed (engine down) {}, backstop logged {}, {:.1}s",
        expected.len(),
        plan.deleted.len(),
        ndjson.items,
        ndjson.repeats,
        ndjson.regressions.len(),
        stats["webhooks_sent"],
        stats["webhooks_failed"],
        report["logged"],
        started.elapsed().as_secs_f64()
    );
}
