//! Bridge settings from URLs and rules.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};

use super::connection::Outbox;
use super::*;

#[test]
fn urls() {
    let c = MqttConfig::from_url("mqtt://127.0.0.1:1884", "hub").unwrap();
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1884));
    let c = MqttConfig::from_url("mqtt://broker.local", "hub").unwrap();
    assert_eq!((c.host.as_str(), c.port), ("broker.local", 1883));
    for bad in [
        "http://x",
        "mqtt://",
        "mqtt://h:0",
        "mqtt://h:99999",
        "mqtt://h:x",
        "mqtt://a/b",
    ] {
        assert!(MqttConfig::from_url(bad, "hub").is_err(), "{bad}");
    }
}

fn msg(seq: u64) -> Message {
    Message {
        seq,
        topic: "t".into(),
        payload: Bytes::new(),
        qos: Qos::AtLeastOnce,
        properties: Vec::new(),
        correlation: None,
    }
}

#[test]
fn hex_round_trips_and_refuses_garbage() {
    assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
    assert_eq!(from_hex("00AB10"), Some(vec![0, 0xab, 0x10]));
    assert_eq!(from_hex("0"), None);
    assert_eq!(from_hex("zz"), None);
}

#[test]
fn a_full_outbox_drops_the_oldest_and_requeue_keeps_order() {
    let counters = Counters::default();
    let mut o = Outbox {
        waiting: VecDeque::new(),
        capacity: 4,
        submitted: VecDeque::new(),
        inflight: HashMap::new(),
    };
    for s in 0..6 {
        o.push(msg(s), &counters);
    }
    assert_eq!(counters.outbound_dropped.load(Ordering::Relaxed), 2);
    let seqs: Vec<u64> = o.waiting.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    // 2 and 3 in flight, 4 submitted; then the connection breaks.
    let (a, b, c) = (
        o.waiting.pop_front().unwrap(),
        o.waiting.pop_front().unwrap(),
        o.waiting.pop_front().unwrap(),
    );
    o.inflight.insert(9, b);
    o.inflight.insert(7, a);
    o.submitted.push_back(c);
    o.requeue();
    let seqs: Vec<u64> = o.waiting.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    assert!(o.inflight.is_empty() && o.submitted.is_empty());
}

#[test]
fn the_client_keeps_no_more_packet_slots_than_the_window() {
    // rumqttc makes one slot per packet id up to this limit when it starts: at its default
    // that was ~14 MiB of a hub's idle memory.
    let config = MqttConfig::from_url("mqtt://127.0.0.1:1883", "hub").unwrap();
    let options = super::connection::options(&config);
    assert_eq!(
        options.get_outgoing_inflight_upper_limit(),
        Some(config.window as u16)
    );
    let c = MqttConfig::from_url("mqtts://broker.local", "hub");
    // Without system roots the TLS config refuses; with them, port 8883 and TLS.
    if let Ok(c) = c {
        assert_eq!(c.port, 8883);
        assert!(c.tls.is_some());
    }
    let c = MqttConfig::from_url("mqtt://127.0.0.1", "hub")
        .unwrap()
        .with_credentials("u", "p");
    assert_eq!(c.credentials, Some(("u".into(), "p".into())));
}
