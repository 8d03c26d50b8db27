//! The ingest entry point over arbitrary bytes: parse → decide → apply, against a
//! database in memory that keeps what earlier inputs stored (so follow-ups, duplicates
//! and customers already known are reached too). Any panic, abort or stack overflow is
//! a finding; so is a message that takes more than a second (libFuzzer's -timeout).
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use postdesk::config::{self, Config};
use postdesk::ingest::{self, Source};
use postdesk::store::Store;

struct World {
    config: Config,
    store: Store,
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| {
        let config = config::load(None, None).expect("the built-in configuration is valid");
        let store = Store::open_in_memory().expect("an in-memory database");
        Mutex::new(World { config, store })
    })
}

fuzz_target!(|raw: &[u8]| {
    let mut world = world().lock().unwrap_or_else(|p| p.into_inner());
    let World { config, store } = &mut *world;
    let source = Source::file("fuzz", raw);
    let now = chrono::Utc::now();
    // A storage error is not a finding (an in-memory database does not fill up); a
    // panic inside the pipeline is.
    let _ = ingest::ingest_one(store, config, raw, &source, now);
});
