//! The Postgres destination against a real throwaway Postgres on loopback: batched guarded
//! upserts, deletes, idempotence, typed columns, a record refused alone, and a server that
//! stops and comes back.

use std::time::Duration;

use serde_json::{json, Value};
use steward::destinations::postgres::PostgresDestination;
use steward::tenant::PostgresDestinationDoc;
use steward_actors::ports::Destination;
use steward_actors::pull::{ChangeKind, ChangeOp, ChangeVia, DeliveryAnswer, StoredChange};

use crate::common::wait_until;
use crate::pg_support::{unique_schema, PgCluster};

fn destination(cluster: &PgCluster, schema: &str) -> PostgresDestination {
    let settings = PostgresDestinationDoc {
        dsn: Some(cluster.dsn()),
        schema: schema.to_string(),
        batch_max: 500,
    };
    PostgresDestination::new("hope", "warehouse", &settings).expect("valid settings")
}

fn change(
    seq: u64,
    kind: ChangeKind,
    op: ChangeOp,
    id: &str,
    version_ms: u64,
    record: Value,
) -> StoredChange {
    StoredChange {
        seq,
        kind,
        op,
        id: id.to_string(),
        version_ms,
        modified_at: Some(
            jiff::Timestamp::from_millisecond(version_ms as i64)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%S%.3f")
                .to_string(),
        ),
        record,
        own: false,
        via: ChangeVia::Webhook,
        received_ms: version_ms + 5,
    }
}

fn gift(seq: u64, id: &str, version_ms: u64, amount: f64) -> StoredChange {
    change(
        seq,
        ChangeKind::Gift,
        ChangeOp::Upsert,
        id,
        version_ms,
        json!({"id": id.parse::<u64>().unwrap_or(0), "contactId": 77, "amount": amount,
               "giftDate": "2024-05-01T00:00:00", "transactionSource": "Stripe",
               "transactionId": format!("ch_{id}")}),
    )
}

const V1: u64 = 1_714_557_600_000; // 2024-05-01T10:00:00Z

/// Every row of a table but `synced_at` (which moves with each write), as JSON, by id.
async fn rows(client: &tokio_postgres::Client, schema: &str, table: &str) -> Vec<Value> {
    let sql = format!(
        "SELECT coalesce(json_agg(to_jsonb(t) - 'synced_at' ORDER BY id), '[]')::text FROM \"{schema}\".{table} t"
    );
    let text: String = client.query_one(sql.as_str(), &[]).await.unwrap().get(0);
    serde_json::from_str::<Vec<Value>>(&text).unwrap()
}

#[actix_rt::test]
async fn batched_upserts_keep_the_newest_version_and_deletes_mark_rows() {
    // Goal: one deliver writes gifts and contacts with their typed columns; an older
    // version never overwrites a newer one; the same batch twice leaves the same rows; a
    // delete sets deleted_at (a tombstone for an unknown id); a later upsert clears it.
    let cluster = PgCluster::shared();
    let schema = unique_schema("batched");
    let destination = destination(cluster, &schema);
    let contact = change(
        3,
        ChangeKind::Contact,
        ChangeOp::Upsert,
        "77",
        V1,
        json!({"id": 77, "name": "Ann Lee", "contactIndividuals": [{"isPrimary": true,
               "contactMethods": [{"type": "Home Email", "value": "ann@example.org", "isPrimary": true}]}]}),
    );
    let batch = vec![
        gift(1, "101", V1, 25.5),
        gift(2, "102", V1, 10.0),
        contact,
        gift(4, "101", V1 + 1_000, 30.0), // the same gift, newer, in the same batch
    ];
    assert_eq!(
        destination.deliver(batch.clone()).await,
        DeliveryAnswer::committed(4)
    );
    let client = cluster.connect().await;
    let gifts = rows(&client, &schema, "gifts").await;
    assert_eq!(gifts.len(), 2, "{gifts:?}");
    assert_eq!(gifts[0]["id"], "101");
    assert_eq!(gifts[0]["amount"], 30.0);
    assert_eq!(gifts[0]["version_ms"], V1 + 1_000);
    assert_eq!(gifts[0]["contact_id"], "77");
    assert_eq!(gifts[0]["gift_date"], "2024-05-01");
    assert_eq!(gifts[0]["transaction_source"], "Stripe");
    assert_eq!(gifts[0]["transaction_id"], "ch_101");
    assert_eq!(gifts[0]["record"]["amount"], 30.0);
    assert_eq!(gifts[0]["deleted_at"], Value::Null);
    assert!(gifts[0]["modified_at"]
        .as_str()
        .unwrap()
        .starts_with("2024-05-01T10:00:01"));
    let contacts = rows(&client, &schema, "contacts").await;
    assert_eq!(contacts[0]["name"], "Ann Lee");
    assert_eq!(contacts[0]["email"], "ann@example.org");

    // The same batch again (at least once): the same rows.
    assert_eq!(
        destination.deliver(batch).await,
        DeliveryAnswer::committed(4)
    );
    assert_eq!(rows(&client, &schema, "gifts").await, gifts);
    assert_eq!(rows(&client, &schema, "contacts").await, contacts);

    // An older version arriving late changes nothing.
    assert_eq!(
        destination.deliver(vec![gift(5, "101", V1, 1.0)]).await,
        DeliveryAnswer::committed(5)
    );
    assert_eq!(rows(&client, &schema, "gifts").await, gifts);

    // A delete marks the row; one for an unknown id leaves a tombstone; an older delete
    // does not touch a newer row.
    let delete = |seq, id: &str, version_ms| {
        change(
            seq,
            ChangeKind::Gift,
            ChangeOp::Delete,
            id,
            version_ms,
            json!({"id": id}),
        )
    };
    let answer = destination
        .deliver(vec![
            delete(6, "102", V1 + 5_000),
            delete(7, "999", V1 + 5_000),
            delete(8, "101", V1 - 1),
        ])
        .await;
    assert_eq!(answer, DeliveryAnswer::committed(8));
    let after = rows(&client, &schema, "gifts").await;
    let by_id = |id: &str| after.iter().find(|row| row["id"] == id).cloned().unwrap();
    assert_eq!(
        by_id("101"),
        gifts[0],
        "an older delete changed a newer row"
    );
    assert!(by_id("102")["deleted_at"]
        .as_str()
        .unwrap()
        .starts_with("2024-05-01T10:00:05"));
    assert_eq!(by_id("102")["version_ms"], V1 + 5_000);
    assert_eq!(
        by_id("102")["amount"],
        10.0,
        "a delete keeps the last record"
    );
    assert!(by_id("999")["deleted_at"].is_string(), "tombstone");

    // A newer upsert of a deleted id (Virtuous restored it) clears deleted_at.
    destination
        .deliver(vec![gift(9, "102", V1 + 9_000, 11.0)])
        .await;
    let restored = rows(&client, &schema, "gifts").await;
    let row = restored.iter().find(|row| row["id"] == "102").unwrap();
    assert_eq!(row["deleted_at"], Value::Null);
    assert_eq!(row["amount"], 11.0);

    // Every kind has its table.
    for table in ["projects", "events", "contact_notes"] {
        assert_eq!(rows(&client, &schema, table).await, Vec::<Value>::new());
    }
}

#[actix_rt::test]
async fn a_change_postgres_refuses_alone_is_rejected_and_the_rest_land() {
    // Goal: a record Postgres cannot store (a NUL character in jsonb) fails the batch; the
    // destination retries its changes one by one, rejects that one with the server's reason,
    // and commits the others.
    let cluster = PgCluster::shared();
    let schema = unique_schema("refused");
    let destination = destination(cluster, &schema);
    let mut poisoned = gift(2, "202", V1, 5.0);
    poisoned.record["notes"] = json!("nul \u{0000} inside");
    let answer = destination
        .deliver(vec![
            gift(1, "201", V1, 5.0),
            poisoned,
            gift(3, "203", V1, 7.0),
        ])
        .await;
    assert_eq!(answer.committed_through, Some(3), "{answer:?}");
    assert_eq!(answer.retry, None);
    assert_eq!(answer.rejected.len(), 1, "{answer:?}");
    assert_eq!(answer.rejected[0].0, 2);
    assert!(answer.rejected[0].1.contains("SQLSTATE 22"), "{answer:?}");
    let client = cluster.connect().await;
    let ids: Vec<Value> = rows(&client, &schema, "gifts")
        .await
        .into_iter()
        .map(|row| row["id"].clone())
        .collect();
    assert_eq!(ids, [json!("201"), json!("203")]);
}

#[actix_rt::test]
async fn a_stopped_server_answers_retry_and_a_restarted_one_takes_the_batch() {
    // Goal: with Postgres stopped the destination answers retry (nothing committed); once
    // it runs again the same destination reconnects and the batch lands.
    let cluster = PgCluster::start(); // its own: stopping the shared one would hit others
    let schema = unique_schema("restart");
    let destination = destination(&cluster, &schema);
    assert_eq!(
        destination.deliver(vec![gift(1, "301", V1, 1.0)]).await,
        DeliveryAnswer::committed(1)
    );
    cluster.stop();
    let answer = destination.deliver(vec![gift(2, "302", V1, 2.0)]).await;
    assert_eq!(answer.committed_through, None, "{answer:?}");
    assert!(answer.retry.is_some(), "{answer:?}");
    cluster.start_again();
    let answer = wait_until(
        Duration::from_secs(20),
        "the restarted server takes the batch",
        || {
            let destination = &destination;
            async move {
                let answer = destination.deliver(vec![gift(2, "302", V1, 2.0)]).await;
                (answer.retry.is_none()).then_some(answer)
            }
        },
    )
    .await;
    assert_eq!(answer, DeliveryAnswer::committed(2));
    let client = cluster.connect().await;
    assert_eq!(rows(&client, &schema, "gifts").await.len(), 2);
}

#[actix_rt::test]
async fn a_user_owning_an_existing_schema_needs_no_create_on_the_database() {
    // Goal: a partner's restricted user (no CREATE on the database) owning the schema
    // it was given can still take deliveries: the schema is created only when missing.
    let cluster = PgCluster::shared();
    let schema = unique_schema("owned");
    let role = format!("bi_{schema}");
    let admin = cluster.connect().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; CREATE SCHEMA \"{schema}\" AUTHORIZATION {role};"
        ))
        .await
        .unwrap();
    let settings = PostgresDestinationDoc {
        dsn: Some(
            cluster
                .dsn()
                .replace("user=steward", &format!("user={role}")),
        ),
        schema: schema.clone(),
        batch_max: 500,
    };
    let destination = PostgresDestination::new("hope", "warehouse", &settings).unwrap();
    let answer = destination.deliver(vec![gift(1, "401", V1, 4.0)]).await;
    assert_eq!(answer, DeliveryAnswer::committed(1));
    assert_eq!(rows(&admin, &schema, "gifts").await.len(), 1);
}
