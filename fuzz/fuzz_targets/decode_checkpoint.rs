//! Any bytes: `decode` returns a checkpoint or an error, never panics; `decode_shared`
//! agrees with it; a checkpoint that decodes encodes and decodes again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = fnhub_checkpoint::decode(data);
    let shared = fnhub_checkpoint::decode_shared(&bytes::Bytes::copy_from_slice(data));
    assert_eq!(decoded.is_ok(), shared.is_ok());
    if let Ok(checkpoint) = decoded {
        assert_eq!(shared.ok().as_ref(), Some(&checkpoint));
        let again = fnhub_checkpoint::encode(&checkpoint).expect("a decoded checkpoint encodes");
        assert_eq!(fnhub_checkpoint::decode(&again).expect("re-decodes"), checkpoint);
    }
});
