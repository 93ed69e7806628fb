//! Sandbox contract: the request log names the contact transactions each write carried
//! (`reference_ids`), so full-engine tests can count contact transactions per contact.

use serde_json::{json, Value};

use crate::sandbox_support::*;

/// The org's request log entries for `path`, oldest first.
async fn logged(org: &Org, path: &str) -> Vec<Value> {
    let log = org.control("GET", "/requests", None).await.json();
    list_of(&log)
        .into_iter()
        .filter(|entry| entry["path"] == path)
        .collect()
}

#[actix_rt::test]
async fn the_request_log_lists_the_reference_ids_of_accepted_contact_writes() {
    // Goal: `POST /api/Contact/Transaction` logs its one referenceId and `POST
    // /api/Contact/Batch` every accepted item's in order (an item without one skipped); a
    // refused batch and a gift write log none.
    let sb = start_sandbox().await;
    let org = sb.org(json!({"batch_item_error": "accept_others"})).await;
    let single = contact_tx("cc", "c-1", "Ann", "Lee", "ann@example.org");
    assert_eq!(
        org.post("/api/Contact/Transaction", &single).await.status,
        200
    );

    let mut no_reference = contact_tx("cc", "unused", "Bo", "Ray", "bo@example.org");
    no_reference.as_object_mut().unwrap().remove("referenceId");
    let mut invalid = contact_tx("cc", "c-bad", "No", "Last", "x@example.org");
    invalid.as_object_mut().unwrap().remove("lastName");
    let batch = json!({"referenceSource": "cc", "contacts": [
        contact_tx("cc", "c-2", "Cy", "Day", "cy@example.org"),
        no_reference,
        invalid,
        contact_tx("cc", "c-3", "Di", "Fox", "di@example.org"),
    ]});
    assert_eq!(org.post("/api/Contact/Batch", &batch).await.status, 400);

    let refused = sb.org(json!({})).await;
    let mut invalid = contact_tx("cc", "c-9", "No", "Last", "x@example.org");
    invalid.as_object_mut().unwrap().remove("lastName");
    let all_refused = json!({"referenceSource": "cc", "contacts": [
        contact_tx("cc", "c-8", "Ed", "Gray", "ed@example.org"), invalid]});
    assert_eq!(
        refused
            .post("/api/Contact/Batch", &all_refused)
            .await
            .status,
        400
    );
    assert_eq!(
        refused
            .post("/api/v2/Gift/Transaction", &gift_tx("crm", "g-1"))
            .await
            .status,
        200
    );

    let singles = logged(&org, "/api/Contact/Transaction").await;
    assert_eq!(singles.len(), 1);
    assert_eq!(singles[0]["reference_ids"], json!(["c-1"]));
    assert_eq!(singles[0]["transaction_ids"], json!([]));
    let batches = logged(&org, "/api/Contact/Batch").await;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0]["reference_ids"], json!(["c-2", "c-3"]));
    let refused_batch = logged(&refused, "/api/Contact/Batch").await;
    assert_eq!(refused_batch[0]["reference_ids"], json!([]));
    let gift = logged(&refused, "/api/v2/Gift/Transaction").await;
    assert_eq!(gift[0]["reference_ids"], json!([]));
    assert_eq!(gift[0]["transaction_ids"], json!(["g-1"]));
    sb.handle.stop().await;
}
