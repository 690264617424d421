//! The way of one event inside the hub: the router delivers it to local subscribers and
//! names the functions its flows target; each becomes an invocation admitted under its
//! flow's overflow policy; a function's output is published on its output topic, a hop
//! deeper. Every path takes the scheduler it admits into as an argument, so nothing here
//! holds the hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use fnhub_core::{
    Clock, Event, EventSource, FunctionName, FunctionRef, FunctionSpec, Invocation,
    InvocationContext,
};
use fnhub_router::topic::expand_template;
use fnhub_router::{RouteError, Router};
use fnhub_scheduler::{Completion, Observer, Scheduler, Start, SubmitError, WeakScheduler};

use crate::overflow::{Overflows, Placed};
use crate::stats::Stats;

/// What publishing one event did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PublishReport {
    /// Invocations admitted.
    pub invocations: usize,
    /// Deliveries to local subscribers.
    pub delivered: usize,
    /// Local subscribers skipped because their queue was full.
    pub full: usize,
    /// Invocations refused at admission, each handed back for the caller to retry or drop.
    pub rejected: Vec<SubmitError>,
    /// Invocations held by flows whose overflow policy waits for room; they are admitted
    /// in order as room appears (or dropped and counted past the flow's timeout).
    pub waiting: usize,
}

/// Where an event comes from, for admission during shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From outside the hub: starts no invocation once shutdown has begun.
    Outside,
    /// Made inside the hub by admitted work (an output, a publish, a shadow document):
    /// flows on during shutdown, so admitted work finishes with what it triggers.
    Inside,
}

/// The router and what admission beside it needs: the flows' overflow state, the hub's
/// counters and whether shutdown has begun.
pub(crate) struct Routes {
    pub(crate) router: Router,
    pub(crate) overflows: Overflows,
    pub(crate) stats: Arc<Stats>,
    /// Set when shutdown begins: outside work is refused, inside work flows on.
    closing: AtomicBool,
    max_depth: u32,
}

impl Routes {
    pub(crate) fn new(max_depth: u32, clock: Arc<dyn Clock>) -> Routes {
        let stats = Arc::new(Stats::new());
        Routes {
            router: Router::new().with_max_depth(max_depth),
            overflows: Overflows::new(stats.clone(), clock),
            stats,
            closing: AtomicBool::new(false),
            max_depth,
        }
    }

    /// The longest chain of events and calls the hub lets one event start.
    pub(crate) fn max_depth(&self) -> u32 {
        self.max_depth
    }

    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Routes an event made inside the hub (a function's publish, a shadow's document, a
    /// metaevent): counted as an output, and refused invocations are logged.
    pub(crate) fn route_internal(
        &self,
        scheduler: &Scheduler,
        event: Event,
    ) -> Result<PublishReport, RouteError> {
        Stats::add(&self.stats.counters.events_out, 1);
        let topic = event.topic.clone();
        let report = self.route(scheduler, event, Origin::Inside)?;
        for rejected in &report.rejected {
            tracing::warn!(%topic, error = %rejected, "invocation triggered by an event made in the hub was not admitted");
        }
        Ok(report)
    }

    /// Routes an event to local subscribers and admits the invocations its flows ask for.
    pub(crate) fn route(
        &self,
        scheduler: &Scheduler,
        event: Event,
        origin: Origin,
    ) -> Result<PublishReport, RouteError> {
        let refuse = origin == Origin::Outside && self.is_closing();
        let dispatch = self.router.dispatch(event).inspect_err(|_| {
            Stats::add(&self.stats.counters.events_refused, 1);
        })?;
        let c = &self.stats.counters;
        Stats::add(&c.delivered, dispatch.delivered);
        Stats::add(&c.delivery_full, dispatch.full);
        Stats::add(&c.events_refused, dispatch.refused);
        let mut report = PublishReport {
            delivered: dispatch.delivered,
            full: dispatch.full,
            ..PublishReport::default()
        };
        for routed in dispatch.invocations {
            let invocation = invocation_for(routed.function, routed.event);
            if refuse {
                report.rejected.push(SubmitError::ShuttingDown(invocation));
                continue;
            }
            match self
                .overflows
                .submit(scheduler, routed.flow, routed.overflow, invocation)
            {
                Ok(Placed::Admitted) => report.invocations += 1,
                Ok(Placed::Waiting) => report.waiting += 1,
                Err(e) => report.rejected.push(e),
            }
        }
        Stats::refused(&c.rejected, "refused by admission", report.rejected.len());
        Ok(report)
    }

    /// Publishes a function's output on its output topic (the template expanded against
    /// the topic that triggered it), as an event caused by the invocation.
    pub(crate) fn publish_output(
        &self,
        scheduler: &Scheduler,
        function: &FunctionName,
        context: &InvocationContext,
        template: &str,
        payload: Bytes,
    ) {
        let trigger = context.topic.as_deref().unwrap_or("");
        let topic = match expand_template(template, trigger) {
            Ok(t) => t,
            Err(error) => {
                Stats::add(&self.stats.counters.events_refused, 1);
                tracing::warn!(%function, %error, "output topic does not fit; output dropped");
                return;
            }
        };
        let event = Event::new(
            topic.as_str(),
            payload,
            EventSource::Function(function.clone()),
        )
        .caused_by(context);
        Stats::add(&self.stats.counters.events_out, 1);
        match self.route(scheduler, event, Origin::Inside) {
            Ok(report) => {
                for rejected in report.rejected {
                    tracing::warn!(%function, error = %rejected, "invocation triggered by an output was not admitted");
                }
            }
            Err(error) => {
                tracing::warn!(%function, %error, "output event refused");
            }
        }
    }
}

/// Why a child invocation made with `context` (from `InvocationContext::child`) is
/// refused by a hub whose depth limit is `max`, if it is: the one check for every child a
/// function makes (a service call, a durable execution's child), as the router's is for
/// events.
pub(crate) fn too_deep(
    function: &dyn std::fmt::Display,
    context: &InvocationContext,
    max: u32,
) -> Option<String> {
    (context.depth > max).then(|| {
        format!(
            "the call to {function} is {} hops deep; the limit is {max}",
            context.depth
        )
    })
}

/// The invocation an event triggers: its payload, its topic, its trace context (or a new
/// trace) and its depth.
fn invocation_for(function: FunctionRef, event: Event) -> Invocation {
    let mut context = InvocationContext::default();
    if let Some(trace) = event.headers.trace() {
        context.trace = trace;
    }
    context.tracestate = event
        .headers
        .get(fnhub_core::Headers::TRACESTATE)
        .map(str::to_owned);
    context.depth = event.headers.depth();
    context.topic = Some(event.topic);
    Invocation::new(function, event.payload).with_context(context)
}

/// Feeds completions into the hub's stats and publishes outputs on output topics. Made by
/// the scheduler's build ([`fnhub_scheduler::SchedulerBuilder::observer_with`]), so it
/// reaches the scheduler through a weak handle and holds nothing of the hub but its routes.
pub(crate) struct HubObserver {
    pub(crate) routes: Arc<Routes>,
    pub(crate) scheduler: WeakScheduler,
}

impl Observer for HubObserver {
    fn on_completed(&self, c: &Completion, spec: &FunctionSpec) {
        let outcome = match &c.outcome {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        // Every failure is said once, here: for an `Event` invocation or a flow's, no
        // caller is waiting to see it.
        // An error the function returned itself (its own logs say why) at debug; crashes,
        // timeouts and the rest at warn.
        if let Err(e) = &c.outcome
            && e.kind == fnhub_core::ErrorKind::Handled
        {
            tracing::debug!(
                target: "fnhub::invocation",
                function = %c.function,
                request_id = %c.id,
                error_type = e.error_type.as_deref().unwrap_or("-"),
                "{}",
                e.message
            );
        } else if let Err(e) = &c.outcome
            && e.kind != fnhub_core::ErrorKind::Cancelled
        {
            tracing::warn!(
                target: "fnhub::invocation",
                function = %c.function,
                version = %spec.version,
                request_id = %c.id,
                kind = e.kind.as_str(),
                error_type = e.error_type.as_deref().unwrap_or("-"),
                "{}",
                e.message
            );
        }
        self.routes.stats.completed(
            &c.function,
            outcome,
            c.start == Start::Cold,
            c.queued + c.ran,
        );
        if let (Ok(output), Some(template)) = (&c.outcome, &spec.output_topic)
            && !output.is_empty()
            && let Some(scheduler) = self.scheduler.upgrade()
        {
            self.routes.publish_output(
                &scheduler,
                &c.function,
                &c.context,
                template,
                output.clone(),
            );
        }
    }
}
