//! Long lists as pages: page links and sortable column headers that keep the filter.

use serde::Serialize;

/// Rows per page of a list.
pub const PAGE_SIZE: i64 = 50;

/// A list's position, as the shared `pager.html` draws it.
#[derive(Debug, Serialize)]
pub struct Pager {
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    /// 1-based numbers of the first and last row shown (0 and 0 when none).
    pub first: i64,
    pub last: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// Page `page` (1-based, clamped) of `total` rows; links are `base` plus `page=N`.
    pub fn new(base: &Link, page: Option<i64>, total: i64) -> Pager {
        let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        let page = page.unwrap_or(1).clamp(1, pages);
        let first = if total == 0 { 0 } else { (page - 1) * PAGE_SIZE + 1 };
        let last = (page * PAGE_SIZE).min(total);
        let to = |n: i64| base.with("page", &n.to_string());
        Pager { page, pages, total, first, last, prev: (page > 1).then(|| to(page - 1)), next: (page < pages).then(|| to(page + 1)) }
    }

    /// Rows to skip for this page.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * PAGE_SIZE
    }
}

/// A page's address with its filter and order, to which one parameter can be set.
#[derive(Debug, Clone)]
pub struct Link {
    path: String,
    params: Vec<(&'static str, String)>,
}

impl Link {
    /// `path` with the parameters that have a value.
    pub fn new(path: impl Into<String>, params: &[(&'static str, Option<&str>)]) -> Link {
        let params = params.iter().filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (*k, v.to_owned()))).collect();
        Link { path: path.into(), params }
    }

    /// This address with `key` set to `value` (replacing it).
    pub fn with(&self, key: &str, value: &str) -> String {
        let mut parts: Vec<String> = self.params.iter().filter(|(k, _)| *k != key).map(|(k, v)| format!("{k}={}", encode(v))).collect();
        parts.push(format!("{key}={}", encode(value)));
        format!("{}?{}", self.path, parts.join("&"))
    }

    /// This address without `keys`.
    pub fn without(&self, keys: &[&str]) -> Link {
        Link { path: self.path.clone(), params: self.params.iter().filter(|(k, _)| !keys.contains(k)).cloned().collect() }
    }
}

/// A sortable column header: its link (the other direction when it is the current order)
/// and an arrow when it is.
#[derive(Debug, Serialize)]
pub struct SortHeader {
    pub href: String,
    pub arrow: &'static str,
}

/// Headers for `columns`, given the current column and direction; links go to page 1.
pub fn sort_headers(
    base: &Link,
    columns: &[&'static str],
    current: &str,
    descending: bool,
) -> std::collections::BTreeMap<&'static str, SortHeader> {
    let base = base.without(&["sort", "dir", "page"]);
    columns
        .iter()
        .map(|&column| {
            let active = column == current;
            let dir = if active && !descending { "desc" } else { "asc" };
            let href = Link { path: base.path.clone(), params: [base.params.clone(), vec![("sort", column.to_owned())]].concat() }
                .with("dir", dir);
            let arrow = match (active, descending) {
                (false, _) => "",
                (true, false) => " ▲",
                (true, true) => " ▼",
            };
            (column, SortHeader { href, arrow })
        })
        .collect()
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_the_filter_and_clamp() {
        let base = Link::new("/jobs", &[("status", Some("dead")), ("tenant", Some("a&b")), ("type", None)]);
        let pager = Pager::new(&base, Some(9), 120);
        assert_eq!((pager.page, pager.pages, pager.first, pager.last), (3, 3, 101, 120));
        assert_eq!(pager.prev.as_deref(), Some("/jobs?status=dead&tenant=a%26b&page=2"));
        assert_eq!(pager.next, None);
        assert_eq!(pager.offset(), 100);
        let empty = Pager::new(&base, None, 0);
        assert_eq!((empty.page, empty.pages, empty.first, empty.last), (1, 1, 0, 0));
    }

    #[test]
    fn a_header_toggles_its_direction() {
        let base = Link::new("/jobs", &[("sort", Some("type")), ("dir", Some("asc")), ("page", Some("2"))]);
        let headers = sort_headers(&base, &["type", "status"], "type", false);
        assert_eq!(headers["type"].href, "/jobs?sort=type&dir=desc");
        assert_eq!(headers["type"].arrow, " ▲");
        assert_eq!(headers["status"].href, "/jobs?sort=status&dir=asc");
    }
}
