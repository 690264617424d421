use super::*;
use fnhub_core::{FunctionName, FunctionSpec, Priority};
use proptest::prelude::*;
use std::time::{Duration, SystemTime};

fn limits(capacity: usize) -> Limits {
    Limits {
        capacity,
        per_function: capacity,
        per_tenant: capacity,
        weights: crate::FastMap::default(),
        tenant_limits: crate::FastMap::default(),
    }
}

fn spec(name: &str) -> Arc<Deployed> {
    let slot = match name {
        "f" => 0,
        "g" => 1,
        _ => 2,
    };
    Arc::new(Deployed::new(
        FunctionSpec::in_process(FunctionName::new(name).unwrap()),
        slot,
    ))
}

fn job(
    q: &mut Queue,
    spec: &Arc<Deployed>,
    tenant: &str,
    priority: u8,
    deadline: Option<u64>,
) -> Job {
    let mut inv = Invocation::new(spec.name.clone().into(), "");
    inv.context.principal = Principal::new(tenant);
    inv.context.priority = Priority(priority);
    inv.context.deadline = deadline.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    Job {
        seq: q.next_seq(),
        invocation: Box::new(inv),
        spec: spec.clone(),
        admitted_at: fnhub_core::Clock::now(&fnhub_core::SystemClock),
        reply: None,
    }
}

fn push(
    q: &mut Queue,
    spec: &Arc<Deployed>,
    tenant: &str,
    priority: u8,
    deadline: Option<u64>,
) -> InvocationId {
    let j = job(q, spec, tenant, priority, deadline);
    let id = j.invocation.id;
    q.check(&j.spec, &j.invocation.context.principal).unwrap();
    q.push(j);
    id
}

fn pop_finish(q: &mut Queue) -> Option<Job> {
    let j = q.pop(0, None)?;
    finish(q, &j);
    Some(j)
}

fn finish(q: &mut Queue, j: &Job) -> bool {
    q.finished(
        0,
        &j.spec,
        false,
        Duration::ZERO,
        Duration::ZERO,
        fnhub_core::Clock::now(&fnhub_core::SystemClock),
    )
    .0
}

#[test]
fn priority_first_then_deadline_then_arrival() {
    let f = spec("f");
    let mut q = Queue::new(limits(100), 4);
    let a = push(&mut q, &f, "t", 128, None);
    let b = push(&mut q, &f, "t", 128, Some(50));
    let c = push(&mut q, &f, "t", 200, None);
    let d = push(&mut q, &f, "t", 128, Some(10));
    let e = push(&mut q, &f, "t", 10, Some(1));
    let order: Vec<_> = std::iter::from_fn(|| pop_finish(&mut q))
        .map(|j| j.invocation.id)
        .collect();
    assert_eq!(order, [c, d, b, a, e]);
    assert_eq!(q.len(), 0);
}

#[test]
fn limits_refuse_with_their_reason() {
    let (f, g) = (spec("f"), spec("g"));
    let mut l = limits(4);
    l.per_function = 2;
    l.per_tenant = 3;
    l.tenant_limits.insert(Principal::new("small"), 1);
    let mut q = Queue::new(l, 4);
    push(&mut q, &f, "a", 128, None);
    push(&mut q, &f, "a", 128, None);
    assert_eq!(
        q.check(&f, &Principal::new("b")),
        Err(Refusal::FunctionLimit)
    );
    push(&mut q, &g, "a", 128, None);
    assert_eq!(q.check(&g, &Principal::new("a")), Err(Refusal::TenantLimit));
    push(&mut q, &g, "small", 128, None);
    assert_eq!(q.check(&g, &Principal::new("b")), Err(Refusal::Full));
    assert_eq!(pop_finish(&mut q).unwrap().spec.name.as_str(), "f");
    assert_eq!(
        q.check(&f, &Principal::new("small")),
        Err(Refusal::TenantLimit)
    );
}

#[test]
fn max_concurrency_parks_and_releases() {
    let mut f = FunctionSpec::in_process(FunctionName::new("f").unwrap());
    f.resources.max_concurrency = Some(1);
    let f = Arc::new(Deployed::new(f, 0));
    let g = spec("g");
    let mut q = Queue::new(limits(10), 4);
    let f1 = push(&mut q, &f, "t", 128, None);
    let f2 = push(&mut q, &f, "t", 128, None);
    let g1 = push(&mut q, &g, "t", 128, None);
    let first = q.pop(0, None).unwrap();
    assert_eq!(first.invocation.id, f1);
    assert_eq!(q.running_job(f1).map(|(w, _)| w), Some(0));
    // f2 is parked on the way; g1 runs.
    let second = q.pop(1, None).unwrap();
    assert_eq!(second.invocation.id, g1);
    assert!(q.pop(2, None).is_none());
    assert_eq!(q.len(), 1, "the parked job is still queued");
    let loads = q.function_loads();
    assert_eq!((loads["f"].queued, loads["f"].running), (1, 1));
    assert!(finish(&mut q, &first));
    assert_eq!(q.running_job(f1), None);
    assert_eq!(q.pop(0, None).unwrap().invocation.id, f2);
    assert_eq!(q.function_loads()["f"].completed_total, 1);
}

#[test]
fn cancel_removes_queued_and_parked_jobs() {
    let mut f = FunctionSpec::in_process(FunctionName::new("f").unwrap());
    f.resources.max_concurrency = Some(1);
    let f = Arc::new(Deployed::new(f, 0));
    let mut q = Queue::new(limits(10), 4);
    let a = push(&mut q, &f, "t", 128, None);
    let b = push(&mut q, &f, "t", 128, None);
    let c = push(&mut q, &f, "u", 128, None);
    assert_eq!(q.cancel(c).unwrap().invocation.id, c);
    assert!(q.cancel(c).is_none());
    let first = q.pop(0, None).unwrap();
    assert_eq!(first.invocation.id, a);
    assert!(q.pop(0, None).is_none()); // b parked
    assert_eq!(q.cancel(b).unwrap().invocation.id, b);
    assert_eq!(q.len(), 0);
    assert!(!finish(&mut q, &first));
}

#[test]
fn a_heavy_tenant_does_not_starve_a_light_one() {
    let f = spec("f");
    let mut q = Queue::new(limits(10_000), 4);
    for _ in 0..1000 {
        push(&mut q, &f, "heavy", 128, None);
    }
    let light = push(&mut q, &f, "light", 128, None);
    let position = std::iter::from_fn(|| pop_finish(&mut q))
        .position(|j| j.invocation.id == light)
        .unwrap();
    assert!(position <= 1, "light served at position {position}");
}

#[derive(Debug, Clone)]
enum Op {
    Push {
        tenant: usize,
        deadline: Option<u64>,
    },
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4, proptest::option::of(0u64..20))
            .prop_map(|(tenant, deadline)| Op::Push { tenant, deadline }),
        Just(Op::Pop),
    ]
}

proptest! {
    /// Under any arrival sequence, while principal i is backlogged, every other principal j
    /// is served at most ⌊w_j / w_i⌋ + 1 times between two services of i (or since i became
    /// backlogged).
    #[test]
    fn each_backlogged_principal_is_served_within_the_bound(
        weights in proptest::collection::vec(1u32..5, 4),
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let f = spec("f");
        let mut l = limits(100_000);
        let names = ["a", "b", "c", "d"];
        for (i, w) in weights.iter().enumerate() {
            l.weights.insert(Principal::new(names[i]), *w);
        }
        let mut q = Queue::new(l, 4);
        let mut backlog = [0usize; 4];
        let mut since = [[0u64; 4]; 4];
        for op in ops {
            match op {
                Op::Push { tenant, deadline } => {
                    if backlog[tenant] == 0 {
                        since[tenant] = [0; 4];
                    }
                    backlog[tenant] += 1;
                    push(&mut q, &f, names[tenant], 128, deadline);
                }
                Op::Pop => {
                    let Some(j) = pop_finish(&mut q) else {
                        prop_assert!(backlog.iter().all(|&b| b == 0));
                        continue;
                    };
                    let served = names.iter().position(|n| *n == j.invocation.context.principal.as_str()).unwrap();
                    backlog[served] -= 1;
                    since[served] = [0; 4];
                    for i in 0..4 {
                        if i != served && backlog[i] > 0 {
                            since[i][served] += 1;
                            let bound = fairness_bound(weights[i], weights[served]);
                            prop_assert!(since[i][served] <= bound,
                                "{} served {} times while {} waited (weights {:?}, bound {})",
                                names[served], since[i][served], names[i], weights, bound);
                        }
                    }
                }
            }
        }
    }

    /// Within one principal and class, the queue pops in the order of a stable sort by
    /// (deadline, none last) then arrival.
    #[test]
    fn one_principal_pops_in_deadline_order(deadlines in proptest::collection::vec(proptest::option::of(0u64..50), 0..100)) {
        let f = spec("f");
        let mut q = Queue::new(limits(1000), 4);
        let ids: Vec<_> = deadlines.iter().map(|d| push(&mut q, &f, "t", 128, *d)).collect();
        let mut expected: Vec<_> = ids.iter().zip(&deadlines).enumerate().collect();
        expected.sort_by_key(|(seq, (_, d))| (d.is_none(), **d, *seq));
        let expected: Vec<_> = expected.into_iter().map(|(_, (id, _))| *id).collect();
        let got: Vec<_> = std::iter::from_fn(|| pop_finish(&mut q)).map(|j| j.invocation.id).collect();
        prop_assert_eq!(got, expected);
    }
}
