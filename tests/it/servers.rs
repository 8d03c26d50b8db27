//! Pieces shared by the private test servers (`dovecot.rs`, `smtp.rs`): finding programs,
//! free ports on 127.0.0.1, and a test CA made with the `openssl` command line.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Searched after `$PATH`: Debian installs `dovecot` in /usr/sbin, often not on a user's PATH.
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"];

/// `name` on `$PATH` or in the sbin directories; panics naming the Debian `packages` to
/// install (the tests that need it are never skipped silently).
pub fn find_program(name: &str, packages: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found on PATH nor in {SBIN_DIRS:?}; \
                 install the Debian packages {packages}"
            )
        })
}

pub fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// `count` distinct free ports on 127.0.0.1 (all bound at once, then released).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

pub fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()
}

pub fn port_accepts(port: u16) -> bool {
    connect(port).is_some()
}

/// A test CA, a server certificate it signs for 127.0.0.1 (SAN IP:127.0.0.1, DNS:127.0.0.1
/// — mbsync checks only DNS names — and DNS:localhost), and an unrelated CA. EC P-256 keys:
/// quick to generate. Writes `ca.pem`, `server.pem`, `server.key` and `other-ca.pem` (and
/// their intermediate files) into `dir`.
pub fn make_certificates(dir: &Path) {
    let openssl = find_program("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", openssl.display()));
        assert!(
            out.status.success(),
            "openssl {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, cn) in [("ca", "postdesk test CA"), ("other-ca", "postdesk unrelated test CA")] {
        let (key, pem, subject) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN={cn}"));
        let mut args = vec!["req", "-x509"];
        args.extend(new_key);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "3650",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&args);
    }
    let mut args = vec!["req", "-new"];
    args.extend(new_key);
    args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    run(&args);
    write_file(
        &dir.join("server.ext"),
        b"basicConstraints = critical,CA:FALSE\n\
          keyUsage = critical,digitalSignature,keyEncipherment\n\
          extendedKeyUsage = serverAuth\n\
          subjectAltName = IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost\n",
        0o644,
    );
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-CAserial",
        "ca.srl",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

/// Starts `server` on `count` fresh free ports. Free ports are picked by binding port 0
/// and letting go; someone else may grab one before the server binds it, so on "address
/// already in use" this tries again with new ports (three times at most).
pub fn start_on_free_ports<S>(
    server: &mut S,
    count: usize,
    start: impl Fn(&mut S, &[u16]) -> Result<(), String>,
    log: impl Fn(&S) -> String,
) {
    for attempt in 1.. {
        let Err(why) = start(server, &free_ports(count)) else { return };
        let log = log(server);
        if attempt < 3 && log.to_lowercase().contains("address already in use") {
            continue;
        }
        panic!("{why}\n{log}");
    }
}

/// SIGKILL to the process group a server runs in (its child processes too), then reap it.
pub fn kill_group(child: Option<std::process::Child>) {
    if let Some(mut child) = child {
        let pgid = i32::try_from(child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) has no memory-safety preconditions. The group id is the pid of
        // our child, which is not reaped yet, so it cannot have been reused.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`); the status and body.
/// For the test servers' own endpoints, which speak plain HTTP on loopback.
pub fn http(port: u16, method: &str, path: &str, json_body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to :{port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set a read timeout");
    let body = json_body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = match head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        true => unchunk(body),
        false => body.to_owned(),
    };
    (status, body)
}

/// A chunked body, joined.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Until `ready` holds (polled every 20 ms) while `child`, a server just started, runs:
/// an error naming `what` if it exits first (then `child` is None) or is not ready in
/// `limit`.
pub fn wait_started(
    child: &mut Option<std::process::Child>,
    what: &str,
    limit: Duration,
    ready: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let running = child.as_mut().unwrap_or_else(|| panic!("{what} was not started"));
        if let Some(status) = running.try_wait().unwrap_or_else(|e| panic!("try_wait on {what}: {e}")) {
            *child = None;
            return Err(format!("{what} exited while starting ({status})"));
        }
        if ready() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{what} was not ready within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
