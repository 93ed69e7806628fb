//! Transaction endpoints: accepted with 200 and no id, queued for the import step.
//! Contact Transaction, Contact Batch, Gift Transaction, Gift Transactions (batch),
//! ReversingTransaction.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::api::{authenticate, run, Handled, Reply};
use super::models::{field, parse_gift_date, text_field, LooseScalar};
use super::org::{PendingKind, Registry};
use super::validate::{
    unreadable_body, validate_contact_transaction, validate_gift_transaction,
    ContactTransactionView, GiftTransactionView, ModelState,
};
use super::BatchItemError;

pub(crate) const GIFT_TRANSACTION: &str = "POST /api/v2/Gift/Transaction";
pub(crate) const GIFT_TRANSACTIONS: &str = "POST /api/v2/Gift/Transactions";
pub(crate) const CONTACT_TRANSACTION: &str = "POST /api/Contact/Transaction";
pub(crate) const CONTACT_BATCH: &str = "POST /api/Contact/Batch";
pub(crate) const REVERSING_TRANSACTION: &str = "POST /api/Gift/ReversingTransaction";

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/api/v2/Gift/Transaction", web::post().to(gift_transaction))
        .route(
            "/api/v2/Gift/Transactions",
            web::post().to(gift_transactions),
        )
        .route(
            "/api/Contact/Transaction",
            web::post().to(contact_transaction),
        )
        .route("/api/Contact/Batch", web::post().to(contact_batch))
        .route(
            "/api/Gift/ReversingTransaction",
            web::post().to(reversing_transaction),
        );
}

/// An exact-size copy of a body: the extractor's buffer has at least 8 KiB of capacity, and
/// keeping it alive for every pending transaction would pin 8x the memory.
fn compact(body: &Bytes) -> Bytes {
    Bytes::copy_from_slice(body)
}

fn accepted() -> Handled {
    Handled {
        reply: Reply::empty(200),
        jobs: Vec::new(),
        accepted: true,
    }
}

/// The hot path: parse and validate outside the lock, then one locked step that admits,
/// applies faults and queues the body as received (no copy).
async fn gift_transaction(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match authenticate(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let parsed = serde_json::from_slice::<GiftTransactionView>(&body);
    let mut model_state = ModelState::new();
    match &parsed {
        Ok(view) => validate_gift_transaction(
            view,
            "transaction",
            org.spec.validate_designation_sum,
            &mut model_state,
        ),
        Err(error) => model_state = unreadable_body("transaction", error),
    }
    let transaction_id = parsed
        .as_ref()
        .ok()
        .and_then(|view| view.transaction_id.as_ref())
        .and_then(LooseScalar::text)
        .unwrap_or("");
    run(
        &request,
        &registry,
        org.clone(),
        GIFT_TRANSACTION,
        transaction_id,
        if transaction_id.is_empty() {
            Vec::new()
        } else {
            vec![transaction_id.to_owned()]
        },
        |_, state, now| {
            if !model_state.is_empty() {
                return Reply::model_state(&model_state).into();
            }
            state.accept(PendingKind::Gift, compact(&body), now);
            accepted()
        },
    )
    .await
}

/// A batch after validation: the items to queue and the errors to report.
struct CheckedBatch {
    valid_items: Vec<Bytes>,
    model_state: ModelState,
    first_transaction_id: String,
    /// Every item's transactionId in order (items without one skipped), for the request log.
    transaction_ids: Vec<String>,
}

impl CheckedBatch {
    fn refused(model_state: ModelState) -> CheckedBatch {
        CheckedBatch {
            valid_items: Vec::new(),
            model_state,
            first_transaction_id: String::new(),
            transaction_ids: Vec::new(),
        }
    }

    /// Queues what the org's `batch_item_error` switch allows and answers.
    fn into_handled(
        self,
        kind: PendingKind,
        policy: BatchItemError,
        state: &mut super::org::OrgState,
        now: u64,
    ) -> Handled {
        let accept_items = self.model_state.is_empty() || policy == BatchItemError::AcceptOthers;
        let any_accepted = accept_items && !self.valid_items.is_empty();
        if accept_items {
            for item in self.valid_items {
                state.accept(kind, item, now);
            }
        }
        if self.model_state.is_empty() {
            return accepted();
        }
        Handled {
            reply: Reply::model_state(&self.model_state),
            jobs: Vec::new(),
            accepted: any_accepted,
        }
    }
}

/// Fills batch-level defaults into an item that lacks the field.
fn fill_default(item: &mut Map<String, Value>, item_field: &str, default: Option<&Value>) {
    if let Some(default) = default.filter(|value| !value.is_null()) {
        if field(item, item_field).map_or(true, Value::is_null) {
            item.insert(item_field.to_owned(), default.clone());
        }
    }
}

fn check_batch(
    body: &[u8],
    list_name: &str,
    defaults: &[(&str, &str)],
    mut validate_item: impl FnMut(&Value, &str, &mut ModelState),
) -> CheckedBatch {
    let root = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(root)) => root,
        Ok(_) => {
            let mut state = ModelState::new();
            state.insert(
                list_name.to_owned(),
                vec!["The request body must be an object.".into()],
            );
            return CheckedBatch::refused(state);
        }
        Err(error) => return CheckedBatch::refused(unreadable_body(list_name, &error)),
    };
    let Some(Value::Array(items)) = field(&root, list_name) else {
        let mut state = ModelState::new();
        state.insert(
            list_name.to_owned(),
            vec![format!("The {list_name} field is required.")],
        );
        return CheckedBatch::refused(state);
    };
    let mut checked = CheckedBatch::refused(ModelState::new());
    if items.is_empty() {
        checked.model_state.insert(
            list_name.to_owned(),
            vec![format!("The {list_name} list is empty.")],
        );
    }
    for (index, item) in items.iter().enumerate() {
        let prefix = format!("{list_name}[{index}]");
        let Value::Object(item) = item else {
            checked
                .model_state
                .insert(prefix, vec!["Each item must be an object.".into()]);
            continue;
        };
        let mut item = item.clone();
        for (item_field, batch_field) in defaults {
            fill_default(&mut item, item_field, field(&root, batch_field));
        }
        let transaction_id = text_field(&item, "transactionId");
        if index == 0 {
            checked.first_transaction_id = transaction_id.clone().unwrap_or_default();
        }
        checked.transaction_ids.extend(transaction_id);
        let item = Value::Object(item);
        let mut item_state = ModelState::new();
        validate_item(&item, &prefix, &mut item_state);
        if item_state.is_empty() {
            checked.valid_items.push(Bytes::from(item.to_string()));
        } else {
            checked.model_state.extend(item_state);
        }
    }
    checked
}

async fn gift_transactions(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match authenticate(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let check_sum = org.spec.validate_designation_sum;
    let defaults = [
        ("transactionSource", "transactionSource"),
        ("giftDate", "defaultGiftDate"),
        ("giftType", "defaultGiftType"),
        ("batch", "batch"),
    ];
    let mut checked = check_batch(&body, "transactions", &defaults, |item, prefix, state| {
        match GiftTransactionView::deserialize(item) {
            Ok(view) => validate_gift_transaction(&view, prefix, check_sum, state),
            Err(error) => state.extend(unreadable_body(prefix, &error)),
        }
    });
    let first_id = checked.first_transaction_id.clone();
    let transaction_ids = std::mem::take(&mut checked.transaction_ids);
    let policy = org.spec.batch_item_error;
    run(
        &request,
        &registry,
        org.clone(),
        GIFT_TRANSACTIONS,
        &first_id,
        transaction_ids,
        |_, state, now| checked.into_handled(PendingKind::Gift, policy, state, now),
    )
    .await
}

async fn contact_transaction(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match authenticate(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let mut model_state = ModelState::new();
    match serde_json::from_slice::<ContactTransactionView>(&body) {
        Ok(view) => validate_contact_transaction(&view, "contact", &mut model_state),
        Err(error) => model_state = unreadable_body("contact", &error),
    }
    run(
        &request,
        &registry,
        org.clone(),
        CONTACT_TRANSACTION,
        "",
        Vec::new(),
        |_, state, now| {
            if !model_state.is_empty() {
                return Reply::model_state(&model_state).into();
            }
            state.accept(PendingKind::Contact, compact(&body), now);
            accepted()
        },
    )
    .await
}

async fn contact_batch(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match authenticate(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let defaults = [("referenceSource", "referenceSource")];
    let checked = check_batch(&body, "contacts", &defaults, |item, prefix, state| {
        match ContactTransactionView::deserialize(item) {
            Ok(view) => validate_contact_transaction(&view, prefix, state),
            Err(error) => state.extend(unreadable_body(prefix, &error)),
        }
    });
    let policy = org.spec.batch_item_error;
    run(
        &request,
        &registry,
        org.clone(),
        CONTACT_BATCH,
        "",
        Vec::new(),
        |_, state, now| checked.into_handled(PendingKind::Contact, policy, state, now),
    )
    .await
}

/// `{reversedGiftId, giftDate, notes}`: the gift must exist (404 otherwise); the reversal
/// is a transaction like the others and goes through the import step.
async fn reversing_transaction(
    request: HttpRequest,
    body: Bytes,
    registry: web::Data<Registry>,
) -> HttpResponse {
    let org = match authenticate(&request, &registry) {
        Ok(org) => org,
        Err(response) => return response,
    };
    let mut model_state = ModelState::new();
    let mut reversed_gift_id = None;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => {
            reversed_gift_id =
                text_field(&object, "reversedGiftId").and_then(|id| id.parse::<u64>().ok());
            if reversed_gift_id.is_none() {
                model_state.insert(
                    "reversingTransaction.reversedGiftId".into(),
                    vec!["The ReversedGiftId field is required and must be a gift id.".into()],
                );
            }
            if let Some(date) = text_field(&object, "giftDate") {
                if parse_gift_date(&date).is_none() {
                    model_state.insert(
                        "reversingTransaction.giftDate".into(),
                        vec![format!("The value '{date}' is not valid for GiftDate.")],
                    );
                }
            }
        }
        Ok(_) => {
            model_state.insert(
                "reversingTransaction".into(),
                vec!["The request body must be an object.".into()],
            );
        }
        Err(error) => model_state = unreadable_body("reversingTransaction", &error),
    }
    run(
        &request,
        &registry,
        org.clone(),
        REVERSING_TRANSACTION,
        "",
        Vec::new(),
        |_, state, now| {
            if !model_state.is_empty() {
                return Reply::model_state(&model_state).into();
            }
            let gift_exists =
                reversed_gift_id.is_some_and(|id| state.gifts.records.contains_key(&id));
            if !gift_exists {
                return Reply::empty(404).into();
            }
            state.accept(PendingKind::Reversal, compact(&body), now);
            accepted()
        },
    )
    .await
}
