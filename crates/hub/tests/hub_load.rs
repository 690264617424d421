//! Suspension on load at hub level: the hub feeds its scheduler's load to the durable
//! engine, which sheds a low-priority execution while the workers and the queue are full
//! and resumes it, without redoing its steps, once they drain.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub::libs::checkpoint::durable::LoadPolicy;
use fnhub::{
    DurableContext, EdgeHub, ExecutionId, FunctionName, FunctionSpec, Invocation, Priority,
    durable_fn, from_fn,
};

const STEPS: u32 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_runs_are_shed_under_load_and_resumed_after() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let done_steps = Arc::new(AtomicU32::new(0));
    let mut policy = LoadPolicy::default();
    policy.window = Duration::ZERO;
    let hog = {
        let gate = gate.clone();
        from_fn(move |_inv: Invocation| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok(Bytes::new())
            }
        })
    };
    let batch = {
        let done_steps = done_steps.clone();
        durable_fn(move |ctx: DurableContext, _input: Bytes| {
            let done_steps = done_steps.clone();
            async move {
                for i in 0..STEPS {
                    let done_steps = done_steps.clone();
                    ctx.step(&format!("part-{i}"), || async move {
                        done_steps.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    ctx.sleep(&format!("pause-{i}"), Duration::from_millis(100))
                        .await?;
                }
                Ok(Bytes::from_static(b"done"))
            }
        })
    };
    // The pressure this test makes is the queue's; the machine's processor, busy with
    // whatever else runs on it, is left out (a `/proc/stat` that never changes).
    let quiet = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(quiet.path(), "cpu  100 0 100 800 0 0 0 0 0 0\n").unwrap();
    let hub = EdgeHub::builder()
        .workers(2)
        .queue_capacity(4)
        .load_policy(policy)
        .cpu_meter(fnhub::libs::scheduler::CpuMeter::from_proc_stat(
            quiet.path(),
        ))
        .function(
            FunctionSpec::in_process(FunctionName::new("hog").unwrap()),
            hog,
        )
        .durable(
            FunctionSpec::in_process(FunctionName::new("batch").unwrap()),
            batch,
        )
        .build()
        .unwrap();

    let mut start = Invocation::new("batch".parse().unwrap(), "");
    start.context.priority = Priority::LOW;
    let id: ExecutionId = start.id.into();
    let started = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.call(start).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The other worker and the whole queue: the pressure is 1.0 from now on.
    let hogs: Vec<_> = (0..5)
        .map(|_| {
            let hub = hub.clone();
            tokio::spawn(async move { hub.invoke("hog".parse().unwrap(), "").await })
        })
        .collect();

    // Shed at its next operation once the hub's once-a-second load check sees the pressure.
    let first = tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("the start returns once the execution is shed")
        .unwrap()
        .unwrap();
    assert!(
        first.outcome.as_ref().unwrap().is_empty(),
        "a shed start has no output yet: {:?}",
        first.outcome
    );
    let at_shed = done_steps.load(Ordering::SeqCst);
    assert!(at_shed < STEPS, "it was shed before the end ({at_shed})");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        done_steps.load(Ordering::SeqCst),
        at_shed,
        "a shed execution does not run while the pressure lasts"
    );

    gate.add_permits(100);
    for h in hogs {
        h.await.unwrap().unwrap().unwrap();
    }
    let outcome = tokio::time::timeout(Duration::from_secs(20), hub.durable_outcome(id))
        .await
        .expect("resumed once the pressure dropped")
        .expect("a known execution");
    assert_eq!(&outcome.unwrap()[..], b"done");
    assert_eq!(
        done_steps.load(Ordering::SeqCst),
        STEPS,
        "every step ran exactly once across the shed and the resume"
    );
    hub.shutdown().await;
}
