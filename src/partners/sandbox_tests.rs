//! The partner writers against the sandbox's simulators, in-process over loopback: the
//! Mailchimp audience (member upserts, tags, listing) and the partner platform's contacts
//! API (upserts by id, the cursor listing).

use serde_json::{json, Value};
use steward_actors::ports::{PartnerAnswer, PartnerContact, PartnerWriter};
use steward_actors::two_way::Fields;
use steward_sandbox::mailchimp::AccountSpec;
use steward_sandbox::partners::PartnerSpec as SandboxPartner;
use steward_sandbox::{SandboxConfig, SandboxHandle};

use super::mailchimp::MailchimpWriter;
use super::platform::PlatformWriter;
use super::PartnerContext;
use crate::tenant::PartnerApiDoc;

const KEY: &str = "0123456789abcdef-us21";
const TOKEN: &str = "partner-token-1234";

async fn sandbox() -> SandboxHandle {
    steward_sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
    })
    .await
    .unwrap()
}

fn fields(value: Value) -> Fields {
    serde_json::from_value(value).unwrap()
}

fn done<T: std::fmt::Debug>(answer: PartnerAnswer<T>) -> T {
    match answer {
        PartnerAnswer::Done(done) => done,
        other => panic!("expected Done, got {other:?}"),
    }
}

async fn every_contact(writer: &dyn PartnerWriter) -> Vec<PartnerContact> {
    let mut contacts = Vec::new();
    let mut cursor = None;
    loop {
        let page = done(writer.list(cursor).await);
        contacts.extend(page.contacts);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return contacts,
        }
    }
}

#[actix_rt::test]
async fn mailchimp_members_are_upserted_once_and_listed() {
    // Goal: a create makes one member (a repeat finds the same one); an update with an email
    // change, tags and a name lands on that member, also when repeated with what Steward knew
    // before it (the member has moved to its new address); the listing shows one member with
    // the values written.
    let handle = sandbox().await;
    handle
        .create_mailchimp_account(AccountSpec::new("acme", KEY, &["list1"]))
        .unwrap();
    let writer = MailchimpWriter::new(
        reqwest::Client::new(),
        &format!("{}/mailchimp", handle.base_url()),
        KEY,
        "list1",
    );
    let create = fields(json!({"email": "ann@old.org", "first_name": "Ann",
                               "tags": ["a", "b"], "subscribed": true}));
    let created = done(writer.upsert(None, &Fields::new(), &create).await);
    assert_eq!(created.fields["tags"], json!(["a", "b"]));
    assert_eq!(created.fields["subscribed"], json!(true));
    assert_eq!(created.fields["first_name"], json!("Ann"));
    assert!(created.version_ms.is_some());
    let again = done(writer.upsert(None, &Fields::new(), &create).await);
    assert_eq!(again.id, created.id);

    let update = fields(
        json!({"email": "ann@new.org", "last_name": "Lee", "tags": ["b", "c"],
                               "subscribed": false}),
    );
    let updated = done(
        writer
            .upsert(Some(&created.id), &created.fields, &update)
            .await,
    );
    assert_eq!(
        updated.id, created.id,
        "unique_email_id survives the email change"
    );
    assert_eq!(updated.fields["email"], json!("ann@new.org"));
    assert_eq!(updated.fields["last_name"], json!("Lee"));
    assert_eq!(updated.fields["first_name"], json!("Ann"));
    assert_eq!(updated.fields["tags"], json!(["b", "c"]));
    assert_eq!(updated.fields["subscribed"], json!(false));
    let repeated = done(
        writer
            .upsert(Some(&created.id), &created.fields, &update)
            .await,
    );
    assert_eq!(repeated.id, created.id);
    assert_eq!(repeated.fields, updated.fields);

    let members = every_contact(&writer).await;
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].id, created.id);
    assert_eq!(members[0].fields, updated.fields);
    handle.stop().await;
}

#[actix_rt::test]
async fn platform_contacts_are_upserted_by_id_and_listed_page_by_page() {
    // Goal: a create upserts at its derived id (a repeat changes nothing new); an update
    // sets only its fields; the listing pages 500 at a time to the end; a wrong token is
    // refused, not retried.
    let handle = sandbox().await;
    handle
        .create_partner(SandboxPartner::new("p1", TOKEN))
        .unwrap();
    let context = PartnerContext {
        tenant_id: "hope".into(),
        http: reqwest::Client::new(),
        sandbox_base_url: Some(handle.base_url()),
    };
    let api = |token: &str| PartnerApiDoc {
        url: "embedded".into(),
        auth_header: "Authorization".into(),
        auth_value: Some(format!("Bearer {token}")),
    };
    let writer = PlatformWriter::new(&context, "p1", &api(TOKEN)).unwrap();
    let create = fields(json!({"email": "A@X.org", "first_name": "A", "tags": ["t"],
                               "subscribed": true}));
    let created = done(writer.upsert(None, &Fields::new(), &create).await);
    assert!(created.id.starts_with("steward-"), "{}", created.id);
    assert_eq!(created.fields["email"], json!("A@X.org"));
    assert!(created.version_ms.is_some());
    let again = done(writer.upsert(None, &Fields::new(), &create).await);
    assert_eq!(again.id, created.id);
    let updated = done(
        writer
            .upsert(
                Some(&created.id),
                &created.fields,
                &fields(json!({"last_name": "B"})),
            )
            .await,
    );
    assert_eq!(updated.fields["last_name"], json!("B"));
    assert_eq!(updated.fields["first_name"], json!("A"));
    assert_eq!(handle.partner_contacts("p1").unwrap().len(), 1);

    let more: Vec<Value> = (0..600)
        .map(|i| json!({"email": format!("p{i}@x.org"), "first_name": format!("P{i}")}))
        .collect();
    handle.put_partner_contacts("p1", more, true).unwrap();
    let first = done(writer.list(None).await);
    assert_eq!(first.contacts.len(), 500);
    assert!(first.next_cursor.is_some());
    let everyone = every_contact(&writer).await;
    assert_eq!(everyone.len(), 601);
    let ids: std::collections::BTreeSet<&str> =
        everyone.iter().map(|contact| contact.id.as_str()).collect();
    assert_eq!(ids.len(), 601, "each contact once");

    let refused = PlatformWriter::new(&context, "p1", &api("wrong")).unwrap();
    let answer = refused.upsert(None, &Fields::new(), &create).await;
    assert!(
        matches!(answer, PartnerAnswer::Refused { .. }),
        "{answer:?}"
    );
    handle.stop().await;
}
