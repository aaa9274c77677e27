//! Cursor pagination shared by the list routes: a bounded `limit`, one extra
//! item fetched to learn whether another page follows, and the last item's
//! key as the `next` cursor.

use crate::error::{ApiError, ApiResult};

/// `requested`, or `default`, checked to lie in 1..=`max`.
pub fn limit(requested: Option<usize>, default: usize, max: usize) -> ApiResult<usize> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::RequestInvalid(format!("limit must be between 1 and {max}")))
    }
}

/// Trims `items` (fetched with `limit + 1`) to one page and returns the cursor
/// of the next page, if there is one.
pub fn split<T, C>(items: &mut Vec<T>, limit: usize, cursor: impl Fn(&T) -> C) -> Option<C> {
    if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    }
}
