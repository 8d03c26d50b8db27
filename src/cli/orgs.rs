//! `postdesk orgs …`: organisations, the level above customer users — listing with
//! counts, one with its members and tickets, adding, editing (name, domains,
//! first-response time) and merging. Parses and prints: the rules are `desk::orgs`',
//! and each command is one transaction, so a refused change writes nothing.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;
use serde::Serialize;

use super::customers::print_customers;
use super::input;
use super::output::{fields, json, list_or_dash, table};
use super::tickets::print_tickets;
use super::words::{said, said_editing};
use crate::config::Config;
use crate::desk::orgs::{self, PortalVisibility};
use crate::store::orgs::Organisation;

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
    /// Renames an organisation, changes its domains, its first-response time or what its
    /// customer users see in the portal
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
        /// What its customer users see in the portal: their own tickets, or the whole
        /// organisation's (the default)
        #[arg(long, value_name = "WHAT", value_parser = ["own", "organisation"])]
        portal_visibility: Option<String>,
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

/// What `orgs edit` can change, named when nothing was asked.
const EDIT_OPTIONS: &str = "--rename, --add-domain, --remove-domain, --first-response or --portal-visibility";

pub fn run(config: &Config, cmd: OrgsCommand) -> anyhow::Result<ExitCode> {
    let mut store = super::open_store(config)?;
    let extra_free_mail = &config.policy.resolve.extra_free_mail;
    match cmd {
        OrgsCommand::List { json: as_json } => {
            let list = store.read(orgs::list).map_err(said)?;
            if as_json {
                json(&list)?;
            } else {
                print_orgs(&list);
            }
        }
        OrgsCommand::Show { name, json: as_json } => {
            let detail = store.read(|tx| orgs::show(tx, &name)).map_err(said)?;
            if as_json {
                json(&detail)?;
            } else {
                print_detail(&detail);
            }
        }
        OrgsCommand::Add { name, domains, force, json: as_json } => {
            let add = orgs::Add { name: input::org_name(&name)?, domains: input::domains(&domains)?, force };
            let changed = store.write(|tx| orgs::add(tx, &add, extra_free_mail, Utc::now())).map_err(said)?;
            report(&format!("added organisation {:?}", add.name), changed, as_json)?;
        }
        OrgsCommand::Edit {
            name,
            rename,
            add_domain,
            remove_domain,
            first_response,
            portal_visibility,
            force,
            json: as_json,
        } => {
            let edit = orgs::Edit {
                name,
                rename: rename.as_deref().map(input::org_name).transpose()?,
                add_domain: input::domains(&add_domain)?,
                remove_domain: input::domains(&remove_domain)?,
                first_response,
                portal_visibility: portal_visibility.as_deref().and_then(PortalVisibility::parse),
                force,
            };
            let changed =
                store.write(|tx| orgs::edit(tx, &edit, extra_free_mail)).map_err(|e| said_editing(e, EDIT_OPTIONS))?;
            let done = format!("updated organisation {:?}", changed.organisation.name);
            report(&done, changed, as_json)?;
        }
        OrgsCommand::Merge { from, into, json: as_json } => {
            let merge = orgs::Merge { from, into };
            let organisation = store.write(|tx| orgs::merge(tx, &merge)).map_err(said)?;
            let done = format!("merged organisation {:?} into {:?}", merge.from.trim(), organisation.name);
            report(&done, orgs::Changed { organisation, claimed: Vec::new() }, as_json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a change did, as JSON, or a line, one for each domain claimed, and the
/// organisation's fields.
fn report(done: &str, changed: orgs::Changed, as_json: bool) -> anyhow::Result<()> {
    let assigned_customers = changed.claimed.iter().map(|c| c.assigned).sum();
    if as_json {
        return json(&Changed { organisation: changed.organisation, assigned_customers });
    }
    println!("{done}");
    for orgs::Claimed { domain, assigned } in &changed.claimed {
        let customers = if *assigned == 1 { "customer" } else { "customers" };
        println!("domain {domain}: {assigned} existing {customers} without an organisation assigned");
    }
    println!();
    print_org(&changed.organisation);
    Ok(())
}

fn print_org(o: &Organisation) {
    fields(&[
        ("Organisation", o.name.clone()),
        ("Domains", list_or_dash(&o.domains)),
        ("First response", first_response(o)),
        ("Portal shows", o.portal_visibility.as_str().to_owned()),
        ("Customers", o.customers.to_string()),
        ("Tickets", o.tickets.to_string()),
        ("Added", o.created_at.clone()),
    ]);
}

fn first_response(o: &Organisation) -> String {
    o.first_response_hours.map_or("-".to_owned(), |h| format!("{h}h"))
}

fn print_detail(d: &orgs::Detail) {
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
