//! The node's decisions, apart from NATS: what kind of work a message is, and what to
//! answer JetStream (acknowledge, hand back, retry later, give up) given what the hub and
//! the durable engine said and how often the message came. Each is a pure function of its
//! inputs, tested here without a server; [`node`](super::node) does the I/O they name.

use std::time::Duration;

use fnhub_checkpoint::durable::{EngineError, RunResult, Woken};
use fnhub_core::{Outcome, PendingDependency};
use fnhub_scheduler::SubmitError;

use crate::durable::DurableEnd;

/// How soon a node that is itself shedding hands back the wake of a shed execution.
pub(super) const SHED_RETRY: Duration = Duration::from_millis(200);
/// How soon a wake that could not run (on a node without the function) comes again.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// How soon an invocation that a full hub handed back comes again.
pub(super) const HAND_BACK: Duration = Duration::from_millis(50);
/// Deliveries after which a wake that cannot run anywhere is given up, with a warning.
pub(super) const MAX_WAKE_DELIVERIES: i64 = 300;

/// What a work message asks for, by its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Work {
    /// Run an invocation.
    Run,
    /// Wake a durable execution.
    Wake,
    /// Match an event against the deployment's waits.
    Event,
}

/// The kind of a message that has (or lacks) the wake and the topic headers.
pub(super) fn work(has_wake: bool, has_topic: bool) -> Work {
    if has_wake {
        Work::Wake
    } else if has_topic {
        Work::Event
    } else {
        Work::Run
    }
}

/// Whether a message waits for one of the node's slots. A child of a durable execution
/// does not: its parent may hold a slot while it waits for the child, and parents holding
/// every slot would wait forever. The hub's own admission still bounds it.
pub(super) fn takes_slot(has_parent: bool) -> bool {
    !has_parent
}

/// What to do once an invocation was offered to the hub.
#[derive(Debug)]
pub(super) enum AfterRun {
    /// Publish this outcome (and wake the parent of a child), then acknowledge.
    Publish(Outcome),
    /// A durable execution suspended: record what wakes it, then acknowledge (or leave the
    /// message to come again if that could not be stored).
    Suspended(PendingDependency, u32),
    /// Acknowledge: its result went out before its checkpoint was removed.
    Ack,
    /// Leave it to come again after this delay: the engine failed, the checkpoint is kept
    /// and it runs again from its journal.
    Retry(Duration),
    /// The hub did not admit it (full, or closing): hand it back, for this node a little
    /// later or another.
    HandBack(Duration),
}

/// What the hub's answer to an invocation (its outcome, and how a durable execution it
/// started ended its first run) asks of the node.
pub(super) fn after_run(called: Result<(Outcome, Option<DurableEnd>), SubmitError>) -> AfterRun {
    match called {
        Ok((_, Some(DurableEnd::Suspended(pending, at)))) => AfterRun::Suspended(pending, at),
        Ok((_, Some(DurableEnd::Completed))) => AfterRun::Ack,
        Ok((_, Some(DurableEnd::Failed))) => AfterRun::Retry(RETRY),
        // An invocation from the wire never carries a wake: `Woke` is not its answer.
        Ok((outcome, None | Some(DurableEnd::Woke(_)))) => AfterRun::Publish(outcome),
        // Nothing will ever run it: the caller gets the refusal as its result.
        Err(e @ SubmitError::UnknownFunction(_)) => AfterRun::Publish(Err(
            fnhub_core::FunctionError::new(fnhub_core::ErrorKind::Rejected, e.to_string()),
        )),
        Err(_) => AfterRun::HandBack(HAND_BACK),
    }
}

/// Whether a wake runs now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BeforeWake {
    /// Run it.
    Run,
    /// The wake of an execution shed under load, on a node that is shedding too: hand it
    /// back, so it moves to a node with room.
    HandBack(Duration),
    /// A timer not due yet: hand it back until it is.
    Early(Duration),
}

/// Whether a wake runs now: `shed` says it was sent for an execution shed under load,
/// `shedding` whether this node sheds, `due_ms` when its timer is due and `now_ms` the
/// time (Unix milliseconds).
pub(super) fn before_wake(
    shed: bool,
    shedding: bool,
    due_ms: Option<u64>,
    now_ms: u64,
) -> BeforeWake {
    if shed && shedding {
        return BeforeWake::HandBack(SHED_RETRY);
    }
    match due_ms {
        Some(due) if due > now_ms => BeforeWake::Early(Duration::from_millis(due - now_ms)),
        _ => BeforeWake::Run,
    }
}

/// What to do once a wake was offered to the hub.
#[derive(Debug)]
pub(super) enum AfterWake {
    /// The execution ran and finished (its result went out before its checkpoint was
    /// removed): acknowledge; a replay counts as resumed.
    Ran,
    /// The execution ran and suspended again: record what wakes it, then acknowledge.
    RanAndSuspended(PendingDependency, u32),
    /// An old wake of an execution now suspended on a later operation: ask again for that
    /// operation's wake (the node that suspended it may have died before it could).
    StillWaiting(PendingDependency, u32),
    /// The execution is running: whoever runs it reads the result itself, or will suspend
    /// on it and then find it. Acknowledge; an early wake.
    Running,
    /// Nothing to do: acknowledge.
    Ack,
    /// No checkpoint: the execution finished, and its result went out before its checkpoint
    /// was removed. A store that lost sight of the checkpoint looks the same (a server of
    /// a JetStream cluster that came back without it, seen here with nats-server 2.9): the
    /// node acknowledges once the result is in the results stream, and otherwise leaves
    /// the wake to come again (see [`after_finished`]).
    Finished,
    /// It could not run here (perhaps a node without this function): again after a delay.
    Retry(Duration),
    /// It kept failing for [`MAX_WAKE_DELIVERIES`] deliveries: give up (terminate).
    GiveUp,
    /// The hub did not admit the replay: hand it back.
    HandBack(Duration),
}

/// What the hub's answer to a wake, delivered `deliveries` times, asks of the node.
pub(super) fn after_wake(
    woken: Result<Result<Woken, EngineError>, SubmitError>,
    deliveries: i64,
) -> AfterWake {
    let woken = match woken {
        Ok(woken) => woken,
        // A hub without the execution's function (at its version): another node may
        // have it.
        Err(SubmitError::UnknownFunction(_)) => Err(EngineError::Interrupted(
            "this node runs no durable functions".into(),
        )),
        Err(_) => return AfterWake::HandBack(HAND_BACK),
    };
    match woken {
        Ok(Woken::Ran {
            run: RunResult::Suspended {
                waiting_for, at, ..
            },
        }) => AfterWake::RanAndSuspended(waiting_for, at),
        Ok(Woken::Ran { .. }) => AfterWake::Ran,
        Ok(Woken::Waiting { waiting_for, at }) => AfterWake::StillWaiting(waiting_for, at),
        Ok(Woken::Running) => AfterWake::Running,
        Ok(Woken::Finished) => AfterWake::Finished,
        Ok(_) => AfterWake::Ack,
        Err(_) => again_or_give_up(deliveries),
    }
}

/// A wake that could not be settled: again after [`RETRY`], until it has come
/// [`MAX_WAKE_DELIVERIES`] times.
fn again_or_give_up(deliveries: i64) -> AfterWake {
    if deliveries < MAX_WAKE_DELIVERIES {
        AfterWake::Retry(RETRY)
    } else {
        AfterWake::GiveUp
    }
}

/// What to do with the wake of an execution the store has no checkpoint of, once the
/// results stream was asked for its result: `Some(true)` it is there (acknowledge),
/// `Some(false)` it is not, `None` the stream could not say. Without its result the wake
/// comes again after [`RETRY`], until [`MAX_WAKE_DELIVERIES`]: a checkpoint that was out
/// of sight is found again, one that is truly gone ends with a warning.
pub(super) fn after_finished(result_stored: Option<bool>, deliveries: i64) -> AfterWake {
    match result_stored {
        Some(true) => AfterWake::Ack,
        _ => again_or_give_up(deliveries),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use fnhub_core::{ExecutionId, Invocation};
    use std::time::SystemTime;

    fn invocation() -> Invocation {
        Invocation::new("f".parse().unwrap(), "x")
    }

    #[test]
    fn headers_name_the_work_and_children_take_no_slot() {
        assert_eq!(work(true, true), Work::Wake);
        assert_eq!(work(false, true), Work::Event);
        assert_eq!(work(false, false), Work::Run);
        assert!(takes_slot(false));
        assert!(!takes_slot(true));
    }

    #[test]
    fn a_run_is_published_acked_retried_or_handed_back() {
        let out = after_run(Ok((Ok(Bytes::from("42")), None)));
        assert!(
            matches!(out, AfterRun::Publish(Ok(ref b)) if b == "42"),
            "{out:?}"
        );
        let pending = PendingDependency::Timer(SystemTime::UNIX_EPOCH);
        let out = after_run(Ok((
            Ok(Bytes::new()),
            Some(DurableEnd::Suspended(pending, 3)),
        )));
        assert!(
            matches!(out, AfterRun::Suspended(PendingDependency::Timer(_), 3)),
            "{out:?}"
        );
        assert!(matches!(
            after_run(Ok((Ok(Bytes::new()), Some(DurableEnd::Completed)))),
            AfterRun::Ack
        ));
        assert!(matches!(
            after_run(Ok((Ok(Bytes::new()), Some(DurableEnd::Failed)))),
            AfterRun::Retry(RETRY)
        ));
        // A function nobody deploys gets an error as its result; a full or closing hub
        // hands the work back.
        let out = after_run(Err(SubmitError::UnknownFunction(invocation())));
        assert!(
            matches!(out, AfterRun::Publish(Err(ref e)) if e.kind == fnhub_core::ErrorKind::Rejected),
            "{out:?}"
        );
        for refused in [
            SubmitError::Full(invocation()),
            SubmitError::ShuttingDown(invocation()),
            SubmitError::TenantLimit(invocation()),
        ] {
            assert!(matches!(
                after_run(Err(refused)),
                AfterRun::HandBack(HAND_BACK)
            ));
        }
    }

    #[test]
    fn a_wake_runs_when_due_and_shed_work_leaves_a_shedding_node() {
        assert_eq!(before_wake(false, true, None, 0), BeforeWake::Run);
        assert_eq!(before_wake(true, false, None, 0), BeforeWake::Run);
        assert_eq!(
            before_wake(true, true, None, 0),
            BeforeWake::HandBack(SHED_RETRY)
        );
        assert_eq!(
            before_wake(false, false, Some(1_500), 1_000),
            BeforeWake::Early(Duration::from_millis(500))
        );
        assert_eq!(
            before_wake(false, false, Some(1_000), 1_000),
            BeforeWake::Run
        );
        assert_eq!(before_wake(false, false, Some(900), 1_000), BeforeWake::Run);
    }

    #[test]
    fn a_wake_is_acked_recorded_retried_or_given_up() {
        let exec = ExecutionId::random();
        let out = after_wake(
            Ok(Ok(Woken::Ran {
                run: RunResult::Completed(Ok(Bytes::new())),
            })),
            1,
        );
        assert!(matches!(out, AfterWake::Ran), "{out:?}");
        let out = after_wake(
            Ok(Ok(Woken::Ran {
                run: RunResult::Suspended {
                    execution: exec,
                    waiting_for: PendingDependency::Load,
                    at: 4,
                },
            })),
            1,
        );
        assert!(
            matches!(out, AfterWake::RanAndSuspended(PendingDependency::Load, 4)),
            "{out:?}"
        );
        let out = after_wake(
            Ok(Ok(Woken::Waiting {
                waiting_for: PendingDependency::Load,
                at: 7,
            })),
            1,
        );
        assert!(matches!(out, AfterWake::StillWaiting(_, 7)), "{out:?}");
        assert!(matches!(
            after_wake(Ok(Ok(Woken::Running)), 1),
            AfterWake::Running
        ));
        assert!(matches!(
            after_wake(Ok(Ok(Woken::Finished)), 1),
            AfterWake::Finished
        ));
        // Finished, as far as the store can tell: acknowledged only with its result stored.
        assert!(matches!(after_finished(Some(true), 1), AfterWake::Ack));
        for unknown in [Some(false), None] {
            assert!(matches!(
                after_finished(unknown, 1),
                AfterWake::Retry(RETRY)
            ));
            assert!(matches!(
                after_finished(unknown, MAX_WAKE_DELIVERIES),
                AfterWake::GiveUp
            ));
        }
        // An engine error is retried until the wake has come too often.
        let failed = || Ok(Err(EngineError::UnknownExecution(exec)));
        assert!(matches!(after_wake(failed(), 1), AfterWake::Retry(RETRY)));
        assert!(matches!(
            after_wake(failed(), MAX_WAKE_DELIVERIES - 1),
            AfterWake::Retry(_)
        ));
        assert!(matches!(
            after_wake(failed(), MAX_WAKE_DELIVERIES),
            AfterWake::GiveUp
        ));
        // A hub without durable functions is like an engine error; a full one hands back.
        assert!(matches!(
            after_wake(Err(SubmitError::UnknownFunction(invocation())), 1),
            AfterWake::Retry(_)
        ));
        assert!(matches!(
            after_wake(Err(SubmitError::Full(invocation())), 1),
            AfterWake::HandBack(HAND_BACK)
        ));
    }
}
