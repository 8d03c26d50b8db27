//! `postdesk customers …`: the customers page for agents and admins — listing with
//! ticket counts and filters, one customer with their tickets, adding one by hand,
//! editing addresses and organisations, merging two into one. Each command is one
//! transaction: a refused change writes nothing.

use std::process::ExitCode;

use crate::store::Tx;
use anyhow::bail;
use chrono::Utc;
use clap::{Args, Subcommand};

use super::input;
use super::output::{fields, json, list_or_dash, or_dash, table};
use super::tickets::print_tickets;
use crate::config::Config;
use crate::store::customers::{self, Customer, Filter};
use crate::store::tickets::{self, TicketSummary};

#[derive(Subcommand)]
pub enum CustomersCommand {
    /// Customer users with their ticket counts, by name; the options narrow the list
    #[command(after_help = "Examples:\n  postdesk customers list --with-tickets\n  \
                            postdesk customers list --without-tickets --added 2026-11\n  \
                            postdesk customers list --org ACME --search martin --json")]
    List {
        /// Only customers with at least one ticket
        #[arg(long, conflicts_with = "without_tickets")]
        with_tickets: bool,
        /// Only customers without tickets
        #[arg(long)]
        without_tickets: bool,
        /// Only customers added in this month (UTC)
        #[arg(long, value_name = "YYYY-MM")]
        added: Option<String>,
        /// Only members of this organisation, primary or linked
        #[arg(long, value_name = "NAME")]
        org: Option<String>,
        /// Only customers whose name or one of whose addresses contains TEXT (any case)
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One customer user: name, addresses, organisations and tickets
    #[command(after_help = "Example:\n  postdesk customers show alice.martin@acme-widgets.com")]
    Show {
        /// Any of the customer's addresses
        email: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Adds a customer user by hand ("New customer")
    #[command(after_help = "Without --org, the customer joins the organisation owning the address's \
                      domain, as the daemon would file them.\n\n\
                      Example:\n  postdesk customers add --email bob@acme.example --name 'Bob Stone' --org ACME")]
    Add {
        /// The address; refused when it already belongs to a customer
        #[arg(long, value_name = "ADDRESS")]
        email: String,
        /// The display name
        #[arg(long)]
        name: Option<String>,
        /// The primary organisation
        #[arg(long, value_name = "NAME")]
        org: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Changes a customer user's name, addresses or organisations
    #[command(after_help = "An address belongs to one customer only (to join two customers, use `customers merge`); \
                      the last address cannot be removed. Addresses are added before any are removed, \
                      so one command can replace an address.\n\n\
                      Example:\n  postdesk customers edit bob@acme.example --name 'Bob Stone' \
                      --add-email bob.stone@acme.example --link-org Globex")]
    Edit {
        /// Any of the customer's addresses
        email: String,
        #[command(flatten)]
        changes: Changes,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Makes two customer users one: FROM's addresses, tickets and organisations move
    /// to INTO, and FROM is deleted
    #[command(after_help = "INTO keeps its primary address, name and organisation; FROM's fill the ones INTO lacks, \
                      and FROM's organisation otherwise becomes a linked one.\n\n\
                      Example:\n  postdesk customers merge erin.walsh@gmail.com erin@walsh-consulting.example")]
    Merge {
        /// Any address of the customer that disappears
        from_email: String,
        /// Any address of the customer that remains
        into_email: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct Changes {
    /// The display name; an empty one clears it
    #[arg(long)]
    name: Option<String>,
    /// Another address for this customer (repeatable)
    #[arg(long, value_name = "ADDRESS")]
    add_email: Vec<String>,
    /// Removes one of the customer's addresses (repeatable)
    #[arg(long, value_name = "ADDRESS")]
    remove_email: Vec<String>,
    /// Sets the primary organisation
    #[arg(long, value_name = "NAME", conflicts_with = "no_org")]
    org: Option<String>,
    /// Clears the primary organisation
    #[arg(long)]
    no_org: bool,
    /// Associates the customer with another organisation (repeatable)
    #[arg(long, value_name = "NAME")]
    link_org: Vec<String>,
    /// Removes such an association (repeatable)
    #[arg(long, value_name = "NAME")]
    unlink_org: Vec<String>,
}

/// A customer and their tickets, as `customers show` prints them.
#[derive(serde::Serialize)]
struct CustomerDetail {
    #[serde(flatten)]
    customer: Customer,
    ticket_list: Vec<TicketSummary>,
}

pub fn run(config: &Config, cmd: CustomersCommand) -> anyhow::Result<ExitCode> {
    let mut store = super::open_store(config)?;
    match cmd {
        CustomersCommand::List { with_tickets, without_tickets, added, org, search, json: as_json } => {
            let filter = Filter {
                has_tickets: (with_tickets || without_tickets).then_some(with_tickets),
                added: added.as_deref().map(input::month).transpose()?,
                organisation_id: None,
                search,
            };
            let list = store.read(|tx| list(tx, org.as_deref(), filter))?;
            if as_json {
                json(&list)?;
            } else {
                print_customers(&list);
            }
        }
        CustomersCommand::Show { email, json: as_json } => {
            let email = input::address(&email)?;
            let detail = store.read(|tx| detail(tx, &email))?;
            if as_json {
                json(&detail)?;
            } else {
                print_customer(&detail.customer);
                println!();
                print_tickets(&detail.ticket_list);
            }
        }
        CustomersCommand::Add { email, name, org, json: as_json } => {
            let email = input::address(&email)?;
            let customer = store.write(|tx| add(tx, &email, name.as_deref(), org.as_deref()))?;
            report(&format!("added customer {email}"), &customer, as_json)?;
        }
        CustomersCommand::Edit { email, changes, json: as_json } => {
            let email = input::address(&email)?;
            let changes = changes.check()?;
            let customer = store.write(|tx| edit(tx, &email, &changes))?;
            report(&format!("updated customer {email}"), &customer, as_json)?;
        }
        CustomersCommand::Merge { from_email, into_email, json: as_json } => {
            let from = input::address(&from_email)?;
            let into = input::address(&into_email)?;
            let customer = store.write(|tx| merge(tx, &from, &into))?;
            report(&format!("merged customer {from} into {}", customer.email), &customer, as_json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The filter's customers, members of `org` when one is named.
fn list(tx: &Tx, org: Option<&str>, filter: Filter) -> anyhow::Result<Vec<Customer>> {
    let filter = Filter { organisation_id: input::organisation_opt(tx, org)?, ..filter };
    Ok(customers::list(tx, &filter)?)
}

fn detail(tx: &Tx, email: &str) -> anyhow::Result<CustomerDetail> {
    let id = input::customer(tx, email)?;
    let mine = tickets::Filter { customer_id: Some(id), ..Default::default() };
    Ok(CustomerDetail { customer: customers::get(tx, id)?, ticket_list: tickets::list(tx, &mine)? })
}

fn add(tx: &Tx, email: &str, name: Option<&str>, org: Option<&str>) -> anyhow::Result<Customer> {
    refuse_taken(tx, email)?;
    let organisation_id = match org {
        Some(org) => Some(input::organisation(tx, org)?),
        None => crate::store::orgs::owner_of_address(tx, email)?,
    };
    let id = customers::create(tx, email, clean_name(name), organisation_id, Utc::now())?;
    Ok(customers::get(tx, id)?)
}

/// Refuses an address that already belongs to a customer, naming that customer.
fn refuse_taken(tx: &Tx, email: &str) -> anyhow::Result<()> {
    if let Some(owner) = customers::owner_of(tx, email)? {
        let owner = customers::get(tx, owner)?;
        bail!(
            "{email} already belongs to customer {} (an address belongs to one customer; \
             to join two customers use `postdesk customers merge`)",
            owner.email
        );
    }
    Ok(())
}

/// A name as stored: trimmed; an empty one clears it.
fn clean_name(name: Option<&str>) -> Option<&str> {
    name.map(str::trim).filter(|n| !n.is_empty())
}

/// The edit options with addresses checked, before the store is opened.
struct CheckedChanges {
    name: Option<String>,
    add_email: Vec<String>,
    remove_email: Vec<String>,
    /// `Some(None)` clears the primary organisation.
    org: Option<Option<String>>,
    link_org: Vec<String>,
    unlink_org: Vec<String>,
}

impl Changes {
    fn check(self) -> anyhow::Result<CheckedChanges> {
        let nothing = self.name.is_none()
            && self.add_email.is_empty()
            && self.remove_email.is_empty()
            && self.org.is_none()
            && !self.no_org
            && self.link_org.is_empty()
            && self.unlink_org.is_empty();
        if nothing {
            bail!("nothing to change: give --name, --add-email, --remove-email, --org, --no-org, --link-org or --unlink-org");
        }
        Ok(CheckedChanges {
            name: self.name,
            add_email: input::addresses(&self.add_email)?,
            remove_email: input::addresses(&self.remove_email)?,
            org: if self.no_org { Some(None) } else { self.org.map(Some) },
            link_org: self.link_org,
            unlink_org: self.unlink_org,
        })
    }
}

fn edit(tx: &Tx, email: &str, changes: &CheckedChanges) -> anyhow::Result<Customer> {
    let id = input::customer(tx, email)?;
    if let Some(name) = &changes.name {
        customers::set_name(tx, id, clean_name(Some(name)))?;
    }
    for address in &changes.add_email {
        if customers::owner_of(tx, address)? != Some(id) {
            refuse_taken(tx, address)?;
            customers::add_email(tx, id, address)?;
        }
    }
    for address in &changes.remove_email {
        remove_email(tx, id, email, address)?;
    }
    if let Some(org) = &changes.org {
        let organisation_id = input::organisation_opt(tx, org.as_deref())?;
        customers::set_organisation(tx, id, organisation_id)?;
    }
    for org in &changes.link_org {
        link(tx, id, email, org)?;
    }
    for org in &changes.unlink_org {
        if !customers::unlink(tx, id, input::organisation(tx, org)?)? {
            bail!("{email} is not linked to organisation {:?}", org.trim());
        }
    }
    Ok(customers::get(tx, id)?)
}

fn remove_email(tx: &Tx, id: i64, email: &str, address: &str) -> anyhow::Result<()> {
    if customers::owner_of(tx, address)? != Some(id) {
        bail!("{address} is not an address of customer {email}");
    }
    if customers::email_count(tx, id)? <= 1 {
        bail!("cannot remove {address}: it is the only address of its customer");
    }
    Ok(customers::remove_email(tx, id, address)?)
}

fn link(tx: &Tx, id: i64, email: &str, org: &str) -> anyhow::Result<()> {
    let organisation_id = input::organisation(tx, org)?;
    if customers::organisation_id(tx, id)? == Some(organisation_id) {
        bail!("organisation {:?} is already the primary organisation of {email}", org.trim());
    }
    Ok(customers::link(tx, id, organisation_id)?)
}

fn merge(tx: &Tx, from: &str, into: &str) -> anyhow::Result<Customer> {
    let from_id = input::customer(tx, from)?;
    let into_id = input::customer(tx, into)?;
    if from_id == into_id {
        bail!("{from} and {into} are already the same customer");
    }
    customers::merge(tx, from_id, into_id)?;
    Ok(customers::get(tx, into_id)?)
}

/// What a change did: the customer as JSON, or a line and the customer's fields.
fn report(done: &str, customer: &Customer, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(customer);
    }
    println!("{done}\n");
    print_customer(customer);
    Ok(())
}

fn print_customer(c: &Customer) {
    fields(&[
        ("Name", or_dash(c.name.as_deref())),
        ("Addresses", addresses(c)),
        ("Organisation", or_dash(c.organisation.as_deref())),
        ("Linked", list_or_dash(&c.linked_organisations)),
        ("Tickets", c.tickets.to_string()),
        ("Added", c.created_at.clone()),
    ]);
}

/// Every address, the primary one marked.
fn addresses(c: &Customer) -> String {
    let marked: Vec<String> = c
        .emails
        .iter()
        .map(|e| match e == &c.email {
            true => format!("{e} (primary)"),
            false => e.clone(),
        })
        .collect();
    marked.join(", ")
}

/// Customers as an aligned table, one line each.
pub fn print_customers(list: &[Customer]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                or_dash(c.name.as_deref()),
                c.email.clone(),
                or_dash(c.organisation.as_deref()),
                c.tickets.to_string(),
                c.created_at.chars().take(10).collect(),
            ]
        })
        .collect();
    table(&["NAME", "EMAIL", "ORGANISATION", "TICKETS", "ADDED"], &rows);
}
