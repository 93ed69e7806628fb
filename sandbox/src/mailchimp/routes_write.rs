//! The `/mailchimp/3.0` member writes, behind the same gate as the reads: `PUT
//! …/members/{subscriber_hash}` ("add or update a list member", the upsert) and `POST
//! …/members/{subscriber_hash}/tags`. Both are changes of source `api`.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::account::Registry;
use super::members::{ChangeError, MemberPut, TagChange};
use super::routes_api::{gate, invalid, member_key, problem, unknown_list};
use crate::server::path_param;

const PUT_MEMBER_ROUTE: &str = "PUT /3.0/lists/{list_id}/members/{subscriber_hash}";
const TAGS_ROUTE: &str = "POST /3.0/lists/{list_id}/members/{subscriber_hash}/tags";

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route(
            "/lists/{list_id}/members/{subscriber_hash}",
            web::put().to(put_member),
        )
        .route(
            "/lists/{list_id}/members/{subscriber_hash}/tags",
            web::post().to(post_tags),
        );
}

/// A change refused, as the API answers it.
fn refused(error: ChangeError) -> HttpResponse {
    match error {
        ChangeError::UnknownList(_) | ChangeError::UnknownMember(_) => unknown_list(),
        ChangeError::Invalid(detail) => invalid(&detail),
        ChangeError::Exists(email) => problem(
            400,
            "Member Exists",
            &format!("{email} is already a list member."),
        ),
    }
}

/// A JSON body, or the 400 problem naming why not.
// The error is the finished rejection response, built once on a cold path.
#[allow(clippy::result_large_err)]
fn parsed<Body: DeserializeOwned>(body: &[u8]) -> Result<Body, HttpResponse> {
    serde_json::from_slice(body).map_err(|error| {
        problem(
            400,
            "JSON Parse Error",
            &format!("We encountered an unspecified JSON parsing error: {error}"),
        )
    })
}

/// The list id and the member key of the path.
fn member_path(request: &HttpRequest) -> (String, String) {
    (
        path_param(request, "list_id"),
        member_key(&path_param(request, "subscriber_hash")),
    )
}

/// `PUT …/members/{subscriber_hash}`: updates the member the path names, else creates one;
/// `200` with the member.
async fn put_member(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let (list_id, member_id) = member_path(&request);
    let put = parsed::<MemberPut>(&body);
    gate(
        &request,
        &registry,
        PUT_MEMBER_ROUTE,
        |account, state| match put {
            Ok(put) => match account.put_member(state, &list_id, &member_id, put) {
                Ok(member) => HttpResponse::Ok().json(member),
                Err(error) => refused(error),
            },
            Err(response) => response,
        },
    )
    .await
}

#[derive(Deserialize)]
struct Tags {
    tags: Vec<TagChange>,
}

/// `POST …/members/{subscriber_hash}/tags`: `204`.
async fn post_tags(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let (list_id, member_id) = member_path(&request);
    let tags = parsed::<Tags>(&body);
    gate(
        &request,
        &registry,
        TAGS_ROUTE,
        |account, state| match tags {
            Ok(tags) => match account.change_tags(state, &list_id, &member_id, tags.tags) {
                Ok(()) => HttpResponse::NoContent().finish(),
                Err(error) => refused(error),
            },
            Err(response) => response,
        },
    )
    .await
}
