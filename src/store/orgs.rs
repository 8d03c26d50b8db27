//! Organisations for the management commands: reading them with their domains and
//! counts, creating, renaming, owning domains, the first-response time and merging.
//! SQL only: what is allowed (a free-mail domain, a taken name) is decided by `desk`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::{params, Row};
use super::{run_merge, string_list, timestamp, StoreError, Tx};
use crate::core::address;
use crate::core::admin::PortalVisibility;

#[derive(Debug, Serialize)]
pub struct Organisation {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub domains: Vec<String>,
    /// Customer users whose primary organisation this is, or who are linked to it.
    pub customers: i64,
    /// Tickets filed under it (the organisation is copied onto a ticket at creation).
    pub tickets: i64,
    pub first_response_hours: Option<i64>,
    pub portal_visibility: PortalVisibility,
    pub created_at: String,
}

const ORG_SELECT: &str = "
    SELECT o.name,
           (SELECT json_group_array(d.domain ORDER BY d.domain)
              FROM organisation_domains d WHERE d.organisation_id = o.id),
           (SELECT COUNT(*) FROM (SELECT c.id FROM customer_users c WHERE c.organisation_id = o.id
                                  UNION SELECT l.customer_id FROM customer_links l WHERE l.organisation_id = o.id) members),
           (SELECT COUNT(*) FROM tickets t WHERE t.organisation_id = o.id),
           o.first_response_hours, o.created_at, o.id, o.portal_visibility
    FROM organisations o";

fn organisation(r: &Row) -> Result<Organisation, StoreError> {
    Ok(Organisation {
        name: r.get(0)?,
        domains: string_list(r, 1)?,
        customers: r.get(2)?,
        tickets: r.get(3)?,
        first_response_hours: r.get(4)?,
        portal_visibility: {
            let text: String = r.get(7)?;
            PortalVisibility::parse(&text).ok_or_else(|| {
                let unknown = format!("unknown portal visibility {text:?}");
                super::sql::invalid(7, unknown)
            })?
        },
        created_at: r.get(5)?,
        id: r.get(6)?,
    })
}

/// Every organisation by name, or (`page`: limit and offset) a page of them.
pub fn list(tx: &Tx<'_>, page: Option<(u32, u32)>) -> Result<Vec<Organisation>, StoreError> {
    let sql = format!("{ORG_SELECT} ORDER BY sort_key(o.name), o.name LIMIT ?1 OFFSET ?2");
    let (limit, offset) = page.map_or((i64::MAX, 0), |(limit, offset)| (i64::from(limit), offset));
    tx.query_all(&sql, params![limit, offset], organisation)
}

pub fn count(tx: &Tx<'_>) -> Result<i64, StoreError> {
    tx.query_row("SELECT COUNT(*) FROM organisations", &(), |r| r.get(0))
}

pub fn get(tx: &Tx<'_>, id: i64) -> Result<Organisation, StoreError> {
    let sql = format!("{ORG_SELECT} WHERE o.id = ?1");
    tx.query_row(&sql, &[id], organisation)
}

pub fn name_of(tx: &Tx<'_>, id: i64) -> Result<Option<String>, StoreError> {
    let sql = "SELECT name FROM organisations WHERE id = ?1";
    tx.query_opt(sql, &[id], |r| r.get(0))
}

/// The organisation of this name, compared case-insensitively across all of Unicode.
pub fn id_by_name(tx: &Tx<'_>, name: &str) -> Result<Option<i64>, StoreError> {
    let sql = "SELECT id FROM organisations WHERE fold(name) = fold(?1)";
    tx.query_opt(sql, &[name], |r| r.get(0))
}

pub fn create(tx: &Tx<'_>, name: &str, now: DateTime<Utc>) -> Result<i64, StoreError> {
    let sql = "INSERT INTO organisations (name, created_at) VALUES (?1, ?2) RETURNING id";
    tx.query_row(sql, params![name, timestamp(now)], |r| r.get(0))
}

pub fn rename(tx: &Tx<'_>, id: i64, name: &str) -> Result<(), StoreError> {
    tx.execute("UPDATE organisations SET name = ?1 WHERE id = ?2", params![name, id])?;
    Ok(())
}

/// `None` removes the first-response time: new tickets get no `respond_by`.
pub fn set_first_response(tx: &Tx<'_>, id: i64, hours: Option<u32>) -> Result<(), StoreError> {
    tx.execute("UPDATE organisations SET first_response_hours = ?1 WHERE id = ?2", params![hours, id])?;
    Ok(())
}

/// The (id, name) of the organisation owning exactly this domain.
pub fn domain_owner(tx: &Tx<'_>, domain: &str) -> Result<Option<(i64, String)>, StoreError> {
    let sql = "SELECT o.id, o.name FROM organisation_domains d JOIN organisations o ON o.id = d.organisation_id
               WHERE d.domain = ?1";
    tx.query_opt(sql, &[domain], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The organisation ingest would file a new customer at this address under: the owner
/// of its domain, else of its registrable domain.
pub fn owner_of_address(tx: &Tx<'_>, email: &str) -> Result<Option<i64>, StoreError> {
    for domain in address::owner_domains(address::domain_of(email)) {
        if let Some((id, _)) = domain_owner(tx, &domain)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Gives the organisation a domain nobody owns, and makes it the organisation of the
/// customers without one who have an address that ingest would now file under it; their
/// tickets follow (`customers::refile_tickets`). How many customers were assigned.
pub fn add_domain(tx: &Tx<'_>, id: i64, domain: &str) -> Result<usize, StoreError> {
    tx.execute("INSERT INTO organisation_domains (domain, organisation_id) VALUES (?1, ?2)", params![domain, id])?;
    // Addresses at the domain or a subdomain of it; `owner_domains` then applies
    // ingest's exact rule.
    let sql = "SELECT c.id, e.email FROM customer_users c JOIN customer_emails e ON e.customer_id = c.id
         WHERE c.organisation_id IS NULL AND substr(e.email, length(e.email) - length(CAST(?1 AS TEXT)) + 1) = ?1
           AND substr(e.email, length(e.email) - length(CAST(?1 AS TEXT)), 1) IN ('@', '.')";
    let candidates: Vec<(i64, String)> = tx.query_all(sql, &[domain], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let assign_sql = "UPDATE customer_users SET organisation_id = ?1 WHERE id = ?2 AND organisation_id IS NULL";
    let mut assigned = 0;
    for (customer, email) in candidates {
        if address::owner_domains(address::domain_of(&email)).iter().any(|d| d == domain) {
            let changed = tx.execute(assign_sql, params![id, customer])?;
            if changed > 0 {
                super::customers::refile_tickets(tx, customer)?;
            }
            assigned += changed;
        }
    }
    Ok(assigned)
}

/// Whether the organisation owned the domain. Its customers keep their organisation.
pub fn remove_domain(tx: &Tx<'_>, id: i64, domain: &str) -> Result<bool, StoreError> {
    let removed =
        tx.execute("DELETE FROM organisation_domains WHERE domain = ?1 AND organisation_id = ?2", params![domain, id])?;
    Ok(removed > 0)
}

/// Makes `from` part of `into`: its domains, customers (primary and linked, without
/// duplicate links) and tickets move; its first-response time fills a missing one.
/// Then `from` is deleted.
pub fn merge(tx: &Tx<'_>, from: i64, into: i64) -> Result<(), StoreError> {
    let statements = [
        "UPDATE organisation_domains SET organisation_id = ?2 WHERE organisation_id = ?1",
        "UPDATE customer_users SET organisation_id = ?2 WHERE organisation_id = ?1",
        "INSERT INTO customer_links (customer_id, organisation_id)
             SELECT customer_id, CAST(?2 AS BIGINT) FROM customer_links WHERE organisation_id = ?1
             ON CONFLICT DO NOTHING",
        "DELETE FROM customer_links WHERE organisation_id = ?2
             AND customer_id IN (SELECT id FROM customer_users WHERE organisation_id = ?2)",
        "UPDATE tickets SET organisation_id = ?2 WHERE organisation_id = ?1",
        "UPDATE organisations SET first_response_hours = COALESCE(first_response_hours,
             (SELECT f.first_response_hours FROM organisations f WHERE f.id = ?1))
         WHERE id = ?2",
        "DELETE FROM organisations WHERE id = ?1",
    ];
    run_merge(tx, &statements, from, into)
}

/// Whether the organisation's customer users see its tickets in the portal.
pub fn set_portal_visibility(tx: &Tx<'_>, id: i64, visibility: PortalVisibility) -> Result<(), StoreError> {
    let sql = "UPDATE organisations SET portal_visibility = ?1 WHERE id = ?2";
    tx.execute(sql, params![visibility.as_str(), id])?;
    Ok(())
}
