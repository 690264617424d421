//! Children of running invocations: derived deadlines and deferral under load, on a
//! manual clock.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::time::Duration;

use fnhub_core::{Clock, FunctionName, FunctionSpec, Invocation, ManualClock, Principal, from_fn};
use fnhub_sandbox::InProcessSandbox;
use fnhub_scheduler::{Scheduler, Ticket};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

struct Rig {
    s: Scheduler,
    clock: ManualClock,
    gate: Arc<Semaphore>,
    order: Arc<Mutex<Vec<String>>>,
}

/// One worker; "gated" waits for a permit, then records its payload.
fn rig() -> Rig {
    let clock = ManualClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let sandbox = InProcessSandbox::new().with_clock(Arc::new(clock.clone()));
    let (g, o) = (gate.clone(), order.clone());
    sandbox.register(
        "gated",
        from_fn(move |inv: Invocation| {
            let (g, o) = (g.clone(), o.clone());
            async move {
                g.acquire().await.unwrap().forget();
                o.lock()
                    .push(String::from_utf8_lossy(&inv.payload).into_owned());
                Ok(inv.payload)
            }
        }),
    );
    let s = Scheduler::builder()
        .workers(1)
        .clock(Arc::new(clock.clone()))
        .maintenance_interval(Duration::ZERO)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    // Timeout 3 s: the predicted run time before the first completion.
    s.deploy(
        FunctionSpec::in_process(FunctionName::new("gated").unwrap())
            .with_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    Rig {
        s,
        clock,
        gate,
        order,
    }
}

fn call(payload: &str) -> Invocation {
    Invocation::new("gated".parse().unwrap(), payload.to_owned())
}

/// Lets one gated invocation through and waits until it has recorded itself.
async fn step(r: &Rig) {
    let before = r.order.lock().len();
    r.gate.add_permits(1);
    for _ in 0..2000 {
        if r.order.lock().len() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("no invocation ran");
}

async fn wait_running(s: &Scheduler) {
    use fnhub_core::LoadProbe;
    for _ in 0..2000 {
        if s.snapshot().running == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("nothing running");
}

/// `child` made by `parent`: the context derived in the one place children get theirs, with
/// the child's own deadline kept when it is sooner.
fn child_of(parent: &Invocation, mut child: Invocation) -> Invocation {
    let own = child.context.deadline;
    child.context = parent
        .context
        .child(parent.id.into())
        .with_deadline_at_most(own);
    child
}

/// blocker running, n1 and n2 queued, then a child with 10 s to its parent's deadline.
async fn setup_with_child(r: &Rig) -> (Vec<Ticket>, Ticket, Invocation) {
    let mut tickets = vec![r.s.try_submit(call("blocker")).unwrap()];
    wait_running(&r.s).await;
    tickets.push(r.s.try_submit(call("n1")).unwrap());
    tickets.push(r.s.try_submit(call("n2")).unwrap());
    let mut parent = call("parent");
    parent.context.deadline = Some(r.clock.system_time() + Duration::from_secs(10));
    parent.context.principal = Principal::new("tenant-a");
    let child =
        r.s.try_submit_child(child_of(&parent, call("child")))
            .unwrap();
    (tickets, child, parent)
}

#[tokio::test]
async fn a_deferred_child_yields_until_its_latest_safe_start() {
    let r = rig();
    let (tickets, child, _) = setup_with_child(&r).await;
    step(&r).await; // blocker
    step(&r).await; // n1: the child's latest safe start (10 s - 3 s) has not come
    step(&r).await;
    step(&r).await;
    assert_eq!(*r.order.lock(), ["blocker", "n1", "n2", "child"]);
    child.await.outcome.unwrap();
    for t in tickets {
        t.await.outcome.unwrap();
    }
    r.s.shutdown().await;
}

#[tokio::test]
async fn a_child_goes_first_once_its_latest_safe_start_comes() {
    let r = rig();
    let (tickets, child, parent) = setup_with_child(&r).await;
    step(&r).await; // blocker; n1 starts and waits for its permit
    wait_running(&r.s).await;
    r.clock.advance(Duration::from_secs(8)); // past 10 s - 3 s
    step(&r).await; // n1
    step(&r).await;
    step(&r).await;
    assert_eq!(*r.order.lock(), ["blocker", "n1", "child", "n2"]);

    let c = child.await;
    c.outcome.unwrap();
    assert_eq!(
        c.context.deadline, parent.context.deadline,
        "derived from the parent"
    );
    assert_eq!(c.context.parent, Some(parent.id.into()));
    assert_eq!(c.context.trace.trace_id(), parent.context.trace.trace_id());
    assert_ne!(
        c.context.trace.parent_id(),
        parent.context.trace.parent_id()
    );
    assert_eq!(c.context.principal.as_str(), "tenant-a");
    assert_eq!(c.context.depth, 1);
    for t in tickets {
        t.await.outcome.unwrap();
    }
    r.s.shutdown().await;
}

#[tokio::test]
async fn idle_capacity_runs_a_child_at_once_and_its_own_sooner_deadline_stays() {
    let r = rig();
    let mut parent = call("parent");
    parent.context.deadline = Some(r.clock.system_time() + Duration::from_secs(60));
    let mut child = call("child");
    let own = r.clock.system_time() + Duration::from_secs(5);
    child.context.deadline = Some(own);
    let t = r.s.try_submit_child(child_of(&parent, child)).unwrap();
    step(&r).await;
    let c = t.await;
    assert_eq!(c.context.deadline, Some(own));
    assert_eq!(*r.order.lock(), ["child"]);
    r.s.shutdown().await;
}
