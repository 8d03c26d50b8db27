//! The ingest entry point over arbitrary bytes: parse → gather → decide → apply, into an
//! in-memory database (renewed every 500 messages so that it stays small). A panic that
//! escapes, a message recorded as an "internal error", a libFuzzer timeout or an
//! out-of-memory is a finding.
#![no_main]

use std::cell::RefCell;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use postdesk::config::{self, Config};
use postdesk::desk::ingest::{self, Outcome, Source};
use postdesk::store::Store;

thread_local! {
    static STATE: RefCell<Option<(Config, Store, u32)>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let (config, store, count) = state.get_or_insert_with(|| {
            // libfuzzer-sys aborts at any panic, even one caught inside postdesk (a panic
            // inside mail-parser is caught and makes a failed message). The default hook
            // only prints; a panic that escapes is still a crash (libfuzzer-sys aborts).
            drop(std::panic::take_hook());
            let config = config::load(None, None).expect("the built-in configuration");
            (config, Store::open_in_memory().expect("an in-memory store"), 0)
        });
        *count += 1;
        if *count % 500 == 0 {
            *store = Store::open_in_memory().expect("an in-memory store");
        }
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let source = Source::file("fuzz", data);
        let report = ingest::ingest_one(store, config, data, &source, now).expect("storage in memory does not fail");
        if let Outcome::Failed { reason, .. } = &report.outcome {
            assert!(!reason.starts_with("internal error"), "{reason}");
        }
    });
});
