//! The management commands against the real binary: customers, organisations, ticket
//! filters and states, the access rule, merges, domain back-fill, bad input, and all of
//! it while `postdesk ingest` writes the same database.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;

use crate::harness::{repo_path, Backend, Dir};

/// A plain customer message; the sender and subject make it unique.
fn message(from: &str, subject: &str) -> String {
    let id: String =
        format!("{from}.{subject}").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '.' }).collect();
    format!(
        "From: {from}\nTo: support@helpdesk.example\nSubject: {subject}\n\
         Message-ID: <{id}@test.example>\nDate: Mon, 23 Nov 2026 09:00:00 +0000\n\n\
         Please help with {subject}.\n"
    )
}

/// Writes the messages (sender, subject) into a fresh folder and ingests it.
fn seed(dir: &Dir, messages: &[(&str, &str)]) {
    static FOLDER: AtomicUsize = AtomicUsize::new(0);
    let folder = dir.path().join(format!("seed-{}", FOLDER.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&folder).unwrap();
    for (i, (from, subject)) in messages.iter().enumerate() {
        std::fs::write(folder.join(format!("{i:04}.eml")), message(from, subject)).unwrap();
    }
    dir.run(&["ingest", &folder.display().to_string()]).assert_code(0);
}

/// The original twenty fixtures (`01-…` to `20-…`): a seed these tests know, which
/// fixtures added for other features do not change.
/// A fixture with the ticket numbers of 2026-11-23 (which its replies quote) turned into
/// today's: the ingest here numbers tickets by the real date.
fn numbered_today(raw: &[u8]) -> Vec<u8> {
    use postdesk::core::ticket_number::format;
    let written = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let today = chrono::Utc::now().date_naive();
    let mut bytes = raw.to_vec();
    for seq in 1..=50 {
        let (from, to) = (format(written, seq).into_bytes(), format(today, seq).into_bytes());
        // Same length: replaced in place, other bytes (8-bit charsets) untouched.
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from.as_slice()) {
            bytes[at + i..at + i + to.len()].copy_from_slice(&to);
            at += i + to.len();
        }
    }
    bytes
}

fn seed_fixtures(dir: &Dir) {
    let folder = dir.path().join("fixtures");
    std::fs::create_dir(&folder).unwrap();
    for entry in std::fs::read_dir(repo_path("fixtures/mail")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.get(..2).and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| (1..=20).contains(&n)) {
            std::fs::write(folder.join(&name), numbered_today(&std::fs::read(&path).unwrap())).unwrap();
        }
    }
    dir.run(&["ingest", &folder.display().to_string()]).assert_code(0);
}

fn ok(dir: &Dir, args: &[&str]) -> String {
    dir.run(args).assert_code(0).stdout.clone()
}

/// The command fails with status 1 and one line containing `needle`.
fn refused(dir: &Dir, args: &[&str], needle: &str) {
    refused_with(dir, args, 1, needle);
}

/// The command fails with `code` and one line containing `needle`.
fn refused_with(dir: &Dir, args: &[&str], code: i32, needle: &str) {
    let run = dir.run(args);
    run.assert_code(code);
    assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    assert!(
        run.stderr.starts_with("postdesk: ") && run.stderr.contains(needle),
        "{args:?}: expected {needle:?} in {}",
        run.stderr
    );
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v[key].as_str().unwrap_or_else(|| panic!("no {key}: {v}")).to_owned())
        .collect()
}

/// The primary addresses `customers list ARGS` returns.
fn customers(dir: &Dir, args: &[&str]) -> Vec<String> {
    let mut all = vec!["customers", "list"];
    all.extend_from_slice(args);
    strings(&dir.json(&all), "email")
}

/// The subjects `tickets list ARGS` returns, sorted.
fn subjects(dir: &Dir, args: &[&str]) -> BTreeSet<String> {
    let mut all = vec!["tickets", "list"];
    all.extend_from_slice(args);
    strings(&dir.json(&all), "subject").into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn customers_list_filters_and_counts(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    seed_fixtures(&dir);
    let all = dir.json(&["customers", "list"]);
    let rows = all.as_array().unwrap();
    // Automated senders (bounce, auto-reply, spam, no-reply) are no customers.
    assert_eq!(rows.len(), 13, "{all}");
    let alice = &rows[0];
    for key in ["email", "name", "emails", "organisation", "linked_organisations", "tickets", "created_at"] {
        assert!(alice.get(key).is_some(), "customer JSON lacks {key}: {alice}");
    }
    assert_eq!(alice["email"], "alice.martin@acme-widgets.com");
    assert_eq!(alice["organisation"], "acme-widgets.com");
    assert_eq!(alice["tickets"], 1, "follow-ups are no extra tickets");
    let names: Vec<String> = rows.iter().map(|c| c["name"].as_str().unwrap().to_lowercase()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");

    // Ivan only wrote a follow-up to Alice's ticket.
    assert_eq!(customers(&dir, &["--without-tickets"]), ["ivan@acme-widgets.com"]);
    let with = customers(&dir, &["--with-tickets"]);
    assert_eq!(with.len(), 12);
    assert!(!with.contains(&"ivan@acme-widgets.com".to_owned()));

    assert_eq!(
        customers(&dir, &["--org", "ACME-WIDGETS.COM"]),
        ["alice.martin@acme-widgets.com", "bob@acme-widgets.com", "ivan@acme-widgets.com"]
    );
    assert_eq!(customers(&dir, &["--search", "GLOBEX"]), ["carol@globex.co.uk", "henry@globex.co.uk"]);
    assert_eq!(customers(&dir, &["--search", "martin"]), ["alice.martin@acme-widgets.com"]);
    assert!(customers(&dir, &["--search", "%"]).is_empty(), "% is literal");
    assert_eq!(
        customers(&dir, &["--org", "mueller-bau.de", "--with-tickets", "--search", "kim"]),
        ["kim@mueller-bau.de"]
    );

    // The month filter: one customer moved to March 2025, the rest added now.
    dir.sql(
        "UPDATE customer_users SET created_at = '2025-03-31T23:59:59Z'
         WHERE id = (SELECT customer_id FROM customer_emails WHERE email = 'leo@initech.com')",
    );
    assert_eq!(customers(&dir, &["--added", "2025-03"]), ["leo@initech.com"]);
    assert!(customers(&dir, &["--added", "2025-04"]).is_empty());
    assert!(customers(&dir, &["--added", "2025-02"]).is_empty());
    let this_month = chrono::Utc::now().format("%Y-%m").to_string();
    assert_eq!(customers(&dir, &["--added", &this_month]).len(), 12);

    let text = ok(&dir, &["customers", "list", "--without-tickets"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("NAME "), "{text}");
    assert_eq!(lines[0].find("EMAIL"), lines[1].find("ivan@"), "aligned:\n{text}");
}

fn adding_and_editing_a_customer(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    seed_fixtures(&dir);
    ok(&dir, &["orgs", "add", "Globex", "--domain", "globex.example"]);

    let zoe = dir.json(&["customers", "add", "--email", "Zoe@Globex.Example", "--name", " Zoe Day "]);
    assert_eq!(zoe["email"], "zoe@globex.example");
    assert_eq!(zoe["name"], "Zoe Day");
    assert_eq!(zoe["organisation"], "Globex", "joins the owner of her domain");
    assert_eq!(zoe["tickets"], 0);
    let yan = dir.json(&["customers", "add", "--email", "yan@home.example", "--org", "hooli.io"]);
    assert_eq!((&yan["organisation"], &yan["name"]), (&Value::from("hooli.io"), &Value::Null));
    refused(
        &dir,
        &["customers", "add", "--email", "ZOE@globex.example"],
        "zoe@globex.example already belongs to customer zoe@globex.example",
    );
    refused(&dir, &["customers", "add", "--email", "x@y.example", "--org", "Nope"], "no organisation \"Nope\"");
    assert!(customers(&dir, &["--search", "x@y.example"]).is_empty(), "nothing half-written");

    let edited = dir.json(&[
        "customers",
        "edit",
        "zoe@globex.example",
        "--name",
        "Zoe Day-Lewis",
        "--add-email",
        "zoe@day.example",
        "--add-email",
        "z.day@globex.example",
        "--link-org",
        "hooli.io",
        "--link-org",
        "initech.com",
    ]);
    assert_eq!(edited["name"], "Zoe Day-Lewis");
    assert_eq!(edited["emails"], serde_json::json!(["zoe@globex.example", "z.day@globex.example", "zoe@day.example"]));
    assert_eq!(edited["linked_organisations"], serde_json::json!(["hooli.io", "initech.com"]));

    // Any address names the customer; the primary one can go, the next becomes primary.
    let moved = dir.json(&[
        "customers",
        "edit",
        "zoe@day.example",
        "--remove-email",
        "zoe@globex.example",
        "--org",
        "initech.com",
        "--unlink-org",
        "hooli.io",
    ]);
    assert_eq!(moved["email"], "z.day@globex.example");
    assert_eq!(moved["emails"], serde_json::json!(["z.day@globex.example", "zoe@day.example"]));
    assert_eq!(moved["organisation"], "initech.com");
    assert_eq!(moved["linked_organisations"], serde_json::json!([]), "primary is not also linked");

    refused(
        &dir,
        &["customers", "edit", "zoe@day.example", "--add-email", "alice.martin@acme-widgets.com"],
        "alice.martin@acme-widgets.com already belongs to customer alice.martin@acme-widgets.com",
    );
    refused(
        &dir,
        &["customers", "edit", "zoe@day.example", "--remove-email", "bob@acme-widgets.com"],
        "bob@acme-widgets.com is not an address of customer zoe@day.example",
    );
    refused(
        &dir,
        &["customers", "edit", "yan@home.example", "--remove-email", "yan@home.example"],
        "cannot remove yan@home.example: it is the only address",
    );
    refused(
        &dir,
        &["customers", "edit", "zoe@day.example", "--link-org", "initech.com"],
        "already the primary organisation",
    );
    refused(
        &dir,
        &["customers", "edit", "zoe@day.example", "--unlink-org", "hooli.io"],
        "zoe@day.example is not linked to organisation \"hooli.io\"",
    );
    // One transaction: the valid name change before the bad organisation is not kept.
    refused(
        &dir,
        &["customers", "edit", "zoe@day.example", "--name", "Changed", "--link-org", "Nope"],
        "no organisation \"Nope\"",
    );
    let shown = dir.json(&["customers", "show", "ZOE@day.example"]);
    assert_eq!(shown["name"], "Zoe Day-Lewis");

    let cleared = dir.json(&["customers", "edit", "zoe@day.example", "--no-org"]);
    assert_eq!(cleared["organisation"], Value::Null);
    let text = ok(&dir, &["customers", "edit", "zoe@day.example", "--name", "Zoe"]);
    assert!(text.starts_with("updated customer zoe@day.example\n"), "{text}");
    assert!(text.contains("Addresses:     z.day@globex.example (primary), zoe@day.example"), "{text}");
}

fn customers_show_lists_every_address_organisation_and_ticket(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    seed(
        &dir,
        &[
            ("Ann <ann@alpha.example>", "first"),
            ("Ann <ann@alpha.example>", "second"),
            ("Ann Home <ann@gmail.com>", "from home"),
        ],
    );
    ok(&dir, &["customers", "merge", "ann@gmail.com", "ann@alpha.example"]);
    let ann = dir.json(&["customers", "show", "ann@gmail.com"]);
    assert_eq!(ann["email"], "ann@alpha.example");
    assert_eq!(ann["emails"], serde_json::json!(["ann@alpha.example", "ann@gmail.com"]));
    assert_eq!(ann["tickets"], 3);
    let list = ann["ticket_list"].as_array().unwrap();
    assert_eq!(strings(&ann["ticket_list"], "subject"), ["from home", "second", "first"], "newest first");
    for key in ["number", "state", "created_at", "updated_at"] {
        assert!(list[0].get(key).is_some(), "{key}");
    }
    let text = ok(&dir, &["customers", "show", "ann@alpha.example"]);
    assert!(text.contains("Organisation:  alpha.example"), "{text}");
    assert!(text.contains("from home"), "{text}");
}

fn merging_customers_keeps_every_ticket_and_address(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    ok(&dir, &["orgs", "add", "Walsh", "--domain", "walsh.example"]);
    ok(&dir, &["orgs", "add", "Gamma", "--domain", "gamma.example"]);
    seed(
        &dir,
        &[
            ("Erin <erin.w@gmail.com>", "E1"),
            ("Erin <erin.w@gmail.com>", "E2"),
            ("erin@walsh.example", "W1"),
            ("Xavier <x@walsh.example>", "X1"),
            ("y@gmail.com", "Y1"),
        ],
    );
    ok(&dir, &["customers", "edit", "erin.w@gmail.com", "--link-org", "Gamma", "--add-email", "erin@erin.example"]);
    let before = dir.json(&["tickets", "list"]).as_array().unwrap().len();

    let erin = dir.json(&["customers", "merge", "erin.w@gmail.com", "erin@walsh.example"]);
    assert_eq!(erin["email"], "erin@walsh.example", "INTO keeps its primary address");
    assert_eq!(erin["emails"], serde_json::json!(["erin@walsh.example", "erin.w@gmail.com", "erin@erin.example"]));
    assert_eq!(erin["name"], "Erin", "a missing name is filled");
    assert_eq!(erin["organisation"], "Walsh");
    assert_eq!(erin["linked_organisations"], serde_json::json!(["Gamma"]));
    assert_eq!(erin["tickets"], 3);
    assert_eq!(subjects(&dir, &["--customer", "erin.w@gmail.com"]), set(&["E1", "E2", "W1"]));
    assert_eq!(dir.json(&["tickets", "list"]).as_array().unwrap().len(), before);
    assert!(customers(&dir, &["--search", "erin"]) == ["erin@walsh.example"]);

    // FROM's organisation becomes INTO's when INTO has none.
    let y = dir.json(&["customers", "merge", "x@walsh.example", "y@gmail.com"]);
    assert_eq!((&y["organisation"], &y["name"]), (&Value::from("Walsh"), &Value::from("Xavier")));
    assert_eq!(y["tickets"], 2);

    refused(&dir, &["customers", "merge", "erin@erin.example", "erin.w@gmail.com"], "already the same customer");
    refused(&dir, &["customers", "merge", "nobody@x.example", "y@gmail.com"], "no customer nobody@x.example");
}

/// Alpha, Beta and Gamma; Ann (Alpha) is also linked to Beta, Pat (free mail) to Gamma.
fn a_customer_user_sees_their_own_and_their_organisations_tickets(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    for (name, domain) in [("Alpha", "alpha.example"), ("Beta", "beta.example"), ("Gamma", "gamma.example")] {
        ok(&dir, &["orgs", "add", name, "--domain", domain]);
    }
    seed(
        &dir,
        &[
            ("ann@alpha.example", "A1"),
            ("al@alpha.example", "A2"),
            ("bea@beta.example", "B1"),
            ("gus@gamma.example", "G1"),
            ("pat@gmail.com", "P1"),
            ("sam@gmail.com", "S1"),
        ],
    );
    ok(&dir, &["customers", "edit", "ann@alpha.example", "--link-org", "Beta"]);
    ok(&dir, &["customers", "edit", "pat@gmail.com", "--link-org", "gamma"]);

    let sees = |who: &str| subjects(&dir, &["--visible-to", who]);
    assert_eq!(sees("ann@alpha.example"), set(&["A1", "A2", "B1"]));
    assert_eq!(sees("al@alpha.example"), set(&["A1", "A2"]));
    assert_eq!(sees("bea@beta.example"), set(&["B1"]), "a link is one way");
    assert_eq!(sees("gus@gamma.example"), set(&["G1"]));
    assert_eq!(sees("pat@gmail.com"), set(&["P1", "G1"]));
    assert_eq!(sees("sam@gmail.com"), set(&["S1"]), "free mail shares nothing");
    assert_eq!(subjects(&dir, &["--visible-to", "ann@alpha.example", "--org", "Beta"]), set(&["B1"]));

    ok(&dir, &["customers", "edit", "ann@alpha.example", "--unlink-org", "Beta"]);
    assert_eq!(sees("ann@alpha.example"), set(&["A1", "A2"]));
    refused(&dir, &["tickets", "list", "--visible-to", "nobody@alpha.example"], "no customer nobody@alpha.example");
}

fn a_new_domain_back_fills_its_customers_without_an_organisation(backend: Backend) {
    let dir = Dir::with_database_on(backend, "[customers]\nauto_create_organisations = false\n");
    seed(
        &dir,
        &[
            ("a@newco.example", "a"),
            ("b@newco.example", "b"),
            ("c@mail.newco.example", "c"),
            ("d@notnewco.example", "d"),
            ("e@newco.example", "e"),
            ("f@other.example", "f"),
        ],
    );
    ok(&dir, &["orgs", "add", "Other"]);
    ok(&dir, &["customers", "edit", "e@newco.example", "--org", "Other"]);
    ok(&dir, &["customers", "edit", "f@other.example", "--add-email", "f@newco.example"]);

    let text = ok(&dir, &["orgs", "add", "NewCo", "--domain", "NewCo.Example"]);
    assert!(text.contains("domain newco.example: 4 existing customers without an organisation assigned"), "{text}");
    assert_eq!(
        customers(&dir, &["--org", "NewCo"]),
        ["a@newco.example", "b@newco.example", "c@mail.newco.example", "f@other.example"]
    );
    assert_eq!(dir.json(&["customers", "show", "e@newco.example"])["organisation"], "Other");
    assert_eq!(dir.json(&["customers", "show", "d@notnewco.example"])["organisation"], Value::Null);
    let again = dir.json(&["orgs", "edit", "NewCo", "--add-domain", "newco.example"]);
    assert_eq!(again["assigned_customers"], 0);

    refused(&dir, &["orgs", "edit", "NewCo", "--add-domain", "gmail.com"], "gmail.com is a free-mail domain");
    refused(&dir, &["orgs", "add", "Yahoo fans", "--domain", "yahoo.co.uk"], "yahoo.co.uk is a free-mail domain");
    refused(&dir, &["orgs", "show", "Yahoo fans"], "no organisation \"Yahoo fans\"");
    refused(
        &dir,
        &["orgs", "add", "Rival", "--domain", "rival.example", "--domain", "newco.example"],
        "newco.example already belongs to organisation \"NewCo\"",
    );
    refused(&dir, &["orgs", "show", "Rival"], "no organisation \"Rival\"");
    assert!(
        dir.json(&["orgs", "list"]).as_array().unwrap().iter().all(|o| o["name"] != "Rival"),
        "nothing half-written"
    );

    seed(&dir, &[("pat@gmail.com", "p")]);
    let forced = dir.json(&["orgs", "edit", "NewCo", "--add-domain", "gmail.com", "--force"]);
    assert_eq!(forced["assigned_customers"], 1);
    assert_eq!(forced["domains"], serde_json::json!(["gmail.com", "newco.example"]));
    let removed = dir.json(&["orgs", "edit", "NewCo", "--remove-domain", "gmail.com"]);
    assert_eq!(removed["domains"], serde_json::json!(["newco.example"]));
    assert_eq!(dir.json(&["customers", "show", "pat@gmail.com"])["organisation"], "NewCo", "customers stay");
    refused(
        &dir,
        &["orgs", "edit", "NewCo", "--remove-domain", "gmail.com"],
        "gmail.com is not a domain of organisation \"NewCo\"",
    );
}

fn organisations_list_rename_and_merge(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    ok(&dir, &["orgs", "add", "Old", "--domain", "old.example", "--domain", "old2.example"]);
    ok(&dir, &["orgs", "add", "New", "--domain", "new.example"]);
    ok(&dir, &["orgs", "edit", "old", "--first-response", "8"]);
    seed(&dir, &[("o1@old.example", "O1"), ("o2@old2.example", "O2"), ("n1@new.example", "N1"), ("g@gmail.com", "G")]);
    ok(&dir, &["customers", "edit", "n1@new.example", "--link-org", "Old"]);
    ok(&dir, &["customers", "edit", "g@gmail.com", "--link-org", "Old", "--link-org", "New"]);

    let list = dir.json(&["orgs", "list"]);
    assert_eq!(strings(&list, "name"), ["New", "Old"]);
    let old = &list[1];
    for key in ["name", "domains", "customers", "tickets", "first_response_hours"] {
        assert!(old.get(key).is_some(), "organisation JSON lacks {key}: {old}");
    }
    assert_eq!(old["domains"], serde_json::json!(["old.example", "old2.example"]));
    assert_eq!((&old["customers"], &old["tickets"]), (&Value::from(4), &Value::from(2)), "{old}");
    assert_eq!(old["first_response_hours"], 8);

    refused(&dir, &["orgs", "edit", "New", "--rename", "OLD"], "organisation \"OLD\" already exists");
    refused(&dir, &["orgs", "add", "old"], "organisation \"old\" already exists");
    ok(&dir, &["orgs", "edit", "New", "--rename", "New Ltd"]);

    let merged = dir.json(&["orgs", "merge", "Old", "new ltd"]);
    assert_eq!(merged["name"], "New Ltd");
    assert_eq!(merged["domains"], serde_json::json!(["new.example", "old.example", "old2.example"]));
    assert_eq!((&merged["customers"], &merged["tickets"]), (&Value::from(4), &Value::from(3)), "{merged}");
    assert_eq!(merged["first_response_hours"], 8, "a missing time is filled");
    refused(&dir, &["orgs", "show", "Old"], "no organisation \"Old\"");
    let n1 = dir.json(&["customers", "show", "n1@new.example"]);
    assert_eq!(n1["linked_organisations"], serde_json::json!([]), "no link to the primary");
    let g = dir.json(&["customers", "show", "g@gmail.com"]);
    assert_eq!(g["linked_organisations"], serde_json::json!(["New Ltd"]), "links deduplicated");
    assert_eq!(subjects(&dir, &["--org", "New Ltd"]), set(&["O1", "O2", "N1"]));

    seed(&dir, &[("o3@old.example", "O3")]);
    assert_eq!(dir.json(&["customers", "show", "o3@old.example"])["organisation"], "New Ltd");
    let shown = dir.json(&["orgs", "show", "New Ltd"]);
    assert_eq!(shown["customer_list"].as_array().unwrap().len(), 5);
    assert_eq!(shown["ticket_list"].as_array().unwrap().len(), 4);
    refused(&dir, &["orgs", "merge", "New Ltd", "new ltd"], "into itself");
}

fn ticket_filters_states_and_the_first_response_time(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    ok(&dir, &["orgs", "add", "Fast", "--domain", "fast.example"]);
    ok(&dir, &["orgs", "edit", "Fast", "--first-response", "2"]);
    seed(&dir, &[("f1@fast.example", "late"), ("f2@fast.example", "fine"), ("s@slow.example", "none")]);
    let all = dir.json(&["tickets", "list"]);
    let due: Vec<bool> = all.as_array().unwrap().iter().map(|t| t["respond_by"].is_string()).collect();
    assert_eq!(due, [false, true, true], "newest first: {all}");
    dir.sql("UPDATE tickets SET respond_by = '2020-01-01T00:00:00Z' WHERE subject IN ('late', 'none')");

    assert_eq!(subjects(&dir, &["--overdue"]), set(&["late", "none"]));
    assert_eq!(subjects(&dir, &["--overdue", "--org", "fast"]), set(&["late"]));
    assert_eq!(subjects(&dir, &["--customer", "F2@fast.example"]), set(&["fine"]));
    let late = all[2]["number"].as_str().unwrap();
    let closed = dir.json(&["tickets", "set-state", late, "Closed"]);
    assert_eq!((&closed["state"], &closed["subject"]), (&Value::from("closed"), &Value::from("late")));
    assert_eq!(subjects(&dir, &["--overdue"]), set(&["none"]), "closed is never overdue");
    assert_eq!(subjects(&dir, &["--state", "closed"]), set(&["late"]));
    assert_eq!(subjects(&dir, &["--state", "new"]), set(&["fine", "none"]));
    let text = ok(&dir, &["tickets", "set-state", late, "pending"]);
    assert_eq!(text.trim(), format!("ticket {late}: closed -> pending"));

    ok(&dir, &["orgs", "edit", "Fast", "--first-response", "0"]);
    seed(&dir, &[("f3@fast.example", "no sla")]);
    let last = dir.json(&["tickets", "list", "--customer", "f3@fast.example"]);
    assert_eq!(last[0]["respond_by"], Value::Null);
    refused_with(&dir, &["tickets", "set-state", late, "done"], 64, "\"done\" is not a ticket state");
    refused(&dir, &["tickets", "set-state", "2020010110000016", "open"], "no ticket 2020010110000016");
}

fn bad_input_exits_64_or_1_with_one_line_naming_the_problem(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    seed_fixtures(&dir);
    // Something malformed on the command line: a usage error.
    let usage: &[(&[&str], &str)] = &[
        (&["customers", "show", "not-an-address"], "\"not-an-address\" is not an email address"),
        (
            &["customers", "edit", "bob@acme-widgets.com", "--add-email", "a b@x.example"],
            "\"a b@x.example\" is not an email address",
        ),
        (&["customers", "list", "--added", "2026-13"], "\"2026-13\" is not a month: expected YYYY-MM"),
        (&["customers", "list", "--added", "11/2026"], "is not a month"),
        (&["orgs", "add", "X", "--domain", "not a domain"], "\"not a domain\" is not a domain name"),
        (&["orgs", "add", "  "], "an organisation name cannot be empty"),
        (&["tickets", "list", "--state", "done"], "\"done\" is not a ticket state"),
        (&["tickets", "show", "123"], "\"123\" is not a valid ticket number"),
    ];
    for (args, needle) in usage {
        refused_with(&dir, args, 64, needle);
    }
    // Well-formed, but not so.
    let errors: &[(&[&str], &str)] = &[
        (&["customers", "show", "nobody@x.example"], "no customer nobody@x.example"),
        (&["customers", "edit", "bob@acme-widgets.com"], "nothing to change"),
        (&["orgs", "edit", "initech.com"], "nothing to change"),
        (&["customers", "list", "--org", "Nope"], "no organisation \"Nope\""),
        (&["orgs", "show", "Nope"], "no organisation \"Nope\""),
        (&["orgs", "edit", "Nope", "--first-response", "4"], "no organisation \"Nope\""),
        (&["tickets", "list", "--customer", "nobody@x.example"], "no customer nobody@x.example"),
        (&["tickets", "show", "2020010110000016"], "no ticket 2020010110000016"),
    ];
    for (args, needle) in errors {
        refused(&dir, args, needle);
    }
}

fn every_management_command_explains_itself_with_an_example(backend: Backend) {
    let dir = Dir::with_database_on(backend, "");
    let commands: &[&[&str]] = &[
        &["customers", "list"],
        &["customers", "show"],
        &["customers", "add"],
        &["customers", "edit"],
        &["customers", "merge"],
        &["orgs", "list"],
        &["orgs", "show"],
        &["orgs", "add"],
        &["orgs", "edit"],
        &["orgs", "merge"],
        &["tickets", "list"],
        &["tickets", "show"],
        &["tickets", "set-state"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let help = ok(&dir, &args);
        assert!(help.contains("\nExample"), "{command:?} --help has no example:\n{help}");
        assert!(help.contains(&format!("postdesk {}", command.join(" "))), "{command:?}:\n{help}");
    }
}

/// `postdesk ingest` commits a stream of small batches while agents list and edit.
fn commands_work_while_the_daemon_writes(backend: Backend) {
    let dir = Dir::with_database_on(backend, "[ingest]\nbatch_size = 2\n");
    seed_fixtures(&dir);
    let before = dir.json(&["tickets", "list"]).as_array().unwrap().len();
    let stop = AtomicBool::new(false);
    let (ingested, rounds) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| keep_ingesting(&dir, &stop));
        let rounds = (0..6).map(|round| agent_round(&dir, round)).count();
        stop.store(true, Ordering::Relaxed);
        (writer.join().unwrap(), rounds)
    });
    assert!(ingested > 0 && rounds == 6);

    assert_eq!(dir.json(&["tickets", "list"]).as_array().unwrap().len(), before + ingested);
    let users = dir.json(&["customers", "list", "--org", "acme-widgets.com", "--search", "user"]);
    let tickets: i64 = users.as_array().unwrap().iter().map(|c| c["tickets"].as_i64().unwrap()).sum();
    assert_eq!(tickets as usize, ingested / 3);
}

/// Runs `postdesk ingest` over fresh folders of 60 generated messages until told to
/// stop; how many messages it stored. A third come from acme-widgets.com.
fn keep_ingesting(dir: &Dir, stop: &AtomicBool) -> usize {
    let mut sent = 0;
    for folder in 0.. {
        if stop.load(Ordering::Relaxed) && folder > 0 {
            break;
        }
        let path = dir.path().join(format!("flood-{folder}"));
        std::fs::create_dir(&path).unwrap();
        for i in sent..sent + 60 {
            let from = match i % 3 {
                0 => format!("user{}@acme-widgets.com", i % 50),
                _ => format!("user{}@corp{}.example", i % 40, i % 7),
            };
            let raw = message(&from, &format!("load {i}"));
            std::fs::write(path.join(format!("{i:05}.eml")), raw).unwrap();
        }
        dir.run(&["ingest", &path.display().to_string()]).assert_code(0);
        sent += 60;
    }
    sent
}

/// What an agent does meanwhile; every command must succeed and see one snapshot.
fn agent_round(dir: &Dir, round: usize) {
    for c in dir.json(&["customers", "list", "--with-tickets"]).as_array().unwrap() {
        assert!(c["tickets"].as_i64().unwrap() > 0, "{c}");
    }
    // The counts agree with the lists beside them.
    let acme = dir.json(&["orgs", "show", "acme-widgets.com"]);
    let length = |key: &str| acme[key].as_array().unwrap().len() as u64;
    assert_eq!(acme["tickets"].as_u64(), Some(length("ticket_list")));
    assert_eq!(acme["customers"].as_u64(), Some(length("customer_list")));
    let name = format!("Alice {round}");
    let alice = dir.json(&["customers", "edit", "alice.martin@acme-widgets.com", "--name", &name]);
    assert_eq!(alice["name"], name.as_str());
    let manual = format!("manual{round}@acme-widgets.com");
    dir.json(&["customers", "add", "--email", &manual]);
    let hours = (round + 1).to_string();
    dir.json(&["orgs", "edit", "acme-widgets.com", "--first-response", &hours]);
    dir.json(&["tickets", "list", "--overdue"]);
}

on_both!(
    customers_list_filters_and_counts,
    adding_and_editing_a_customer,
    customers_show_lists_every_address_organisation_and_ticket,
    merging_customers_keeps_every_ticket_and_address,
    a_customer_user_sees_their_own_and_their_organisations_tickets,
    a_new_domain_back_fills_its_customers_without_an_organisation,
    organisations_list_rename_and_merge,
    ticket_filters_states_and_the_first_response_time,
    bad_input_exits_64_or_1_with_one_line_naming_the_problem,
    every_management_command_explains_itself_with_an_example,
    commands_work_while_the_daemon_writes,
);
