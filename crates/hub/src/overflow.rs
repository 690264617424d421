//! Per-flow overflow policies: what an invocation a flow asks for does when the hub will
//! not take it now (see [`Overflow`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnhub_core::{Clock, Invocation, InvocationId};
use fnhub_router::{FlowId, Overflow};
use fnhub_scheduler::{Scheduler, SubmitError, WeakScheduler};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::stats::Stats;

/// Invocation ids a drop-oldest flow remembers, newest last.
const TRACKED: usize = 65_536;
/// Invocations a waiting flow holds at most; past it, it rejects.
const MAX_WAITING: usize = 65_536;

#[derive(Default)]
struct FlowState {
    /// Admitted invocations of a drop-oldest flow, oldest first.
    admitted: VecDeque<InvocationId>,
    /// Invocations of a waiting flow not admitted yet, oldest first, with their deadline.
    waiting: VecDeque<(Invocation, Instant)>,
    /// Whether a task is admitting `waiting`.
    draining: bool,
}

/// The flows' overflow state of one hub.
pub(crate) struct Overflows {
    shared: Arc<Shared>,
}

struct Shared {
    flows: Mutex<HashMap<FlowId, FlowState>>,
    stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
    /// Signalled when a waiting flow's last invocation leaves it.
    emptied: Notify,
}

/// Refusals that mean "not now": the queue, the function's or the tenant's limit.
fn is_full(e: &SubmitError) -> bool {
    matches!(
        e,
        SubmitError::Full(_) | SubmitError::FunctionLimit(_) | SubmitError::TenantLimit(_)
    )
}

/// What became of a routed invocation.
pub(crate) enum Placed {
    /// Admitted now.
    Admitted,
    /// Held by a waiting flow.
    Waiting,
}

impl Overflows {
    pub(crate) fn new(stats: Arc<Stats>, clock: Arc<dyn Clock>) -> Overflows {
        Overflows {
            shared: Arc::new(Shared {
                flows: Mutex::default(),
                stats,
                clock,
                emptied: Notify::new(),
            }),
        }
    }

    /// Invocations held by waiting flows.
    pub(crate) fn waiting(&self) -> usize {
        self.shared.waiting()
    }

    /// Resolves once no flow holds a waiting invocation (at once if none does now).
    pub(crate) async fn emptied(&self) {
        loop {
            let emptied = self.shared.emptied.notified();
            if self.waiting() == 0 {
                return;
            }
            emptied.await;
        }
    }

    /// Admits `invocation` for `flow` under `policy`.
    pub(crate) fn submit(
        &self,
        scheduler: &Scheduler,
        flow: FlowId,
        policy: Overflow,
        invocation: Invocation,
    ) -> Result<Placed, SubmitError> {
        match policy {
            Overflow::DropOldest => {
                let mut flows = self.shared.flows.lock();
                let state = flows.entry(flow).or_default();
                let refused = match scheduler.try_submit_detached(invocation) {
                    Ok(id) => {
                        remember(state, id);
                        return Ok(Placed::Admitted);
                    }
                    Err(e) if is_full(&e) => e,
                    Err(e) => return Err(e),
                };
                // The oldest of this flow still waiting for a worker makes room.
                let mut made_room = false;
                while let Some(old) = state.admitted.pop_front() {
                    if scheduler.cancel_queued(old) {
                        made_room = true;
                        break;
                    }
                }
                if !made_room {
                    return Err(refused);
                }
                self.shared.dropped("drop_oldest");
                let id = scheduler.try_submit_detached(refused.into_invocation())?;
                remember(state, id);
                Ok(Placed::Admitted)
            }
            Overflow::Wait(timeout) => {
                let mut flows = self.shared.flows.lock();
                let state = flows.entry(flow).or_default();
                let invocation = if state.waiting.is_empty() {
                    match scheduler.try_submit_detached(invocation) {
                        Ok(_) => return Ok(Placed::Admitted),
                        Err(e) if is_full(&e) => e.into_invocation(),
                        Err(e) => return Err(e),
                    }
                } else {
                    // Behind the ones already waiting, to keep the flow's order.
                    invocation
                };
                if state.waiting.len() >= MAX_WAITING {
                    return Err(SubmitError::Full(invocation));
                }
                let deadline = self.shared.clock.now() + timeout;
                state.waiting.push_back((invocation, deadline));
                if !state.draining {
                    state.draining = true;
                    tokio::spawn(drain(self.shared.clone(), scheduler.downgrade(), flow));
                }
                Ok(Placed::Waiting)
            }
            _ => scheduler
                .try_submit_detached(invocation)
                .map(|_| Placed::Admitted),
        }
    }
}

impl Shared {
    fn waiting(&self) -> usize {
        self.flows.lock().values().map(|f| f.waiting.len()).sum()
    }

    fn dropped(&self, policy: &'static str) {
        Stats::refused(
            &self.stats.counters.overflow_dropped,
            "dropped by a flow's overflow policy",
            1,
        );
        metrics::counter!("fnhub_flow_overflow_dropped_total", "policy" => policy).increment(1);
    }
}

fn remember(state: &mut FlowState, id: InvocationId) {
    state.admitted.push_back(id);
    if state.admitted.len() > TRACKED {
        state.admitted.pop_front();
    }
}

/// What the drain of a waiting flow does next.
enum Next {
    /// Try the next invocation now.
    Again,
    /// The scheduler is full: wait for room, at most this long (the front's deadline).
    WaitFor(Duration),
    /// Nothing is waiting any more.
    Done,
}

/// Admits a waiting flow's invocations in order as room appears; those past their
/// deadline are dropped and counted. It waits on the scheduler's readiness
/// ([`Scheduler::room`]), bounded by the front invocation's deadline: no polling.
async fn drain(shared: Arc<Shared>, scheduler: WeakScheduler, flow: FlowId) {
    loop {
        let Some(scheduler) = scheduler.upgrade() else {
            return;
        };
        // Made before the attempt, so room that appears in between is not missed.
        let room = scheduler.room();
        match drain_one(&shared, &scheduler, flow) {
            Next::Again => continue,
            Next::Done => {
                shared.emptied.notify_waiters();
                return;
            }
            Next::WaitFor(left) => {
                let _ = tokio::time::timeout(left, room).await;
            }
        }
    }
}

fn drain_one(shared: &Shared, scheduler: &Scheduler, flow: FlowId) -> Next {
    let mut flows = shared.flows.lock();
    let Some(state) = flows.get_mut(&flow) else {
        return Next::Done;
    };
    let Some((invocation, deadline)) = state.waiting.pop_front() else {
        state.draining = false;
        return Next::Done;
    };
    let now = shared.clock.now();
    if now > deadline {
        shared.dropped("wait");
        tracing::warn!(%flow, function = %invocation.function, "an invocation waited past its flow's timeout; dropped");
        return Next::Again;
    }
    match scheduler.try_submit_detached(invocation) {
        Ok(_) => Next::Again,
        Err(e) if is_full(&e) => {
            state.waiting.push_front((e.into_invocation(), deadline));
            // Past the deadline the front is dropped on the next look; a moment more so
            // that look comes after it.
            Next::WaitFor(deadline.saturating_duration_since(now) + Duration::from_millis(1))
        }
        Err(e) => {
            Stats::add(&shared.stats.counters.overflow_dropped, 1);
            tracing::warn!(%flow, error = %e, "a waiting invocation was refused; dropped");
            Next::Again
        }
    }
}
