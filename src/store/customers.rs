//! Customer users for the management commands: reading them with their addresses,
//! organisations and ticket counts, creating, editing and merging them. SQL only: what
//! is allowed (a duplicate address, removing the last one) is decided by `desk`, inside
//! the same transaction.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::Serialize;

use super::sql::{params, Dialect, Row};
use super::{run_merge, string_list, timestamp, StoreError, Tx, Where};

#[derive(Debug, Serialize)]
pub struct Customer {
    #[serde(skip)]
    pub id: i64,
    /// The primary address.
    pub email: String,
    pub name: Option<String>,
    /// Every address, the primary first.
    pub emails: Vec<String>,
    /// The primary organisation's name.
    pub organisation: Option<String>,
    /// Organisations the customer user is associated with beside the primary one.
    pub linked_organisations: Vec<String>,
    /// Tickets filed under this customer user, from any of their addresses.
    pub tickets: i64,
    pub created_at: String,
}

/// A calendar month (UTC), the unit of the "added in" filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    first_day: NaiveDate,
}

impl Month {
    /// Exactly `YYYY-MM`, as the customers page's month picker gives it.
    pub fn parse(text: &str) -> Option<Month> {
        let shaped = text.len() == 7
            && text.bytes().enumerate().all(|(i, b)| if i == 4 { b == b'-' } else { b.is_ascii_digit() });
        if !shaped {
            return None;
        }
        let first_day = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()?;
        Some(Month { first_day })
    }

    /// Its first instant and the next month's, as stored timestamps.
    fn bounds(self) -> (String, String) {
        let start = self.first_day.and_time(chrono::NaiveTime::MIN).and_utc();
        // Only past chrono's last representable month is there no next one.
        let end = start.checked_add_months(Months::new(1)).unwrap_or(start);
        (timestamp(start), timestamp(end))
    }
}

/// Which customers `list` returns; every field narrows the list.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `Some(true)`: with at least one ticket; `Some(false)`: without any.
    pub has_tickets: Option<bool>,
    pub added: Option<Month>,
    /// Members of this organisation, primary or linked.
    pub organisation_id: Option<i64>,
    /// A case-insensitive part of the name or of an address, looked up (`search`).
    pub search: Option<Search>,
    /// A page: at most `limit`, after skipping `offset`.
    pub limit: Option<u32>,
    pub offset: u32,
}

/// A search, looked up once for all the queries of a page: the trigram index finds
/// parts of three characters or more; a shorter part is looked for in every customer.
#[derive(Debug, Clone)]
pub enum Search {
    /// Folded.
    Part(String),
    /// The ids of the customers found, as a JSON array.
    Found(String),
    /// A `LIKE` pattern (PostgreSQL, whose trigram index serves it), folded by the query.
    Pattern(String),
}

pub fn search(tx: &Tx<'_>, text: &str) -> Result<Search, StoreError> {
    if tx.dialect() == Dialect::Postgres {
        let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        return Ok(Search::Pattern(format!("%{escaped}%")));
    }
    let text = super::fold(text);
    if text.chars().count() < 3 {
        return Ok(Search::Part(text));
    }
    let phrase = format!("\"{}\"", text.replace('"', "\"\""));
    let sql = "SELECT json_group_array(rowid) FROM customer_search WHERE customer_search MATCH ?1";
    Ok(Search::Found(tx.query_row(sql, &[phrase], |r| r.get(0))?))
}

impl Filter {
    fn conditions(&self) -> Where {
        let mut w = Where::default();
        // Literal conditions, so that SQLite sees the partial index that serves each view.
        match self.has_tickets {
            Some(true) => w.and("c.ticket_count > 0", Vec::new()),
            Some(false) => w.and("c.ticket_count = 0", Vec::new()),
            None => &mut w,
        };
        let (start, end) = self.added.map(Month::bounds).unzip();
        w.and_if("c.created_at >= ?", start).and_if("c.created_at < ?", end).and_if(
            "(c.organisation_id = ?
                  OR EXISTS (SELECT 1 FROM customer_links l WHERE l.customer_id = c.id AND l.organisation_id = ?))",
            self.organisation_id,
        );
        match &self.search {
            Some(Search::Part(text)) => w.and("instr(c.search_text, ?) > 0", vec![Box::new(text.clone())]),
            Some(Search::Found(ids)) => w.and("c.id IN (SELECT value FROM json_each(?))", vec![Box::new(ids.clone())]),
            Some(Search::Pattern(like)) => w.and("c.search_text LIKE fold(?)", vec![Box::new(like.clone())]),
            None => &mut w,
        };
        w
    }
}

const CUSTOMER_SELECT: &str = "
    SELECT (SELECT p.email FROM customer_emails p WHERE p.customer_id = c.id AND p.is_primary = 1 LIMIT 1), c.name, o.name,
           (SELECT json_group_array(e.email ORDER BY e.is_primary DESC, e.email)
              FROM customer_emails e WHERE e.customer_id = c.id),
           (SELECT json_group_array(lo.name ORDER BY sort_key(lo.name))
              FROM customer_links l JOIN organisations lo ON lo.id = l.organisation_id
              WHERE l.customer_id = c.id),
           c.ticket_count, c.created_at, c.id
    FROM customer_users c
    LEFT JOIN organisations o ON o.id = c.organisation_id";

fn customer(r: &Row) -> Result<Customer, StoreError> {
    Ok(Customer {
        email: r.get(0)?,
        name: r.get(1)?,
        organisation: r.get(2)?,
        emails: string_list(r, 3)?,
        linked_organisations: string_list(r, 4)?,
        tickets: r.get(5)?,
        created_at: r.get(6)?,
        id: r.get(7)?,
    })
}

/// The customers a filter selects, by name (customers without one by address).
pub fn list(tx: &Tx<'_>, filter: &Filter) -> Result<Vec<Customer>, StoreError> {
    let w = filter.conditions();
    // A search finds few customers: they are sorted, instead of walking every customer in
    // name order (the index the `|| ''` keeps SQLite from choosing) to find them.
    let order = if filter.search.is_some() { "c.sort_name || ''" } else { "c.sort_name" };
    let sql = format!("{CUSTOMER_SELECT}{} ORDER BY {order}, c.id LIMIT ? OFFSET ?", w.sql());
    let mut values = w.values;
    values.push(Box::new(filter.limit.map_or(i64::MAX, i64::from)));
    values.push(Box::new(filter.offset));
    tx.query_all(&sql, &values, customer)
}

/// How many customers a filter selects (its page and ticket view aside), and how many of
/// them have tickets, in one pass; without a filter, from the counts the triggers keep.
pub fn count_with_tickets(tx: &Tx<'_>, filter: &Filter) -> Result<(i64, i64), StoreError> {
    let w = Filter { has_tickets: None, ..filter.clone() }.conditions();
    let sql = match w.is_empty() {
        true => "SELECT customers, with_tickets FROM customer_counts".to_owned(),
        false => {
            format!("SELECT COUNT(*), COUNT(*) FILTER (WHERE c.ticket_count > 0) FROM customer_users c{}", w.sql())
        }
    };
    tx.query_row(&sql, &w.values, |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The months in which customers were added, newest first, as `YYYY-MM`: one index seek
/// per month, from the first customer's on.
pub fn months(tx: &Tx<'_>) -> Result<Vec<String>, StoreError> {
    let sql = "SELECT MIN(created_at) FROM customer_users WHERE created_at >= ?1";
    let mut months = Vec::new();
    let mut from = String::new();
    while let Some(first) = tx.query_row(sql, &[&from], |r| r.get::<Option<String>>(0))? {
        let Some(month) = first.get(..7).and_then(Month::parse) else {
            break;
        };
        months.push(first[..7].to_owned());
        let (_, next) = month.bounds();
        if next <= first {
            break;
        }
        from = next;
    }
    months.reverse();
    Ok(months)
}

/// Makes one of the customer's addresses the primary one.
pub fn set_primary(tx: &Tx<'_>, id: i64, email: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE customer_emails SET is_primary = CASE WHEN email = ?2 THEN 1 ELSE 0 END WHERE customer_id = ?1",
        params![id, email],
    )?;
    Ok(())
}

pub fn get(tx: &Tx<'_>, id: i64) -> Result<Customer, StoreError> {
    let sql = format!("{CUSTOMER_SELECT} WHERE c.id = ?1");
    tx.query_row(&sql, &[id], customer)
}

pub fn exists(tx: &Tx<'_>, id: i64) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM customer_users WHERE id = ?1";
    Ok(tx.query_opt(sql, &[id], |_| Ok(()))?.is_some())
}

/// The customer user an address (normalised) belongs to.
pub fn owner_of(tx: &Tx<'_>, email: &str) -> Result<Option<i64>, StoreError> {
    let sql = "SELECT customer_id FROM customer_emails WHERE email = ?1";
    tx.query_opt(sql, &[email], |r| r.get(0))
}

/// A customer user with one (primary) address.
pub fn create(
    tx: &Tx<'_>,
    email: &str,
    name: Option<&str>,
    organisation_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let id: i64 = tx.query_row(
        "INSERT INTO customer_users (name, organisation_id, created_at) VALUES (?1, ?2, ?3) RETURNING id",
        params![name, organisation_id, timestamp(now)],
        |r| r.get(0),
    )?;
    tx.execute("INSERT INTO customer_emails (email, customer_id, is_primary) VALUES (?1, ?2, 1)", params![email, id])?;
    Ok(id)
}

pub fn set_name(tx: &Tx<'_>, id: i64, name: Option<&str>) -> Result<(), StoreError> {
    tx.execute("UPDATE customer_users SET name = ?1 WHERE id = ?2", params![name, id])?;
    Ok(())
}

/// Adds an address that belongs to nobody yet.
pub fn add_email(tx: &Tx<'_>, id: i64, email: &str) -> Result<(), StoreError> {
    tx.execute("INSERT INTO customer_emails (email, customer_id, is_primary) VALUES (?1, ?2, 0)", params![email, id])?;
    Ok(())
}

/// How many addresses the customer has.
pub fn email_count(tx: &Tx<'_>, id: i64) -> Result<u32, StoreError> {
    let sql = "SELECT COUNT(*) FROM customer_emails WHERE customer_id = ?1";
    tx.query_row(sql, &[id], |r| r.get(0))
}

/// Removes one of the customer's addresses; when it was the primary one, the first
/// remaining address (by name) becomes primary, so every customer keeps one.
pub fn remove_email(tx: &Tx<'_>, id: i64, email: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM customer_emails WHERE email = ?1 AND customer_id = ?2", params![email, id])?;
    tx.execute(
        "UPDATE customer_emails SET is_primary = 1
         WHERE email = (SELECT email FROM customer_emails WHERE customer_id = ?1 ORDER BY email LIMIT 1)
           AND NOT EXISTS (SELECT 1 FROM customer_emails WHERE customer_id = ?1 AND is_primary = 1)",
        &[id],
    )?;
    Ok(())
}

/// Sets (or clears) the primary organisation; a link to it is dropped, since the
/// primary organisation is never also a linked one. The customer's tickets follow
/// (`refile_tickets`).
pub fn set_organisation(tx: &Tx<'_>, id: i64, organisation_id: Option<i64>) -> Result<(), StoreError> {
    tx.execute("UPDATE customer_users SET organisation_id = ?1 WHERE id = ?2", params![organisation_id, id])?;
    tx.execute(
        "DELETE FROM customer_links WHERE customer_id = ?1 AND organisation_id = ?2",
        params![id, organisation_id],
    )?;
    refile_tickets(tx, id)?;
    Ok(())
}

/// Files a customer's tickets under the customer's organisation as it is now: every
/// ticket not closed, and closed ones that had no organisation. A closed ticket filed
/// under an organisation keeps it: it records whom the work was done for. How many
/// tickets changed.
pub fn refile_tickets(tx: &Tx<'_>, id: i64) -> Result<usize, StoreError> {
    let changed = tx.execute(
        "UPDATE tickets SET organisation_id = (SELECT organisation_id FROM customer_users WHERE id = ?1)
             WHERE customer_id = ?1 AND (state <> 'closed' OR organisation_id IS NULL)
               AND organisation_id IS DISTINCT FROM (SELECT organisation_id FROM customer_users WHERE id = ?1)",
        &[id],
    )?;
    Ok(changed)
}

pub fn organisation_id(tx: &Tx<'_>, id: i64) -> Result<Option<i64>, StoreError> {
    let sql = "SELECT organisation_id FROM customer_users WHERE id = ?1";
    tx.query_row(sql, &[id], |r| r.get(0))
}

pub fn link(tx: &Tx<'_>, id: i64, organisation_id: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO customer_links (customer_id, organisation_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        params![id, organisation_id],
    )?;
    Ok(())
}

/// Whether there was such a link.
pub fn unlink(tx: &Tx<'_>, id: i64, organisation_id: i64) -> Result<bool, StoreError> {
    let removed = tx.execute(
        "DELETE FROM customer_links WHERE customer_id = ?1 AND organisation_id = ?2",
        params![id, organisation_id],
    )?;
    Ok(removed > 0)
}

/// Makes `from` part of `into`: its addresses (no longer primary), tickets and links
/// move; its organisation becomes `into`'s when `into` has none, else a link; its
/// name fills a missing one; the earlier "added" date stays. Then `from` is deleted,
/// and the tickets are filed under `into`'s organisation (`refile_tickets`).
pub fn merge(tx: &Tx<'_>, from: i64, into: i64) -> Result<(), StoreError> {
    let statements = [
        "UPDATE customer_emails SET customer_id = ?2, is_primary = 0 WHERE customer_id = ?1",
        "UPDATE tickets SET customer_id = ?2 WHERE customer_id = ?1",
        "INSERT INTO customer_links (customer_id, organisation_id)
             SELECT CAST(?2 AS BIGINT), organisation_id FROM customer_links WHERE customer_id = ?1
             UNION SELECT CAST(?2 AS BIGINT), organisation_id FROM customer_users WHERE id = ?1 AND organisation_id IS NOT NULL
             ON CONFLICT DO NOTHING",
        "UPDATE customer_users SET
             organisation_id = COALESCE(organisation_id, (SELECT f.organisation_id FROM customer_users f WHERE f.id = ?1)),
             name = COALESCE(name, (SELECT f.name FROM customer_users f WHERE f.id = ?1)),
             created_at = (SELECT MIN(a.created_at) FROM customer_users a WHERE a.id IN (?1, ?2))
         WHERE id = ?2",
        "DELETE FROM customer_links WHERE customer_id = ?2
             AND organisation_id = (SELECT organisation_id FROM customer_users WHERE id = ?2)",
        "DELETE FROM customer_users WHERE id = ?1",
    ];
    run_merge(tx, &statements, from, into)?;
    refile_tickets(tx, into)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        let cases = [
            ("2026-11", Some(("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"))),
            ("2026-12", Some(("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"))),
            ("2026-13", None),
            ("2026-1", None),
            ("2026-011", None),
            ("26-11-01", None),
            ("november", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = Month::parse(text).map(Month::bounds);
            let want = want.map(|(a, b)| (a.to_owned(), b.to_owned()));
            assert_eq!(got, want, "{text:?}");
        }
    }
}
