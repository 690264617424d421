//! The live hub against the policy simulator: the same Azure-format trace replayed through
//! an `EdgeHub` on a manual clock (its scheduler, pool and maintenance pass) and through
//! the simulator gives the same cold starts and wasted memory, within 5%, under each policy.

use std::path::Path;

use fnhub::libs::scheduler::policy::sim::{Trace, simulate};
use fnhub::libs::scheduler::policy::{
    DemandForecast, FixedKeepAlive, HybridHistogram, ReservationPolicy,
};

/// The shared trace's functions with at most 2,000 invocations in the day (148 of 200,
/// about 30,000 invocations): all of the day's shapes but the busiest, in a test's time.
fn trace() -> Trace {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/200_inv.csv");
    let mut trace = Trace::load(&path).expect("the shared trace beside the repository");
    trace
        .functions
        .retain(|f| f.per_minute.iter().map(|&c| u64::from(c)).sum::<u64>() <= 2_000);
    // The hub sizes environments in whole MB.
    for f in &mut trace.functions {
        f.memory_mb = f.memory_mb.round().max(1.0);
    }
    assert!(trace.functions.len() > 100, "{}", trace.functions.len());
    trace
}

fn within(live: f64, sim: f64, what: &str, policy: &str) {
    let off = if sim == 0.0 {
        live.abs()
    } else {
        (live - sim).abs() / sim
    };
    assert!(
        off <= 0.05,
        "{policy}: live {what} {live:.3} vs simulated {sim:.3} ({:.1}% apart)",
        off * 100.0
    );
}

async fn compare(make: impl Fn() -> Box<dyn ReservationPolicy>) {
    let trace = trace();
    let sim = simulate(&trace, make().as_mut());
    let live = fnhub::replay::replay(&trace, make())
        .await
        .expect("the replay runs");
    eprintln!(
        "{}: cold {:.3}% live / {:.3}% sim; wasted {:.2} / {:.2} GB-min; {} environments loaded",
        live.policy,
        live.cold_start_pct,
        sim.cold_start_pct,
        live.wasted_gb_minutes,
        sim.wasted_gb_minutes,
        live.environments_loaded
    );
    assert_eq!(
        live.invocations, sim.invocations,
        "every invocation ran once"
    );
    assert!(live.cold_starts > 0 && sim.cold_starts > 0);
    within(
        live.cold_start_pct,
        sim.cold_start_pct,
        "cold-start %",
        live.policy,
    );
    within(
        live.wasted_gb_minutes,
        sim.wasted_gb_minutes,
        "wasted GB-minutes",
        live.policy,
    );
}

#[tokio::test]
async fn the_live_hub_matches_the_simulator_under_a_fixed_keep_alive() {
    compare(|| Box::new(FixedKeepAlive::default())).await;
}

#[tokio::test]
async fn the_live_hub_matches_the_simulator_under_the_demand_forecast() {
    compare(|| Box::new(DemandForecast::default())).await;
}

#[tokio::test]
async fn the_live_hub_matches_the_simulator_under_the_hybrid_histogram() {
    compare(|| Box::new(HybridHistogram::default())).await;
}
