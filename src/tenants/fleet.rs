//! The fleet view (`GET /v1/tenants?state=&q=&limit=&cursor=&sort=`): every tenant with its
//! state, lanes' depth and oldest age, budget used and open alerts, filtered, sorted and
//! paged on the server so a page stays small at 10,000 tenants (docs/api.md "Tenants").
//!
//! Every figure comes from cells kept in memory (lane gauges, the budget's window, the
//! alert's state) except the open alerts, one short prefix read per tenant.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use steward_actors::ports::now_ms;
use steward_actors::store::{TenantRecord, TenantRunState};

use super::store;
use crate::app::AppState;
use crate::http::error::{ApiError, ErrorCode};

pub const FLEET_LIMIT_DEFAULT: usize = 50;
pub const FLEET_LIMIT_MAX: usize = 500;

/// The query of `GET /v1/tenants`; unknown parameters are refused.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FleetQuery {
    /// A state name (`running`, `paused`, `needs_operator`, `moved`, `not_running`).
    pub state: Option<String>,
    /// A case-insensitive part of the id or the name.
    pub q: Option<String>,
    /// 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `id` (default), `name`, `state`, `depth`, `oldest_age`, `budget_used` or `alerts`;
    /// a leading `-` sorts descending.
    pub sort: Option<String>,
}

/// The columns a fleet page sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Id,
    Name,
    State,
    Depth,
    OldestAge,
    BudgetUsed,
    Alerts,
}

impl SortKey {
    const ALL: [(&'static str, SortKey); 7] = [
        ("id", SortKey::Id),
        ("name", SortKey::Name),
        ("state", SortKey::State),
        ("depth", SortKey::Depth),
        ("oldest_age", SortKey::OldestAge),
        ("budget_used", SortKey::BudgetUsed),
        ("alerts", SortKey::Alerts),
    ];

    fn parse(text: &str) -> Result<(SortKey, bool), ApiError> {
        let (name, descending) = match text.strip_prefix('-') {
            Some(name) => (name, true),
            None => (text, false),
        };
        SortKey::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, key)| (*key, descending))
            .ok_or_else(|| {
                let names: Vec<&str> = SortKey::ALL.iter().map(|(name, _)| *name).collect();
                ApiError::new(
                    ErrorCode::InvalidField,
                    format!(
                        "sort `{text}` is not one of {} (a leading `-` sorts descending)",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// Where the next page starts: after an id (sorted by id: stable while tenants come and go)
/// or at an offset (other sorts, whose order moves with the figures anyway).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Position {
    After(String),
    Offset(usize),
}

/// A `next_cursor`: the position and the view (sort and filters) it belongs to, so a cursor
/// sent with another view is refused instead of paging it wrongly.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    at: Position,
    view: String,
}

/// The view a cursor belongs to: everything of the query but its limit and cursor.
fn view_of(query: &FleetQuery) -> String {
    format!(
        "{}|{}|{}",
        query.sort.as_deref().unwrap_or("id"),
        query.state.as_deref().unwrap_or(""),
        query.q.as_deref().unwrap_or("")
    )
}

impl Cursor {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(text: &str) -> Result<Cursor, ApiError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidField,
                    "cursor is not a next_cursor this API gave",
                )
            })
    }
}

/// The states a tenant is shown in, for the `state` filter's check.
const STATE_NAMES: [&str; 5] = [
    "running",
    "paused",
    "needs_operator",
    "moved",
    "not_running",
];

/// One tenant's row, with the figures it may be sorted by.
struct Row {
    id: String,
    name: String,
    state: String,
    lanes: serde_json::Map<String, Value>,
    depth: u64,
    oldest_age_s: u64,
    budget: Option<(u64, u64)>,
    /// Read only for the rows a page shows (or for every row when sorting by it); `None` when
    /// the tenant's alerts could not be read (logged).
    open_alerts: Option<u64>,
}

impl Row {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "lanes": self.lanes,
            "depth": self.depth,
            "oldest_age_s": self.oldest_age_s,
            "budget": self.budget.map(|(spent, allowance)| json!({
                "spent_last_hour": spent, "allowance_per_hour": allowance})),
            "open_alerts": self.open_alerts,
        })
    }
}

/// The tenant's name from its stored document (no secrets are opened).
fn name_of(record: &TenantRecord) -> String {
    serde_json::from_str::<Value>(&record.config_json)
        .ok()
        .and_then(|doc| doc.get("name").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// The open alerts of a row's tenant; `None`, logged, when they cannot be read (one tenant's
/// damaged alert never fails the whole fleet page).
fn count_open_alerts(state: &AppState, id: &str) -> Option<u64> {
    let counted = store(state)
        .tenant(id)
        .and_then(|tenant_store| tenant_store.open_alert_count());
    match counted {
        Ok(open) => Some(open),
        Err(error) => {
            tracing::warn!(tenant_id = %id, error = %error, "the fleet list cannot read the tenant's alerts");
            None
        }
    }
}

fn row(state: &AppState, record: TenantRecord, name: String, now: u64) -> Result<Row, ApiError> {
    let handle = state.runtime.tenant(&record.id);
    let state_name = match handle {
        None if record.run_state() != TenantRunState::Moved => "not_running".to_string(),
        _ => record.state.clone(),
    };
    let tenant_store = store(state).tenant(&record.id)?;
    let mut lanes = serde_json::Map::new();
    let (mut depth, mut oldest_age_s) = (0, 0);
    for (lane, stat) in tenant_store.lane_stats() {
        let age_s = stat
            .oldest_enqueued_at_ms
            .map(|at| now.saturating_sub(at) / 1000)
            .unwrap_or(0);
        depth += stat.depth;
        oldest_age_s = oldest_age_s.max(age_s);
        lanes.insert(
            lane.name().into(),
            json!({"depth": stat.depth, "oldest_age_s": age_s}),
        );
    }
    Ok(Row {
        id: record.id,
        name,
        state: state_name,
        lanes,
        depth,
        oldest_age_s,
        budget: handle.map(|handle| handle.budget_spent()),
        open_alerts: None,
    })
}

/// `GET /v1/tenants`: one page of the fleet, with the count of tenants that match.
pub fn list(state: &AppState, query: &FleetQuery) -> Result<Value, ApiError> {
    let limit = query.limit.unwrap_or(FLEET_LIMIT_DEFAULT);
    if limit == 0 || limit > FLEET_LIMIT_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("limit must be 1 to {FLEET_LIMIT_MAX}"),
        ));
    }
    let (sort, descending) = SortKey::parse(query.sort.as_deref().unwrap_or("id"))?;
    if let Some(wanted) = &query.state {
        if !STATE_NAMES.contains(&wanted.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("state `{wanted}` is not one of {}", STATE_NAMES.join(", ")),
            ));
        }
    }
    let view = view_of(query);
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    if cursor.as_ref().is_some_and(|cursor| cursor.view != view) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "cursor belongs to another sort or filter: page with the same sort, state and q",
        ));
    }
    let needle = query.q.as_deref().map(str::to_lowercase);
    let now = now_ms();
    let mut rows = Vec::new();
    for record in store(state).registry().list()? {
        let name = name_of(&record);
        if let Some(needle) = &needle {
            if !record.id.to_lowercase().contains(needle) && !name.to_lowercase().contains(needle) {
                continue;
            }
        }
        let row = row(state, record, name, now)?;
        if query
            .state
            .as_ref()
            .is_some_and(|wanted| *wanted != row.state)
        {
            continue;
        }
        rows.push(row);
    }
    let total = rows.len();
    if sort == SortKey::Alerts {
        for row in &mut rows {
            row.open_alerts = count_open_alerts(state, &row.id);
        }
    }
    sort_rows(&mut rows, sort, descending);
    let start = match cursor.map(|cursor| cursor.at) {
        None => 0,
        Some(Position::Offset(offset)) => offset.min(total),
        Some(Position::After(after)) => rows
            .iter()
            .position(|row| {
                if descending {
                    row.id < after
                } else {
                    row.id > after
                }
            })
            .unwrap_or(total),
    };
    let end = (start + limit).min(total);
    let next_cursor = (end < total).then(|| {
        let at = match sort {
            SortKey::Id => Position::After(rows[end - 1].id.clone()),
            _ => Position::Offset(end),
        };
        Cursor {
            at,
            view: view.clone(),
        }
        .encode()
    });
    let page = &mut rows[start..end];
    if sort != SortKey::Alerts {
        for row in page.iter_mut() {
            row.open_alerts = count_open_alerts(state, &row.id);
        }
    }
    let tenants: Vec<Value> = page.iter().map(Row::to_json).collect();
    Ok(json!({"tenants": tenants, "total": total, "next_cursor": next_cursor}))
}

/// Sorts by the key, ties broken by id (so pages never overlap).
fn sort_rows(rows: &mut [Row], sort: SortKey, descending: bool) {
    rows.sort_by(|a, b| {
        let order = match sort {
            SortKey::Id => std::cmp::Ordering::Equal,
            SortKey::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
            SortKey::State => a.state.cmp(&b.state),
            SortKey::Depth => a.depth.cmp(&b.depth),
            SortKey::OldestAge => a.oldest_age_s.cmp(&b.oldest_age_s),
            SortKey::BudgetUsed => a.budget.map(|b| b.0).cmp(&b.budget.map(|b| b.0)),
            SortKey::Alerts => a.open_alerts.cmp(&b.open_alerts),
        }
        .then_with(|| a.id.cmp(&b.id));
        if descending {
            order.reverse()
        } else {
            order
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        // Goal: a cursor this API gave decodes to itself; anything else is a 400.
        for at in [Position::After("hope".into()), Position::Offset(150)] {
            let cursor = Cursor {
                at,
                view: "id||".into(),
            };
            assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
        for garbage in ["", "!!", "bm90IGpzb24"] {
            assert!(Cursor::decode(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn sort_names_parse_with_an_optional_minus() {
        // Goal: every documented sort name parses both ways; an unknown one is refused.
        for (name, key) in SortKey::ALL {
            assert_eq!(SortKey::parse(name).unwrap(), (key, false));
            assert_eq!(SortKey::parse(&format!("-{name}")).unwrap(), (key, true));
        }
        assert!(SortKey::parse("size").is_err());
        assert!(SortKey::parse("--id").is_err());
    }
}
