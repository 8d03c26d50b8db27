//! The web console in-process: every route through the real router over a real
//! database, signed in as each role. What each role may do, sign-in and its limits,
//! CSRF, escaping of hostile names and subjects, the filters, replies and notes,
//! downloads, and the headers every response carries.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use postdesk::config::{self, Config, Database};
use postdesk::desk::agents::{self, Role};
use postdesk::desk::ingest::{self, Source};
use postdesk::store::shared::SharedStore;
use postdesk::store::{Store, StoreError, Tx};
use tower::ServiceExt;

use crate::harness::{Backend, Dir};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// Runs `f` on a thread of its own and waits: the store blocks (and on PostgreSQL runs a
/// runtime of its own), which a test's async task must not.
pub(crate) fn on_a_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("the store thread panicked"))
}

/// A desk's database for the test's own reads and writes, each in a transaction on a
/// thread of its own (see `on_a_thread`).
pub(crate) struct TestStore<'a>(&'a Database);

impl TestStore<'_> {
    pub(crate) fn read<T: Send, E: From<StoreError> + Send>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        on_a_thread(|| Store::existing(self.0)?.read(f))
    }

    pub(crate) fn write<T: Send, E: From<StoreError> + Send>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        on_a_thread(|| Store::create(self.0)?.write(f))
    }
}

/// A helpdesk with three agents (one per role) and a few tickets, and its console.
pub(crate) struct Desk {
    /// The config file and the database (or the PostgreSQL server holding it).
    _dir: Dir,
    pub(crate) config: Arc<Config>,
    router: Router,
}

impl Desk {
    pub(crate) fn on(backend: Backend) -> Desk {
        Desk::with_on(backend, "")
    }

    /// A desk on `backend` whose config file also has `extra`.
    pub(crate) fn with_on(backend: Backend, extra: &str) -> Desk {
        let dir = Dir::on(
            backend,
            &format!(
                "[helpdesk]\naddress = \"support@helpdesk.example\"\n\
                 [web]\nlisten = \"127.0.0.1:8080\"\nbase_url = \"https://help.example\"\n{extra}"
            ),
        );
        let config = Arc::new(config::load(Some(&dir.config()), None).unwrap());
        let store = TestStore(&config.database);
        store
            .write(|tx| {
                for (email, name, role) in [
                    ("admin@helpdesk.example", "Ada Admin", Role::Admin),
                    ("editor@helpdesk.example", "Ed Editor", Role::Editor),
                    ("agent@helpdesk.example", "Al Agent", Role::Agent),
                ] {
                    let add = agents::Add { email: email.into(), name: name.into(), role, password: PASSWORD.into() };
                    agents::add(tx, &add, chrono::Utc::now())?;
                }
                Ok::<_, postdesk::desk::error::DeskError>(())
            })
            .unwrap();
        let web = config.web.clone().unwrap();
        let shared = on_a_thread(|| SharedStore::open_blocking(&config.database).unwrap());
        let router = postdesk::web::router(postdesk::web::Console::new(shared, Arc::clone(&config), web, None));
        Desk { _dir: dir, config, router }
    }

    /// Ingests `raw` as the file `name` that arrived at `arrived`.
    pub(crate) fn ingest(&self, raw: &[u8], name: &str, arrived: chrono::DateTime<chrono::Utc>) -> ingest::Report {
        let source = Source::file(name, raw);
        on_a_thread(|| {
            let mut store = Store::existing(&self.config.database).unwrap();
            ingest::ingest_one(&mut store, &self.config, raw, &source, arrived).unwrap()
        })
    }

    /// The desk's database, for a test's own reads and writes.
    pub(crate) fn store(&self) -> TestStore<'_> {
        TestStore(&self.config.database)
    }

    /// Ingests a message as it arrived a minute ago (so that what agents do now is later
    /// activity, timestamps being to the second); returns the ticket number it made or
    /// added to.
    pub(crate) fn mail(&self, raw: &str) -> String {
        let report = self.ingest(raw.as_bytes(), "test", chrono::Utc::now() - chrono::Duration::minutes(1));
        match report.outcome {
            ingest::Outcome::Created { ticket, .. } | ingest::Outcome::FollowUp { ticket, .. } => ticket,
            other => panic!("not a ticket: {other}"),
        }
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Response {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Response { status, headers, body }
    }

    pub(crate) async fn get(&self, path: &str, session: Option<&Session>) -> Response {
        let mut request = Request::get(path);
        if let Some(s) = session {
            request = request.header(header::COOKIE, &s.cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// Posts a form; `csrf` is added from the session unless the form has one.
    pub(crate) async fn post(&self, path: &str, session: &Session, form: &[(&str, &str)]) -> Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            fields.push(("csrf", &session.csrf));
        }
        self.post_raw(path, Some(&session.cookie), &fields).await
    }

    pub(crate) async fn post_raw(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Response {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            request = request.header(header::COOKIE, c);
        }
        self.send(request.body(Body::from(serde_urlencoded::to_string(form).unwrap())).unwrap()).await
    }

    pub(crate) async fn sign_in(&self, email: &str) -> Session {
        match self.try_sign_in(email, PASSWORD, "10.0.0.1").await {
            Ok(session) => session,
            Err(refused) => panic!("{email} could not sign in: {} {}", refused.status, refused.text()),
        }
    }

    /// Signs in as a browser does: the form (and its cookie), then the post.
    async fn try_sign_in(&self, email: &str, password: &str, _client: &str) -> Result<Session, Response> {
        let form = self.get("/login", None).await;
        let sign_in_cookie = form.cookie("postdesk_sign_in").expect("the sign-in form sets its cookie");
        let token = form.field("csrf");
        let fields = [("csrf", token.as_str()), ("email", email), ("password", password), ("next", "/tickets")];
        let response = self.post_raw("/login", Some(&format!("postdesk_sign_in={sign_in_cookie}")), &fields).await;
        let Some(session) = response.cookie("postdesk_session").filter(|_| response.status == StatusCode::SEE_OTHER)
        else {
            return Err(response);
        };
        let cookie = format!("postdesk_session={session}");
        let page = self.get("/tickets", Some(&Session { cookie: cookie.clone(), csrf: String::new() })).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        Ok(Session { csrf: page.field("csrf"), cookie })
    }
}

pub(crate) struct Session {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: header::HeaderName) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }

    pub(crate) fn location(&self) -> String {
        self.header(header::LOCATION)
    }

    /// The value a Set-Cookie of the response gives `name`.
    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        self.headers.get_all(header::SET_COOKIE).iter().find_map(|v| {
            let text = v.to_str().ok()?;
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (n, value) = pair.split_once('=')?;
            (n == name && !value.is_empty()).then(|| value.to_owned())
        })
    }

    /// The value of the first form field `name` on the page.
    pub(crate) fn field(&self, name: &str) -> String {
        let text = self.text();
        let at = text.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no field {name} in {text}"));
        let rest = &text[at + name.len() + 15..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    pub(crate) fn assert_status(&self, status: StatusCode) -> &Response {
        assert_eq!(self.status, status, "{}", self.text());
        self
    }
}

pub(crate) fn message(from: &str, subject: &str, id: &str) -> String {
    format!(
        "From: {from}\r\nTo: support@helpdesk.example\r\nSubject: {subject}\r\nMessage-ID: <{id}@test.example>\r\n\
         Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\nPlease help.\r\n"
    )
}

async fn signed_out_requests_go_to_the_sign_in_page(backend: Backend) {
    let desk = Desk::on(backend);
    let number = desk.mail(&message("ann@acme.example", "printer", "m1"));
    for path in [
        "/tickets".to_owned(),
        format!("/tickets/{number}"),
        "/customers?view=with".to_owned(),
        "/customers/1".to_owned(),
        "/customers/new".to_owned(),
        "/orgs".to_owned(),
        "/failed".to_owned(),
        "/outbox".to_owned(),
        format!("/tickets/{number}/articles/1/raw"),
    ] {
        let response = desk.get(&path, None).await;
        response.assert_status(StatusCode::SEE_OTHER);
        let next = postdesk_next(&response.location());
        assert_eq!(next, path, "the sign-in page brings the agent back");
    }
    let forged = desk.post_raw(&format!("/tickets/{number}/state"), None, &[("state", "closed")]).await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
    assert_eq!(postdesk_next(&forged.location()), "/tickets", "a form is not replayed after signing in");
    assert!(desk.get("/login", None).await.text().contains("name=\"password\""));
}

fn postdesk_next(location: &str) -> String {
    let query = location.strip_prefix("/login?").unwrap_or_else(|| panic!("not the sign-in page: {location}"));
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    pairs.into_iter().find(|(k, _)| k == "next").unwrap().1
}

async fn sign_in_is_refused_alike_for_a_wrong_password_and_an_unknown_account_and_then_limited(backend: Backend) {
    let desk = Desk::on(backend);
    for email in ["agent@helpdesk.example", "nobody@helpdesk.example"] {
        let refused = desk.try_sign_in(email, "wrong password!", "10.0.0.1").await.err().unwrap();
        refused.assert_status(StatusCode::UNAUTHORIZED);
        assert!(refused.text().contains("Wrong e-mail or password."));
    }
    for _ in 0..4 {
        desk.try_sign_in("agent@helpdesk.example", "wrong password!", "10.0.0.1").await.err().unwrap();
    }
    // Five failures for the account: even the right password waits now.
    let held = desk.try_sign_in("agent@helpdesk.example", PASSWORD, "10.0.0.1").await.err().unwrap();
    held.assert_status(StatusCode::TOO_MANY_REQUESTS);
    assert!(held.text().contains("Too many failed sign-ins"), "{}", held.text());
    // Another account is not held.
    desk.sign_in("editor@helpdesk.example").await;
    // A sign-in form without its cookie is refused.
    let form = desk.get("/login", None).await;
    let fields =
        [("csrf", form.field("csrf")), ("email", "editor@helpdesk.example".into()), ("password", PASSWORD.into())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    desk.post_raw("/login", None, &fields).await.assert_status(StatusCode::FORBIDDEN);
}

async fn the_session_cookie_is_http_only_and_strict_and_sign_out_ends_it(backend: Backend) {
    let desk = Desk::on(backend);
    let form = desk.get("/login", None).await;
    let sign_in_cookie = form.cookie("postdesk_sign_in").unwrap();
    let fields = [
        ("csrf", form.field("csrf")),
        ("email", "agent@helpdesk.example".to_owned()),
        ("password", PASSWORD.to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = desk.post_raw("/login", Some(&format!("postdesk_sign_in={sign_in_cookie}")), &fields).await;
    let set = response
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("postdesk_session="))
        .unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{part} missing: {set}");
    }
    assert!(!set.contains("Secure"), "not without secure_cookies: {set}");
    let session = desk.sign_in("agent@helpdesk.example").await;
    desk.post("/logout", &session, &[]).await.assert_status(StatusCode::SEE_OTHER);
    let after = desk.get("/tickets", Some(&session)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the session is gone");
}

async fn forms_without_their_csrf_token_are_refused(backend: Backend) {
    let desk = Desk::on(backend);
    let number = desk.mail(&message("ann@acme.example", "printer", "m1"));
    let session = desk.sign_in("admin@helpdesk.example").await;
    let path = format!("/tickets/{number}/state");
    for form in [vec![("state", "closed")], vec![("state", "closed"), ("csrf", "not-the-token")]] {
        desk.post_raw(&path, Some(&session.cookie), &form).await.assert_status(StatusCode::FORBIDDEN);
    }
    let page = desk.get(&format!("/tickets/{number}"), Some(&session)).await;
    assert!(page.text().contains("state-new"), "nothing changed");
    desk.post(&path, &session, &[("state", "closed")]).await.assert_status(StatusCode::SEE_OTHER);
    assert!(desk.get(&format!("/tickets/{number}"), Some(&session)).await.text().contains("state-closed"));
}

async fn agents_read_and_answer_but_only_admins_and_editors_change_customers(backend: Backend) {
    let desk = Desk::on(backend);
    desk.mail(&message("ann@acme.example", "printer", "m1"));
    let agent = desk.sign_in("agent@helpdesk.example").await;
    let customers = desk.get("/customers", Some(&agent)).await;
    customers.assert_status(StatusCode::OK);
    assert!(!customers.text().contains("New Customer"), "no button for an agent");
    desk.get("/customers/new", Some(&agent)).await.assert_status(StatusCode::FORBIDDEN);
    let add = [("email", "bob@acme.example"), ("name", "Bob")];
    desk.post("/customers", &agent, &add).await.assert_status(StatusCode::FORBIDDEN);
    desk.post("/orgs", &agent, &[("name", "Globex")]).await.assert_status(StatusCode::FORBIDDEN);
    desk.post("/customers/1/emails", &agent, &[("email", "ann@home.example"), ("action", "add")])
        .await
        .assert_status(StatusCode::FORBIDDEN);
    for role in ["editor@helpdesk.example", "admin@helpdesk.example"] {
        let session = desk.sign_in(role).await;
        assert!(desk.get("/customers", Some(&session)).await.text().contains("New Customer"));
        desk.get("/customers/new", Some(&session)).await.assert_status(StatusCode::OK);
        let email = format!("bob.{}", role);
        let added = desk.post("/customers", &session, &[("email", &email), ("name", "Bob")]).await;
        added.assert_status(StatusCode::SEE_OTHER);
        let page = desk.get(&added.location(), Some(&session)).await;
        assert!(page.text().contains(&email), "{}", page.text());
    }
}

async fn hostile_names_and_subjects_are_shown_as_text(backend: Backend) {
    let desk = Desk::on(backend);
    let raw = "From: \"<script>alert(1)</script>\" <eve@evil.example>\r\nTo: support@helpdesk.example\r\n\
               Subject: <img src=x onerror=alert(2)>\r\nMessage-ID: <evil@evil.example>\r\n\
               Content-Type: text/html\r\n\r\n<p>Hello</p><script>alert(3)</script><img src=\"https://tracker.example/p.gif\">\r\n";
    let number = desk.mail(raw);
    let session = desk.sign_in("admin@helpdesk.example").await;
    for path in
        ["/tickets".to_owned(), format!("/tickets/{number}"), "/customers".to_owned(), "/customers/1".to_owned()]
    {
        let page = desk.get(&path, Some(&session)).await;
        page.assert_status(StatusCode::OK);
        let text = page.text();
        for live in ["<script>alert", "<img src=x"] {
            assert!(!text.contains(live), "{live} is live on {path}:\n{text}");
        }
    }
    let ticket = desk.get(&format!("/tickets/{number}"), Some(&session)).await.text();
    assert!(ticket.contains("&lt;img src=x onerror=alert(2)&gt;"), "the subject as text:\n{ticket}");
    assert!(ticket.contains("<iframe sandbox"), "the HTML part only in a sandboxed frame");
    assert!(!ticket.contains("tracker.example"), "remote content is dropped");
    let customers = desk.get("/customers", Some(&session)).await.text();
    assert!(customers.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{customers}");
}

async fn every_response_carries_the_security_headers(backend: Backend) {
    let desk = Desk::on(backend);
    let session = desk.sign_in("agent@helpdesk.example").await;
    for (path, signed_in) in [("/login", false), ("/tickets", true), ("/nope", true), ("/static/console.css", false)] {
        let response = desk.get(path, signed_in.then_some(&session)).await;
        let csp = response.header(header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(response.header(header::X_FRAME_OPTIONS), "DENY", "{path}");
        assert_eq!(response.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
    }
    desk.get("/nope", Some(&session)).await.assert_status(StatusCode::NOT_FOUND);
}

async fn the_customers_page_views_months_and_search(backend: Backend) {
    let desk = Desk::on(backend);
    desk.mail(&message("ann@acme.example", "printer", "m1"));
    desk.mail(&message("bob@globex.example", "scanner", "m2"));
    let session = desk.sign_in("admin@helpdesk.example").await;
    desk.post("/customers", &session, &[("email", "carol@initech.example"), ("name", "Carol")])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let cases = [
        ("/customers".to_owned(), vec!["ann@acme.example", "bob@globex.example", "carol@initech.example"]),
        ("/customers?view=with".to_owned(), vec!["ann@acme.example", "bob@globex.example"]),
        ("/customers?view=without".to_owned(), vec!["carol@initech.example"]),
        (
            format!("/customers?view=all&month={month}"),
            vec!["ann@acme.example", "bob@globex.example", "carol@initech.example"],
        ),
        ("/customers?view=all&month=2001-01".to_owned(), vec![]),
        ("/customers?view=all&q=GLOBEX".to_owned(), vec!["bob@globex.example"]),
    ];
    for (path, want) in cases {
        let page = desk.get(&path, Some(&session)).await;
        page.assert_status(StatusCode::OK);
        let text = page.text();
        for email in ["ann@acme.example", "bob@globex.example", "carol@initech.example"] {
            assert_eq!(text.contains(&format!("<td>{email}</td>")), want.contains(&email), "{email} on {path}");
        }
    }
    let all = desk.get("/customers", Some(&session)).await.text();
    for (label, count) in [("All", 3), ("With tickets", 2), ("Without tickets", 1)] {
        assert!(all.contains(&format!("{label} <span class=\"count\">{count}</span>")), "{label} {count}:\n{all}");
    }
    assert!(all.contains(&format!("<option value=\"{month}\">{month}</option>")), "the month is offered");
    desk.get("/customers?view=some", Some(&session)).await.assert_status(StatusCode::BAD_REQUEST);
    desk.get("/customers?month=2026-13", Some(&session)).await.assert_status(StatusCode::BAD_REQUEST);
}

async fn a_customer_page_edits_addresses_and_says_what_it_refuses(backend: Backend) {
    let desk = Desk::on(backend);
    desk.mail(&message("ann@acme.example", "printer", "m1"));
    desk.mail(&message("bob@acme.example", "scanner", "m2"));
    let session = desk.sign_in("editor@helpdesk.example").await;
    let ann = "/customers/1";
    let add = desk.post(&format!("{ann}/emails"), &session, &[("email", "Ann@Home.example"), ("action", "add")]).await;
    add.assert_status(StatusCode::SEE_OTHER);
    desk.post(&format!("{ann}/emails"), &session, &[("email", "ann@home.example"), ("action", "primary")])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    let page = desk.get(ann, Some(&session)).await.text();
    let first = page.find("<span class=\"email\">").unwrap();
    assert!(
        page[first..].starts_with("<span class=\"email\">ann@home.example</span> <span class=\"mark\">primary"),
        "{page}"
    );
    let taken =
        desk.post(&format!("{ann}/emails"), &session, &[("email", "bob@acme.example"), ("action", "add")]).await;
    taken.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(taken.text().contains("bob@acme.example already belongs to customer bob@acme.example"), "{}", taken.text());
    desk.post(&format!("{ann}/emails"), &session, &[("email", "ann@acme.example"), ("action", "remove")])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    let last =
        desk.post(&format!("{ann}/emails"), &session, &[("email", "ann@home.example"), ("action", "remove")]).await;
    last.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    desk.post(ann, &session, &[("name", "Ann Smith"), ("org", "")]).await.assert_status(StatusCode::SEE_OTHER);
    let page = desk.get(ann, Some(&session)).await.text();
    assert!(page.contains("<h1>Ann Smith</h1>"), "{page}");
    desk.get("/customers/999", Some(&session)).await.assert_status(StatusCode::NOT_FOUND);
}

async fn the_tickets_list_filters_counts_and_pages(backend: Backend) {
    let desk = Desk::on(backend);
    let mut numbers = Vec::new();
    for i in 0..55 {
        let from = if i % 2 == 0 { "ann@acme.example" } else { "bob@globex.example" };
        numbers.push(desk.mail(&message(from, &format!("case {i:02}"), &format!("t{i}"))));
    }
    let session = desk.sign_in("agent@helpdesk.example").await;
    desk.post(&format!("/tickets/{}/state", numbers[0]), &session, &[("state", "pending")]).await;
    let all = desk.get("/tickets", Some(&session)).await.text();
    assert!(all.contains("All <span class=\"count\">55</span>"), "{all}");
    assert!(all.contains("pending <span class=\"count\">1</span>"));
    assert_eq!(all.matches("<tr class=").count(), 50, "a page holds 50");
    let first_row = &all[all.find("<tbody>").unwrap()..];
    assert!(
        first_row.contains(&numbers[0][..]) && first_row.find(&numbers[0][..]) < first_row.find(&numbers[54][..]),
        "newest activity first"
    );
    let next = all[all.find("rel=\"next\"").map(|i| all[..i].rfind("href=\"").unwrap() + 6).unwrap()..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#x2f;", "/");
    let second = desk.get(&next, Some(&session)).await.text();
    assert_eq!(second.matches("<tr class=").count(), 5);
    let acme = desk.get("/tickets?org=acme.example", Some(&session)).await.text();
    assert!(acme.contains("All <span class=\"count\">28</span>"), "{acme}");
    let pending = desk.get("/tickets?state=pending", Some(&session)).await.text();
    assert_eq!(pending.matches("<tr class=").count(), 1);
    let search = desk.get("/tickets?q=CASE+07", Some(&session)).await.text();
    assert_eq!(search.matches("<tr class=").count(), 1);
    desk.get("/tickets?state=escalated", Some(&session)).await.assert_status(StatusCode::BAD_REQUEST);
    desk.get("/tickets?org=Nope", Some(&session)).await.assert_status(StatusCode::NOT_FOUND);
}

async fn a_reply_goes_to_the_outbox_and_a_note_does_not(backend: Backend) {
    let desk = Desk::on(backend);
    let number = desk.mail(&message("ann@acme.example", "printer", "m1"));
    let session = desk.sign_in("agent@helpdesk.example").await;
    let ticket = format!("/tickets/{number}");
    desk.post(&format!("{ticket}/reply"), &session, &[("body", "Try turning it off."), ("kind", "reply")])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    desk.post(&format!("{ticket}/reply"), &session, &[("body", "Customer sounds cross."), ("kind", "note")])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    desk.post(&format!("{ticket}/reply"), &session, &[("body", "  "), ("kind", "reply")])
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    let page = desk.get(&ticket, Some(&session)).await.text();
    assert!(page.contains("Reply by Al Agent") && page.contains("Try turning it off."), "{page}");
    assert!(page.contains("Internal note by Al Agent") && page.contains("Customer sounds cross."));
    let store = desk.store();
    let rows = store.read(|tx| postdesk::desk::outbox::list(tx, None)).unwrap();
    let replies: Vec<_> = rows.iter().filter(|r| r.kind == postdesk::core::ack::MailKind::Reply).collect();
    assert_eq!(replies.len(), 1, "one reply, no note, in the outbox");
    assert_eq!(replies[0].recipient, "ann@acme.example");
    assert!(replies[0].subject.contains(&format!("[Ticket#{number}]")), "{}", replies[0].subject);
    assert_eq!(replies[0].in_reply_to.as_deref(), Some("m1@test.example"));
    let outbox = desk.get("/outbox", Some(&session)).await.text();
    assert!(outbox.contains("<td>reply</td>"), "{outbox}");
    // The customer's answer to the reply lands on the ticket by its In-Reply-To alone.
    let answer = format!(
        "From: ann@acme.example\r\nTo: support@helpdesk.example\r\nSubject: thanks\r\nMessage-ID: <a2@test.example>\r\n\
         In-Reply-To: <{}>\r\n\r\nIt works.\r\n",
        replies[0].message_id
    );
    assert_eq!(desk.mail(&answer), number);
    let list = desk.get("/tickets", Some(&session)).await.text();
    assert!(list.contains("new reply"), "marked until an agent looks: {list}");
    desk.get(&ticket, Some(&session)).await;
    assert!(!desk.get("/tickets", Some(&session)).await.text().contains("new reply"));
}

async fn owners_states_and_downloads(backend: Backend) {
    let desk = Desk::on(backend);
    let raw = "From: ann@acme.example\r\nTo: support@helpdesk.example\r\nSubject: logs\r\nMessage-ID: <l1@acme.example>\r\n\
               MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
               see attached\r\n--b\r\nContent-Type: text/html; name=\"../../x.html\"\r\nContent-Disposition: attachment; \
               filename=\"../../x.html\"\r\n\r\n<script>alert(1)</script>\r\n--b--\r\n";
    let number = desk.mail(raw);
    let session = desk.sign_in("admin@helpdesk.example").await;
    let ticket = format!("/tickets/{number}");
    desk.post(&format!("{ticket}/owner"), &session, &[("owner", "3")]).await.assert_status(StatusCode::SEE_OTHER);
    assert!(desk.get(&ticket, Some(&session)).await.text().contains("<dd>Al Agent</dd>"));
    let owned = desk.get("/tickets?owner=3", Some(&session)).await.text();
    assert_eq!(owned.matches("<tr class=").count(), 1);
    desk.post(&format!("{ticket}/owner"), &session, &[("owner", "99")]).await.assert_status(StatusCode::NOT_FOUND);
    let raw_download = desk.get(&format!("{ticket}/articles/1/raw"), Some(&session)).await;
    raw_download.assert_status(StatusCode::OK);
    assert!(raw_download.header(header::CONTENT_DISPOSITION).starts_with("attachment;"));
    assert!(raw_download.body.starts_with(b"From: ann@acme.example"));
    let page = desk.get(&ticket, Some(&session)).await.text();
    let link = page.find(&format!("{ticket}/attachments/")).expect("an attachment link");
    let href: String = page[link..].split('"').next().unwrap().to_owned();
    let file = desk.get(&href, Some(&session)).await;
    file.assert_status(StatusCode::OK);
    assert_eq!(file.header(header::CONTENT_TYPE), "application/octet-stream", "never shown as HTML");
    let disposition = file.header(header::CONTENT_DISPOSITION);
    assert!(disposition.starts_with("attachment; filename=\"x.html\""), "{disposition}");
    desk.get(&format!("/tickets/{number}/attachments/999"), Some(&session)).await.assert_status(StatusCode::NOT_FOUND);
    desk.get("/tickets/2020010110000016", Some(&session)).await.assert_status(StatusCode::NOT_FOUND);
}

async fn organisations_failed_messages_and_the_outbox(backend: Backend) {
    let desk = Desk::on(backend);
    desk.mail(&message("ann@initech.example", "printer", "m1"));
    desk.mail(&message("bob@hooli.example", "scanner", "m2"));
    let session = desk.sign_in("editor@helpdesk.example").await;
    let added =
        desk.post("/orgs", &session, &[("name", "Globex Corp"), ("domains", "globex.example, globex.test")]).await;
    added.assert_status(StatusCode::SEE_OTHER);
    let globex = added.location();
    let page = desk.get(&globex, Some(&session)).await.text();
    assert!(page.contains("<h1>Globex Corp</h1>") && page.contains("globex.test"), "{page}");
    desk.post(&globex, &session, &[("rename", "Globex"), ("first_response", "4")])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    desk.post(&format!("{globex}/domains"), &session, &[("domain", "globex.test"), ("action", "remove")])
        .await
        .assert_status(StatusCode::SEE_OTHER);
    let free = desk.post(&format!("{globex}/domains"), &session, &[("domain", "gmail.com"), ("action", "add")]).await;
    free.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(free.text().contains("gmail.com is a free-mail domain"), "{}", free.text());
    let page = desk.get(&globex, Some(&session)).await.text();
    assert!(
        page.contains("<h1>Globex</h1>") && !page.contains("globex.test") && page.contains("value=\"4\""),
        "{page}"
    );
    let orgs = desk.get("/orgs", Some(&session)).await.text();
    let initech = orgs.find(">initech.example</a>").expect("the organisation ingest made");
    let initech_link = orgs[..initech].rsplit("href=\"").next().unwrap().trim_end_matches('"').to_owned();
    let merged = desk.post(&format!("{initech_link}/merge"), &session, &[("into", "Globex")]).await;
    merged.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(merged.location(), globex, "merged into Globex");
    let page = desk.get(&globex, Some(&session)).await.text();
    assert!(
        page.contains("initech.example") && page.contains("ann@initech.example"),
        "domains and members moved: {page}"
    );

    // A message too deeply nested to be a ticket is kept as failed, shown, downloadable.
    let nested = (0..60).fold("x\r\n".to_owned(), |inner, i| {
        format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n{inner}\r\n--b{i}--\r\n")
    });
    let raw = format!(
        "From: eve@evil.example\r\nSubject: deep\r\nMessage-ID: <deep@evil.example>\r\nMIME-Version: 1.0\r\n{nested}"
    );
    let report = desk.ingest(raw.as_bytes(), "deep.eml", chrono::Utc::now());
    assert!(matches!(report.outcome, ingest::Outcome::Failed { .. }), "{}", report.outcome);
    let failed = desk.get("/failed", Some(&session)).await.text();
    assert!(failed.contains("deep.eml"), "{failed}");
    let download = desk.get("/failed/1/raw", Some(&session)).await;
    assert_eq!(download.body, raw.as_bytes());
    desk.post("/failed/1/retry", &session, &[]).await.assert_status(StatusCode::SEE_OTHER);
    desk.post("/failed/99/retry", &session, &[]).await.assert_status(StatusCode::NOT_FOUND);

    let outbox = desk.get("/outbox", Some(&session)).await.text();
    assert_eq!(outbox.matches("<td>ack</td>").count(), 2, "{outbox}");
    desk.post("/outbox/1/retry", &session, &[]).await.assert_status(StatusCode::SEE_OTHER);
    desk.post("/outbox/99/retry", &session, &[]).await.assert_status(StatusCode::NOT_FOUND);
}

#[test]
fn postdesk_web_serves_the_console_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    let unset = crate::harness::Dir::new("");
    let refused = unset.run(&["web"]);
    refused.assert_code(64);
    assert!(refused.stderr.contains("[web] listen is not set"), "{}", refused.stderr);
    let port = crate::servers::free_ports(1)[0];
    let dir = crate::harness::Dir::new(&format!("[web]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut child = dir.command(&["web"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    crate::daemon::wait_until(std::time::Duration::from_secs(20), "postdesk web listens", || {
        crate::servers::port_accepts(port)
    });
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n") && response.contains("name=\"password\""), "{response}");
    // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "a clean stop: {status}");
}

async fn the_organisations_list_pages(backend: Backend) {
    let desk = Desk::on(backend);
    for i in 0..105 {
        desk.mail(&message(&format!("user@company{i:03}.example"), &format!("case {i}"), &format!("o{i}")));
    }
    let session = desk.sign_in("agent@helpdesk.example").await;
    let first = desk.get("/orgs", Some(&session)).await.text();
    assert_eq!(first.matches("<a href=\"/orgs/").count(), 100, "a page holds 100");
    assert!(first.contains("Page 1 of 2") && first.contains("company000.example"), "{first}");
    let second = desk.get("/orgs?page=2", Some(&session)).await.text();
    assert_eq!(second.matches("<a href=\"/orgs/").count(), 5);
    assert!(second.contains("company104.example") && second.contains("rel=\"prev\""));
    desk.get("/orgs?page=x", Some(&session)).await.assert_status(StatusCode::BAD_REQUEST);
}

/// A provider that needs sign-in is said on the tickets page, with the command; once it
/// is signed in, the notice is gone.
async fn the_tickets_page_says_when_an_oauth_sign_in_is_needed(backend: Backend) {
    let desk = Desk::with_on(
        backend,
        "[oauth2.m365]\nprovider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"abc\"\n",
    );
    let session = desk.sign_in("agent@helpdesk.example").await;
    let page = desk.get("/tickets", Some(&session)).await.text();
    assert!(
        page.contains("<strong>m365</strong> needs sign-in") && page.contains("postdesk oauth login m365"),
        "{page}"
    );
    let store = desk.store();
    let now = chrono::Utc::now();
    let issued = postdesk::core::oauth::Issued {
        access: postdesk::core::oauth::AccessToken {
            secret: postdesk::secret::Secret::new("access"),
            issued_at: now,
            expires_at: now + chrono::Duration::hours(1),
        },
        refresh_token: Some(postdesk::secret::Secret::new("refresh")),
    };
    store.write(|tx| postdesk::desk::oauth::signed_in(tx, "m365", &issued, now)).unwrap();
    let page = desk.get("/tickets", Some(&session)).await.text();
    assert!(!page.contains("needs sign-in"), "{page}");
}

on_both_async!(
    signed_out_requests_go_to_the_sign_in_page,
    sign_in_is_refused_alike_for_a_wrong_password_and_an_unknown_account_and_then_limited,
    the_session_cookie_is_http_only_and_strict_and_sign_out_ends_it,
    forms_without_their_csrf_token_are_refused,
    agents_read_and_answer_but_only_admins_and_editors_change_customers,
    hostile_names_and_subjects_are_shown_as_text,
    every_response_carries_the_security_headers,
    the_customers_page_views_months_and_search,
    a_customer_page_edits_addresses_and_says_what_it_refuses,
    the_tickets_list_filters_counts_and_pages,
    a_reply_goes_to_the_outbox_and_a_note_does_not,
    owners_states_and_downloads,
    organisations_failed_messages_and_the_outbox,
    the_organisations_list_pages,
    the_tickets_page_says_when_an_oauth_sign_in_is_needed,
);
