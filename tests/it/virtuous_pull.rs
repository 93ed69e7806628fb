//! Pull's calls of the Virtuous client (`VirtuousCrm`) against the sandbox on loopback: the
//! backstop poll by `Last Modified Date`, the re-read of records by id, and the webhook
//! subscription registered and then updated in place.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};
use steward::virtuous::crm::VirtuousCrm;
use steward_actors::ports::{now_ms, ChangePage, Crm};
use steward_actors::pull::{ChangeKind, ChangeOp};
use steward_actors::virtuous_event::VirtuousChange;

use crate::common::wait_until;
use crate::sandbox_support::*;

const DAY_MS: u64 = 86_400_000;

fn crm_for(org: &Org, webhook_secret: Option<&str>) -> VirtuousCrm {
    VirtuousCrm::new(
        &org.base,
        SecretString::from(org.key.clone()),
        webhook_secret.map(|secret| SecretString::from(secret.to_string())),
        Duration::from_secs(10),
    )
    .expect("virtuous crm")
}

/// Imports one gift (and its new contact) per transaction id; returns the gifts' Virtuous
/// ids in id order.
async fn import_gifts(org: &Org, transaction_ids: &[&str]) -> Vec<String> {
    for id in transaction_ids {
        org.send_gift(&gift_tx("stripe", id)).await;
    }
    assert_eq!(org.process().await["imported"], transaction_ids.len());
    let mut ids: Vec<u64> = org
        .all_gifts()
        .await
        .iter()
        .map(|gift| gift["id"].as_u64().expect("gift id"))
        .collect();
    ids.sort_unstable();
    ids.iter().map(u64::to_string).collect()
}

/// A staff edit of a gift, once the clock has passed every modification so far, so the
/// edited gift's `modifiedDateTimeUtc` is strictly the newest.
async fn edit_gift_last(org: &Org, id: &str) {
    let newest_ms = org
        .all_gifts()
        .await
        .iter()
        .filter_map(|gift| gift["modifiedDateTimeUtc"].as_str())
        .filter_map(steward::virtuous::webhook::parse_modified_ms)
        .max()
        .expect("modified times");
    wait_until(Duration::from_secs(2), "the clock to move", || async move {
        (now_ms() > newest_ms).then_some(())
    })
    .await;
    let body = json!({"kind": "gift", "id": id.parse::<u64>().unwrap(),
        "changes": {"notes": "edited by staff"}});
    let r = org.control("POST", "/staff-edit", Some(&body)).await;
    assert_eq!(r.status, 200, "staff edit: {}", r.text());
}

fn ids_of(changes: &[VirtuousChange]) -> Vec<&str> {
    changes.iter().map(|change| change.id.as_str()).collect()
}

/// Every page of `query_modified` (take `take`); asserts each page's total.
async fn poll_all(
    crm: &VirtuousCrm,
    kind: ChangeKind,
    since_ms: u64,
    take: u32,
) -> Vec<VirtuousChange> {
    let mut changes = Vec::new();
    let mut pages = 0;
    loop {
        let (reply, page) = crm
            .query_modified(kind, since_ms, changes.len() as u64, take)
            .await;
        assert_eq!(reply.facts.status, Some(200), "{}", reply.body);
        let ChangePage {
            changes: got,
            total,
        } = page.expect("a readable page");
        assert!(got.len() <= take as usize);
        if got.is_empty() {
            assert_eq!(total, changes.len() as u64);
            return changes;
        }
        changes.extend(got);
        pages += 1;
        assert!(pages <= 20, "paging does not end");
    }
}

#[actix_rt::test]
async fn query_modified_pages_records_modified_since_the_day_in_ascending_order() {
    // Goal: the backstop poll finds every gift modified on or after the day, ascending by
    // modification (two staff-edited gifts last, in edit order) across pages of 2, as complete
    // upserts carrying their origin and full JSON; contacts likewise; nothing from the next
    // day on; kinds that cannot be queried are not sent.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let crm = crm_for(&org, None);
    let started_ms = now_ms();
    let ids = import_gifts(&org, &["p1", "p2", "p3", "p4", "p5"]).await;
    edit_gift_last(&org, &ids[0]).await;
    edit_gift_last(&org, &ids[2]).await;

    let gifts = poll_all(&crm, ChangeKind::Gift, started_ms, 2).await;
    let mut sorted = gifts.clone();
    sorted.sort_by_key(|change| (change.modified_ms, change.id.parse::<u64>().unwrap()));
    assert_eq!(
        ids_of(&gifts),
        ids_of(&sorted),
        "ascending by Last Modified Date"
    );
    assert_eq!(ids_of(&gifts)[3..], [ids[0].as_str(), ids[2].as_str()]);
    let mut found = ids_of(&gifts);
    found.sort_by_key(|id| id.parse::<u64>().unwrap());
    assert_eq!(found, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for change in &gifts {
        assert_eq!(
            (change.kind, change.op),
            (ChangeKind::Gift, ChangeOp::Upsert)
        );
        assert!(change.complete, "{change:?}");
        assert!(
            change.modified_ms.is_some_and(|ms| ms >= started_ms),
            "{change:?}"
        );
        assert_eq!(change.origin_sources, vec!["stripe".to_string()]);
        let record: Value = serde_json::from_str(&change.record_json).unwrap();
        assert_eq!(record["id"].to_string(), change.id);
        assert_eq!(record["transactionSource"], "stripe");
    }
    let edited: Value = serde_json::from_str(&gifts[4].record_json).unwrap();
    assert_eq!(edited["notes"], "edited by staff");

    let contacts = poll_all(&crm, ChangeKind::Contact, started_ms, 1000).await;
    assert_eq!(contacts.len(), 5);
    assert!(contacts
        .iter()
        .all(|change| change.kind == ChangeKind::Contact && change.complete));

    let next_day_ms = now_ms() + DAY_MS;
    let (reply, page) = crm
        .query_modified(ChangeKind::Gift, next_day_ms, 0, 100)
        .await;
    assert_eq!(reply.facts.status, Some(200), "{}", reply.body);
    let page = page.expect("a readable page");
    assert_eq!((page.changes.len(), page.total), (0, 0));

    let (reply, page) = crm
        .query_modified(ChangeKind::Project, started_ms, 0, 100)
        .await;
    assert_eq!(reply.facts.status, None, "not sent");
    assert!(reply.facts.message.unwrap_or_default().contains("project"));
    assert!(page.is_none());
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn read_records_returns_exactly_the_ids_asked() {
    // Goal: the re-read returns the asked gifts and contacts (whole, complete), none other,
    // and an id Virtuous does not know is simply absent.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let crm = crm_for(&org, None);
    let ids = import_gifts(&org, &["r1", "r2", "r3", "r4"]).await;

    let asked = vec![ids[3].clone(), ids[1].clone(), "987654321".to_string()];
    let (reply, page) = crm.read_records(ChangeKind::Gift, &asked).await;
    assert_eq!(reply.facts.status, Some(200), "{}", reply.body);
    let page = page.expect("a readable page");
    let mut got = ids_of(&page.changes);
    got.sort_by_key(|id| id.parse::<u64>().unwrap());
    assert_eq!(got, [ids[1].as_str(), ids[3].as_str()]);
    assert_eq!(page.total, 2);
    assert!(page.changes.iter().all(|change| change.complete
        && change.op == ChangeOp::Upsert
        && change.kind == ChangeKind::Gift));

    let contact_id = org.all_contacts().await[0]["id"].to_string();
    let (reply, page) = crm
        .read_records(ChangeKind::Contact, std::slice::from_ref(&contact_id))
        .await;
    assert_eq!(reply.facts.status, Some(200), "{}", reply.body);
    let page = page.expect("a readable page");
    assert_eq!(ids_of(&page.changes), [contact_id.as_str()]);
    assert!(page.changes[0].complete, "{:?}", page.changes[0]);
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn webhook_registered_then_updated_in_place() {
    // Goal: register subscribes exactly the asked flags and returns the id; update keeps that
    // id, replaces URL and flags, stays active; an unknown id answers 404; without a webhook
    // secret nothing is sent.
    let sb = start_sandbox().await;
    let org = sb.org(json!({})).await;
    let crm = crm_for(&org, Some("whsec-1"));
    let flags = |names: &[&str]| {
        names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>()
    };

    let (reply, id) = crm
        .register_webhook(
            "http://127.0.0.1:9/hooks/t/virtuous",
            &flags(&["giftCreate", "giftUpdate"]),
        )
        .await;
    assert_eq!(reply.facts.status, Some(200), "{}", reply.body);
    let id = id.expect("subscription id");
    let stored = org.get(&format!("/api/Webhook/{id}")).await.json();
    assert_eq!(
        (
            &stored["giftCreate"],
            &stored["giftUpdate"],
            &stored["giftDelete"]
        ),
        (&json!(true), &json!(true), &json!(false))
    );
    assert_eq!(stored["active"], true);

    let reply = crm
        .update_webhook(
            &id,
            "http://127.0.0.1:9/hooks/t2/virtuous",
            &flags(&["giftDelete", "projectUpdate", "contactNoteCreate"]),
        )
        .await;
    assert_eq!(reply.facts.status, Some(200), "{}", reply.body);
    let stored = org.get(&format!("/api/Webhook/{id}")).await.json();
    assert_eq!(stored["id"].to_string(), id);
    assert_eq!(stored["payloadUrl"], "http://127.0.0.1:9/hooks/t2/virtuous");
    assert_eq!(stored["active"], true);
    for (flag, on) in [
        ("giftCreate", false),
        ("giftUpdate", false),
        ("giftDelete", true),
        ("projectUpdate", true),
        ("contactNoteCreate", true),
        ("eventCreate", false),
    ] {
        assert_eq!(stored[flag], on, "{flag}: {stored}");
    }

    let reply = crm
        .update_webhook("424242", "http://127.0.0.1:9/x", &flags(&["giftCreate"]))
        .await;
    assert_eq!(reply.facts.status, Some(404));

    let unsigned = crm_for(&org, None);
    let (reply, id) = unsigned
        .register_webhook("http://127.0.0.1:9/x", &flags(&["giftCreate"]))
        .await;
    assert_eq!((reply.facts.status, id), (None, None));
    let reply = unsigned
        .update_webhook("1", "http://127.0.0.1:9/x", &flags(&["giftCreate"]))
        .await;
    assert_eq!(reply.facts.status, None);
    assert!(reply
        .facts
        .message
        .unwrap_or_default()
        .contains("webhook_secret"));
    sb.handle.stop().await;
}

#[actix_rt::test]
async fn the_sandboxs_own_deliveries_parse_into_changes() {
    // Goal: what the sandbox really sends for gift and contact creates, a staff edit and a
    // gift delete — single and bulk — parses into one change per model (deletes too), the
    // creates and updates complete, and no model unparsed.
    for delivery in ["single", "bulk"] {
        let sb = start_sandbox().await;
        let receiver = Receiver::start().await;
        let org = sb.org(json!({"webhook_delivery": delivery})).await;
        let crm = crm_for(&org, Some("whsec-2"));
        let flags: Vec<String> = [ChangeKind::Gift, ChangeKind::Contact]
            .iter()
            .flat_map(|kind| kind.subscription_flags())
            .map(|flag| flag.to_string())
            .collect();
        let (reply, id) = crm.register_webhook(&receiver.url, &flags).await;
        assert!(id.is_some(), "{}", reply.body);
        let ids = import_gifts(&org, &["w1", "w2"]).await;
        edit_gift_last(&org, &ids[0]).await;
        let body = json!({"kind": "gift", "id": ids[1].parse::<u64>().unwrap(), "delete": true});
        let r = org.control("POST", "/staff-edit", Some(&body)).await;
        assert_eq!(r.status, 200, "staff delete: {}", r.text());
        // 2 gift creates, 2 contact creates, 1 gift update, 1 gift delete.
        let changes = wait_until(EVENTUALLY, "six changes delivered", || {
            let hits = receiver.hits();
            async move {
                let mut changes = Vec::new();
                for hit in hits {
                    let parsed = steward::virtuous::webhook::parse_delivery(&hit.body).unwrap();
                    assert!(
                        !parsed.events.iter().any(|event| matches!(
                            event,
                            steward_actors::virtuous_event::VirtuousEvent::Unparsed { .. }
                        )),
                        "{delivery}: {parsed:?}"
                    );
                    changes.extend(parsed.changes);
                }
                (changes.len() >= 6).then_some(changes)
            }
        })
        .await;
        let summary: Vec<(ChangeKind, ChangeOp, &str, bool)> = changes
            .iter()
            .map(|change| (change.kind, change.op, change.id.as_str(), change.complete))
            .collect();
        let of_gifts: Vec<_> = summary
            .iter()
            .filter(|(kind, ..)| *kind == ChangeKind::Gift)
            .collect();
        for expected in [
            (ChangeKind::Gift, ChangeOp::Upsert, ids[0].as_str(), true),
            (ChangeKind::Gift, ChangeOp::Upsert, ids[1].as_str(), true),
            (ChangeKind::Gift, ChangeOp::Delete, ids[1].as_str(), true),
        ] {
            assert!(of_gifts.contains(&&expected), "{delivery}: {summary:?}");
        }
        assert_eq!(
            of_gifts.len(),
            4,
            "2 creates, 1 update, 1 delete: {summary:?}"
        );
        let contacts = summary
            .iter()
            .filter(|(kind, op, _, complete)| {
                *kind == ChangeKind::Contact && *op == ChangeOp::Upsert && *complete
            })
            .count();
        assert_eq!(contacts, 2, "{delivery}: {summary:?}");
        assert!(changes
            .iter()
            .filter(|change| change.kind == ChangeKind::Gift && change.op == ChangeOp::Upsert)
            .all(|change| change.origin_sources == ["stripe"] && change.modified_ms.is_some()));
        sb.handle.stop().await;
    }
}
