//! Two-way edit storms (docs/two-way.md): random edits on both sides of many linked contacts,
//! some within milliseconds of each other, some simultaneous on both sides of one field; then
//! the open conflicts settled by a fixed policy, then quiet. Every synced field ends equal on
//! both sides, every simultaneous edit surfaced as a conflict, and the writes are bounded by
//! the edits. Also with kill -9 loops, and with a Virtuous outage mid-storm.
//!
//! Sizes: CI (600 edits over 200 contacts; the chaos variants smaller) by default;
//! `STEWARD_FULL_TWO_WAY_TESTS=1` runs 3,000 edits over 1,000 contacts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;

use crate::common::{wait_until, TestApp};
use crate::external_sandbox::ExternalSandbox;
use crate::two_way_support::{
    conflicts, count, echoes_dropped, org, pair_view, seed_linked, sized, spawn_engine, staff_edit,
    two_way_tenant, virtuous_by_partner, virtuous_field, virtuous_puts, wait_quiet, Partner,
    Sandbox,
};

const FIELDS: [&str; 2] = ["first_name", "last_name"];

#[derive(Debug, Clone, Copy)]
enum Chaos {
    None,
    /// Kill -9 and restart the engine this many times during the storm.
    Kill9(usize),
    /// Every Virtuous call fails (503) for this long, from the storm's middle.
    VirtuousOutage(Duration),
}

struct Storm {
    contacts: usize,
    edits: usize,
    simultaneous: usize,
    seed: u64,
    chaos: Chaos,
}

async fn pause(app: &TestApp, tenant: &str, pause: bool) {
    let action = if pause { "pause" } else { "resume" };
    let (status, body) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/{action}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{action}: {body}");
}

async fn run(storm: Storm) {
    let started = Instant::now();
    // Under kill -9 the sandbox lives in its own process, so it outlives the engine.
    let external = matches!(storm.chaos, Chaos::Kill9(_)).then(ExternalSandbox::start);
    let mut app = spawn_engine(&[]).await;
    let sandbox = match &external {
        Some(external) => Sandbox::external(external),
        None => Sandbox::embedded(&app),
    };
    let tenant = "tw-storm";
    let partner = Partner::create(&app, &sandbox, "crm-storm", tenant, false).await;
    let fields = json!({"tags": "dont_sync", "subscribed": "dont_sync"});
    let mut body = two_way_tenant(tenant, &partner.api_url(), "on", fields);
    body["pull"] = json!({"events": ["contact"], "poll_interval_s": 3_600});
    crate::two_way_support::create_tenant(&app, &sandbox, &body).await;
    let linked = seed_linked(&app, &sandbox, tenant, &partner, storm.contacts).await;
    wait_quiet(&app, tenant, Duration::from_secs(120)).await;
    let puts_before = virtuous_puts(&sandbox, tenant).await;
    let partner_writes_before = partner.api_writes().await;
    let seeded = Instant::now();

    let ids: Vec<(String, u64)> = linked.iter().map(|(p, v)| (p.clone(), *v)).collect();
    let mut rng = StdRng::seed_from_u64(storm.seed);
    let kill_at: BTreeSet<usize> = match storm.chaos {
        Chaos::Kill9(kills) => (1..=kills).map(|k| k * storm.edits / (kills + 1)).collect(),
        _ => BTreeSet::new(),
    };
    let mut human_edits = 0u64;
    let mut kills = 0u64;
    for n in 0..storm.edits {
        let (partner_id, virtuous_id) = &ids[rng.gen_range(0..ids.len())];
        let field = FIELDS[rng.gen_range(0..FIELDS.len())];
        let value = format!("{field}-{n}");
        if rng.gen_bool(0.5) {
            partner.edit(partner_id, json!({field: value})).await;
        } else {
            staff_edit(&sandbox, tenant, &[(*virtuous_id, field, &value)]).await;
        }
        human_edits += 1;
        if rng.gen_bool(0.7) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
        }
        if kill_at.contains(&n) {
            app.kill9();
            kills += 1;
            app.start().await;
        }
        if let Chaos::VirtuousOutage(outage) = storm.chaos {
            if n == storm.edits / 2 {
                org(
                    &sandbox,
                    Method::PUT,
                    &format!("/_sandbox/orgs/{tenant}/faults"),
                    Some(json!({"error_5xx_rate": 1.0})),
                )
                .await;
                let outage_until = Instant::now() + outage;
                // Edits go on during the outage.
                while Instant::now() < outage_until {
                    let (partner_id, _) = &ids[rng.gen_range(0..ids.len())];
                    partner
                        .edit(
                            partner_id,
                            json!({"first_name": format!("outage-{n}-{}", rng.gen::<u32>())}),
                        )
                        .await;
                    human_edits += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                org(
                    &sandbox,
                    Method::DELETE,
                    &format!("/_sandbox/orgs/{tenant}/faults"),
                    None,
                )
                .await;
            }
        }
    }

    // Simultaneous edits of one field on both sides: decided while paused, so neither side's
    // value is written before the other's edit arrives.
    pause(&app, tenant, true).await;
    let mut simultaneous = BTreeSet::new();
    for (k, (partner_id, virtuous_id)) in ids.iter().take(storm.simultaneous).enumerate() {
        partner
            .edit(partner_id, json!({"first_name": format!("partner-{k}")}))
            .await;
        staff_edit(
            &sandbox,
            tenant,
            &[(*virtuous_id, "first_name", &format!("staff-{k}"))],
        )
        .await;
        human_edits += 2;
        simultaneous.insert(format!(
            "{}:{partner_id}:first_name",
            crate::two_way_support::PAIR
        ));
    }
    wait_until(
        Duration::from_secs(60),
        "every simultaneous edit in conflict",
        || async {
            let open: BTreeSet<String> = conflicts(&app, tenant)
                .await
                .iter()
                .filter_map(|conflict| conflict["id"].as_str().map(str::to_string))
                .collect();
            simultaneous.is_subset(&open).then_some(())
        },
    )
    .await;
    pause(&app, tenant, false).await;

    if kills > 0 {
        // Virtuous webhooks sent while the engine was down are lost (Virtuous does not
        // retry): the backstop poll finds those changes.
        let (status, answer) = app
            .admin_call(
                Method::POST,
                &format!("/v1/tenants/{tenant}/pull/poll"),
                None,
            )
            .await;
        assert!(status == 202 || status == 200, "backstop poll: {answer}");
    }

    // Quiet, then a person takes Virtuous's value for every conflict, until none is left.
    wait_quiet(&app, tenant, Duration::from_secs(240)).await;
    let mut resolved: BTreeSet<String> = BTreeSet::new();
    loop {
        let open = conflicts(&app, tenant).await;
        if open.is_empty() {
            break;
        }
        for conflict in open {
            let id = conflict["id"].as_str().unwrap().to_string();
            let (status, answer) = app
                .admin_call(
                    Method::POST,
                    &format!("/v1/tenants/{tenant}/conflicts/{id}/resolve"),
                    Some(json!({"take": "virtuous"})),
                )
                .await;
            assert_eq!(status, 200, "resolve {id}: {answer}");
            resolved.insert(id);
        }
        wait_quiet(&app, tenant, Duration::from_secs(120)).await;
    }

    // Every synced field equal on both sides.
    let partner_contacts = partner.contacts().await;
    let virtuous_contacts = virtuous_by_partner(&sandbox, tenant).await;
    let mut differences = BTreeMap::new();
    for (partner_id, _) in &ids {
        for field in FIELDS {
            let on_partner = &partner_contacts[partner_id][field];
            let on_virtuous = virtuous_field(&virtuous_contacts[partner_id], field);
            if *on_partner != on_virtuous {
                differences.insert(
                    format!("{partner_id}.{field}"),
                    (on_partner.clone(), on_virtuous),
                );
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} fields differ: {differences:?}",
        differences.len()
    );
    let missing: Vec<&String> = simultaneous.difference(&resolved).collect();
    assert!(
        missing.is_empty(),
        "simultaneous edits not surfaced as conflicts: {missing:?}"
    );

    let virtuous_writes = virtuous_puts(&sandbox, tenant).await - puts_before;
    let partner_writes = partner.api_writes().await - partner_writes_before;
    let writes = virtuous_writes + partner_writes;
    // A kill can repeat the write that was on its way (an upsert: harmless).
    let bound = human_edits + resolved.len() as u64 + 2 * kills;
    let view = pair_view(&app, tenant).await;
    let mut layers = BTreeMap::new();
    for layer in ["origin", "ledger", "window", "ownership"] {
        layers.insert(
            layer,
            echoes_dropped(&app, tenant, crate::two_way_support::PAIR, layer).await,
        );
    }
    println!(
        "two-way storm {:?}: {} contacts, {human_edits} human edits, {writes} writes \
         ({virtuous_writes} Virtuous PUTs, {partner_writes} partner upserts), {} conflicts \
         resolved ({} simultaneous), {kills} kills, echoes dropped {layers:?}, storm+settle \
         {:.1} s (seeding {:.1} s)",
        storm.chaos,
        storm.contacts,
        resolved.len(),
        simultaneous.len(),
        seeded.elapsed().as_secs_f64(),
        (seeded - started).as_secs_f64(),
    );
    assert!(
        writes <= bound,
        "writes {writes} > bound {bound} ({human_edits} edits, {} resolutions, {kills} kills)",
        resolved.len()
    );
    assert_eq!(count(&view, "dead_letters"), 0, "{view}");
}

#[actix_rt::test]
async fn an_edit_storm_converges_with_bounded_writes_and_every_simultaneous_edit_surfaced() {
    run(Storm {
        contacts: sized(200, 1_000),
        edits: sized(600, 3_000),
        simultaneous: sized(10, 40),
        seed: 14,
        chaos: Chaos::None,
    })
    .await;
}

#[actix_rt::test]
async fn an_edit_storm_under_kill_9_loops_converges() {
    run(Storm {
        contacts: sized(40, 1_000),
        edits: sized(150, 3_000),
        simultaneous: sized(4, 40),
        seed: 15,
        chaos: Chaos::Kill9(sized(3, 10)),
    })
    .await;
}

#[actix_rt::test]
async fn a_virtuous_outage_mid_storm_is_queued_then_converges() {
    run(Storm {
        contacts: sized(40, 1_000),
        edits: sized(150, 3_000),
        simultaneous: sized(4, 40),
        seed: 16,
        chaos: Chaos::VirtuousOutage(Duration::from_secs(5)),
    })
    .await;
}
