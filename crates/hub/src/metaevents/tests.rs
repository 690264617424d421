//! Metaevent rules: their text, and their evaluation over samples of load and stats.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::stats::FunctionStats;
use fnhub_core::FunctionLoad;

fn publish(rule: &str) -> MetaRule {
    MetaRule::parse("r", rule, MetaAction::Publish("alerts/meta".into())).unwrap()
}

#[test]
fn rules_parse_and_bad_ones_say_why() {
    let r = publish("queue_depth(ingest) > 100 for 10s");
    assert_eq!(
        (
            r.metric,
            r.function.as_deref(),
            r.cmp,
            r.threshold,
            r.duration
        ),
        (
            Metric::QueueDepth,
            Some("ingest"),
            Cmp::Above,
            100.0,
            Duration::from_secs(10)
        )
    );
    let r = publish("error_rate(ingest) > 5% over 1m");
    assert_eq!(
        (r.metric, r.threshold, r.duration),
        (Metric::ErrorRate, 0.05, Duration::from_secs(60))
    );
    let r = publish("cold_starts(f) >= 20 per minute");
    assert_eq!((r.cmp, r.duration), (Cmp::AtLeast, Duration::from_secs(60)));
    let r = publish("queue_pressure() >= 80%");
    assert_eq!((r.function, r.duration), (None, Duration::ZERO));
    for (bad, why) in [
        ("queue_depth > 1", "metric(function)"),
        ("speed(f) > 1", "unknown metric"),
        ("queue_depth(f) = 1", ">, >=, < or <="),
        ("queue_depth(f) > lots", "not a number"),
        ("queue_depth(f) > 1 over 1m", "a gauge takes"),
        ("errors(f) > 1 for 1m", "a windowed metric"),
        ("errors(f) > 1 per fortnight", "per takes"),
        ("errors(f) > 1 over 0s", "must not be empty"),
        ("queue_pressure(f) > 1", "whole hub"),
        ("queue_depth(f) > 1 for 1s extra", "unexpected words"),
        ("queue_depth(f) > 1 for soon", "not a duration"),
    ] {
        let e = MetaRule::parse("r", bad, MetaAction::Publish("t".into())).unwrap_err();
        assert!(e.reason.contains(why), "{bad}: {e}");
    }
}

fn sample(queued: usize, invocations: u64, ok: u64) -> (LoadSnapshot, HubStats) {
    let mut load = LoadSnapshot::default();
    let mut f = FunctionLoad::default();
    f.queued = queued;
    load.functions.insert("f".into(), f);
    let mut stats = HubStats::default();
    let s = FunctionStats {
        invocations,
        ok,
        ..FunctionStats::default()
    };
    stats.functions.insert("f".into(), s);
    (load, stats)
}

fn tick(e: &mut Evaluator, secs: u64, (load, stats): &(LoadSnapshot, HubStats)) -> usize {
    e.tick(Duration::from_secs(secs), &Sample { load, stats })
        .len()
}

#[test]
fn a_gauge_fires_after_holding_for_its_duration_then_stays_quiet_for_the_cooldown() {
    let mut e = Evaluator::new(vec![
        publish("queue_depth(f) > 10 for 3s").with_cooldown(Duration::from_secs(10)),
    ]);
    assert_eq!(tick(&mut e, 0, &sample(20, 0, 0)), 0);
    assert_eq!(tick(&mut e, 2, &sample(20, 0, 0)), 0);
    assert_eq!(tick(&mut e, 3, &sample(20, 0, 0)), 1, "held 3 s");
    assert_eq!(tick(&mut e, 4, &sample(20, 0, 0)), 0, "cooldown");
    assert_eq!(tick(&mut e, 12, &sample(20, 0, 0)), 0, "cooldown");
    assert_eq!(tick(&mut e, 13, &sample(20, 0, 0)), 1, "cooldown over");
    // A dip resets the hold.
    assert_eq!(tick(&mut e, 30, &sample(1, 0, 0)), 0);
    assert_eq!(tick(&mut e, 31, &sample(20, 0, 0)), 0);
    assert_eq!(tick(&mut e, 34, &sample(20, 0, 0)), 1);
}

#[test]
fn an_error_rate_is_taken_over_its_window() {
    let mut e = Evaluator::new(vec![publish("error_rate(f) > 50% over 10s")]);
    assert_eq!(
        tick(&mut e, 0, &sample(0, 100, 100)),
        0,
        "no invocations in the window"
    );
    assert_eq!(tick(&mut e, 5, &sample(0, 110, 108)), 0, "2 errors in 10");
    // 20 more invocations, 15 failing: 17 / 30 in the window since t=0.
    let fired = e.tick(
        Duration::from_secs(9),
        &Sample {
            load: &sample(0, 130, 113).0,
            stats: &sample(0, 130, 113).1,
        },
    );
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].body["rule"], "r");
    let value = fired[0].body["value"].as_f64().unwrap();
    assert!((value - 17.0 / 30.0).abs() < 1e-9, "{value}");
    // Later, the old failures slide out of the window.
    let mut e = Evaluator::new(vec![
        publish("errors(f) >= 5 over 10s").with_cooldown(Duration::ZERO),
    ]);
    assert_eq!(tick(&mut e, 0, &sample(0, 0, 0)), 0);
    assert_eq!(tick(&mut e, 1, &sample(0, 10, 0)), 1);
    assert_eq!(tick(&mut e, 30, &sample(0, 10, 0)), 0);
}

proptest::proptest! {
    #[test]
    fn any_rule_text_parses_or_says_why(text in "\\PC{0,80}") {
        if let Err(e) = MetaRule::parse("r", &text, MetaAction::Publish("alerts/meta".into())) {
            proptest::prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn rules_made_of_rule_words_parse_or_say_why(
        words in proptest::collection::vec(
            "(queue_depth|p99_ms|errors|\\(|\\)|f|>|<|>=|for|10s|5m|1\\.5|-3|NaN|inf|1e999|\\(\\))",
            0..8,
        ),
    ) {
        let text = words.join(" ");
        let _ = MetaRule::parse("r", &text, MetaAction::Publish("alerts/meta".into()));
    }
}

#[test]
fn cpu_rules_read_the_measured_utilisation_and_never_hold_unmeasured() {
    let bare = publish("cpu > 0.9 for 10s");
    let full = publish("cpu() > 90% for 10s");
    assert_eq!(
        (
            bare.metric,
            bare.function.as_deref(),
            bare.threshold,
            bare.duration
        ),
        (Metric::Cpu, None, 0.9, Duration::from_secs(10))
    );
    assert_eq!((full.metric, full.threshold), (Metric::Cpu, 0.9));
    let e = MetaRule::parse("r", "cpu(f) > 0.9", MetaAction::Publish("t".into())).unwrap_err();
    assert!(e.reason.contains("whole hub"), "{e}");
    let with_cpu = |cpu: Option<f32>| {
        let (mut load, stats) = sample(0, 0, 0);
        load.cpu_utilization = cpu;
        (load, stats)
    };
    let mut e = Evaluator::new(vec![bare]);
    assert_eq!(tick(&mut e, 0, &with_cpu(Some(0.95))), 0);
    assert_eq!(tick(&mut e, 5, &with_cpu(Some(0.97))), 0, "held 5 s");
    assert_eq!(tick(&mut e, 10, &with_cpu(Some(0.99))), 1, "held 10 s");
    let mut e = Evaluator::new(vec![publish("cpu < 0.5 for 1s")]);
    for t in 0..5 {
        assert_eq!(
            tick(&mut e, t, &with_cpu(None)),
            0,
            "unmeasured never holds"
        );
    }
}
