//! `postdesk customers …`: the customers page for agents and admins — listing with
//! ticket counts and filters, one customer with their tickets, adding one by hand,
//! editing addresses and organisations, merging two into one. Parses and prints: the
//! rules are `desk::customers`', and each command is one transaction, so a refused
//! change writes nothing.

use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Subcommand};

use super::input;
use super::output::{fields, json, list_or_dash, or_dash, table};
use super::tickets::print_tickets;
use super::words::{said, said_editing};
use crate::config::Config;
use crate::desk::customers;
use crate::store::customers::Customer;

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
    /// Makes one of the customer's addresses the primary one
    #[arg(long, value_name = "ADDRESS")]
    primary_email: Option<String>,
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

pub fn run(config: &Config, cmd: CustomersCommand) -> anyhow::Result<ExitCode> {
    let mut store = super::open_store(config)?;
    match cmd {
        CustomersCommand::List { with_tickets, without_tickets, added, org, search, json: as_json } => {
            let query = customers::Query {
                has_tickets: (with_tickets || without_tickets).then_some(with_tickets),
                added: added.as_deref().map(input::month).transpose()?,
                org,
                search,
                ..Default::default()
            };
            let list = store.read(|tx| customers::list(tx, &query)).map_err(said)?;
            if as_json {
                json(&list)?;
            } else {
                print_customers(&list);
            }
        }
        CustomersCommand::Show { email, json: as_json } => {
            let email = input::address(&email)?;
            let detail = store.read(|tx| customers::show(tx, &email)).map_err(said)?;
            if as_json {
                json(&detail)?;
            } else {
                print_customer(&detail.customer);
                println!();
                print_tickets(&detail.ticket_list);
            }
        }
        CustomersCommand::Add { email, name, org, json: as_json } => {
            let add = customers::Add { email: input::address(&email)?, name, org };
            let customer = store.write(|tx| customers::add(tx, &add, Utc::now())).map_err(said)?;
            report(&format!("added customer {}", add.email), &customer, as_json)?;
        }
        CustomersCommand::Edit { email, changes, json: as_json } => {
            let edit = customers::Edit { email: input::address(&email)?, changes: changes.check()? };
            let customer = store.write(|tx| customers::edit(tx, &edit)).map_err(|e| said_editing(e, EDIT_OPTIONS))?;
            report(&format!("updated customer {}", edit.email), &customer, as_json)?;
        }
        CustomersCommand::Merge { from_email, into_email, json: as_json } => {
            let merge = customers::Merge { from: input::address(&from_email)?, into: input::address(&into_email)? };
            let customer = store.write(|tx| customers::merge(tx, &merge)).map_err(said)?;
            report(&format!("merged customer {} into {}", merge.from, customer.email), &customer, as_json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `customers edit` can change, named when nothing was asked.
const EDIT_OPTIONS: &str = "--name, --add-email, --remove-email, --org, --no-org, --link-org or --unlink-org";

impl Changes {
    /// The changes with their addresses checked, before the store is opened.
    fn check(self) -> anyhow::Result<customers::Changes> {
        let org = match (self.no_org, self.org) {
            (true, _) => Some(customers::Primary::Clear),
            (false, org) => org.map(customers::Primary::Set),
        };
        Ok(customers::Changes {
            name: self.name,
            add_email: input::addresses(&self.add_email)?,
            remove_email: input::addresses(&self.remove_email)?,
            primary_email: self.primary_email.as_deref().map(input::address).transpose()?,
            org,
            link_org: self.link_org,
            unlink_org: self.unlink_org,
        })
    }
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
