//! A private OAuth2 authorization server for the tests: `tests/oauth/server.mjs`, built on
//! the npm package `oidc-provider` (installed by `scripts/test` with `npm ci`), run with
//! the machine's Node.js on a free port of 127.0.0.1 over plain HTTP. Access tokens are
//! opaque and short-lived (`access_ttl`), so renewals happen inside a test; Dovecot
//! validates them by introspection. Its `/test/…` endpoints approve a device code,
//! revoke an account's grants and count the requests it served.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::repo_path;
use crate::servers::{self, http};

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct OAuthServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OAuthServer {
    /// Access tokens live `access_ttl` seconds; client-credentials tokens are for `app_user`.
    pub fn start(access_ttl: u64, app_user: &str) -> OAuthServer {
        let script = repo_path("tests/oauth/server.mjs");
        assert!(
            repo_path("tests/oauth/node_modules/oidc-provider").is_dir(),
            "tests/oauth/node_modules is missing: run scripts/test (it runs `npm ci --prefix tests/oauth`)"
        );
        let node = servers::find_program("node", "nodejs (Node.js 20 or later)");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("oauth-server.log");
        let mut server = OAuthServer { child: None, port: 0, log, _dir: dir };
        let start = |server: &mut OAuthServer, ports: &[u16]| {
            server.port = ports[0];
            let stderr = std::fs::File::create(&server.log).expect("create the server's log");
            let mut child = Command::new(&node)
                .arg(&script)
                .args(["--port", &ports[0].to_string(), "--access-ttl", &access_ttl.to_string()])
                .args(["--app-user", app_user])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("run {}: {e}", node.display()));
            let ready = wait_ready(&mut child);
            server.child = Some(child);
            ready.inspect_err(|_| server.stop())
        };
        servers::start_on_free_ports(&mut server, 1, start, OAuthServer::log);
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The `[oauth2.NAME]` section of a generic provider on this server.
    pub fn provider_config(&self, name: &str, grant: &str) -> String {
        format!(
            "[oauth2.{name}]\nprovider = \"generic\"\nclient_id = \"postdesk\"\nclient_secret = \"postdesk-secret\"\n\
             grant = \"{grant}\"\ntoken_url = \"{}\"\ndevice_authorization_url = \"{}\"\n\
             authorization_url = \"{}\"\nscopes = {}\n",
            self.url("/token"),
            self.url("/device/auth"),
            self.url("/auth"),
            if grant == "client_credentials" {
                "[\"imap\", \"smtp\"]"
            } else {
                "[\"openid\", \"offline_access\", \"imap\", \"smtp\"]"
            },
        )
    }

    /// Where Dovecot checks a token (as the `dovecot` resource server).
    pub fn introspection_url(&self) -> String {
        format!("http://dovecot:dovecot-secret@127.0.0.1:{}/token/introspection", self.port)
    }

    /// Completes the device sign-in of `user_code` as `account`.
    pub fn approve(&self, user_code: &str, account: &str) {
        let body = serde_json::json!({ "user_code": user_code, "account": account }).to_string();
        let (status, text) = http(self.port, "POST", "/test/approve", Some(&body));
        assert_eq!(status, 200, "approving {user_code}: {text}\n{}", self.log());
    }

    /// Revokes every grant of `account`: its refresh tokens are refused from now on.
    pub fn revoke(&self, account: &str) {
        let body = serde_json::json!({ "account": account }).to_string();
        let (status, text) = http(self.port, "POST", "/test/revoke", Some(&body));
        assert_eq!(status, 200, "revoking {account}: {text}");
    }

    /// Requests served so far, by kind (see tests/oauth/README.md).
    pub fn stats(&self) -> serde_json::Value {
        let (status, text) = http(self.port, "GET", "/test/stats", None);
        assert_eq!(status, 200, "stats: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats {text:?}: {e}"))
    }

    /// Token requests of `grant` ("refresh_token", "client_credentials", …).
    pub fn grants(&self, grant: &str) -> u64 {
        self.stats()["token"][grant].as_u64().unwrap_or(0)
    }

    /// Every request to the token endpoint so far, of any grant.
    pub fn token_requests(&self) -> u64 {
        let stats = self.stats();
        stats["token"].as_object().map_or(0, |grants| grants.values().filter_map(|n| n.as_u64()).sum())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Until the server prints `ready` (bounded), or exits.
fn wait_ready(child: &mut Child) -> Result<(), String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "ready" {
                let _ = send.send(());
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if receive.try_recv().is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait().expect("try_wait on node") {
            return Err(format!("the OAuth2 test server exited while starting ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("the OAuth2 test server was not ready within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
