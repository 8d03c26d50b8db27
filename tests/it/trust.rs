//! Trust against the real binary and a database: who may write into a ticket, our
//! Message-IDs, acknowledgement caps, bounces of our acknowledgements, and tickets that
//! follow their customer's organisation.

use serde_json::Value;

use crate::harness::{repo_path, ticket_in, Dir};

fn fixture(name: &str) -> String {
    repo_path(&format!("fixtures/mail/{name}")).display().to_string()
}

/// A plain message; `extra` headers go before the body.
fn mail(from: &str, id: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: {from}\nTo: support@helpdesk.example\nSubject: {subject}\nMessage-ID: <{id}>\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\n{extra}\nBody of {id}.\n"
    )
}

/// Ingests one message from standard input: the outcome after "stdin: ".
fn ingest(dir: &Dir, raw: &str) -> String {
    let run = dir.run_with_stdin(&["ingest", "-"], Some(raw.as_bytes()));
    run.assert_code(0);
    run.stdout.trim().strip_prefix("stdin: ").unwrap_or_else(|| panic!("{}", run.stdout)).to_owned()
}

fn show(dir: &Dir, number: &str) -> Value {
    dir.json(&["tickets", "show", number])
}

fn ok(dir: &Dir, args: &[&str]) -> String {
    dir.run(args).assert_code(0).stdout.clone()
}

/// Alice's ticket from the first fixture: its number.
fn alice_ticket(dir: &Dir) -> String {
    ticket_in(&ok(dir, &["ingest", &fixture("01-plain-text.eml")]))
}

#[test]
fn only_people_on_a_ticket_write_into_it() {
    for (rule, colleague_follows) in [("organisation", true), ("participants", false), ("anyone", true)] {
        let dir = Dir::with_database(&format!("[tickets]\nfollow_up_from = \"{rule}\"\n"));
        let t = alice_ticket(&dir);
        let tag = |s: &str| format!("Re: [Ticket#{t}] {s}");

        // Someone Alice copied is on the ticket.
        let cc = mail("Alice <alice.martin@acme-widgets.com>", "a2@acme", &tag("cc"), "Cc: ext@partner.example\n");
        assert_eq!(ingest(&dir, &cc), format!("follow-up to ticket {t}"), "{rule}");
        let partner = mail("ext@partner.example", "p1@partner", &tag("from the partner"), "");
        assert_eq!(ingest(&dir, &partner), format!("follow-up to ticket {t}"), "{rule}");

        // A colleague at Alice's organisation's domain.
        let colleague = ingest(&dir, &mail("ivan@acme-widgets.com", "i1@acme", &tag("colleague"), ""));
        assert_eq!(colleague.starts_with("follow-up"), colleague_follows, "{rule}: {colleague}");

        // A stranger who guessed the number: a new ticket that refers to it.
        let stranger = ingest(&dir, &mail("mallory@evil.example", "m1@evil", &tag("pay now"), ""));
        if rule == "anyone" {
            assert_eq!(stranger, format!("follow-up to ticket {t}"));
            continue;
        }
        assert!(stranger.contains(&format!("refers to ticket {t}, not a follow-up")), "{rule}: {stranger}");
        let new = ticket_in(&stranger.replace(&t, ""));
        let shown = show(&dir, &new);
        assert_eq!(shown["referred_ticket"], t.as_str());
        assert_eq!(shown["customer_email"], "mallory@evil.example");
        let text = ok(&dir, &["tickets", "show", &new]);
        assert!(text.contains(&format!("Refers to:    {t}")), "{text}");
        // Nothing of it reached Alice's ticket.
        let bodies: Vec<String> = show(&dir, &t)["article_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["body"].as_str().unwrap().to_owned())
            .collect();
        assert!(bodies.iter().all(|b| !b.contains("m1@evil")), "{bodies:?}");

        // Once Alice is linked to the stranger's organisation, its people may write (under
        // "organisation").
        if rule == "organisation" {
            ok(&dir, &["customers", "edit", "alice.martin@acme-widgets.com", "--link-org", "evil.example"]);
            let linked = ingest(&dir, &mail("eve@evil.example", "e1@evil", &tag("linked"), ""));
            assert_eq!(linked, format!("follow-up to ticket {t}"), "{rule}");
            ok(&dir, &["customers", "edit", "alice.martin@acme-widgets.com", "--unlink-org", "evil.example"]);
        }

        // A reference to Alice's message from a stranger is refused the same way.
        let by_reference = ingest(
            &dir,
            &mail("mallory@evil.example", "m2@evil", "Re: printer", "In-Reply-To: <req-0001@mail.acme-widgets.com>\n"),
        );
        assert!(by_reference.contains(&format!("refers to ticket {t}")), "{rule}: {by_reference}");
    }
}

#[test]
fn our_message_ids_cannot_be_guessed_or_claimed() {
    let dir = Dir::with_database("");
    // An attacker sends first, with the Message-ID an acknowledgement used to get.
    let claimed = ingest(&dir, &mail("mallory@evil.example", "ack.2026112410000017@helpdesk.example", "hello", ""));
    assert!(claimed.contains("its Message-ID claims to be one of ours"), "{claimed}");
    let t = alice_ticket(&dir);
    let outbox = dir.json(&["outbox", "list"]);
    let ack_id =
        outbox.as_array().unwrap().iter().find(|r| r["ticket"] == t.as_str()).expect("Alice's acknowledgement")
            ["message_id"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(ack_id.starts_with(&format!("ack.{t}.")) && ack_id.len() > 50, "{ack_id}");

    // Alice answers the acknowledgement: her ticket.
    let reply = mail("alice.martin@acme-widgets.com", "a9@acme", "Re: ack", &format!("In-Reply-To: <{ack_id}>\n"));
    assert_eq!(ingest(&dir, &reply), format!("follow-up to ticket {t}"));
    // A reply to the claimed id does not reach the attacker's ticket.
    let to_claimed =
        mail("bob@acme-widgets.com", "b9@acme", "Re: hello", "In-Reply-To: <ack.2026112410000017@helpdesk.example>\n");
    assert!(ingest(&dir, &to_claimed).starts_with("new ticket"));
}

#[test]
fn a_reused_message_id_is_its_own_message_and_the_same_mail_twice_is_one() {
    let dir = Dir::with_database("");
    let t = alice_ticket(&dir);
    let reused = ingest(&dir, &mail("scanner@acme-widgets.com", "req-0001@mail.acme-widgets.com", "Scan", ""));
    assert!(reused.starts_with("new ticket"), "{reused}");
    assert!(reused.contains(&format!("Message-ID reused: a different message with it is on ticket {t}")), "{reused}");

    // The first fixture as delivered to a second mailbox: other trace headers, LF → CRLF.
    let raw = std::fs::read_to_string(fixture("01-plain-text.eml")).unwrap();
    let second = format!("Received: from mx2\nDelivered-To: billing@helpdesk.example\n{raw}").replace('\n', "\r\n");
    assert_eq!(ingest(&dir, &second), format!("duplicate of ticket {t} (same Message-ID and content)"));
    assert_eq!(dir.json(&["tickets", "list"]).as_array().unwrap().len(), 2);
}

#[test]
fn acknowledgement_caps_count_mailboxes_and_domains() {
    let dir = Dir::with_database("[acknowledgement]\nmax_per_sender_per_day = 2\nmax_per_domain_per_day = 3\n");
    let outcomes: Vec<String> = ["victim+1@target.example", "victim+2@target.example", "victim+3@target.example"]
        .iter()
        .enumerate()
        .map(|(i, from)| ingest(&dir, &mail(from, &format!("v{i}@x"), &format!("spam {i}"), "")))
        .collect();
    assert!(outcomes[1].ends_with("acknowledgement queued"), "{outcomes:?}");
    assert!(outcomes[2].ends_with("no acknowledgement (per-sender limit reached (2 in 24 h))"), "{outcomes:?}");
    let gmail = ["j.doe@gmail.com", "jdoe+x@googlemail.com", "J.D.O.E@gmail.com"]
        .iter()
        .enumerate()
        .map(|(i, from)| ingest(&dir, &mail(from, &format!("g{i}@x"), &format!("g {i}"), "")))
        .collect::<Vec<_>>();
    assert!(gmail[2].contains("per-sender limit reached"), "{gmail:?}");
    // Two acknowledgements went to target.example; a third person there gets the third.
    assert!(ingest(&dir, &mail("ann@target.example", "o1@x", "ann", "")).ends_with("acknowledgement queued"));
    let other = ingest(&dir, &mail("ben@target.example", "o2@x", "ben", ""));
    assert!(other.ends_with("no acknowledgement (per-domain limit reached (3 in 24 h))"), "{other}");
}

/// A delivery report for one of our acknowledgements, quoting its headers.
fn bounce_of(ack_id: &str, recipient: &str) -> String {
    format!(
        "Return-Path: <>\nFrom: Mail Delivery System <MAILER-DAEMON@mx.acme-widgets.com>\n\
         To: support@helpdesk.example\nSubject: Undelivered Mail Returned to Sender\n\
         Date: Tue, 24 Nov 2026 10:05:00 +0000\nMessage-ID: <bounce-1@mx.acme-widgets.com>\n\
         Auto-Submitted: auto-replied\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\n\n\
         --b1\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n\
         --b1\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; mx.acme-widgets.com\n\n\
         Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected\n\n\
         --b1\nContent-Type: text/rfc822-headers\n\n\
         From: Helpdesk <support@helpdesk.example>\nTo: {recipient}\nSubject: [Ticket#x] ack\n\
         Message-ID: <{ack_id}>\nX-Postdesk-Loop: support@helpdesk.example\n <{ack_id}>\n\n--b1--\n"
    )
}

#[test]
fn a_bounce_of_our_acknowledgement_marks_it_and_opens_no_ticket() {
    let dir = Dir::with_database("");
    let t = alice_ticket(&dir);
    let row = dir.json(&["outbox", "list"])[0].clone();
    let ack_id = row["message_id"].as_str().unwrap();
    let outcome = ingest(&dir, &bounce_of(ack_id, "alice.martin@acme-widgets.com"));
    assert_eq!(
        outcome,
        format!(
            "bounce of acknowledgement #{}: marked bounced, attached to ticket {t} as an internal article",
            row["id"]
        )
    );
    let row = dir.json(&["outbox", "list"])[0].clone();
    assert_eq!(row["state"], "bounced");
    let error = row["last_error"].as_str().unwrap();
    assert!(error.contains("Status: 5.1.1") && error.contains("550 5.1.1"), "{error}");
    let tickets = dir.json(&["tickets", "list"]);
    assert_eq!(tickets.as_array().unwrap().len(), 1, "no new ticket: {tickets}");
    assert_eq!(tickets[0]["ack"], "bounced");
    let shown = show(&dir, &t);
    assert_eq!(shown["state"], "new", "a bounce does not reopen or change the ticket");
    let articles = shown["article_list"].as_array().unwrap();
    assert_eq!((articles.len(), &articles[1]["internal"]), (2, &Value::Bool(true)));
    assert!(ok(&dir, &["tickets", "show", &t]).contains("(in, internal)"));
    // The bouncing daemon is not a customer, and `outbox retry --all` leaves it alone.
    assert_eq!(dir.json(&["customers", "list"]).as_array().unwrap().len(), 1);
    assert!(ok(&dir, &["outbox", "retry", "--all"]).contains('0'));

    // A bounce naming an id we never sent is an ordinary bounce ticket without a customer.
    let stray =
        ingest(&dir, &bounce_of("ack.2026112310000999.aaaaaaaaaaaaaaaaaaaaaaaaaa@helpdesk.example", "x@y.example"));
    assert!(stray.starts_with("new ticket") && stray.ends_with("no acknowledgement (auto-reply)"), "{stray}");
    assert_eq!(show(&dir, &ticket_in(&stray))["customer_email"], "mailer-daemon@mx.acme-widgets.com");
}

#[test]
fn tickets_follow_their_customer_to_another_organisation() {
    let dir = Dir::with_database("[customers]\nauto_create_organisations = false\n");
    let open = ticket_in(&ingest(&dir, &mail("kim@newco.example", "k1@newco", "open one", "")));
    let closed = ticket_in(&ingest(&dir, &mail("kim@newco.example", "k2@newco", "closed one", "")));
    ok(&dir, &["tickets", "set-state", &closed, "closed"]);
    let org_of = |n: &str| show(&dir, n)["organisation"].clone();
    assert_eq!(org_of(&open), Value::Null);

    // A new domain: the customer joins, and so do their tickets (a closed one without
    // an organisation too).
    ok(&dir, &["orgs", "add", "NewCo", "--domain", "newco.example"]);
    assert_eq!((org_of(&open), org_of(&closed)), (Value::from("NewCo"), Value::from("NewCo")));
    assert_eq!(dir.json(&["tickets", "list", "--org", "NewCo"]).as_array().unwrap().len(), 2);

    // Another organisation: open tickets move, a closed one keeps whom it was done for.
    ok(&dir, &["orgs", "add", "Acquirer"]);
    ok(&dir, &["customers", "edit", "kim@newco.example", "--org", "Acquirer"]);
    assert_eq!((org_of(&open), org_of(&closed)), (Value::from("Acquirer"), Value::from("NewCo")));

    // Merging customers: the merged one's open tickets take the survivor's organisation.
    let other = ticket_in(&ingest(&dir, &mail("kim.home@web.de", "k3@web", "from home", "")));
    assert_eq!(org_of(&other), Value::Null);
    ok(&dir, &["customers", "merge", "kim.home@web.de", "kim@newco.example"]);
    assert_eq!(org_of(&other), Value::from("Acquirer"));
    let visible = dir.json(&["tickets", "list", "--visible-to", "kim@newco.example"]);
    assert_eq!(visible.as_array().unwrap().len(), 3);
}

/// `[[mailbox]] authserv_id`: the daemon believes that server's DMARC verdict, and only
/// its topmost header.
#[test]
fn a_mailbox_trusts_the_dmarc_verdict_of_its_own_server() {
    use crate::dovecot::Dovecot;
    const USER: &str = "support@helpdesk.example";
    const PASSWORD: &str = "pw-trust";
    let dovecot = Dovecot::start(&[(USER, PASSWORD)]);
    let dir = Dir::with_database(&format!(
        "[[mailbox]]\nname = \"support\"\naddress = \"{USER}\"\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"{}\"\n\
         username = \"{USER}\"\npassword = \"{PASSWORD}\"\nauthserv_id = \"mx.helpdesk.example\"\n",
        dovecot.imaps_port(),
        dovecot.ca_file().display()
    ));
    let results = |verdict: &str| {
        format!("Authentication-Results: mx.helpdesk.example; dmarc={verdict} header.from=acme-widgets.com\n")
    };
    let alice = "Alice <alice.martin@acme-widgets.com>";
    dovecot.append(USER, "INBOX", mail(alice, "a1@acme", "Printer", &results("pass")).as_bytes());
    dir.run(&["run", "--once"]).assert_code(0);
    let t = dir.json(&["tickets", "list"])[0]["number"].as_str().unwrap().to_owned();

    // A forged "pass" below our server's "fail" does not help.
    let spoof = mail(
        alice,
        "s1@bulk.example",
        &format!("Re: [Ticket#{t}] Printer"),
        &format!("{}{}", results("fail"), results("pass")),
    );
    dovecot.append(USER, "INBOX", spoof.as_bytes());
    let log = dir.run(&["run", "--once"]).assert_code(0).stderr.clone();
    let tickets = dir.json(&["tickets", "list"]);
    assert_eq!(tickets.as_array().unwrap().len(), 2, "{log}");
    let spoofed = &tickets[0]; // newest first
    assert_eq!((&spoofed["unauthenticated"], &spoofed["ack"]), (&Value::Bool(true), &Value::from("failed DMARC")));
    assert_eq!(spoofed["referred_ticket"], t.as_str());
    assert!(log.contains("not a follow-up: the message failed DMARC"), "{log}");
    assert_eq!(show(&dir, &t)["articles"], 1);
}
