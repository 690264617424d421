//! The router beside its peers, in the same run:
//!
//! - `match_{10k,100k}`: finding the subscriptions that match a topic in a table of 10 000
//!   or 100 000 filters (exact ones, `+` and `#` ones), for a topic that matches (`hit`)
//!   and two that match nothing (`miss_deep` shares the first levels with many filters,
//!   `miss_root` shares none), against a linear scan of the same filters with the
//!   split-based matcher. Target of the router issue: at most 250 ns per match at 100k.
//! - `bus`: one event offered to one local subscriber and taken off its queue, against a
//!   bare tokio `mpsc` `try_send` + `try_recv` of the same event.
//!
//! ```text
//! cargo bench -p fnhub-benches --bench router
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::core::{Event, EventSource};
use fnhub::libs::router::topic::{TopicFilter, TopicName};
use fnhub::libs::router::{LocalBus, SubscriptionTable};

/// `n` filters over 500 sites: exact, `+` and `#` ones, and some with a leading `+`.
fn filters(n: usize) -> Vec<TopicFilter> {
    (0..n)
        .map(|i| {
            let site = i % 500;
            let text = match i % 10 {
                0..=3 => format!("site/{site}/dev/{i}/+"),
                4 | 5 => format!("site/{site}/dev/{i}/#"),
                6..=8 => format!("site/{site}/dev/{i}/temp"),
                _ => format!("+/{site}/alarm/{i}"),
            };
            text.parse().expect("filter")
        })
        .collect()
}

fn matching(c: &mut Criterion, n: usize) {
    let filters = filters(n);
    let table = SubscriptionTable::new();
    table.extend(filters.iter().cloned().zip(0..n));
    // Device 1017 of site 17 has a `+`, a `#` or an exact filter, by its index.
    let topics = [
        ("hit", "site/17/dev/1017/temp"),
        ("miss_deep", "site/17/dev/nobody/temp"),
        ("miss_root", "elsewhere/17/dev/1017/temp"),
    ];
    let group = format!("match_{}k", n / 1000);
    let mut g = c.benchmark_group(&group);
    for (name, topic) in topics {
        let topic = TopicName::new(topic).expect("topic");
        let expected = filters.iter().filter(|f| f.matches(&topic)).count();
        let mut found = 0;
        table.for_each_match(&topic, |_, _| found += 1);
        assert_eq!(found, expected, "{topic}");
        g.bench_function(format!("trie_{name}"), |b| {
            b.iter(|| {
                let mut hits = 0usize;
                table.for_each_match(black_box(&topic), |_, v| hits += *v);
                hits
            })
        });
        g.bench_function(format!("scan_{name}"), |b| {
            b.iter(|| {
                filters
                    .iter()
                    .filter(|f| f.matches(black_box(&topic)))
                    .count()
            })
        });
    }
    g.finish();
    for (name, _) in topics {
        fnhub_benches::print_ratio(&group, &format!("trie_{name}"), &format!("scan_{name}"));
    }
}

fn bus(c: &mut Criterion) {
    let bus = LocalBus::new();
    let mut sub = bus.subscribe("sensors/+/temperature".parse().expect("filter"), 1024);
    let topic = TopicName::new("sensors/d1/temperature").expect("topic");
    let event = Event::new(topic.as_str(), "21.5", EventSource::Local);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let mut g = c.benchmark_group("bus");
    g.bench_function("local_bus_deliver_and_take", |b| {
        b.iter(|| {
            let d = bus.deliver(&topic, &event);
            assert_eq!(d.delivered, 1);
            sub.try_recv().expect("event")
        })
    });
    g.bench_function("mpsc_try_send_and_recv", |b| {
        b.iter(|| {
            tx.try_send(event.clone()).expect("room");
            rx.try_recv().expect("event")
        })
    });
    g.finish();
    fnhub_benches::print_ratio(
        "bus",
        "local_bus_deliver_and_take",
        "mpsc_try_send_and_recv",
    );
}

fn bench(c: &mut Criterion) {
    matching(c, 10_000);
    matching(c, 100_000);
    bus(c);
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(2)).sample_size(50)
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
