//! "Who wrote last" on contacts over real loopback HTTP: the top-level `referenceSource` an
//! API edit carries stays (and goes when the next edit leaves it out), a staff edit removes
//! it, so does a contact transaction that changes it; API edits fire ContactUpdate with the full contact,
//! the same as `GET /api/Contact/{id}` shows.

use reqwest::Method;
use serde_json::{json, Value};

use super::test_harness::Harness;

impl Harness {
    async fn contact(&self, id: u64) -> Value {
        let (status, contact) = self
            .call(Method::GET, &format!("/api/Contact/{id}"), Value::Null)
            .await;
        assert_eq!(status, 200, "{contact}");
        contact
    }

    /// `PUT /api/Contact/{id}`: answers the contact it returned.
    async fn put_contact(&self, id: u64, contact: &Value) -> Value {
        let (status, answer) = self
            .call(Method::PUT, &format!("/api/Contact/{id}"), contact.clone())
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// The contact as an API client writes it back: opted in, tagged, referenced, and marked as
/// written by `writer` (`None`: no mark).
fn as_written(contact: &Value, writer: Option<&str>) -> Value {
    let mut body = contact.clone();
    body["contactIndividuals"][0]["contactMethods"][0]["isOptedIn"] = json!(true);
    body["tags"] = json!(["donor", "newsletter"]);
    body["contactReferences"] = json!([{"source": "Partner", "id": "p-1"}]);
    let fields = body.as_object_mut().unwrap();
    match writer {
        Some(writer) => fields.insert("referenceSource".into(), json!(writer)),
        None => fields.remove("referenceSource"),
    };
    body
}

#[actix_rt::test]
async fn reference_source_marks_the_api_writer_until_someone_else_writes() {
    // Goal: PUT keeps the referenceSource its body carries and fires ContactUpdate with the
    // full contact (contact methods with isOptedIn, tags, references), equal to what GET
    // shows; a PUT without it removes it; a staff edit removes it; so does a contact
    // transaction that enriches the contact (an import wrote last).
    let mut harness = Harness::start(json!({"id": "who", "api_key": "who-key"})).await;
    harness
        .subscribe("c", &["contactCreate", "contactUpdate"], true)
        .await;
    let (_, id) = harness.import_gift("w-1").await;
    harness.hits_after(1).await;
    let imported = harness.contact(id).await;
    assert!(imported.get("referenceSource").is_none());

    let answer = harness
        .put_contact(id, &as_written(&imported, Some("Steward")))
        .await;
    let hits = harness.hits_after(2).await;
    assert_eq!(hits[0].event(), "ContactUpdate");
    let read = harness.contact(id).await;
    assert_eq!(
        hits[0].model("contact"),
        &read,
        "the webhook carries the full contact"
    );
    assert_eq!(answer, read);
    assert_eq!(read["referenceSource"], "Steward");
    let method = &read["contactIndividuals"][0]["contactMethods"][0];
    assert_eq!(
        (method["type"].as_str(), method["isOptedIn"].as_bool()),
        (Some("Home Email"), Some(true))
    );
    assert_eq!(read["tags"], json!(["donor", "newsletter"]));
    assert_eq!(
        read["contactReferences"],
        json!([{"source": "Partner", "id": "p-1"}])
    );

    harness.put_contact(id, &as_written(&read, None)).await;
    assert!(
        harness.contact(id).await.get("referenceSource").is_none(),
        "absent = removed"
    );

    harness
        .put_contact(id, &as_written(&read, Some("Steward")))
        .await;
    let (status, _) = harness
        .control(
            Method::POST,
            "/staff-edit",
            json!({"kind": "contact", "id": id, "changes": {"name": "Ann B. Lee"}}),
        )
        .await;
    assert_eq!(status, 200);
    let hits = harness.hits_after(5).await;
    // Each delivery has its own task: find the staff edit's by what it changed.
    let staff = hits
        .iter()
        .map(|hit| hit.model("contact"))
        .find(|model| model["name"] == "Ann B. Lee")
        .unwrap();
    assert!(
        staff.get("referenceSource").is_none(),
        "a person wrote last: {staff}"
    );
    assert!(harness.contact(id).await.get("referenceSource").is_none());

    harness
        .put_contact(id, &as_written(&read, Some("Steward")))
        .await;
    let transaction = json!({"referenceSource": "Shop", "referenceId": "s-9",
        "email": "w-1@example.org", "firstName": "Ann", "lastName": "Lee", "tags": "buyer"});
    let (status, _) = harness
        .call(Method::POST, "/api/Contact/Transaction", transaction)
        .await;
    assert_eq!(status, 200);
    let (_, report) = harness.control(Method::POST, "/process", Value::Null).await;
    assert_eq!(report["imported"], 1, "{report}");
    let hits = harness.hits_after(7).await;
    let enriched = harness.contact(id).await;
    assert!(hits.iter().any(|hit| hit.model("contact") == &enriched));
    assert!(
        enriched.get("referenceSource").is_none(),
        "an import wrote last: {enriched}"
    );
    assert_eq!(enriched["tags"], json!(["donor", "newsletter", "buyer"]));
    assert_eq!(
        enriched["contactReferences"][1],
        json!({"source": "Shop", "id": "s-9"})
    );
    harness.stop().await;
}
