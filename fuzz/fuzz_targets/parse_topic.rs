//! Any two texts as a topic filter and a topic name: parsing never panics, and matching
//! never panics on what parses.
#![no_main]

use fnhub_router::topic::{TopicFilter, TopicName, expand_template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (filter, name) = input;
    if let (Ok(f), Ok(n)) = (filter.parse::<TopicFilter>(), name.parse::<TopicName>()) {
        let _ = f.matches(&n);
    }
    let _ = expand_template(filter, name);
});
