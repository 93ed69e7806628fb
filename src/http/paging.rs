//! Cursor paging shared by the admin lists (dead letters, kept Virtuous events):
//! `?after={last id of the previous page}&limit={1..1000}`, answered with `next_after`.

use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode};

pub const PAGE_LIMIT_DEFAULT: usize = 100;
pub const PAGE_LIMIT_MAX: usize = 1_000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The last id of the previous page (its `next_after`).
    pub after: Option<u64>,
    /// The page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl PageQuery {
    /// The page size asked for (default 100), refused outside 1 to 1,000.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let limit = self.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
        if limit == 0 || limit > PAGE_LIMIT_MAX {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("limit must be 1 to {PAGE_LIMIT_MAX}"),
            ));
        }
        Ok(limit)
    }
}

/// Cuts a page read with `limit + 1` items (one more than asked tells whether another page
/// follows) to `limit`, and gives the next page's `after`.
pub fn cut_page<T, Id>(page: &mut Vec<T>, limit: usize, id: impl Fn(&T) -> Id) -> Option<Id> {
    let has_more = page.len() > limit;
    page.truncate(limit);
    has_more.then(|| page.last().map(id)).flatten()
}
