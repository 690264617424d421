//! Environments: affinity keys go back to the environment that served them; an environment
//! serves up to its function's concurrency at once.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Environment, FunctionName, FunctionSpec, Invocation, IsolationReport, Outcome,
    PrepareError, Sandbox,
};
use fnhub_scheduler::{Scheduler, Start, Ticket};
use tokio::sync::Semaphore;

/// A sandbox whose environments answer with their own number; "hold" waits for a permit.
struct Numbered {
    next: AtomicU32,
    gate: Arc<Semaphore>,
}

struct NumberedEnv {
    n: u32,
    gate: Arc<Semaphore>,
    report: IsolationReport,
}

impl Sandbox for Numbered {
    fn name(&self) -> &'static str {
        "numbered"
    }

    fn supports(&self, _: &FunctionSpec) -> bool {
        true
    }

    fn prepare<'a>(
        &'a self,
        _: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Environment>, PrepareError>> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.clone();
        Box::pin(async move {
            Ok(Box::new(NumberedEnv {
                n,
                gate,
                report: IsolationReport::default(),
            }) as Box<dyn Environment>)
        })
    }
}

impl Environment for NumberedEnv {
    fn invoke(&self, inv: Invocation) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            if &inv.payload[..] == b"hold" {
                self.gate.acquire().await.unwrap().forget();
            }
            Ok(Bytes::from(self.n.to_string()))
        })
    }

    fn isolation(&self) -> &IsolationReport {
        &self.report
    }
}

fn scheduler(wait: Duration) -> (Scheduler, Arc<Semaphore>) {
    scheduler_with(wait, 1)
}

fn scheduler_with(wait: Duration, concurrency: u32) -> (Scheduler, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let s = Scheduler::builder()
        .workers(4)
        .affinity_wait(wait)
        .maintenance_interval(Duration::ZERO)
        .sandbox(Arc::new(Numbered {
            next: AtomicU32::new(0),
            gate: gate.clone(),
        }))
        .build()
        .unwrap();
    s.deploy(
        FunctionSpec::in_process(FunctionName::new("f").unwrap()).with_concurrency(concurrency),
    )
    .unwrap();
    (s, gate)
}

fn submit(s: &Scheduler, payload: &'static str, key: &str) -> Ticket {
    let mut inv = Invocation::new("f".parse().unwrap(), payload);
    inv.context.affinity_key = Some(key.to_owned());
    s.try_submit(inv).unwrap()
}

async fn env_of(t: Ticket) -> (String, Start) {
    let c = t.await;
    (
        String::from_utf8(c.outcome.unwrap().to_vec()).unwrap(),
        c.start,
    )
}

async fn wait_running(s: &Scheduler, n: usize) {
    use fnhub_core::LoadProbe;
    for _ in 0..2000 {
        if s.snapshot().running == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never {n} running");
}

#[tokio::test]
async fn keys_return_to_their_environment() {
    let (s, gate) = scheduler(Duration::from_millis(10));
    // Two overlapping calls make two environments.
    let a = submit(&s, "hold", "a");
    let b = submit(&s, "hold", "b");
    wait_running(&s, 2).await;
    gate.add_permits(2);
    let (env_a, _) = env_of(a).await;
    let (env_b, _) = env_of(b).await;
    assert_ne!(env_a, env_b);
    for _ in 0..10 {
        assert_eq!(
            env_of(submit(&s, "x", "b")).await,
            (env_b.clone(), Start::Warm)
        );
        assert_eq!(
            env_of(submit(&s, "x", "a")).await,
            (env_a.clone(), Start::Warm)
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_key_waits_a_bounded_time_for_its_busy_environment() {
    let (s, gate) = scheduler(Duration::from_secs(30));
    let a = submit(&s, "hold", "a");
    let b = submit(&s, "hold", "b");
    wait_running(&s, 2).await;
    gate.add_permits(2);
    let (env_a, _) = env_of(a).await;
    let (env_b, _) = env_of(b).await;

    // "a" is busy on its environment while "b"'s sits idle.
    let held = submit(&s, "hold", "a");
    wait_running(&s, 1).await;
    let waiting = submit(&s, "x", "a");
    wait_running(&s, 2).await; // taken by a worker, waiting for env_a rather than env_b
    assert_eq!(s.idle_environments(), 1, "env_b stays idle");
    gate.add_permits(1);
    assert_eq!(env_of(held).await.0, env_a);
    assert_eq!(env_of(waiting).await, (env_a, Start::Warm));
    assert_eq!(env_of(submit(&s, "x", "b")).await.0, env_b);
    s.shutdown().await;
}

#[tokio::test]
async fn without_a_wait_a_busy_key_takes_any_environment() {
    let (s, gate) = scheduler(Duration::ZERO);
    let (env_a, _) = env_of(submit(&s, "x", "a")).await;
    let held = submit(&s, "hold", "a");
    wait_running(&s, 1).await;
    let (other, start) = env_of(submit(&s, "x", "a")).await;
    assert_ne!(other, env_a);
    assert_eq!(start, Start::Cold);
    gate.add_permits(1);
    assert_eq!(env_of(held).await.0, env_a);
    s.shutdown().await;
}

#[tokio::test]
async fn one_environment_serves_up_to_its_concurrency() {
    let (s, gate) = scheduler_with(Duration::ZERO, 3);
    let held: Vec<_> = (0..4)
        .map(|_| {
            let inv = Invocation::new("f".parse().unwrap(), "hold");
            s.try_submit(inv).unwrap()
        })
        .collect();
    wait_running(&s, 4).await;
    gate.add_permits(4);
    let mut envs = std::collections::BTreeMap::new();
    for t in held {
        let (env, _) = env_of(t).await;
        *envs.entry(env).or_insert(0) += 1;
    }
    assert_eq!(envs.len(), 2, "{envs:?}");
    assert_eq!(
        envs.values().copied().max(),
        Some(3),
        "three calls shared one environment"
    );
    assert_eq!(s.idle_environments(), 2);
    s.shutdown().await;
}
