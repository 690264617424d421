//! Any text: a `traceparent` parses or is refused, and what parses formats back to a
//! header that parses to the same value.
#![no_main]

use fnhub_core::TraceParent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(t) = text.parse::<TraceParent>() {
        assert_eq!(t.to_string().parse::<TraceParent>(), Ok(t));
    }
});
