//! Goal: the CDC source's outbox mode (issue 18) end to end — a table with an `updated_at`
//! column read by keyset pages on `(updated_at, pk)`: many rows sharing one `updated_at`
//! across page boundaries (7 rows a page) each arrive exactly once, later versions of
//! contact rows (a new `updated_at`) arrive as contact updates, and a gift row read again
//! with a new amount raises `source_gift_changed` without a second gift.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cdc_support::{
    alert_codes, cdc_poller, cdc_tenant, contact_emails, contact_transactions,
    contacts_by_reference, gift_cents, org_stats, person_fields, virtuous_contacts, virtuous_gifts,
    wait_alert, wait_gifts_and_drained, GiftRow, PersonRow, TRANSACTION_SOURCE,
};
use crate::common::{at_timeout, wait_until, SpawnOptions, TestApp};
use crate::pg_support::{unique_schema, PgCluster};

const NAME: &str = "outboxdb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_outbox_reads_ties_across_pages_once_and_later_contact_versions() {
    // Goal: 45 gift rows and 30 people sharing one updated_at (pages of 7 cut through the
    // ties), plus rows at later times, are each captured once; a later UPDATE of 10 people
    // (one new updated_at for all ten) sends 10 contact updates with the new emails; new
    // rows keep arriving; a gift row updated with a new amount raises source_gift_changed
    // and stays one gift with its first amount.
    let started = Instant::now();
    let cluster = PgCluster::shared_logical();
    let schema = unique_schema("cdcoutbox");
    let client = cluster.connect().await;
    let (gifts, people) = (format!("{schema}.gifts"), format!("{schema}.people"));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {gifts} (id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL,
                 email text, updated_at timestamptz NOT NULL);
             CREATE TABLE {people} (id bigint PRIMARY KEY, email text, first_name text,
                 last_name text, updated_at timestamptz NOT NULL);"
        ))
        .await
        .unwrap();
    // t0: one value for the ties (an hour ago, whole seconds); later rows a second apart.
    let insert_gift = |row: &GiftRow, at: &str| {
        format!(
            "INSERT INTO {gifts} (id, amount, email, updated_at) VALUES ({}, {}, '{}', {at})",
            row.id,
            row.amount_text(),
            row.email
        )
    };
    let insert_person = |row: &PersonRow, at: &str| {
        format!(
            "INSERT INTO {people} (id, email, first_name, last_name, updated_at) \
             VALUES ({}, '{}', '{}', '{}', {at})",
            row.id, row.email, row.first_name, row.last_name
        )
    };
    let t0 = "date_trunc('second', now()) - interval '1 hour'";
    let mut sql = vec!["BEGIN".to_string()];
    for id in 1..=60i64 {
        let at = if id <= 45 {
            t0.to_string()
        } else {
            format!("{t0} + interval '{} seconds'", id - 45)
        };
        sql.push(insert_gift(&GiftRow::numbered(id), &at));
    }
    for id in 1..=35i64 {
        let at = if id <= 30 {
            t0.to_string()
        } else {
            format!("{t0} + interval '{} seconds'", id - 30)
        };
        sql.push(insert_person(&PersonRow::numbered(id, 0), &at));
    }
    sql.push("COMMIT".to_string());
    client.batch_execute(&sql.join(";")).await.unwrap();

    let app = TestApp::spawn(SpawnOptions::default()).await;
    let sandbox = app.sandbox_url();
    let tenant = "cdc-outbox";
    let source = json!({
        "dsn": cluster.dsn(), "mode": "outbox", "transaction_source": TRANSACTION_SOURCE,
        "amount_unit": "major", "interval_ms": 200, "batch": 7,
        "tables": {
            gifts.clone(): {"primary_key": ["id"], "kind": "gift", "updated_at": "updated_at",
                            "fields": {"amount": "/amount", "contact.email": "/email"}},
            people.clone(): {"primary_key": ["id"], "kind": "contact", "updated_at": "updated_at",
                             "fields": person_fields()}
        }
    });
    cdc_tenant(
        &app,
        &sandbox,
        "embedded",
        tenant,
        json!({"postgres": {NAME: source}}),
        json!({"dedup_transactions": false}),
    )
    .await;
    let wait = Duration::from_secs(60);
    let captured = |expected: u64| {
        let app = &app;
        async move {
            let last = std::cell::RefCell::new(Value::Null);
            let captured = wait_until(
                wait,
                at_timeout(|| format!("{expected} facts captured: {}", last.borrow())),
                || async {
                    let counts = app.status(tenant).await["counts"].clone();
                    let captured = counts["captured"].as_u64().unwrap_or(0);
                    *last.borrow_mut() = counts;
                    (captured >= expected).then_some(captured)
                },
            )
            .await;
            assert_eq!(
                captured,
                expected,
                "each row version captured once: {}",
                app.status(tenant).await["counts"]
            );
        }
    };
    captured(95).await;
    wait_gifts_and_drained(&app, &sandbox, tenant, 60, wait).await;
    let view = cdc_poller(&app, tenant, NAME).await;
    assert_eq!(view["kind"], "postgres", "{view}");
    assert!(
        view["position"].is_null(),
        "outbox mode has no position: {view}"
    );
    assert!(
        view["source_status"].is_null(),
        "outbox mode has no slot: {view}"
    );

    // Ten people change at once (one new updated_at for the ten: ties again).
    client
        .batch_execute(&format!(
            "UPDATE {people} SET email = 'person' || id || '.v1@people.example.org', \
             first_name = 'First' || id || 'v1', updated_at = now() WHERE id <= 10"
        ))
        .await
        .unwrap();
    captured(105).await;
    // New rows later on.
    let mut later = vec!["BEGIN".to_string()];
    for id in 61..=70i64 {
        later.push(insert_gift(&GiftRow::numbered(id), "now()"));
    }
    later.push("COMMIT".to_string());
    client.batch_execute(&later.join(";")).await.unwrap();
    captured(115).await;
    wait_gifts_and_drained(&app, &sandbox, tenant, 70, wait).await;

    let contacts = virtuous_contacts(&sandbox, tenant).await;
    let by_reference = contacts_by_reference(&contacts);
    let transactions = contact_transactions(&sandbox, tenant).await;
    let mut wrong = Vec::new();
    for id in 1..=35i64 {
        let version = u32::from(id <= 10);
        let person = PersonRow::numbered(id, version);
        let reference = id.to_string();
        let emails = by_reference.get(&reference).map(contact_emails);
        if !emails
            .as_ref()
            .is_some_and(|emails| emails.contains(&person.email))
        {
            wrong.push(format!(
                "person {id}: emails {emails:?} lack {}",
                person.email
            ));
        }
        // Versions of one contact queued together travel merged (docs/polling.md "Contacts
        // in bulk"): 1 to (versions) transactions; the engine's count above has each version.
        let sent = transactions.get(&reference).copied().unwrap_or(0);
        if sent == 0 || sent > u64::from(version) + 1 {
            wrong.push(format!(
                "person {id}: {sent} contact transactions (want 1 to {})",
                version + 1
            ));
        }
    }
    assert_eq!(transactions.len(), 35, "{transactions:?}");
    assert!(wrong.is_empty(), "{wrong:?}");

    // A gift row with a new amount and a new updated_at: read again, an alert, one gift.
    client
        .batch_execute(&format!(
            "UPDATE {gifts} SET amount = 77.77, updated_at = now() WHERE id = 1"
        ))
        .await
        .unwrap();
    wait_alert(&app, tenant, "source_gift_changed", wait).await;
    let found = virtuous_gifts(&sandbox, tenant, &gifts).await;
    assert!(found.foreign.is_empty(), "{:?}", found.foreign);
    assert!(found.duplicates().is_empty(), "{:?}", found.duplicates());
    let rows: BTreeMap<i64, GiftRow> = (1..=70).map(|id| (id, GiftRow::numbered(id))).collect();
    let missing: Vec<&i64> = rows
        .keys()
        .filter(|id| !found.by_row.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "rows without a gift: {missing:?}");
    for (id, row) in &rows {
        let gift = &found.by_row[id][0];
        assert_eq!(gift_cents(gift), Some(row.amount_cents), "row {id}: {gift}");
    }
    assert_eq!(org_stats(&sandbox, tenant).await["gifts"], 70);
    let codes = alert_codes(&app, tenant).await;
    assert!(
        !codes
            .iter()
            .any(|c| c == "poller_failed" || c == "dead_letters"),
        "{codes:?}"
    );
    eprintln!(
        "cdc outbox: 70 gift rows, 35 people + 10 new versions, pages of 7 through ties; test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
