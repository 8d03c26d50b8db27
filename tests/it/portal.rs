//! The customer portal in-process, through the real router over a real database: the
//! access rule from the customer's side (three organisations, a linked customer user, a
//! customer user with two addresses), sign-in links (single use, expiry, no account
//! enumeration, rate limits), replies and closing through the mail pipeline, and the
//! public support form with its address confirmation.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::Utc;
use postdesk::core::ack::MailKind;
use postdesk::desk::customers::{self, Changes};
use postdesk::desk::orgs::{self, PortalVisibility};
use postdesk::desk::portal;
use postdesk::desk::tickets::{self, Query};

use super::web::{message, Desk, Response, Session};
use crate::harness::Backend;

/// Acme shows its tickets to its customer users, Beta only each one's own; Ann (Acme)
/// is linked to Gamma and has a second, free-mail address.
struct Helpdesk {
    desk: Desk,
    /// Ticket numbers by who opened them.
    ann: String,
    ann_home: String,
    alf: String,
    bea: String,
    bob: String,
    gus: String,
}

impl Helpdesk {
    fn on(backend: Backend, extra: &str) -> Helpdesk {
        let desk = Desk::with_on(backend, extra);
        let store = desk.store();
        store
            .write(|tx| {
                for (name, domain) in [("Acme", "acme.example"), ("Beta", "beta.example"), ("Gamma", "gamma.example")] {
                    let add = orgs::Add { name: name.into(), domains: vec![domain.into()], force: false };
                    orgs::add(tx, &add, &[], Utc::now())?;
                }
                let own = orgs::Edit {
                    name: "Beta".into(),
                    portal_visibility: Some(PortalVisibility::Own),
                    ..Default::default()
                };
                orgs::edit(tx, &own, &[]).map(drop)
            })
            .unwrap();
        let ann = desk.mail(&message("Ann <ann@acme.example>", "Printer jammed", "ann1"));
        let store = desk.store();
        store
            .write(|tx| {
                let changes = Changes {
                    add_email: vec!["ann.home@gmail.com".into()],
                    link_org: vec!["Gamma".into()],
                    ..Default::default()
                };
                customers::edit(tx, &customers::Edit { email: "ann@acme.example".into(), changes }).map(drop)
            })
            .unwrap();
        Helpdesk {
            ann,
            ann_home: desk.mail(&message("ann.home@gmail.com", "From home", "ann2")),
            alf: desk.mail(&message("alf@acme.example", "VPN down", "alf1")),
            bea: desk.mail(&message("bea@beta.example", "Invoice", "bea1")),
            bob: desk.mail(&message("bob@beta.example", "<script>alert(1)</script>", "bob1")),
            gus: desk.mail(&message("gus@gamma.example", "Gamma's ticket", "gus1")),
            desk,
        }
    }

    /// What `tickets list --visible-to ADDRESS` lists.
    fn visible_to(&self, email: &str) -> BTreeSet<String> {
        let store = self.desk.store();
        let query = Query { visible_to: Some(email.into()), ..Default::default() };
        let found = store.read(|tx| tickets::list(tx, &query, Utc::now())).unwrap();
        found.into_iter().map(|t| t.number).collect()
    }

    /// Asks for a sign-in link for `email` from `client`, as the form does.
    async fn ask_link(&self, email: &str) -> Response {
        let form = self.desk.get("/portal", None).await;
        form.assert_status(StatusCode::OK);
        let cookie = format!("postdesk_portal_form={}", form.cookie("postdesk_portal_form").expect("form cookie"));
        let csrf = form.field("csrf");
        self.desk.post_raw("/portal", Some(&cookie), &[("csrf", &csrf), ("email", email)]).await
    }

    /// The token of the newest mail of `kind` queued for `to`.
    fn mailed_token(&self, kind: MailKind, to: &str) -> Option<String> {
        let store = self.desk.store();
        let rows = store.read(|tx| postdesk::desk::outbox::list(tx, None)).unwrap();
        let row = rows.iter().rev().find(|r| r.kind == kind && r.recipient == to)?;
        let at = row.body_text.find("token=")? + "token=".len();
        Some(row.body_text[at..].split_whitespace().next()?.to_owned())
    }

    /// Follows a link to its page and presses its button, as a browser does.
    async fn press(&self, page: &str, token: &str, cookie_name: &str) -> Response {
        let landing = self.desk.get(&format!("{page}?token={token}"), None).await;
        landing.assert_status(StatusCode::OK);
        let cookie = format!("{cookie_name}={}", landing.cookie(cookie_name).expect("the page sets its form cookie"));
        let csrf = landing.field("csrf");
        self.desk.post_raw(page, Some(&cookie), &[("csrf", &csrf), ("token", token)]).await
    }

    async fn use_link(&self, token: &str) -> Response {
        self.press("/portal/sign-in", token, "postdesk_portal_link").await
    }

    /// Signs `email` in by the link mailed to it.
    async fn sign_in(&self, email: &str) -> Session {
        self.ask_link(email).await.assert_status(StatusCode::OK);
        let token = self.mailed_token(MailKind::SignIn, email).unwrap_or_else(|| panic!("no link mailed to {email}"));
        let signed_in = self.use_link(&token).await;
        signed_in.assert_status(StatusCode::SEE_OTHER);
        let cookie = format!("postdesk_portal={}", signed_in.cookie("postdesk_portal").expect("a session cookie"));
        let page = self.desk.get("/portal", Some(&Session { cookie: cookie.clone(), csrf: String::new() })).await;
        page.assert_status(StatusCode::OK);
        Session { csrf: page.field("csrf"), cookie }
    }

    /// The ticket numbers the portal lists for a session.
    async fn listed(&self, session: &Session) -> BTreeSet<String> {
        let page = self.desk.get("/portal", Some(session)).await;
        page.assert_status(StatusCode::OK);
        let text = page.text();
        text.match_indices("href=\"/portal/tickets/").map(|(at, _)| text[at + 22..at + 38].to_owned()).collect()
    }
}

fn set(numbers: &[&String]) -> BTreeSet<String> {
    numbers.iter().map(|n| n.to_string()).collect()
}

async fn each_customer_user_sees_exactly_what_the_access_rule_says(backend: Backend) {
    let h = Helpdesk::on(backend, "");
    let want = [
        // Her own (from both addresses), Acme's (Alf's), and Gamma's, which she is linked to.
        ("ann@acme.example", set(&[&h.ann, &h.ann_home, &h.alf, &h.gus])),
        ("ann.home@gmail.com", set(&[&h.ann, &h.ann_home, &h.alf, &h.gus])),
        ("alf@acme.example", set(&[&h.ann, &h.ann_home, &h.alf])),
        // Beta shows each customer user only their own.
        ("bea@beta.example", set(&[&h.bea])),
        ("bob@beta.example", set(&[&h.bob])),
        ("gus@gamma.example", set(&[&h.gus])),
    ];
    for (email, expected) in &want {
        let session = h.sign_in(email).await;
        let listed = h.listed(&session).await;
        assert_eq!(&listed, expected, "the portal's list for {email}");
        assert_eq!(listed, h.visible_to(email), "the portal lists what tickets list --visible-to {email} lists");
        let all = [&h.ann, &h.ann_home, &h.alf, &h.bea, &h.bob, &h.gus];
        for number in all {
            let status = h.desk.get(&format!("/portal/tickets/{number}"), Some(&session)).await.status;
            let visible = expected.contains(number.as_str());
            assert_eq!(status, if visible { StatusCode::OK } else { StatusCode::NOT_FOUND }, "{email} opens {number}");
        }
        let guessed = h.desk.get("/portal/tickets/2020010110000016", Some(&session)).await;
        guessed.assert_status(StatusCode::NOT_FOUND);
    }
}

async fn internal_notes_never_reach_the_portal_and_mail_text_is_escaped(backend: Backend) {
    let h = Helpdesk::on(backend, "");
    let agent = h.desk.sign_in("agent@helpdesk.example").await;
    let note = [("body", "Customer is on the naughty list"), ("kind", "note")];
    h.desk.post(&format!("/tickets/{}/reply", h.bob), &agent, &note).await.assert_status(StatusCode::SEE_OTHER);
    let reply = [("body", "We are on it."), ("kind", "reply")];
    h.desk.post(&format!("/tickets/{}/reply", h.bob), &agent, &reply).await.assert_status(StatusCode::SEE_OTHER);
    let bob = h.sign_in("bob@beta.example").await;
    let page = h.desk.get(&format!("/portal/tickets/{}", h.bob), Some(&bob)).await;
    let text = page.assert_status(StatusCode::OK).text();
    assert!(!text.contains("naughty list"), "an internal note is for agents only:\n{text}");
    assert!(text.contains("We are on it."), "the agent's reply is shown:\n{text}");
    assert!(!text.contains("<script>alert(1)") && text.contains("&lt;script&gt;"), "escaped:\n{text}");
    assert_eq!(page.header(header::X_FRAME_OPTIONS), "DENY");
    assert!(page.header(header::CONTENT_SECURITY_POLICY).contains("default-src 'none'"));
}

async fn a_sign_in_link_works_once_and_expires(backend: Backend) {
    let h = Helpdesk::on(backend, "");
    h.ask_link("alf@acme.example").await.assert_status(StatusCode::OK);
    let token = h.mailed_token(MailKind::SignIn, "alf@acme.example").expect("a link");
    let first = h.use_link(&token).await;
    first.assert_status(StatusCode::SEE_OTHER);
    let cookie = first.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    h.use_link(&token).await.assert_status(StatusCode::GONE);
    h.use_link("0000").await.assert_status(StatusCode::GONE);
    // A link asked for 16 minutes ago has expired.
    let store = h.desk.store();
    let asked = Utc::now() - chrono::Duration::minutes(portal::LINK_MINUTES + 1);
    let links = portal::Links {
        base_url: "https://help.example",
        sender: postdesk::core::portal::Sender {
            helpdesk_name: "Help",
            from: "support@helpdesk.example",
            from_name: "Help",
        },
    };
    assert!(store.write(|tx| portal::request_link(tx, "gus@gamma.example", &links, asked)).unwrap());
    let old = h.mailed_token(MailKind::SignIn, "gus@gamma.example").unwrap();
    let expired = h.use_link(&old).await;
    expired.assert_status(StatusCode::GONE);
    assert!(expired.text().contains("expired or was already used"), "{}", expired.text());
    // Signing out ends the session.
    let session = h.sign_in("gus@gamma.example").await;
    h.desk.post("/portal/logout", &session, &[]).await.assert_status(StatusCode::SEE_OTHER);
    let after = h.desk.get(&format!("/portal/tickets/{}", h.gus), Some(&session)).await;
    after.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(after.location(), "/portal");
}

async fn the_answer_is_the_same_for_known_and_unknown_addresses(backend: Backend) {
    let h = Helpdesk::on(backend, "");
    let known = h.ask_link("alf@acme.example").await;
    let unknown = h.ask_link("nobody@acme.example").await;
    assert_eq!((known.status, unknown.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(known.text(), unknown.text(), "the pages must not tell a customer's address from another");
    assert!(h.mailed_token(MailKind::SignIn, "alf@acme.example").is_some());
    assert!(h.mailed_token(MailKind::SignIn, "nobody@acme.example").is_none(), "nothing is mailed to nobody");
}

async fn sign_in_links_are_rate_limited_per_address_and_per_client(backend: Backend) {
    let h = Helpdesk::on(backend, "");
    for _ in 0..3 {
        h.ask_link("alf@acme.example").await.assert_status(StatusCode::OK);
    }
    let held = h.ask_link("ALF@acme.example").await;
    held.assert_status(StatusCode::TOO_MANY_REQUESTS);
    assert!(held.text().contains("Too many requests"), "{}", held.text());
    // The same answer for an address nobody has: the limit tells nothing either.
    for _ in 0..3 {
        h.ask_link("nobody@acme.example").await.assert_status(StatusCode::OK);
    }
    h.ask_link("nobody@acme.example").await.assert_status(StatusCode::TOO_MANY_REQUESTS);
    // 20 per client: 6 so far (the held ones are not counted), then 14 more addresses.
    for i in 0..14 {
        h.ask_link(&format!("user{i}@acme.example")).await.assert_status(StatusCode::OK);
    }
    h.ask_link("fresh@acme.example").await.assert_status(StatusCode::TOO_MANY_REQUESTS);
}

async fn replies_go_through_the_pipeline_and_only_the_own_ticket_can_be_closed(backend: Backend) {
    let h = Helpdesk::on(backend, "");
    let ann = h.sign_in("ann@acme.example").await;
    // Ann answers Alf's ticket, which she sees through Acme.
    let reply = h.desk.post(&format!("/portal/tickets/{}/reply", h.alf), &ann, &[("body", "Same here.")]).await;
    reply.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), format!("/portal/tickets/{}", h.alf), "a follow-up, not a new ticket");
    let store = h.desk.store();
    let shown = store.read(|tx| tickets::show(tx, &h.alf)).unwrap();
    let last = shown.article_list.last().unwrap();
    assert_eq!((last.direction.as_str(), last.from.as_deref()), ("in", Some("ann@acme.example")));
    assert!(last.body.contains("Same here."), "{}", last.body);
    // Without the session's CSRF token nothing happens.
    let forged = [("body", "forged"), ("csrf", "0")];
    h.desk.post(&format!("/portal/tickets/{}/reply", h.alf), &ann, &forged).await.assert_status(StatusCode::FORBIDDEN);
    // A ticket she may see but that is Alf's: not hers to close.
    let refused = h.desk.post(&format!("/portal/tickets/{}/close", h.alf), &ann, &[]).await;
    refused.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    h.desk.post(&format!("/portal/tickets/{}/close", h.bea), &ann, &[]).await.assert_status(StatusCode::NOT_FOUND);
    h.desk.post(&format!("/portal/tickets/{}/close", h.ann), &ann, &[]).await.assert_status(StatusCode::SEE_OTHER);
    let store = h.desk.store();
    let states: Vec<_> = [&h.ann, &h.alf]
        .iter()
        .map(|n| store.read(|tx| tickets::show(tx, n)).unwrap().summary.state.as_str())
        .collect();
    assert_eq!(states, ["closed", "new"]);
}

/// A multipart form as a browser sends it, with one file.
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "postdesk-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"{name}\"\r\n\
                 Content-Type: text/plain\r\n\r\n"
            )
            .bytes(),
        );
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_multipart(
    desk: &Desk,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
    file: Option<(&str, &[u8])>,
) -> Response {
    let (content_type, body) = multipart(fields, file);
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::COOKIE, cookie)
        .body(Body::from(body));
    desk.send(request.unwrap()).await
}

fn ticket_count(desk: &Desk) -> usize {
    let store = desk.store();
    store.read(|tx| tickets::list(tx, &Query::default(), Utc::now())).unwrap().len()
}

async fn the_public_form_opens_a_ticket_only_once_the_address_is_confirmed(backend: Backend) {
    let closed = Helpdesk::on(backend, "");
    closed.desk.get("/support", None).await.assert_status(StatusCode::NOT_FOUND);

    let h = Helpdesk::on(backend, "[portal]\npublic_form = true\n");
    let before = ticket_count(&h.desk);
    let form = h.desk.get("/support", None).await;
    form.assert_status(StatusCode::OK);
    let cookie = format!("postdesk_support_form={}", form.cookie("postdesk_support_form").unwrap());
    let csrf = form.field("csrf");
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", "Nina Neu"),
        ("email", "Nina@NewCo.example"),
        ("subject", "Cannot log in"),
        ("text", "Since this morning."),
    ];
    let sent = post_multipart(&h.desk, "/support", &cookie, &fields, Some(("log.txt", b"error 42"))).await;
    sent.assert_status(StatusCode::OK);
    assert!(sent.text().contains("follow it within an hour"), "{}", sent.text());
    assert_eq!(ticket_count(&h.desk), before, "no ticket before the address is confirmed");
    let token = h.mailed_token(MailKind::Confirm, "nina@newco.example").expect("a confirmation link");
    let confirmed = h.press("/support/confirm", &token, "postdesk_support_confirm").await;
    confirmed.assert_status(StatusCode::OK);
    assert_eq!(ticket_count(&h.desk), before + 1);
    let store = h.desk.store();
    let newest =
        store.read(|tx| tickets::list(tx, &Query { limit: Some(1), ..Default::default() }, Utc::now())).unwrap();
    let ticket = &newest[0];
    assert!(confirmed.text().contains(&ticket.number), "the page names the ticket: {}", confirmed.text());
    assert_eq!(ticket.customer_email.as_deref(), Some("nina@newco.example"));
    assert_eq!(ticket.organisation.as_deref(), Some("newco.example"), "resolved as for mail");
    assert_eq!(ticket.ack, "queued", "acknowledged as for mail");
    let customer = store.read(|tx| customers::show(tx, "nina@newco.example")).unwrap();
    assert_eq!(customer.customer.name.as_deref(), Some("Nina Neu"));
    let files = store.read(|tx| tickets::attachments(tx, &ticket.number, None)).unwrap();
    assert_eq!(files, [("log.txt".to_owned(), b"error 42".to_vec())]);
    // The link is spent: it opens nothing any more.
    let again = h.desk.get(&format!("/support/confirm?token={token}"), None).await;
    again.assert_status(StatusCode::GONE);
    assert_eq!(ticket_count(&h.desk), before + 1);
    // Without the form's cookie: refused.
    let forged = post_multipart(&h.desk, "/support", "x=y", &fields, None).await;
    forged.assert_status(StatusCode::FORBIDDEN);
}

async fn a_signed_in_customer_opens_a_ticket_by_the_form_with_an_attachment(backend: Backend) {
    let h = Helpdesk::on(backend, "[portal]\nmax_upload_bytes = 1000\n");
    let gus = h.sign_in("gus@gamma.example").await;
    let fields = [("csrf", gus.csrf.as_str()), ("subject", "Need a key"), ("text", "For room 4.")];
    let opened = post_multipart(&h.desk, "/portal/new", &gus.cookie, &fields, Some(("key.txt", b"room 4"))).await;
    opened.assert_status(StatusCode::SEE_OTHER);
    let number = opened.location().trim_start_matches("/portal/tickets/").to_owned();
    let page = h.desk.get(&opened.location(), Some(&gus)).await;
    assert!(page.assert_status(StatusCode::OK).text().contains("key.txt"));
    let id = {
        let store = h.desk.store();
        let shown = store.read(|tx| tickets::show(tx, &number)).unwrap();
        assert_eq!(shown.summary.customer_email.as_deref(), Some("gus@gamma.example"));
        assert_eq!(shown.summary.organisation.as_deref(), Some("Gamma"));
        shown.article_list[0].attachments[0].id
    };
    let file = h.desk.get(&format!("/portal/tickets/{number}/attachments/{id}"), Some(&gus)).await;
    assert_eq!(file.assert_status(StatusCode::OK).body, b"room 4");
    // Bea sees neither the ticket nor its attachment.
    let bea = h.sign_in("bea@beta.example").await;
    let path = format!("/portal/tickets/{number}/attachments/{id}");
    h.desk.get(&path, Some(&bea)).await.assert_status(StatusCode::NOT_FOUND);
    // Over the upload limit: refused, with the limit named.
    let big = vec![b'x'; 2000];
    let refused = post_multipart(&h.desk, "/portal/new", &gus.cookie, &fields, Some(("big.txt", &big))).await;
    refused.assert_status(StatusCode::PAYLOAD_TOO_LARGE);
    // An empty message: the form again, saying why.
    let empty = [("csrf", gus.csrf.as_str()), ("subject", "x"), ("text", " ")];
    let again = post_multipart(&h.desk, "/portal/new", &gus.cookie, &empty, None).await;
    again.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.text().contains("The message is empty."), "{}", again.text());
}

async fn a_form_is_no_way_into_a_ticket_and_a_reply_is_a_persons_whatever_it_quotes(backend: Backend) {
    let h = Helpdesk::on(backend, "[portal]\npublic_form = true\n");
    // Bea (Beta shows each only their own) names Bob's ticket in a new ticket's subject.
    let bea = h.sign_in("bea@beta.example").await;
    let subject = format!("[Ticket#{}] let me in", h.bob);
    let fields = [("csrf", bea.csrf.as_str()), ("subject", subject.as_str()), ("text", "Hello")];
    let opened = post_multipart(&h.desk, "/portal/new", &bea.cookie, &fields, None).await;
    opened.assert_status(StatusCode::SEE_OTHER);
    let number = opened.location().trim_start_matches("/portal/tickets/").to_owned();
    assert!(number != h.bob && number != h.bea, "a new ticket, not a way into Bob's: {number}");
    let store = h.desk.store();
    let made = store.read(|tx| tickets::show(tx, &number)).unwrap();
    assert_eq!(made.summary.subject, "let me in");
    assert_eq!(store.read(|tx| tickets::show(tx, &h.bob)).unwrap().article_list.len(), 1, "Bob's ticket untouched");
    // A reply quoting a delivery report and a JSON notification is still Bea's reply.
    let quoted = "Your system said:\nFinal-Recipient: rfc822; bea@beta.example\nAction: failed\nStatus: 5.1.1\n\
                  {\"event\": \"failed\"}";
    let reply = h.desk.post(&format!("/portal/tickets/{}/reply", h.bea), &bea, &[("body", quoted)]).await;
    reply.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), format!("/portal/tickets/{}", h.bea));
    let page = h.desk.get(&reply.location(), Some(&bea)).await;
    assert!(page.assert_status(StatusCode::OK).text().contains("Status: 5.1.1"), "shown to her as her reply");
    // The public form's confirmation page shows what is being confirmed.
    let form = h.desk.get("/support", None).await;
    let cookie = format!("postdesk_support_form={}", form.cookie("postdesk_support_form").unwrap());
    let csrf = form.field("csrf");
    let fields = [("csrf", csrf.as_str()), ("email", "gus@gamma.example"), ("subject", "Refund"), ("text", "Pay x")];
    post_multipart(&h.desk, "/support", &cookie, &fields, None).await.assert_status(StatusCode::OK);
    let token = h.mailed_token(MailKind::Confirm, "gus@gamma.example").unwrap();
    let landing = h.desk.get(&format!("/support/confirm?token={token}"), None).await;
    let text = landing.assert_status(StatusCode::OK).text();
    assert!(text.contains("Refund") && text.contains("Pay x"), "{text}");
    h.desk.get("/support/confirm?token=nothing", None).await.assert_status(StatusCode::GONE);
}

async fn a_long_list_comes_in_pages_of_fifty(backend: Backend) {
    let h = Helpdesk::on(backend, "");
    for i in 0..51 {
        h.desk.mail(&message("gus@gamma.example", &format!("Request {i}"), &format!("gus-more-{i}")));
    }
    let gus = h.sign_in("gus@gamma.example").await;
    let first = h.desk.get("/portal", Some(&gus)).await;
    let text = first.assert_status(StatusCode::OK).text();
    let pager = &text[text.find("class=\"pager\"").expect("a next page")..];
    let href = &pager[pager.find("href=\"").unwrap() + 6..];
    let next = href[..href.find('"').unwrap()].replace("&#x2f;", "/").replace("&amp;", "&");
    let second = h.desk.get(&next, Some(&gus)).await;
    let mut all = h.listed(&gus).await;
    assert_eq!(all.len(), 50);
    let rest = second.assert_status(StatusCode::OK).text();
    let more: BTreeSet<String> =
        rest.match_indices("href=\"/portal/tickets/").map(|(at, _)| rest[at + 22..at + 38].to_owned()).collect();
    assert_eq!(more.len(), 2, "52 tickets: 50 and 2");
    all.extend(more);
    assert_eq!(all, h.visible_to("gus@gamma.example"), "the pages together are what the rule lists");
}

on_both_async!(
    each_customer_user_sees_exactly_what_the_access_rule_says,
    internal_notes_never_reach_the_portal_and_mail_text_is_escaped,
    a_sign_in_link_works_once_and_expires,
    the_answer_is_the_same_for_known_and_unknown_addresses,
    sign_in_links_are_rate_limited_per_address_and_per_client,
    replies_go_through_the_pipeline_and_only_the_own_ticket_can_be_closed,
    the_public_form_opens_a_ticket_only_once_the_address_is_confirmed,
    a_signed_in_customer_opens_a_ticket_by_the_form_with_an_attachment,
    a_form_is_no_way_into_a_ticket_and_a_reply_is_a_persons_whatever_it_quotes,
    a_long_list_comes_in_pages_of_fifty,
);
