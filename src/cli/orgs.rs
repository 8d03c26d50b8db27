//! `postdesk orgs …`: organisations, the level above customer users — listing with
//! counts, one with its members and tickets, adding, editing (name, domains,
//! first-response time) and merging. Each command is one transaction: a refused
//! change writes nothing.

use std::process::ExitCode;

use crate::store::Tx;
use anyhow::bail;
use chrono::Utc;
use clap::Subcommand;
use serde::Serialize;

use super::customers::print_customers;
use super::input;
use super::output::{fields, json, list_or_dash, table};
use super::tickets::print_tickets;
use crate::config::Config;
use crate::core::address;
use crate::store::customers::{self, Customer};
use crate::store::orgs::{self, Organisation};
use crate::store::tickets::{self, TicketSummary};

#[derive(Subcommand)]
pub enum OrgsCommand {
    /// Every organisation with its domains, customer and ticket counts, by name
    #[command(after_help = "Example:\n  postdesk orgs list --json")]
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One organisation with its customer users (primary and linked) and tickets
    #[command(after_help = "Example:\n  postdesk orgs show acme-widgets.com")]
    Show {
        /// The organisation's name (any case)
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Adds an organisation, optionally owning email domains
    #[command(after_help = DOMAIN_HELP_ADD)]
    Add {
        /// The new organisation's name; refused when another has it, in any case
        name: String,
        /// A domain it owns (repeatable)
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// Accept a free-mail domain such as gmail.com
        #[arg(long)]
        force: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Renames an organisation, changes its domains or its first-response time
    #[command(after_help = DOMAIN_HELP_EDIT)]
    Edit {
        /// The organisation's name (any case)
        name: String,
        /// The new name
        #[arg(long, value_name = "NEW")]
        rename: Option<String>,
        /// A domain it owns from now on (repeatable)
        #[arg(long, value_name = "DOMAIN")]
        add_domain: Vec<String>,
        /// A domain it no longer owns (repeatable); its customers stay
        #[arg(long, value_name = "DOMAIN")]
        remove_domain: Vec<String>,
        /// Hours to the first response: each new ticket is due that long after it
        /// arrives; 0 removes the time
        #[arg(long, value_name = "HOURS")]
        first_response: Option<u32>,
        /// Accept a free-mail domain such as gmail.com
        #[arg(long)]
        force: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Makes two organisations one: FROM's domains, customer users and tickets move to
    /// INTO, and FROM is deleted
    #[command(after_help = "Example:\n  postdesk orgs merge 'ACME Widgets Ltd' acme-widgets.com")]
    Merge {
        /// The organisation that disappears
        from: String,
        /// The organisation that remains
        into: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

const DOMAIN_HELP_ADD: &str = "A domain gives the organisation the existing customers at that domain who have no \
organisation yet, and the new ones the daemon creates. A free-mail domain (gmail.com, outlook.com, ...) is refused \
unless --force; a domain owned by another organisation is refused.\n\n\
Example:\n  postdesk orgs add 'Globex Corporation' --domain globex.example --domain globex.co.uk";

const DOMAIN_HELP_EDIT: &str = "An added domain gives the organisation the existing customers at that domain who \
have no organisation yet. A free-mail domain (gmail.com, outlook.com, ...) is refused unless --force; a domain \
owned by another organisation is refused.\n\n\
Example:\n  postdesk orgs edit acme-widgets.com --rename 'ACME Widgets' --add-domain acme.example --first-response 4";

/// An organisation after adding or editing it, with how many customers its new
/// domains brought.
#[derive(Serialize)]
struct Changed {
    #[serde(flatten)]
    organisation: Organisation,
    assigned_customers: usize,
}

#[derive(Serialize)]
struct OrgDetail {
    #[serde(flatten)]
    organisation: Organisation,
    customer_list: Vec<Customer>,
    ticket_list: Vec<TicketSummary>,
}

/// Edits with names and domains checked, before the store is opened.
struct Edit {
    rename: Option<String>,
    add_domain: Vec<String>,
    remove_domain: Vec<String>,
    first_response: Option<u32>,
}

impl Edit {
    fn is_empty(&self) -> bool {
        self.rename.is_none()
            && self.add_domain.is_empty()
            && self.remove_domain.is_empty()
            && self.first_response.is_none()
    }
}

/// How a domain may be claimed: whether free-mail domains are accepted, and which
/// domains count as free mail beside the built-in ones.
struct Claim<'a> {
    force: bool,
    extra_free_mail: &'a [String],
}

pub fn run(config: &Config, cmd: OrgsCommand) -> anyhow::Result<ExitCode> {
    let mut store = super::open_store(config)?;
    let extra_free_mail = &config.policy.resolve.extra_free_mail;
    match cmd {
        OrgsCommand::List { json: as_json } => {
            let list = store.read(orgs::list)?;
            if as_json {
                json(&list)?;
            } else {
                print_orgs(&list);
            }
        }
        OrgsCommand::Show { name, json: as_json } => {
            let detail = store.read(|tx| detail(tx, &name))?;
            if as_json {
                json(&detail)?;
            } else {
                print_detail(&detail);
            }
        }
        OrgsCommand::Add { name, domains, force, json: as_json } => {
            let name = input::org_name(&name)?;
            let domains = input::domains(&domains)?;
            let claim = Claim { force, extra_free_mail };
            let (changed, lines) = store.write(|tx| add(tx, &name, &domains, &claim))?;
            report(&format!("added organisation {name:?}"), changed, &lines, as_json)?;
        }
        OrgsCommand::Edit { name, rename, add_domain, remove_domain, first_response, force, json: as_json } => {
            let edit = Edit {
                rename: rename.as_deref().map(input::org_name).transpose()?,
                add_domain: input::domains(&add_domain)?,
                remove_domain: input::domains(&remove_domain)?,
                first_response,
            };
            if edit.is_empty() {
                bail!("nothing to change: give --rename, --add-domain, --remove-domain or --first-response");
            }
            let claim = Claim { force, extra_free_mail };
            let (changed, lines) = store.write(|tx| edit_org(tx, &name, &edit, &claim))?;
            let done = format!("updated organisation {:?}", changed.organisation.name);
            report(&done, changed, &lines, as_json)?;
        }
        OrgsCommand::Merge { from, into, json: as_json } => {
            let organisation = store.write(|tx| merge(tx, &from, &into))?;
            let done = format!("merged organisation {:?} into {:?}", from.trim(), organisation.name);
            let changed = Changed { organisation, assigned_customers: 0 };
            report(&done, changed, &[], as_json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn detail(tx: &Tx, name: &str) -> anyhow::Result<OrgDetail> {
    let id = input::organisation(tx, name)?;
    let members = customers::Filter { organisation_id: Some(id), ..Default::default() };
    let filed = tickets::Filter { organisation_id: Some(id), ..Default::default() };
    Ok(OrgDetail {
        organisation: orgs::get(tx, id)?,
        customer_list: customers::list(tx, &members)?,
        ticket_list: tickets::list(tx, &filed)?,
    })
}

fn add(tx: &Tx, name: &str, domains: &[String], claim: &Claim) -> anyhow::Result<(Changed, Vec<String>)> {
    refuse_taken_name(tx, name, None)?;
    let id = orgs::create(tx, name, Utc::now())?;
    claim_all(tx, id, domains, claim)
}

fn edit_org(tx: &Tx, name: &str, edit: &Edit, claim: &Claim) -> anyhow::Result<(Changed, Vec<String>)> {
    let id = input::organisation(tx, name)?;
    if let Some(new) = &edit.rename {
        refuse_taken_name(tx, new, Some(id))?;
        orgs::rename(tx, id, new)?;
    }
    for domain in &edit.remove_domain {
        if !orgs::remove_domain(tx, id, domain)? {
            bail!("{domain} is not a domain of organisation {:?}", name.trim());
        }
    }
    if let Some(hours) = edit.first_response {
        orgs::set_first_response(tx, id, (hours > 0).then_some(hours))?;
    }
    claim_all(tx, id, &edit.add_domain, claim)
}

/// Refuses a name another organisation has (any case).
fn refuse_taken_name(tx: &Tx, name: &str, this: Option<i64>) -> anyhow::Result<()> {
    match orgs::id_by_name(tx, name)? {
        Some(other) if Some(other) != this => {
            bail!("organisation {name:?} already exists (to join two organisations, use `postdesk orgs merge`)")
        }
        _ => Ok(()),
    }
}

/// Claims each domain; the organisation afterwards and one line per domain saying how
/// many customers it brought.
fn claim_all(tx: &Tx, id: i64, domains: &[String], claim: &Claim) -> anyhow::Result<(Changed, Vec<String>)> {
    let mut lines = Vec::new();
    let mut assigned_customers = 0;
    for domain in domains {
        let assigned = claim_domain(tx, id, domain, claim)?;
        assigned_customers += assigned;
        lines.push(format!(
            "domain {domain}: {assigned} existing {} without an organisation assigned",
            if assigned == 1 { "customer" } else { "customers" }
        ));
    }
    let organisation = orgs::get(tx, id)?;
    let changed = Changed { organisation, assigned_customers };
    Ok((changed, lines))
}

/// Gives the organisation a domain unless it is free mail (without force) or another
/// organisation's; how many customers it brought.
fn claim_domain(tx: &Tx, id: i64, domain: &str, claim: &Claim) -> anyhow::Result<usize> {
    if !claim.force && address::is_free_mail(domain, claim.extra_free_mail) {
        bail!(
            "{domain} is a free-mail domain: its addresses belong to unrelated people, who must not \
             share an organisation (use --force if this organisation really owns it)"
        );
    }
    match orgs::domain_owner(tx, domain)? {
        Some((owner, _)) if owner == id => Ok(0),
        Some((_, owner)) => bail!("{domain} already belongs to organisation {owner:?}"),
        None => Ok(orgs::add_domain(tx, id, domain)?),
    }
}

fn merge(tx: &Tx, from: &str, into: &str) -> anyhow::Result<Organisation> {
    let from_id = input::organisation(tx, from)?;
    let into_id = input::organisation(tx, into)?;
    if from_id == into_id {
        bail!("cannot merge organisation {:?} into itself", from.trim());
    }
    orgs::merge(tx, from_id, into_id)?;
    Ok(orgs::get(tx, into_id)?)
}

fn report(done: &str, changed: Changed, lines: &[String], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&changed);
    }
    report_text(done, lines, &changed.organisation);
    Ok(())
}

/// What a change did, a line for each domain added, and the organisation's fields.
fn report_text(done: &str, lines: &[String], organisation: &Organisation) {
    println!("{done}");
    for line in lines {
        println!("{line}");
    }
    println!();
    print_org(organisation);
}

fn print_org(o: &Organisation) {
    fields(&[
        ("Organisation", o.name.clone()),
        ("Domains", list_or_dash(&o.domains)),
        ("First response", first_response(o)),
        ("Customers", o.customers.to_string()),
        ("Tickets", o.tickets.to_string()),
        ("Added", o.created_at.clone()),
    ]);
}

fn first_response(o: &Organisation) -> String {
    o.first_response_hours.map_or("-".to_owned(), |h| format!("{h}h"))
}

fn print_detail(d: &OrgDetail) {
    print_org(&d.organisation);
    println!();
    print_customers(&d.customer_list);
    println!();
    print_tickets(&d.ticket_list);
}

fn print_orgs(list: &[Organisation]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                list_or_dash(&o.domains),
                o.customers.to_string(),
                o.tickets.to_string(),
                first_response(o),
            ]
        })
        .collect();
    table(&["NAME", "DOMAINS", "CUSTOMERS", "TICKETS", "FIRST RESPONSE"], &rows);
}
