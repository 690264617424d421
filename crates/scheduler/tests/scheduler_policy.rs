//! Reservation policies applied to a real pool, on a manual clock.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fnhub_core::{
    BoxFuture, Environment, FunctionName, FunctionSpec, Invocation, ManualClock, PrepareError,
    Sandbox, from_fn,
};
use fnhub_sandbox::InProcessSandbox;
use fnhub_scheduler::policy::{FixedKeepAlive, ReservationPolicy, Windows};
use fnhub_scheduler::{Scheduler, Start};
use parking_lot::Mutex;

const MIN: Duration = Duration::from_secs(60);

fn scheduler(clock: &ManualClock, policy: Box<dyn ReservationPolicy>) -> Scheduler {
    scheduler_within(clock, policy, u64::MAX, 0)
}

/// An in-process sandbox that says it holds `held` bytes warm outside its environments (as
/// a process sandbox's templates do).
struct Holding {
    inner: InProcessSandbox,
    held: u64,
    /// Times the scheduler let a function go cold (`Sandbox::release`).
    released: Arc<AtomicUsize>,
}

impl Sandbox for Holding {
    fn name(&self) -> &'static str {
        "holding"
    }

    fn supports(&self, spec: &FunctionSpec) -> bool {
        self.inner.supports(spec)
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Environment>, PrepareError>> {
        self.inner.prepare(spec)
    }

    fn warm_bytes(&self) -> u64 {
        self.held
    }

    fn release(&self, spec: &FunctionSpec) {
        assert_eq!(spec.name.as_str(), "echo");
        self.released.fetch_add(1, Ordering::SeqCst);
    }
}

fn scheduler_within(
    clock: &ManualClock,
    policy: Box<dyn ReservationPolicy>,
    max_warm_mb: u64,
    held: u64,
) -> Scheduler {
    scheduler_releasing(clock, policy, max_warm_mb, held, Arc::default())
}

fn scheduler_releasing(
    clock: &ManualClock,
    policy: Box<dyn ReservationPolicy>,
    max_warm_mb: u64,
    held: u64,
    released: Arc<AtomicUsize>,
) -> Scheduler {
    let inner = InProcessSandbox::new();
    inner.register(
        "echo",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let sandbox = Holding {
        inner,
        held,
        released,
    };
    let s = Scheduler::builder()
        .workers(2)
        .clock(Arc::new(clock.clone()))
        .reservation_policy(policy)
        .max_warm_mb(max_warm_mb)
        .maintenance_interval(Duration::ZERO)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(FunctionName::new("echo").unwrap()))
        .unwrap();
    s
}

async fn call(s: &Scheduler) -> Start {
    let c = s
        .try_submit(Invocation::new("echo".parse().unwrap(), "x"))
        .unwrap()
        .await;
    assert!(c.outcome.is_ok());
    // The worker records the idle transition before it replies, so the plan is in place.
    c.start
}

#[tokio::test]
async fn fixed_keep_alive_evicts_after_its_window() {
    let clock = ManualClock::new();
    let s = scheduler(&clock, Box::new(FixedKeepAlive::new(10 * MIN)));
    assert_eq!(call(&s).await, Start::Cold);
    assert_eq!(s.idle_environments(), 1);
    clock.advance(9 * MIN);
    s.maintain().await;
    assert_eq!(s.idle_environments(), 1, "within the keep-alive");
    assert_eq!(call(&s).await, Start::Warm);
    clock.advance(10 * MIN + Duration::from_secs(1));
    s.maintain().await;
    assert_eq!(s.idle_environments(), 0, "evicted after the keep-alive");
    assert_eq!(call(&s).await, Start::Cold);
    s.shutdown().await;
}

/// What a policy was told: arrivals in a busy period, and the idle time before it.
type Heard = Arc<Mutex<Vec<(u32, Option<Duration>)>>>;

/// A policy with fixed windows that records what it is told.
struct Scripted {
    windows: Windows,
    environments: u32,
    heard: Heard,
}

impl ReservationPolicy for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn record(&mut self, _: usize, _: Instant, arrivals: u32, _: Duration, idle: Option<Duration>) {
        self.heard.lock().push((arrivals, idle));
    }

    fn decide(&mut self, _: usize, _: Instant) -> Windows {
        self.windows
    }

    fn environments(&self, _: usize) -> u32 {
        self.environments
    }
}

#[tokio::test]
async fn prewarm_loads_an_environment_when_the_window_opens() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let policy = Scripted {
        windows: Windows {
            prewarm: 5 * MIN,
            keep_alive: 2 * MIN,
        },
        environments: 1,
        heard: heard.clone(),
    };
    let s = scheduler(&clock, Box::new(policy));
    assert_eq!(call(&s).await, Start::Cold);
    s.maintain().await;
    assert_eq!(
        s.idle_environments(),
        0,
        "unloaded before the pre-warm point"
    );
    clock.advance(5 * MIN);
    s.maintain().await;
    assert_eq!(s.idle_environments(), 1, "pre-warmed");
    assert_eq!(
        call(&s).await,
        Start::Warm,
        "the pre-warmed environment serves"
    );
    clock.advance(3 * MIN);
    s.maintain().await;
    assert_eq!(s.idle_environments(), 0);
    clock.advance(5 * MIN);
    s.maintain().await;
    assert_eq!(
        s.idle_environments(),
        0,
        "past the keep-alive nothing is loaded"
    );

    let heard = heard.lock().clone();
    assert_eq!(heard, [(1, None), (1, Some(5 * MIN))]);
    s.shutdown().await;
}

#[tokio::test]
async fn the_sandbox_lets_go_of_a_function_the_policy_lets_go_cold() {
    // What a process sandbox holds for a function outside its environments (its Python
    // template) follows the policy: released when the windows unload the function, made
    // again by the pre-warm's prepare.
    let clock = ManualClock::new();
    let released = Arc::new(AtomicUsize::new(0));
    let policy = Scripted {
        windows: Windows {
            prewarm: 5 * MIN,
            keep_alive: 2 * MIN,
        },
        environments: 1,
        heard: Arc::default(),
    };
    let s = scheduler_releasing(&clock, Box::new(policy), u64::MAX, 0, released.clone());
    let count = || released.load(Ordering::SeqCst);
    assert_eq!(call(&s).await, Start::Cold);
    assert_eq!(count(), 0, "busy, then idle within nothing yet");
    s.maintain().await;
    assert_eq!(count(), 1, "unloaded until the pre-warm point: released");
    s.maintain().await;
    assert_eq!(count(), 1, "once per transition, not every pass");
    clock.advance(5 * MIN);
    s.maintain().await;
    assert_eq!(s.idle_environments(), 1, "pre-warmed");
    assert_eq!(count(), 1, "a pre-warm keeps it");
    clock.advance(2 * MIN + Duration::from_secs(1));
    s.maintain().await;
    assert_eq!(s.idle_environments(), 0);
    assert_eq!(count(), 2, "past the keep-alive: released again");
    s.maintain().await;
    assert_eq!(count(), 2);

    // A fixed keep-alive releases only when it evicts.
    let released = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new();
    let s2 = scheduler_releasing(
        &clock,
        Box::new(FixedKeepAlive::new(10 * MIN)),
        u64::MAX,
        0,
        released.clone(),
    );
    call(&s2).await;
    clock.advance(9 * MIN);
    s2.maintain().await;
    assert_eq!(released.load(Ordering::SeqCst), 0, "kept warm: held");
    clock.advance(2 * MIN);
    s2.maintain().await;
    assert_eq!(released.load(Ordering::SeqCst), 1);
    s.shutdown().await;
    s2.shutdown().await;
}

#[tokio::test]
async fn the_background_pass_applies_the_policy() {
    let sandbox = InProcessSandbox::new();
    sandbox.register(
        "echo",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let s = Scheduler::builder()
        .reservation_policy(Box::new(FixedKeepAlive::new(Duration::from_millis(200))))
        .maintenance_interval(Duration::from_millis(20))
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(FunctionName::new("echo").unwrap()))
        .unwrap();
    assert_eq!(call(&s).await, Start::Cold);
    assert_eq!(s.idle_environments(), 1);
    // Nothing but the background pass evicts; wait for it (a liveness bound, not a timing
    // assertion).
    for _ in 0..500 {
        if s.idle_environments() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.idle_environments(),
        0,
        "the background pass never evicted"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn prewarm_loads_as_many_environments_as_forecast_within_the_memory_bound() {
    let windows = Windows {
        prewarm: 5 * MIN,
        keep_alive: 2 * MIN,
    };
    // The function asks for 128 MiB (the default); four are forecast. The sandbox's own warm
    // memory (its templates) counts against the bound too.
    const MIB: u64 = 1024 * 1024;
    for (max_warm_mb, held, expected) in [
        (u64::MAX, 0, 4),
        (3 * 128, 0, 3),
        (100, 0, 0),
        (4 * 128, 200 * MIB, 2),
    ] {
        let clock = ManualClock::new();
        let policy = Scripted {
            windows,
            environments: 4,
            heard: Arc::new(Mutex::new(Vec::new())),
        };
        let s = scheduler_within(&clock, Box::new(policy), max_warm_mb, held);
        assert_eq!(call(&s).await, Start::Cold);
        s.maintain().await;
        assert_eq!(s.idle_environments(), 0);
        clock.advance(5 * MIN);
        s.maintain().await;
        assert_eq!(
            s.idle_environments(),
            expected,
            "within {max_warm_mb} MiB, {held} bytes held"
        );
        // A second pass in the window adds none: it was pre-warmed once.
        s.maintain().await;
        assert_eq!(s.idle_environments(), expected);
        s.shutdown().await;
    }
}
