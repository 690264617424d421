use super::*;
use fnhub_core::{
    ErrorKind, ExecutionId, FunctionError, FunctionName, InvocationId, JournalEntry, Operation,
    PendingDependency, Principal, Priority, TraceParent, Version,
};
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

/// A checkpoint using every field, with fixed values (the golden files encode it).
pub(crate) fn sample() -> Checkpoint {
    let t0 = UNIX_EPOCH + Duration::new(1_764_400_000, 123_456_789);
    let mut c = Checkpoint::new(
        ExecutionId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        FunctionName::new("thermostat").unwrap(),
        Version::new(7).unwrap(),
        Bytes::from_static(b"{\"target\":21.5}"),
        "hub-a",
        t0,
    );
    c.updated_at = t0 + Duration::from_secs(90);
    c.context.trace = TraceParent::from_parts(
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        0x00f0_67aa_0ba9_02b7,
        1,
    )
    .unwrap();
    c.context.tracestate = Some("vendor=1".into());
    c.context.deadline = Some(t0 + Duration::from_secs(3600));
    c.context.priority = Priority::HIGH;
    c.context.principal = Principal::new("tenant-7");
    c.context.affinity_key = Some("room-3".into());
    c.context.parent = Some(ExecutionId::from_u128(42));
    c.context.attempt = 2;
    c.context.topic = Some("sensors/room-3/temperature".into());
    c.context.depth = 1;
    c.journal = vec![
        JournalEntry::new(0, "read", Operation::Step, Ok(Bytes::from_static(b"19.0"))),
        JournalEntry::new(
            1,
            "heat",
            Operation::Invoke {
                child: InvocationId::from_u128(99),
                function: "boiler:prod".parse().unwrap(),
            },
            Err(FunctionError::new(ErrorKind::Timeout, "boiler slow").with_type("Timeout")),
        ),
        JournalEntry::new(2, "wait", Operation::Sleep, Ok(Bytes::new())),
        JournalEntry::new(
            3,
            "ack",
            Operation::WaitFor {
                filter: "acks/+".into(),
            },
            Ok(Bytes::from_static(b"ok")),
        ),
    ];
    c.state = Some(Bytes::from(vec![7u8; 2000]));
    c.pending = Some(PendingDependency::Timer(t0 + Duration::from_secs(600)));
    c.resolution = Some(Ok(Bytes::new()));
    c
}

#[test]
fn round_trip_with_each_compression() {
    let c = sample();
    for compression in [Compression::None, Compression::Lz4] {
        let bytes = encode_with(&c, compression).unwrap();
        assert_eq!(decode(&bytes).unwrap(), c, "{compression:?}");
    }
    let auto = encode(&c).unwrap();
    assert_eq!(auto[7], 1, "a 2 kB repetitive state is compressed");
    assert_eq!(decode(&auto).unwrap(), c);
}

#[test]
fn shared_decoding_keeps_the_large_fields_in_place() {
    let c = sample();
    let plain = encode_with(&c, Compression::None).unwrap();
    let shared = super::decode_shared(&plain).unwrap();
    assert_eq!(shared, c);
    // The state points into the encoded bytes: nothing was copied.
    let state = shared.state.unwrap();
    let (start, end) = (
        plain.as_ptr() as usize,
        plain.as_ptr() as usize + plain.len(),
    );
    assert!((start..end).contains(&(state.as_ptr() as usize)));
    // A compressed body is decompressed elsewhere: same checkpoint, copied out.
    let packed = encode_with(&c, Compression::Lz4).unwrap();
    let from_packed = super::decode_shared(&packed).unwrap();
    assert_eq!(from_packed, c);
    let state = from_packed.state.unwrap();
    assert!(
        !(packed.as_ptr() as usize..packed.as_ptr() as usize + packed.len())
            .contains(&(state.as_ptr() as usize))
    );
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_round_trip() {
    let c = sample();
    let bytes = encode_with(&c, Compression::Zstd).unwrap();
    assert_eq!(bytes[7], 2);
    assert_eq!(decode(&bytes).unwrap(), c);
}

#[test]
fn every_check_has_its_error() {
    let good = encode(&sample()).unwrap().to_vec();
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(decode(&b), Err(DecodeError::BadMagic));
    let mut b = good.clone();
    b[12] ^= 1;
    assert_eq!(decode(&b), Err(DecodeError::HeaderChecksum));
    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    assert_eq!(decode(&b), Err(DecodeError::PayloadChecksum));
    assert!(matches!(
        decode(&good[..good.len() - 1]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        decode(&good[..10]),
        Err(DecodeError::Truncated {
            have: 10,
            need: HEADER_LEN
        })
    ));
    let mut b = good.clone();
    b.push(0);
    assert_eq!(decode(&b), Err(DecodeError::TrailingBytes(1)));

    // Headers that are well-formed and checksummed but say what this build cannot read.
    let reheader = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        let crc = crc32c::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        decode(&b)
    };
    assert_eq!(
        reheader(&|b| b[4] = 2),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(
        reheader(&|b| b[6] = 9),
        Err(DecodeError::UnsupportedCodec(9))
    );
    assert_eq!(
        reheader(&|b| b[7] = 5),
        Err(DecodeError::UnsupportedCompression(5))
    );
    assert_eq!(
        reheader(&|b| b[12..16].copy_from_slice(&u32::MAX.to_le_bytes())),
        Err(DecodeError::TooLarge(u32::MAX as usize))
    );
    assert_eq!(reheader(&|b| b[12] ^= 1), Err(DecodeError::Decompress));
}

#[test]
fn oversized_checkpoints_are_refused_at_encode() {
    let mut c = sample();
    c.state = Some(Bytes::from(vec![0u8; MAX_BODY + 1]));
    assert!(matches!(encode(&c), Err(EncodeError::TooLarge(_))));
}

#[test]
fn invalid_bodies_are_errors() {
    // A valid envelope around a body whose version is 0.
    let mut c = sample();
    c.journal.clear();
    let good = encode_with(&c, Compression::None).unwrap().to_vec();
    // Find the version varint (7) right after the function name "thermostat".
    let at = good.windows(10).position(|w| w == b"thermostat").unwrap() + 10;
    assert_eq!(good[at], 7);
    let mut b = good.clone();
    b[at] = 0;
    let crc = crc32c::crc32c(&b[HEADER_LEN..]);
    b[20..24].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&b[0..24]);
    b[24..28].copy_from_slice(&hcrc.to_le_bytes());
    assert_eq!(decode(&b), Err(DecodeError::Invalid("the version is zero")));
}

fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
    (
        any::<u128>(),
        "[a-z][a-z0-9_-]{0,20}",
        1u32..,
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3000)),
        proptest::collection::vec(
            (
                "[a-z]{1,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
                0u8..8,
            ),
            0..8,
        ),
        any::<u8>(),
        0u64..4_000_000_000,
    )
        .prop_map(|(id, name, version, input, state, steps, priority, secs)| {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let mut c = Checkpoint::new(
                ExecutionId::from_u128(id),
                FunctionName::new(&name).unwrap(),
                Version::new(version).unwrap(),
                Bytes::from(input),
                "hub",
                t,
            );
            c.state = state.map(Bytes::from);
            c.context.priority = Priority(priority);
            c.journal = steps
                .into_iter()
                .enumerate()
                .map(|(i, (name, out, kind))| {
                    let result = match out {
                        Some(b) => Ok(Bytes::from(b)),
                        None => Err(FunctionError::new(
                            ErrorKind::ALL[kind as usize].clone(),
                            name.clone(),
                        )),
                    };
                    JournalEntry::new(i as u32, name, Operation::Step, result)
                })
                .collect();
            c
        })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(c in arb_checkpoint()) {
        let bytes = encode(&c).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), c);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        let _ = super::decode_shared(&bytes::Bytes::from(bytes));
    }

    #[test]
    fn shared_decoding_agrees(c in arb_checkpoint()) {
        let bytes = encode(&c).unwrap();
        prop_assert_eq!(super::decode_shared(&bytes).unwrap(), c);
    }

    /// Flipping any byte of a valid checkpoint is always detected.
    #[test]
    fn corruption_is_detected(c in arb_checkpoint(), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode(&c).unwrap().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(decode(&bytes).is_err());
    }

    /// Cutting a valid checkpoint anywhere is always detected.
    #[test]
    fn truncation_is_detected(c in arb_checkpoint(), at in any::<proptest::sample::Index>()) {
        let bytes = encode(&c).unwrap();
        let cut = at.index(bytes.len());
        prop_assert!(decode(&bytes[..cut]).is_err());
    }
}

/// The bytes of format 1 are frozen: these files were written by `encode_with` on
/// [`sample`] when format 1 was made, and every later build must still read them (and, for
/// the same input, still write them). `FNHUB_BLESS_GOLDEN=1` rewrites them: only ever do
/// that together with a new format version.
#[test]
fn golden_files_of_format_1() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (file, compression) in [
        ("v1_sample_none.bin", Compression::None),
        ("v1_sample_lz4.bin", Compression::Lz4),
    ] {
        let path = dir.join(file);
        if std::env::var_os("FNHUB_BLESS_GOLDEN").is_some() {
            std::fs::write(&path, encode_with(&sample(), compression).unwrap()).unwrap();
        }
        let golden = std::fs::read(&path).unwrap();
        assert_eq!(
            decode(&golden).unwrap(),
            sample(),
            "{file} no longer decodes to the sample"
        );
        assert_eq!(
            &encode_with(&sample(), compression).unwrap()[..],
            &golden[..],
            "{file}: encoding changed"
        );
    }
}
