//! Any bytes: `decode` returns a checkpoint or an error, never panics; a checkpoint that
//! decodes encodes and decodes again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = fnhub_checkpoint::decode(data) {
        let again = fnhub_checkpoint::encode(&checkpoint).expect("a decoded checkpoint encodes");
        assert_eq!(fnhub_checkpoint::decode(&again).expect("re-decodes"), checkpoint);
    }
});
