//! Giving memory back after a backlog. A drain of thousands of messages fills SQLite's
//! page cache (16 MiB per connection, see `Store::setup`) and the allocator's arenas;
//! both keep what they hold once the backlog is done, so a daemon that drained a big
//! backlog would stay that large while it idles for days. Nothing here runs during a
//! drain: only once the folder is empty again.

use crate::store::shared::SharedStore;

/// At most this many malloc arenas. glibc makes one for each thread that allocates, up
/// to eight a core, and each keeps what was freed in it: after a drain of 10,000 messages
/// a daemon held 7.8 MB of anonymous memory with glibc's default, 4.6 MB with two
/// (`BENCH_ONLY=memory cargo bench --bench imap`, `MALLOC_ARENA_MAX=2`, 2026-12-02).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Limits the allocator's arenas (see `ARENAS`); before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator; called before other threads
    // exist, nothing allocates meanwhile.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Empties the store's caches and returns the allocator's free pages to the system.
pub async fn give_back(store: &SharedStore) {
    if let Err(e) = store.shrink_memory().await {
        tracing::debug!("the store's caches were not emptied: {e}");
    }
    // glibc keeps freed memory in per-thread arenas; `malloc_trim` returns the free pages
    // of every arena. Other allocators return memory on their own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
