//! Giving memory back after a backlog. A drain of thousands of messages fills SQLite's
//! page cache (16 MiB per connection, see `Store::setup`) and the allocator's arenas;
//! both keep what they hold once the backlog is done, so a daemon that drained a big
//! backlog would stay that large while it idles for days. Nothing here runs during a
//! drain: only once the folder is empty again.

use crate::store::shared::SharedStore;

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
