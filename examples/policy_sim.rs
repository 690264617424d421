//! Replays an Azure Functions 2019 trace through a simulated pool under each reservation
//! policy, on simulated time, and reports cold starts against wasted warm memory.
//!
//! ```text
//! cargo run --release --example policy_sim -- [TRACE_inv.csv] [--json] [--plot FILE.svg] [--live]
//! ```
//!
//! `--live` also replays the trace through a running `EdgeHub` on a manual clock
//! ([`fnhub::replay`]) under each policy and prints its cold starts and wasted memory beside
//! the simulator's (memory is rounded to whole MB for both, as the hub sizes it).
//!
//! The default trace is `../shared/traces/200_inv.csv` (with `200_run.csv` and
//! `200_mem.csv` beside it): 200 functions over one day.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use fnhub::libs::scheduler::policy::sim::{SimReport, Trace, simulate};
use fnhub::libs::scheduler::policy::{
    DemandForecast, FixedKeepAlive, HybridHistogram, ReservationPolicy,
};
use fnhub::replay::{ReplayError, ReplayReport, replay};

const USAGE: &str = "usage: policy_sim [TRACE_inv.csv] [--json] [--plot FILE.svg] [--live]";

struct Options {
    trace: PathBuf,
    json: bool,
    plot: Option<PathBuf>,
    live: bool,
}

fn default_trace() -> PathBuf {
    let relative = Path::new("../shared/traces/200_inv.csv");
    if relative.exists() {
        return relative.to_owned();
    }
    // Run from elsewhere: the shared folder sits beside the repository.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/200_inv.csv")
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        trace: default_trace(),
        json: false,
        plot: None,
        live: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => o.json = true,
            "--live" => o.live = true,
            "--plot" => {
                o.plot = Some(
                    args.next()
                        .ok_or_else(|| format!("--plot needs a file\n{USAGE}"))?
                        .into(),
                )
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            flag if flag.starts_with("--") => {
                return Err(format!("unknown argument {flag:?}\n{USAGE}"));
            }
            path => o.trace = path.into(),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("policy_sim: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn policies() -> Vec<Box<dyn ReservationPolicy>> {
    vec![
        Box::new(FixedKeepAlive::default()),
        Box::new(DemandForecast::default()),
        Box::new(HybridHistogram::default()),
    ]
}

fn run(o: &Options) -> Result<(), Box<dyn Error>> {
    let mut trace = Trace::load(&o.trace)?;
    if o.live {
        for f in &mut trace.functions {
            f.memory_mb = f.memory_mb.round().max(1.0);
        }
    }
    let reports: Vec<SimReport> = policies()
        .iter_mut()
        .map(|p| simulate(&trace, p.as_mut()))
        .collect();
    // The same trace through a running hub, one policy after another.
    let live: Vec<(ReplayReport, Duration)> = if o.live {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        policies()
            .into_iter()
            .map(|p| {
                let started = std::time::Instant::now();
                let report = runtime.block_on(replay(&trace, p))?;
                Ok((report, started.elapsed()))
            })
            .collect::<Result<_, ReplayError>>()?
    } else {
        Vec::new()
    };
    // The fixed keep-alive frontier, 1 to 240 minutes: what a fixed policy buys with each
    // amount of memory, to compare every policy with the fixed one of equal memory.
    // Progress on stderr when it is a terminal: the frontier is most of the run.
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let frontier: Vec<(f64, SimReport)> = (1..=240u64)
        .map(|k| {
            if progress {
                eprint!("\rfixed keep-alive frontier: {k}/240 minutes");
            }
            let mut p = FixedKeepAlive::new(Duration::from_secs(60 * k));
            (k as f64, simulate(&trace, &mut p))
        })
        .collect();
    if progress {
        eprintln!();
    }

    if o.json {
        // One JSON document: the trace's figures and a report per policy.
        let mut policies = Vec::new();
        for r in &reports {
            let eq = equal_memory(&frontier, r.wasted_gb_minutes);
            policies.push(serde_json::json!({
                "policy": r.policy,
                "cold_start_pct": r.cold_start_pct,
                "cold_start_pct_p75_function": r.cold_start_pct_p75_function,
                "wasted_gb_minutes": r.wasted_gb_minutes,
                "decision_ns": r.decision_ns,
                "invocations": r.invocations,
                "cold_starts": r.cold_starts,
                "equal_memory_fixed": eq.map(|e| serde_json::json!({
                    "keep_alive_min": e.keep_alive_min,
                    "cold_start_pct": e.cold_start_pct,
                    "cold_start_pct_p75_function": e.cold_start_pct_p75_function,
                })),
                "live": live.iter().find(|(l, _)| l.policy == r.policy).map(|(l, took)| serde_json::json!({
                    "cold_start_pct": l.cold_start_pct,
                    "wasted_gb_minutes": l.wasted_gb_minutes,
                    "invocations": l.invocations,
                    "environments_loaded": l.environments_loaded,
                    "seconds": took.as_secs_f64(),
                })),
            }));
        }
        println!(
            "{}",
            serde_json::json!({
                "trace": {
                    "functions": trace.functions.len(),
                    "minutes": trace.minutes,
                    "defaulted": trace.defaulted,
                },
                "policies": policies,
            })
        );
    } else {
        println!(
            "{} functions, {} minutes, {} invocations ({} functions with default run time or memory)",
            trace.functions.len(),
            trace.minutes,
            reports.first().map_or(0, |r| r.invocations),
            trace.defaulted
        );
        println!(
            "{:<18} {:>10} {:>14} {:>16} {:>12}",
            "policy", "cold %", "cold % (p75 fn)", "wasted GB-min", "ns/invoc."
        );
        for r in &reports {
            println!(
                "{:<18} {:>10.3} {:>14.2} {:>16.1} {:>12.1}",
                r.policy,
                r.cold_start_pct,
                r.cold_start_pct_p75_function,
                r.wasted_gb_minutes,
                r.decision_ns
            );
        }
        println!();
        println!("against a fixed keep-alive holding the same memory (interpolated):");
        for r in &reports {
            match equal_memory(&frontier, r.wasted_gb_minutes) {
                Some(e) => println!(
                    "  {:<18} fixed {:>5.1} min: cold {:.4}% (p75 fn {:.2}%) -> {} has {:+.1}% cold starts, {:+.1}% at the p75 function",
                    r.policy,
                    e.keep_alive_min,
                    e.cold_start_pct,
                    e.cold_start_pct_p75_function,
                    r.policy,
                    relative(r.cold_start_pct, e.cold_start_pct),
                    relative(r.cold_start_pct_p75_function, e.cold_start_pct_p75_function),
                ),
                None => println!("  {:<18} outside the 1-240 min fixed range", r.policy),
            }
        }
        if !live.is_empty() {
            println!();
            println!("the live hub (an EdgeHub on a manual clock) beside the simulator:");
            println!(
                "{:<18} {:>10} {:>10} {:>16} {:>16} {:>8}",
                "policy",
                "cold % hub",
                "cold % sim",
                "wasted GB-min hub",
                "wasted GB-min sim",
                "seconds"
            );
            for (r, (l, took)) in reports.iter().zip(&live) {
                println!(
                    "{:<18} {:>10.3} {:>10.3} {:>16.1} {:>16.1} {:>8.1}",
                    l.policy,
                    l.cold_start_pct,
                    r.cold_start_pct,
                    l.wasted_gb_minutes,
                    r.wasted_gb_minutes,
                    took.as_secs_f64()
                );
            }
        }
    }
    if let Some(path) = &o.plot {
        plot(path, &reports, &frontier)?;
        if !o.json {
            println!("plot written to {}", path.display());
        }
    }
    Ok(())
}

/// A fixed keep-alive interpolated to hold a given amount of memory.
struct EqualMemory {
    keep_alive_min: f64,
    cold_start_pct: f64,
    cold_start_pct_p75_function: f64,
}

/// Interpolates the fixed keep-alive frontier (waste grows with the keep-alive) at `waste`.
fn equal_memory(frontier: &[(f64, SimReport)], waste: f64) -> Option<EqualMemory> {
    frontier.windows(2).find_map(|w| {
        let ((k0, a), (k1, b)) = (&w[0], &w[1]);
        if !(a.wasted_gb_minutes <= waste && waste <= b.wasted_gb_minutes) {
            return None;
        }
        let span = b.wasted_gb_minutes - a.wasted_gb_minutes;
        let t = if span > 0.0 {
            (waste - a.wasted_gb_minutes) / span
        } else {
            0.0
        };
        let lerp = |x: f64, y: f64| x + t * (y - x);
        Some(EqualMemory {
            keep_alive_min: lerp(*k0, *k1),
            cold_start_pct: lerp(a.cold_start_pct, b.cold_start_pct),
            cold_start_pct_p75_function: lerp(
                a.cold_start_pct_p75_function,
                b.cold_start_pct_p75_function,
            ),
        })
    })
}

/// `ours` relative to `base`, in percent (negative is fewer).
fn relative(ours: f64, base: f64) -> f64 {
    if base == 0.0 {
        0.0
    } else {
        100.0 * (ours - base) / base
    }
}

fn plot(
    path: &Path,
    reports: &[SimReport],
    frontier: &[(f64, SimReport)],
) -> Result<(), Box<dyn Error>> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(560);
    // Okabe and Ito's palette: told apart by readers with any common colour blindness.
    let colors = [
        RGBColor(230, 159, 0),
        RGBColor(0, 114, 178),
        RGBColor(0, 158, 115),
        RGBColor(213, 94, 0),
        RGBColor(204, 121, 167),
    ];

    let max_waste = reports
        .iter()
        .map(|r| r.wasted_gb_minutes)
        .fold(1.0, f64::max)
        * 1.15;
    let max_cold = reports.iter().map(|r| r.cold_start_pct).fold(0.1, f64::max) * 1.25;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "Cold starts vs wasted warm memory (lower left is better)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..max_waste, 0.0..max_cold)?;
    chart
        .configure_mesh()
        .x_desc("wasted memory (GB-minutes), lower is better")
        .y_desc("cold starts (% of invocations), lower is better")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            frontier
                .iter()
                .map(|(_, r)| (r.wasted_gb_minutes, r.cold_start_pct))
                .filter(|(w, c)| *w <= max_waste && *c <= max_cold),
            BLACK.mix(0.4).stroke_width(1),
        ))?
        .label("fixed keep-alive, 1-240 min")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for (r, color) in reports.iter().zip(colors) {
        chart
            .draw_series(std::iter::once(Circle::new(
                (r.wasted_gb_minutes, r.cold_start_pct),
                6,
                color.filled(),
            )))?
            .label(r.policy)
            .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    let hours = reports
        .first()
        .map_or(24, |r| r.cold_start_pct_by_hour.len());
    let max_hourly = reports
        .iter()
        .flat_map(|r| r.cold_start_pct_by_hour.iter().copied())
        .fold(0.1, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "Cold-start rate by hour of day (lower is better)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0usize..hours, 0.0..max_hourly)?;
    chart
        .configure_mesh()
        .x_desc("hour")
        .y_desc("cold starts (%)")
        .draw()?;
    for (r, color) in reports.iter().zip(colors) {
        chart
            .draw_series(LineSeries::new(
                r.cold_start_pct_by_hour.iter().copied().enumerate(),
                color.stroke_width(2),
            ))?
            .label(r.policy)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
