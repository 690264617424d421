//! Per-flow overflow policies: what an invocation a flow asks for does when the hub will
//! not take it now (see [`Overflow`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{OnceLock, Weak};
use std::time::{Duration, Instant};

use fnhub_core::{Invocation, InvocationId};
use fnhub_router::{FlowId, Overflow};
use fnhub_scheduler::{Scheduler, SubmitError};
use parking_lot::Mutex;

use crate::edge::HubInner;
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
#[derive(Default)]
pub(crate) struct Overflows {
    pub(crate) hub: OnceLock<Weak<HubInner>>,
    flows: Mutex<HashMap<FlowId, FlowState>>,
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
    /// Invocations held by waiting flows.
    pub(crate) fn waiting(&self) -> usize {
        self.flows.lock().values().map(|f| f.waiting.len()).sum()
    }

    /// Admits `invocation` for `flow` under `policy`.
    pub(crate) fn submit(
        &self,
        scheduler: &Scheduler,
        stats: &Stats,
        flow: FlowId,
        policy: Overflow,
        invocation: Invocation,
    ) -> Result<Placed, SubmitError> {
        match policy {
            Overflow::DropOldest => {
                let mut flows = self.flows.lock();
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
                Stats::add(&stats.counters.overflow_dropped, 1);
                metrics::counter!("fnhub_flow_overflow_dropped_total", "policy" => "drop_oldest")
                    .increment(1);
                let id = scheduler.try_submit_detached(refused.into_invocation())?;
                remember(state, id);
                Ok(Placed::Admitted)
            }
            Overflow::Wait(timeout) => {
                let mut flows = self.flows.lock();
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
                state
                    .waiting
                    .push_back((invocation, Instant::now() + timeout));
                if !state.draining {
                    state.draining = true;
                    if let Some(hub) = self.hub.get() {
                        tokio::spawn(drain(hub.clone(), flow));
                    }
                }
                Ok(Placed::Waiting)
            }
            _ => scheduler
                .try_submit_detached(invocation)
                .map(|_| Placed::Admitted),
        }
    }
}

fn remember(state: &mut FlowState, id: InvocationId) {
    state.admitted.push_back(id);
    if state.admitted.len() > TRACKED {
        state.admitted.pop_front();
    }
}

/// Admits a waiting flow's invocations in order as room appears; those past their
/// deadline are dropped and counted.
async fn drain(hub: Weak<HubInner>, flow: FlowId) {
    let mut pause = Duration::from_millis(1);
    loop {
        let Some(hub) = hub.upgrade() else { return };
        {
            let mut flows = hub.overflows.flows.lock();
            let Some(state) = flows.get_mut(&flow) else {
                return;
            };
            let Some((invocation, deadline)) = state.waiting.pop_front() else {
                state.draining = false;
                return;
            };
            if Instant::now() > deadline {
                Stats::add(&hub.stats.counters.overflow_dropped, 1);
                metrics::counter!("fnhub_flow_overflow_dropped_total", "policy" => "wait")
                    .increment(1);
                tracing::warn!(%flow, function = %invocation.function, "an invocation waited past its flow's timeout; dropped");
                continue;
            }
            match hub.scheduler.try_submit_detached(invocation) {
                Ok(_) => {
                    pause = Duration::from_millis(1);
                    continue;
                }
                Err(e) if is_full(&e) => state.waiting.push_front((e.into_invocation(), deadline)),
                Err(e) => {
                    Stats::add(&hub.stats.counters.overflow_dropped, 1);
                    tracing::warn!(%flow, error = %e, "a waiting invocation was refused; dropped");
                    continue;
                }
            }
        }
        drop(hub);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
