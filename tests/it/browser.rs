//! The console in a real browser: headless Chromium (Debian's, driven over chromedriver
//! with fantoccini) against `postdesk run` serving the console, with a real Dovecot and
//! SMTP server behind it. An agent signs in, works the Customers page, opens the ticket a
//! customer's mail made, answers it — the reply reaches the customer's mailbox — and the
//! customer's answer comes back onto the ticket; then the agent closes it.
//!
//! The portal too: a customer signs in by the link mailed to her mailbox, sees her
//! company's tickets and answers one, and the agent sees the answer; a new customer's
//! request by the public form opens a ticket once she followed the confirmation link.
//!
//! With `SCREENSHOTS_DIR` set, the tickets list, a ticket, the Customers page and the
//! portal's pages are saved there as PNG (the README's pictures:
//! `SCREENSHOTS_DIR=docs cargo test browser`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::daemon::wait_until;
use crate::dovecot::Dovecot;
use crate::harness::Dir;
use crate::servers::{free_ports, kill_group, port_accepts};
use crate::smtp::{DeliverTo, SmtpOptions, SmtpServer};

const DOMAIN: &str = "mail.test";
const HELPDESK: &str = "support@mail.test";
const ALICE: &str = "alice@mail.test";
/// A new customer, who writes in by the public support form.
const CAROL: &str = "carol@mail.test";
const IMAP_PASSWORD: &str = "pw-browser";
const ADMIN: &str = "ada@mail.test";
const ADMIN_PASSWORD: &str = "a long enough password";
const WAIT: Duration = Duration::from_secs(30);

/// Dovecot, an SMTP server delivering into it, `postdesk run` with the console, and
/// chromedriver. Fields drop in order: the daemon before the servers it uses.
struct World {
    _daemon: Running,
    _chromedriver: Running,
    smtp: SmtpServer,
    dovecot: Dovecot,
    dir: Dir,
    web: String,
    driver_port: u16,
}

/// A child process in its own process group, killed with it on drop.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

fn spawn(mut command: Command) -> Running {
    use std::os::unix::process::CommandExt;
    let child = command.process_group(0).stdin(Stdio::null()).spawn().expect("spawn");
    Running(Some(child))
}

impl World {
    fn start() -> World {
        let dovecot = Dovecot::start(&[(HELPDESK, IMAP_PASSWORD), (ALICE, IMAP_PASSWORD), (CAROL, IMAP_PASSWORD)]);
        let smtp = SmtpServer::start(SmtpOptions {
            tls: false,
            auth: None,
            deliver_to: Some(DeliverTo::dovecot(&dovecot, DOMAIN)),
            ..SmtpOptions::default()
        });
        let [web_port, driver_port] = free_ports(2)[..] else { unreachable!() };
        let config = format!(
            "[helpdesk]\naddress = \"{HELPDESK}\"\nname = \"Mail Test Support\"\ninternal_domains = []\n\
             [[mailbox]]\nname = \"support\"\naddress = \"{HELPDESK}\"\nhost = \"127.0.0.1\"\nport = {}\n\
             ca_file = \"{}\"\nusername = \"{HELPDESK}\"\npassword = \"{IMAP_PASSWORD}\"\npoll_interval_secs = 1\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [web]\nlisten = \"127.0.0.1:{web_port}\"\n[portal]\npublic_form = true\n",
            dovecot.imaps_port(),
            dovecot.ca_file().display(),
            smtp.port(),
        );
        let dir = Dir::new(&config);
        let added = dir.run_with_stdin(
            &["agents", "add", ADMIN, "--name", "Ada Admin", "--role", "admin"],
            Some(format!("{ADMIN_PASSWORD}\n").as_bytes()),
        );
        added.assert_code(0);
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let mut run = Command::new(env!("CARGO_BIN_EXE_postdesk"));
        run.arg("--config").arg(dir.config()).arg("run").stdout(Stdio::null()).stderr(log);
        let daemon = spawn(run);
        let mut driver = Command::new("/usr/bin/chromedriver");
        driver.arg(format!("--port={driver_port}")).stdout(Stdio::null()).stderr(Stdio::null());
        let chromedriver = spawn(driver);
        wait_until(WAIT, "the console and chromedriver listen", || port_accepts(web_port) && port_accepts(driver_port));
        World {
            _daemon: daemon,
            _chromedriver: chromedriver,
            smtp,
            dovecot,
            dir,
            web: format!("http://127.0.0.1:{web_port}"),
            driver_port,
        }
    }

    async fn browser(&self) -> Client {
        chromium(self.driver_port, &self.dir.path().join("chromium-profile")).await
    }

    fn tickets(&self) -> Vec<Value> {
        self.dir.json(&["tickets", "list"]).as_array().unwrap().clone()
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

/// A headless Chromium session through the chromedriver on `driver_port`.
async fn chromium(driver_port: u16, profile: &std::path::Path) -> Client {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
            ],
        }
    });
    let Value::Object(capabilities) = capabilities else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// `postdesk oauth login --browser`: the address it prints, opened in Chromium, signs in
/// at the OAuth2 test server (authorization code with PKCE) and comes back to the
/// command's loopback redirect, which stores the refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_login_in_a_browser_comes_back_to_the_loopback_redirect() {
    use std::io::{BufRead, BufReader};
    let server = crate::oauth_server::OAuthServer::start(3600, ALICE);
    let dir = Dir::new(&server.provider_config("test", "refresh_token"));
    let mut login = dir.command(&["oauth", "login", "test", "--browser"]);
    let mut child = login.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.trim().starts_with("http://").then(|| l.trim().to_owned()))
        .expect("`oauth login --browser` prints the address to open");
    assert!(
        address.contains("code_challenge_method=S256") && address.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A")
    );
    let driver_port = free_ports(1)[0];
    let mut driver = Command::new("/usr/bin/chromedriver");
    driver.arg(format!("--port={driver_port}")).stdout(Stdio::null()).stderr(Stdio::null());
    let _chromedriver = spawn(driver);
    wait_until(WAIT, "chromedriver listens", || port_accepts(driver_port));
    let browser = chromium(driver_port, &dir.path().join("chromium-profile")).await;
    // The test server signs in whoever the hint names, as a person would at the provider.
    browser.goto(&format!("{address}&login_hint=alice%40mail.test")).await.unwrap();
    let mut status = None;
    for _ in 0..300 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = body_text(&browser).await;
    browser.close().await.unwrap();
    if status.is_none() {
        let _ = child.kill();
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {rest:?}\n{page}\n{}", server.log());
    assert!(rest.iter().any(|l| l.starts_with("Signed in")), "{rest:?}");
    assert!(page.contains("postdesk has the sign-in"), "{page}");
    assert_eq!(dir.json(&["oauth", "status"])[0]["state"], "ok");
}

/// Fills the field `name` of the page's form `form` (a CSS selector).
async fn fill(browser: &Client, form: &str, name: &str, text: &str) {
    let field = browser.find(Locator::Css(&format!("{form} [name=\"{name}\"]"))).await.expect(name);
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

/// Waits (bounded) until the browser is on `path`: a click that submits a form or
/// follows a link returns before the next page is there.
async fn wait_for_path(browser: &Client, path: &str) {
    for _ in 0..150 {
        if browser.current_url().await.unwrap().path() == path {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never reached {path}; on {}:\n{}", browser.current_url().await.unwrap(), body_text(browser).await);
}

/// The page's text; while a click's navigation is still replacing the page, the body
/// found may go stale before it is read, and is looked for again.
async fn body_text(browser: &Client) -> String {
    for _ in 0..100 {
        if let Ok(body) = browser.find(Locator::Css("body")).await {
            if let Ok(text) = body.text().await {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page has no body that stays long enough to be read");
}

/// Waits (bounded) until the page in the browser says `needle`: a click that submits a
/// form returns before the answer is there. It never reloads: reloading a page that
/// answered a POST sends the form again (a sign-in or confirmation link would be used twice).
async fn wait_for_text(browser: &Client, needle: &str) {
    wait_for(browser, needle, false).await;
}

/// Waits (bounded) until a page reached by a link, reloaded, says `needle`: for what
/// arrives later by mail, through the daemon.
async fn wait_for_text_after_reloads(browser: &Client, needle: &str) {
    wait_for(browser, needle, true).await;
}

async fn wait_for(browser: &Client, needle: &str, reload: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !body_text(browser).await.contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never said {needle:?}:\n{}",
            body_text(browser).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if reload {
            browser.refresh().await.unwrap();
        }
    }
}

async fn wait_until_found(browser: &Client, css: &str) {
    let found = browser.wait().at_most(WAIT).for_element(Locator::Css(css)).await;
    assert!(found.is_ok(), "no {css} on:\n{}", body_text(browser).await);
}

async fn screenshot(browser: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("SCREENSHOTS_DIR") {
        let png = browser.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_a_customer_and_an_admin_works_the_customers_page() {
    let world = World::start();
    let first =
        "From: Alice Liddell <alice@mail.test>\r\nTo: support@mail.test\r\nSubject: The printer prints <nothing>\r\n\
                 Message-ID: <first@mail.test>\r\n\r\nIt has been silent since Monday.\r\n";
    world.smtp.submit(ALICE, HELPDESK, first.as_bytes()).expect("submitted");
    wait_until(WAIT, "the daemon made the ticket", || !world.tickets().is_empty());
    let number = world.tickets()[0]["number"].as_str().unwrap().to_owned();
    let browser = world.browser().await;

    // Signing in.
    browser.goto(&format!("{}/tickets", world.web)).await.unwrap();
    assert!(browser.current_url().await.unwrap().path().starts_with("/login"), "sent to sign in");
    fill(&browser, "form", "email", ADMIN).await;
    fill(&browser, "form", "password", ADMIN_PASSWORD).await;
    click(&browser, "form button[type=submit]").await;
    wait_for_path(&browser, "/tickets").await;
    let list = body_text(&browser).await;
    assert!(list.contains(&number) && list.contains("The printer prints <nothing>"), "{list}");
    screenshot(&browser, "tickets").await;

    // The Customers page: views, the month filter, New Customer, e-mails.
    browser.goto(&format!("{}/customers", world.web)).await.unwrap();
    click(&browser, "nav.views a:nth-child(3)").await;
    wait_for_text(&browser, "No customers.").await;
    click(&browser, "nav.views a:nth-child(2)").await;
    wait_for_text(&browser, ALICE).await;
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    click(&browser, &format!("select[name=month] option[value='{month}']")).await;
    click(&browser, "form.filters button").await;
    for _ in 0..150 {
        let url = browser.current_url().await.unwrap();
        if url.query().unwrap_or("").contains(&format!("month={month}")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_text(&browser, ALICE).await;
    click(&browser, "a.button[href='/customers/new']").await;
    wait_for_path(&browser, "/customers/new").await;
    fill(&browser, "form.stacked", "name", "Bob Builder").await;
    fill(&browser, "form.stacked", "email", "bob@builders.example").await;
    click(&browser, "form.stacked button").await;
    wait_for_text(&browser, "Linked organisations").await;
    assert!(body_text(&browser).await.contains("Bob Builder"));
    fill(&browser, "form.inline:has(button[value=add])", "email", "bob@home.example").await;
    click(&browser, "button[value=add]").await;
    wait_for_text(&browser, "bob@home.example").await;
    click(&browser, "button[value=primary]").await;
    wait_for_text(&browser, "bob@home.example primary").await;
    browser.goto(&format!("{}/customers", world.web)).await.unwrap();
    let customers = body_text(&browser).await;
    assert!(customers.contains("All 2") && customers.contains("Without tickets 1"), "{customers}");
    screenshot(&browser, "customers").await;

    // The ticket: read it, answer the customer.
    browser.goto(&format!("{}/tickets", world.web)).await.unwrap();
    click(&browser, &format!("a[href='/tickets/{number}']")).await;
    wait_for_text(&browser, "It has been silent since Monday.").await;
    fill(&browser, "form.reply", "body", "Dear Alice,\nplease check the paper tray.").await;
    click(&browser, "form.reply button[value=reply]").await;
    wait_for_text(&browser, "Reply by Ada Admin").await;
    let mut reply = String::new();
    wait_until(WAIT, "the reply reaches Alice's mailbox", || {
        let inbox = world.dovecot.messages(ALICE, "INBOX");
        let found = inbox.iter().map(|m| String::from_utf8_lossy(m).into_owned()).find(|m| m.contains("paper tray"));
        found.map(|m| reply = m).is_some()
    });
    assert!(reply.contains(&format!("[Ticket#{number}]")), "the tag is in the subject:\n{reply}");
    assert!(reply.contains("In-Reply-To: <first@mail.test>"), "{reply}");
    assert!(!reply.contains("Auto-Submitted"), "a person's reply:\n{reply}");
    let reply_id =
        reply.lines().find_map(|l| l.strip_prefix("Message-ID: ")).expect("the reply has a Message-ID").to_owned();

    // Alice answers; the daemon files it on the ticket.
    let answer = format!(
        "From: Alice Liddell <alice@mail.test>\r\nTo: support@mail.test\r\nSubject: Re: your reply\r\n\
         Message-ID: <answer@mail.test>\r\nIn-Reply-To: {reply_id}\r\n\r\nThe tray was empty. Thanks!\r\n"
    );
    world.smtp.submit(ALICE, HELPDESK, answer.as_bytes()).expect("submitted");
    wait_for_text_after_reloads(&browser, "The tray was empty. Thanks!").await;
    screenshot(&browser, "ticket").await;

    // And closes it.
    click(&browser, "select[name=state] option[value=closed]").await;
    click(&browser, "form:has(select[name=state]) button").await;
    wait_until_found(&browser, ".facts .state-closed").await;
    assert_eq!(world.tickets().len(), 1, "the answer made no new ticket:\n{}", world.daemon_log());
    browser.close().await.unwrap();
}

/// The link in the newest mail in `user`'s inbox that holds one to `path`, as the
/// customer's mail program shows it (the body decoded).
fn mailed_link(world: &World, user: &str, path: &str) -> Option<String> {
    let inbox = world.dovecot.messages(user, "INBOX");
    inbox.iter().rev().find_map(|raw| {
        let message = mail_parser::MessageParser::default().parse(raw)?;
        let body = message.body_text(0)?.into_owned();
        let at = body.find(&format!("{}{path}?token=", world.web))?;
        Some(body[at..].split_whitespace().next()?.to_owned())
    })
}

async fn sign_in_agent(world: &World, browser: &Client) {
    browser.goto(&format!("{}/login", world.web)).await.unwrap();
    fill(browser, "form", "email", ADMIN).await;
    fill(browser, "form", "password", ADMIN_PASSWORD).await;
    click(browser, "form button[type=submit]").await;
    wait_for_path(browser, "/tickets").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_signs_in_by_mail_answers_and_a_new_one_writes_in_by_the_form() {
    let world = World::start();
    for (from, id, subject) in [(ALICE, "a1", "Scanner offline"), ("dave@mail.test", "d1", "Projector lamp")] {
        let mail = format!(
            "From: {from}\r\nTo: {HELPDESK}\r\nSubject: {subject}\r\nMessage-ID: <{id}@mail.test>\r\n\r\nHelp.\r\n"
        );
        world.smtp.submit(from, HELPDESK, mail.as_bytes()).expect("submitted");
    }
    wait_until(WAIT, "the daemon made both tickets", || world.tickets().len() == 2);
    let tickets = world.tickets();
    let number = |subject: &str| {
        let t = tickets.iter().find(|t| t["subject"] == subject).expect(subject);
        t["number"].as_str().unwrap().to_owned()
    };
    let (alices, daves) = (number("Scanner offline"), number("Projector lamp"));
    let organisation = tickets[0]["organisation"].as_str().expect("filed under the domain's organisation").to_owned();
    let browser = world.browser().await;

    // Alice asks for a link, and follows it from her mailbox.
    browser.goto(&format!("{}/portal", world.web)).await.unwrap();
    fill(&browser, "form", "email", ALICE).await;
    click(&browser, "form button[type=submit]").await;
    wait_for_text(&browser, "a sign-in link is on its way").await;
    let mut link = String::new();
    wait_until(WAIT, "the sign-in link reaches Alice's mailbox", || {
        mailed_link(&world, ALICE, "/portal/sign-in").map(|l| link = l).is_some()
    });
    browser.goto(&link).await.unwrap();
    click(&browser, "form button[type=submit]").await;
    wait_for_path(&browser, "/portal").await;
    let list = body_text(&browser).await;
    assert!(list.contains(&alices) && list.contains(&daves), "her own and her colleague's tickets:\n{list}");
    screenshot(&browser, "portal-tickets").await;

    // She answers Dave's ticket.
    click(&browser, &format!("a[href='/portal/tickets/{daves}']")).await;
    wait_for_path(&browser, &format!("/portal/tickets/{daves}")).await;
    fill(&browser, "form.reply", "body", "Ours flickers too.").await;
    click(&browser, "form.reply button").await;
    wait_for_text(&browser, "Ours flickers too.").await;
    screenshot(&browser, "portal-ticket").await;

    // The agent sees her answer on the ticket.
    sign_in_agent(&world, &browser).await;
    browser.goto(&format!("{}/tickets/{daves}", world.web)).await.unwrap();
    wait_for_text(&browser, "Ours flickers too.").await;
    assert!(body_text(&browser).await.contains(ALICE), "from Alice");

    // Carol, new to the helpdesk, writes in by the public form.
    browser.goto(&format!("{}/support", world.web)).await.unwrap();
    fill(&browser, "form.stacked", "name", "Carol Danvers").await;
    fill(&browser, "form.stacked", "email", CAROL).await;
    fill(&browser, "form.stacked", "subject", "Badge does not open the door").await;
    fill(&browser, "form.stacked", "text", "Since the weekend.").await;
    screenshot(&browser, "portal-support").await;
    click(&browser, "form.stacked button").await;
    wait_for_text(&browser, "We sent a link to your address").await;
    assert_eq!(world.tickets().len(), 2, "no ticket before Carol confirmed her address");
    let mut confirm = String::new();
    wait_until(WAIT, "the confirmation reaches Carol's mailbox", || {
        mailed_link(&world, CAROL, "/support/confirm").map(|l| confirm = l).is_some()
    });
    browser.goto(&confirm).await.unwrap();
    click(&browser, "form button[type=submit]").await;
    wait_for_text(&browser, "Ticket opened").await;
    let opened = world.tickets().into_iter().find(|t| t["subject"] == "Badge does not open the door").expect("opened");
    let carols = opened["number"].as_str().unwrap().to_owned();
    assert!(body_text(&browser).await.contains(&carols), "the page names the ticket");
    browser.goto(&format!("{}/tickets/{carols}", world.web)).await.unwrap();
    let page = body_text(&browser).await;
    assert!(page.contains(CAROL) && page.contains(&organisation) && page.contains("Since the weekend."), "{page}");
    wait_until(WAIT, "Carol's acknowledgement reaches her mailbox", || {
        let inbox = world.dovecot.messages(CAROL, "INBOX");
        inbox.iter().any(|m| String::from_utf8_lossy(m).contains(&format!("[Ticket#{carols}]")))
    });
    browser.close().await.unwrap();
}
