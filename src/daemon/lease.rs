//! A mailbox's lease: of several daemons configured with one mailbox and one database,
//! only the holder watches it (so no message is moved and no post-action applied twice);
//! the others stand by and take over when the holder ends or stops renewing.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::shared::SharedStore;
use crate::store::{self, StoreError, Tx};

/// A lease lasts this long and is renewed every `RENEW`; a daemon standing by looks every
/// `RENEW` too, so it takes over within 25 s of the holder's end (within `RENEW` when
/// the holder was a process of its own host that is gone).
const LEASE: Duration = Duration::from_secs(20);
const RENEW: Duration = Duration::from_secs(5);

pub struct Lease {
    store: SharedStore,
    mailbox: String,
    /// Who this daemon is: "pid 4242 on mailhost/9c1e04b2 (1f2e3d4c)".
    holder: Arc<str>,
    /// Whether another daemon holds it (logged once per change).
    standing_by: bool,
}

impl Lease {
    pub fn new(store: SharedStore, mailbox: &str, holder: Arc<str>) -> Lease {
        Lease { store, mailbox: mailbox.to_owned(), holder, standing_by: false }
    }

    /// Takes (or keeps) the lease. Without it, waits `RENEW` (not with `once`) or until
    /// shutdown, and says false.
    pub async fn hold(&mut self, once: bool, shutdown: &CancellationToken) -> bool {
        let (name, holder) = (self.mailbox.clone(), Arc::clone(&self.holder));
        let taken = self
            .store
            .write(move |tx| {
                let current = take(tx, &name, &holder)?;
                // A holder that was this host's and died (a crash, SIGKILL) leaves its lease
                // to expire; a restart takes it at once instead.
                if current != *holder && dead_here(&current) {
                    store::release_lease(tx, &name, &current)?;
                    return take(tx, &name, &holder);
                }
                Ok(current)
            })
            .await;
        let name = &self.mailbox;
        let other = match taken {
            Ok(current) if *current == *self.holder => {
                if std::mem::take(&mut self.standing_by) {
                    info!(mailbox = %name, "{name}: taking over from the other daemon");
                }
                return true;
            }
            Ok(current) => current,
            // Not another daemon: the database, which the other tasks report. Not a
            // stand-by, which would later read as a takeover.
            Err(e) => {
                debug!(mailbox = %name, "{name}: cannot take the mailbox's lease: {e}");
                if !once {
                    tokio::select! {
                        _ = tokio::time::sleep(RENEW) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                return false;
            }
        };
        if !std::mem::replace(&mut self.standing_by, true) || once {
            info!(mailbox = %name, "{name}: watched by another postdesk ({other}); standing by");
        }
        if !once {
            tokio::select! {
                _ = tokio::time::sleep(RENEW) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        false
    }

    /// Renews the lease every `RENEW` while a session runs; when another daemon holds it
    /// (this one stalled past its expiry), cancels `stop`, so the session ends at its next
    /// safe point. A renewal that fails for the database keeps trying: if it stays down,
    /// the lease expires and another daemon, perhaps with a working disk, takes over.
    pub fn keep(&self, stop: CancellationToken) -> JoinHandle<()> {
        let (store, name, holder) = (self.store.clone(), self.mailbox.clone(), Arc::clone(&self.holder));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                let (name_, holder_) = (name.clone(), Arc::clone(&holder));
                match store.write(move |tx| take(tx, &name_, &holder_)).await {
                    Ok(current) if *current != *holder => {
                        warn!(mailbox = %name, "{name}: another postdesk ({current}) took the mailbox over; stopping here");
                        stop.cancel();
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => debug!(mailbox = %name, "{name}: cannot renew the lease now: {e}"),
                }
            }
        })
    }

    /// At shutdown, so that a daemon standing by takes over at once.
    pub async fn give_up(&self) {
        let (name, holder) = (self.mailbox.clone(), Arc::clone(&self.holder));
        if let Err(e) = self.store.write(move |tx| store::release_lease(tx, &name, &holder)).await {
            debug!(mailbox = %self.mailbox, "cannot release the lease: {e}");
        }
    }
}

/// Takes or renews `mailbox`'s lease for `LEASE` from now; who holds it afterwards.
fn take(tx: &Tx, mailbox: &str, holder: &str) -> Result<String, StoreError> {
    let now = store::clock(tx)?;
    let until = now + chrono::Duration::from_std(LEASE).expect("a short duration");
    store::take_lease(tx, mailbox, holder, now, until)
}

/// Who this daemon is in mailbox leases: "pid 4242 on mailhost/9c1e04b2 (1f2e3d4c)".
pub fn holder_name() -> String {
    format!("pid {} on {} ({:08x})", std::process::id(), host_name(), fastrand::u32(..))
}

/// Whether a lease holder was a process of this host that no longer exists.
pub(super) fn dead_here(holder: &str) -> bool {
    let Some((pid, rest)) = holder.strip_prefix("pid ").and_then(|h| h.split_once(" on ")) else {
        return false;
    };
    let (Ok(pid), Some(host)) = (pid.parse::<i32>(), rest.rsplit_once(" (").map(|(h, _)| h)) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let gone =
        unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    host == host_name() && pid != std::process::id() as i32 && gone
}

/// This machine's name, for telling daemons apart in mailbox leases.
/// This host as lease holders name it: its name and, after a slash, what tells apart two
/// hosts (or containers) of one name that share a database: a hash of the machine id and
/// the PID namespace. Only a process that sees the same pids judges a pid dead.
pub fn host_name() -> String {
    use sha2::{Digest, Sha256};
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    let digest = Sha256::digest(format!("{}/{namespace}", machine.trim()));
    let short = hex::encode(&digest[..4]);
    format!("{}/{short}", system_host_name())
}

fn system_host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "this host".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_local_holder_is_recognised() {
        let here = host_name();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(dead_here(&format!("pid {pid} on {here} (00000001)")));
        assert!(!dead_here(&holder_name()), "this process is alive");
        assert!(!dead_here(&format!("pid {pid} on some-other-host (00000001)")), "another host's is not ours to judge");
        let same_name = format!("pid {pid} on {}/00000000 (00000001)", system_host_name());
        assert!(!dead_here(&same_name), "a host of the same name (a clone, another container) is not ours either");
        assert!(!dead_here("garbage"));
    }
}
