//! The two-way routes' parts that need no running tenant: paths, bodies, errors, the
//! report's NDJSON pages. (The routes end to end: tests/it.)

use actix_web::test as actix_test;
use actix_web::App;
use serde_json::json;
use steward_actors::two_way::cross_match::{Group, ReportRow};

use super::*;

fn code_of<T>(result: Result<T, ApiError>) -> (ErrorCode, String) {
    match result {
        Ok(_) => panic!("accepted"),
        Err(error) => (error.code, error.message),
    }
}

#[test]
fn a_resolution_takes_a_side_or_a_value() {
    // Goal: the three takes parse; `null` is a value; a value with a side, a missing value,
    // an unknown take or key is a 400 naming the field.
    assert_eq!(
        resolution_of(&json!({"take": "partner"})).unwrap(),
        Resolution::Partner
    );
    assert_eq!(
        resolution_of(&json!({"take": "virtuous"})).unwrap(),
        Resolution::Virtuous
    );
    assert_eq!(
        resolution_of(&json!({"take": "value", "value": null})).unwrap(),
        Resolution::Value(Value::Null)
    );
    assert_eq!(
        resolution_of(&json!({"take": "value", "value": ["a"]})).unwrap(),
        Resolution::Value(json!(["a"]))
    );
    for (body, field) in [
        (json!({"take": "value"}), "`value`"),
        (json!({"take": "partner", "value": "x"}), "`value`"),
        (json!({"take": "both"}), "`take`"),
        (json!({}), "`take`"),
        (json!({"take": "partner", "why": "x"}), "`why`"),
    ] {
        let (code, message) = code_of(resolution_of(&body));
        assert_eq!(code, ErrorCode::InvalidField, "{body}");
        assert!(message.contains(field), "{body}: {message}");
    }
    let (code, _) = code_of(resolution_of(&json!(["partner"])));
    assert_eq!(code, ErrorCode::MalformedBody);
}

#[test]
fn door_errors_answer_in_the_house_shape() {
    // Goal: an unknown conflict is 404, a bad value or an unknown pair 400, a job not ready
    // 409.
    let cases = [
        (
            TwoWayError::UnknownConflict("c".into()),
            ErrorCode::NotFound,
        ),
        (TwoWayError::BadValue("no".into()), ErrorCode::InvalidField),
        (
            TwoWayError::UnknownPair("x".into()),
            ErrorCode::InvalidField,
        ),
        (TwoWayError::NotNow("later".into()), ErrorCode::Conflict),
    ];
    for (error, code) in cases {
        assert_eq!(two_way_error(error).code, code);
    }
}

#[test]
fn approval_bodies_name_the_field_that_does_not_fit() {
    // Goal: policies parse with an optional pair; a bad or missing policy is refused naming
    // its path; unknown keys are refused.
    let approval: ApproveBody = body_of(
        br#"{"policies": {"matched": "link", "partner_only": "external_only", "virtuous_only": "create"}}"#,
        "shape",
    )
    .unwrap();
    assert!(approval.pair.is_none());
    for (body, field) in [
        (
            r#"{"policies": {"matched": "merge", "partner_only": "create", "virtuous_only": "create"}}"#,
            "`policies.matched`",
        ),
        (
            r#"{"policies": {"matched": "link", "partner_only": "create"}}"#,
            "`policies.virtuous_only`",
        ),
        (r#"{"pair": "mailchimp"}"#, "`policies`"),
        (
            r#"{"pair": "mailchimp", "policies": {"matched": "link", "partner_only": "create", "virtuous_only": "create"}, "dry_run": true}"#,
            "`dry_run`",
        ),
    ] {
        let (code, message) = code_of(body_of::<ApproveBody>(body.as_bytes(), "shape"));
        assert_eq!(code, ErrorCode::InvalidField, "{body}");
        assert!(message.contains(field), "{body}: {message}");
    }
    let (code, _) = code_of(body_of::<StartBody>(b"not json", "shape"));
    assert_eq!(code, ErrorCode::MalformedBody);
}

#[test]
fn report_pages_are_one_row_per_line() {
    // Goal: each row is one JSON line; a full page says where the next one starts, a short
    // page ends the stream.
    let row = |seq: u64| {
        (
            seq,
            ReportRow {
                group: Group::PartnerOnly,
                by: None,
                key: None,
                partner_ids: vec![format!("p{seq}")],
                virtuous_ids: Vec::new(),
            },
        )
    };
    let (chunk, next) = report_chunk(&[row(1), row(2)], 2);
    let text = std::str::from_utf8(&chunk).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["group"], "partner_only");
    assert_eq!(lines[1]["partner_ids"], json!(["p2"]));
    assert!(text.ends_with('\n'));
    assert_eq!(next, Some(2));
    assert_eq!(report_chunk(&[row(3)], 2).1, None);
}

async fn echo(request: actix_web::HttpRequest) -> HttpResponse {
    let info = request.match_info();
    let params: serde_json::Map<String, Value> = ["id", "conflict", "pair", "partner_id"]
        .into_iter()
        .filter_map(|name| info.get(name).map(|value| (name.to_string(), json!(value))))
        .collect();
    HttpResponse::Ok().json(json!({"pattern": request.match_pattern(), "params": params}))
}

#[actix_web::test]
async fn paths_take_ids_with_colons_and_slashes() {
    // Goal: conflict ids (`{pair}:{partner_id}:{field}`) and partner ids keep their `:`;
    // a raw `/` in the last id is part of it; the fixed routes are not taken by the ids.
    let app = actix_test::init_service(App::new().configure(|config| {
        for path in [
            PAIRS_PATH,
            CONFLICTS_PATH,
            RESOLVE_PATH,
            CROSS_MATCH_PATH,
            REPORT_PATH,
            APPROVE_PATH,
            RECORDS_PATH,
            RECORD_PATH,
            DEAD_LETTERS_PATH,
        ] {
            config.service(web::resource(path).to(echo));
        }
    }))
    .await;
    let cases = [
        (
            "/tenants/hope/conflicts/platform:gala:c1:email/resolve",
            RESOLVE_PATH,
            json!({"id": "hope", "conflict": "platform:gala:c1:email"}),
        ),
        (
            "/tenants/hope/conflicts/mailchimp:a/b:tags/resolve",
            RESOLVE_PATH,
            json!({"id": "hope", "conflict": "mailchimp:a/b:tags"}),
        ),
        (
            "/tenants/hope/two-way/platform:gala/records/virtuous:17",
            RECORD_PATH,
            json!({"id": "hope", "pair": "platform:gala", "partner_id": "virtuous:17"}),
        ),
        (
            "/tenants/hope/two-way/mailchimp/records",
            RECORDS_PATH,
            json!({"id": "hope", "pair": "mailchimp"}),
        ),
        (
            "/tenants/hope/two-way/mailchimp/dead-letters",
            DEAD_LETTERS_PATH,
            json!({"id": "hope", "pair": "mailchimp"}),
        ),
        (
            "/tenants/hope/cross-match/report",
            REPORT_PATH,
            json!({"id": "hope"}),
        ),
        (
            "/tenants/hope/cross-match/approve",
            APPROVE_PATH,
            json!({"id": "hope"}),
        ),
        ("/tenants/hope/two-way", PAIRS_PATH, json!({"id": "hope"})),
    ];
    for (uri, pattern, params) in cases {
        let answer: Value = actix_test::call_and_read_body_json(
            &app,
            actix_test::TestRequest::get().uri(uri).to_request(),
        )
        .await;
        assert_eq!(answer["pattern"], pattern, "{uri}");
        assert_eq!(answer["params"], params, "{uri}");
    }
}

#[actix_web::test]
async fn percent_encoded_ids_arrive_decoded() {
    // Goal: an id sent percent-encoded (a space, `/`, `:`) reaches the handler decoded.
    async fn decoded(path: web::Path<(String, String, String)>) -> HttpResponse {
        HttpResponse::Ok().json(json!(path.into_inner().2))
    }
    let app = actix_test::init_service(
        App::new().service(web::resource(RECORD_PATH).route(web::get().to(decoded))),
    )
    .await;
    for (uri, id) in [
        ("/tenants/hope/two-way/mailchimp/records/a%2Fb", "a/b"),
        ("/tenants/hope/two-way/mailchimp/records/a%20b%3Ac", "a b:c"),
    ] {
        let answer: Value = actix_test::call_and_read_body_json(
            &app,
            actix_test::TestRequest::get().uri(uri).to_request(),
        )
        .await;
        assert_eq!(answer, json!(id), "{uri}");
    }
}
