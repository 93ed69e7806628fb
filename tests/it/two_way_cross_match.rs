//! The initial cross-match of a two-way pair (docs/two-way.md "Cross-match"), end to end: a
//! generated pair of datasets with a known truth — references, case and whitespace variants
//! of emails, family emails shared by two partner records, duplicate Virtuous contacts,
//! one-side-only records — read by a job that survives a kill -9, reported with counts equal
//! to the truth, and applied exactly as approved, once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::wait_until;
use crate::external_sandbox::ExternalSandbox;
use crate::two_way_support::{
    org, process, sized, spawn_engine, two_way_tenant, Partner, Sandbox, PAIR, REFERENCE_SOURCE,
};

/// The generated truth: how many records of each kind.
struct Truth {
    by_reference: usize,
    by_email: usize,
    families: usize,
    virtuous_duplicates: usize,
    partner_only: usize,
    virtuous_only: usize,
}

/// Contact transactions "another tool" posts straight to the org, then imported.
async fn virtuous_contacts(sandbox: &Sandbox, tenant: &str, contacts: Vec<Value>) {
    let key = format!("vk-secret-{tenant}-apikey");
    for chunk in contacts.chunks(100) {
        let response = sandbox
            .client
            .post(format!("{}/api/Contact/Batch", sandbox.url))
            .bearer_auth(&key)
            .json(&json!({"contacts": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    // The org imports at once.
    process(sandbox, tenant).await;
}

fn person(email: &str, n: usize) -> Value {
    json!({"email": email, "first_name": format!("Pat{n}"), "last_name": format!("Lee{n}")})
}

#[actix_rt::test]
async fn the_cross_match_reports_the_truth_survives_a_crash_and_applies_the_approval_once() {
    let truth = Truth {
        by_reference: sized(20, 2_000),
        by_email: sized(30, 3_000),
        families: sized(5, 300),
        virtuous_duplicates: sized(5, 300),
        partner_only: sized(15, 1_500),
        virtuous_only: sized(10, 1_000),
    };
    // The sandbox lives in its own process: the engine is killed mid-job.
    let external = ExternalSandbox::start();
    let sandbox = Sandbox::external(&external);
    let mut app = spawn_engine(&[]).await;
    let tenant = "tw-xmatch";
    let partner = Partner::create(&app, &sandbox, "crm-xmatch", tenant, false).await;
    // Emails are compared but not synced here: linking writes nothing, so every write seen
    // comes from the approved policies.
    let fields = json!({"email": "dont_sync", "tags": "dont_sync", "subscribed": "dont_sync"});
    crate::two_way_support::create_tenant(
        &app,
        &sandbox,
        &two_way_tenant(tenant, &partner.api_url(), "on", fields),
    )
    .await;

    // The partner's records, seeded quietly (the engine never hears of them).
    let mut partner_rows = Vec::new();
    let mut n = 0;
    let mut next = |email: String| {
        n += 1;
        let mut row = person(&email, n);
        row["id"] = json!(format!("x{n}"));
        row
    };
    let mut virtuous_rows = Vec::new();
    let mut expected_matched = BTreeMap::new();
    for i in 0..truth.by_reference {
        let row = next(format!("ref{i}@example.org"));
        // Virtuous knows this person under another email, but names the partner record.
        virtuous_rows.push(json!({"referenceSource": REFERENCE_SOURCE, "referenceId": row["id"],
            "email": format!("other-ref{i}@example.org"), "firstName": row["first_name"], "lastName": row["last_name"]}));
        expected_matched.insert(row["id"].as_str().unwrap().to_string(), "reference");
        partner_rows.push(row);
    }
    for i in 0..truth.by_email {
        // Case and whitespace variants on the partner side.
        let email = if i % 2 == 0 {
            format!(" Mail{i}@Example.ORG ")
        } else {
            format!("MAIL{i}@example.org")
        };
        let row = next(email);
        virtuous_rows.push(json!({"referenceSource": "OtherTool", "referenceId": format!("o-mail{i}"),
            "email": format!("mail{i}@example.org"), "firstName": row["first_name"], "lastName": row["last_name"]}));
        expected_matched.insert(row["id"].as_str().unwrap().to_string(), "email");
        partner_rows.push(row);
    }
    let mut ambiguous_partners = BTreeSet::new();
    for i in 0..truth.families {
        for _ in 0..2 {
            let row = next(format!("family{i}@example.org"));
            ambiguous_partners.insert(row["id"].as_str().unwrap().to_string());
            partner_rows.push(row);
        }
        virtuous_rows.push(json!({"referenceSource": "OtherTool", "referenceId": format!("o-family{i}"),
            "email": format!("family{i}@example.org"), "firstName": "Family", "lastName": format!("F{i}")}));
    }
    for i in 0..truth.virtuous_duplicates {
        let row = next(format!("dup{i}@example.org"));
        ambiguous_partners.insert(row["id"].as_str().unwrap().to_string());
        partner_rows.push(row);
        for copy in 0..2 {
            // Made apart (import matches by email), then given the same address below.
            virtuous_rows.push(json!({"referenceSource": "OtherTool", "referenceId": format!("o-dup{i}-{copy}"),
                "email": format!("dup{i}-copy{copy}@example.org"), "firstName": "Dup", "lastName": format!("D{i}-{copy}")}));
        }
    }
    let mut partner_only = BTreeSet::new();
    for i in 0..truth.partner_only {
        let row = next(format!("only-partner{i}@example.org"));
        partner_only.insert(row["id"].as_str().unwrap().to_string());
        partner_rows.push(row);
    }
    for i in 0..truth.virtuous_only {
        virtuous_rows.push(json!({"referenceSource": "OtherTool", "referenceId": format!("o-only{i}"),
            "email": format!("only-virtuous{i}@example.org"), "firstName": "Only", "lastName": format!("V{i}")}));
    }
    for chunk in partner_rows.chunks(500) {
        partner
            .control(
                Method::POST,
                &format!("/_sandbox/partners/{}/contacts", partner.id),
                Some(json!({"contacts": chunk, "quiet": true})),
            )
            .await;
    }
    virtuous_contacts(&sandbox, tenant, virtuous_rows).await;
    // The duplicates get one address each pair (API edits).
    let contacts = org(
        &sandbox,
        Method::GET,
        &format!("/_sandbox/orgs/{tenant}/contacts"),
        None,
    )
    .await;
    let key = format!("vk-secret-{tenant}-apikey");
    for contact in contacts.as_array().unwrap() {
        let text = contact.to_string();
        for i in 0..truth.virtuous_duplicates {
            // Both copies end up with one address, in two cases.
            let renamed = [
                ("copy1", format!("dup{i}@example.org")),
                ("copy0", format!("DUP{i}@example.org")),
            ];
            for (copy, address) in renamed {
                let old = format!("dup{i}-{copy}@example.org");
                if !text.contains(&old) {
                    continue;
                }
                let response = sandbox
                    .client
                    .put(format!("{}/api/Contact/{}", sandbox.url, contact["id"]))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(text.replace(&old, &address))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }
    }

    // The job, interrupted by a kill -9 right after it starts, resumes on restart.
    let (status, job) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/cross-match"),
            Some(json!({"pair": PAIR})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let (status, _) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/cross-match"),
            Some(json!({"pair": PAIR})),
        )
        .await;
    assert_eq!(status, 409, "one job at a time");
    app.kill9();
    app.start().await;
    let job = wait_until(
        Duration::from_secs(120),
        "the cross-match report",
        || async {
            let job = app
                .admin_json(Method::GET, &format!("/v1/tenants/{tenant}/cross-match"))
                .await;
            (job["state"] == "ready").then_some(job)
        },
    )
    .await;
    let summary = &job["summary"];
    let matched = truth.by_reference + truth.by_email;
    assert_eq!(summary["matched"], matched, "{job}");
    assert_eq!(
        summary["ambiguous"],
        truth.families + truth.virtuous_duplicates,
        "{job}"
    );
    assert_eq!(summary["partner_only"], truth.partner_only, "{job}");
    assert_eq!(summary["virtuous_only"], truth.virtuous_only, "{job}");
    assert_eq!(job["partner_rows"], partner_rows.len(), "{job}");

    // The report, line by line.
    let response = app
        .admin(
            Method::GET,
            &format!("/v1/tenants/{tenant}/cross-match/report?pair={PAIR}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, job["report_rows"].as_u64().unwrap());
    for row in rows.iter().filter(|row| row["group"] == "matched") {
        let partner_id = row["partner_ids"][0].as_str().unwrap();
        assert_eq!(
            row["by"].as_str(),
            expected_matched.get(partner_id).copied(),
            "{row}"
        );
    }
    for row in rows.iter().filter(|row| row["group"] == "ambiguous") {
        for id in row["partner_ids"].as_array().unwrap() {
            assert!(ambiguous_partners.contains(id.as_str().unwrap()), "{row}");
        }
    }

    // Nothing was written before approval.
    assert_eq!(partner.api_writes().await, 0);
    let (status, body) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/cross-match/approve"),
            Some(
                json!({"pair": PAIR, "policies": {"matched": "link", "partner_only": "create",
                                                   "virtuous_only": "external_only"}}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let done = wait_until(Duration::from_secs(120), "the approval applied", || async {
        let job = app
            .admin_json(Method::GET, &format!("/v1/tenants/{tenant}/cross-match"))
            .await;
        (job["state"] == "done").then_some(job)
    })
    .await;
    assert_eq!(done["applied"]["linked"], matched, "{done}");
    assert_eq!(
        done["applied"]["create_virtuous"], truth.partner_only,
        "{done}"
    );
    assert_eq!(
        done["applied"]["external_only"], truth.virtuous_only,
        "{done}"
    );
    let (status, _) = app
        .admin_call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/cross-match/approve"),
            Some(
                json!({"pair": PAIR, "policies": {"matched": "link", "partner_only": "create",
                                                   "virtuous_only": "create"}}),
            ),
        )
        .await;
    assert_eq!(status, 409, "approval is applied once");

    // Partner-only records went to Virtuous as contact transactions, each exactly once.
    let created = wait_until(
        Duration::from_secs(60),
        "the partner-only creations",
        || async {
            let log = org(
                &sandbox,
                Method::GET,
                &format!("/_sandbox/orgs/{tenant}/requests"),
                None,
            )
            .await;
            let mut sent: BTreeMap<String, u64> = BTreeMap::new();
            for entry in log.as_array().into_iter().flatten() {
                for id in entry["reference_ids"].as_array().into_iter().flatten() {
                    if let Some(id) = id.as_str() {
                        if partner_only.contains(id) {
                            *sent.entry(id.to_string()).or_default() += 1;
                        }
                    }
                }
            }
            (sent.len() == partner_only.len()).then_some(sent)
        },
    )
    .await;
    assert!(created.values().all(|times| *times == 1), "{created:?}");
    // Matched records are linked to the right contact; the Virtuous-only ones never reach
    // the partner; ambiguous partner records stay unlinked.
    for partner_id in expected_matched.keys() {
        let link = crate::two_way_support::link(&app, tenant, partner_id)
            .await
            .unwrap_or_else(|| panic!("{partner_id} has no link"));
        assert!(link["virtuous_id"].as_str().is_some(), "{link}");
    }
    for partner_id in &ambiguous_partners {
        let link = crate::two_way_support::link(&app, tenant, partner_id).await;
        assert!(
            link.as_ref()
                .map_or(true, |link| link["virtuous_id"].is_null()),
            "{partner_id}: {link:?}"
        );
    }
    crate::two_way_support::wait_quiet(&app, tenant, Duration::from_secs(60)).await;
    assert_eq!(
        partner.api_writes().await,
        0,
        "nothing was made on the partner"
    );
}
