//! How a hub wakes its suspended durable executions, both kinds, in one place.
//!
//! A hub runs two kinds of durable execution: the engine's (Rust [`DurableContext`]
//! functions, `fnhub_checkpoint::durable`) and Lambda's (functions written with AWS's
//! durable SDKs, [`crate::dex`]). Both keep their state in the hub's one checkpoint store,
//! and a suspended execution of either kind holds no worker and no task: it is a
//! checkpoint, and an entry in one of the tables below. What wakes it:
//!
//! | what it waits for | engine execution | Lambda execution |
//! | --- | --- | --- |
//! | a time (a sleep, a wait, a retry delay, a callback's timeout, the execution's timeout) | the hub's timer table ([`Timers`]) | the same table: its next due time |
//! | something sent to it (an event on a topic; a callback through the API) | the engine's table of event waits, matched on every publish, or answered through the callback API | the dex's table of callbacks, answered by `SendDurableExecutionCallback*` |
//! | a call it made (a child; a chained invoke) | a task awaiting the child | a task awaiting the chained call |
//! | lower load | the engine's list of shed executions | — |
//!
//! Whatever fires, the resumed run is an ordinary invocation of the execution's own
//! function, admitted, queued, limited and counted like any: for the engine's kind one
//! carrying a [`Wake`](fnhub_core::Wake) ([`Invocation::wake`](fnhub_core::Invocation::wake),
//! which only the hub sets), for Lambda's the SDK's payload with a fresh checkpoint token.
//! A hub built on a store takes up what it holds when it starts: its Lambda executions
//! always, the engine's when the store is its own (on a shared one, the cloud runtime's
//! wakes and take-overs see to them).
//!
//! Which of these wakes an engine execution is the hub's wake strategy, one method:
//! `HubHost::arm` (the engine's [`DurableHost::arm`], asked once as the execution
//! suspends). On a cloud runtime node it takes every suspension, and the engine's kind is
//! woken through the deployment instead (JetStream wakes, on any node; see
//! `fnhub::cloud`); a Lambda execution stays with the node that runs it, woken from that
//! node's table, and is taken up by another node when its node is gone.
//!
//! Both kinds answer the same operations of the durable execution API: a Rust function's
//! executions are listed, read (their journal as Lambda's operations), stopped, and their
//! waits for events answered as callbacks, like a Lambda function's (see `dex::journal`).
//!
//! [`DurableHost::arm`]: fnhub_checkpoint::durable::DurableHost::arm
//!
//! [`DurableContext`]: fnhub_checkpoint::durable::DurableContext

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use fnhub_core::{Clock, FunctionName, Version, Wake};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a timer wakes.
#[derive(Debug)]
pub(crate) enum Due {
    /// An engine execution suspended in a sleep: its wake, run as an invocation of its
    /// function.
    Engine {
        function: FunctionName,
        version: Version,
        wake: Wake,
    },
    /// A Lambda execution whose next thing is due: the dex runs its next round.
    Lambda(String),
}

/// The hub's one timer table: every suspended execution's next due time, ordered, served
/// by one task. Arming costs an entry, not a task.
pub(crate) struct Timers {
    table: Mutex<Table>,
    /// Told when an entry earlier than every other is armed, and when the table goes.
    changed: Arc<Notify>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Table {
    due: BTreeMap<(Instant, u64), Due>,
    /// The one entry of each Lambda execution: re-arming moves it.
    lambda: HashMap<String, (Instant, u64)>,
    next_seq: u64,
}

impl Timers {
    /// A table on `clock`'s time; [`Timers::serve`] fires its entries.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Arc<Timers> {
        Arc::new(Timers {
            table: Mutex::default(),
            changed: Arc::new(Notify::new()),
            clock,
        })
    }

    /// The runtime's instant at which `at` (wall-clock) comes, on the hub's clock.
    fn instant_of(&self, at: SystemTime) -> Instant {
        let left = at
            .duration_since(self.clock.system_time())
            .unwrap_or(Duration::ZERO);
        Instant::now() + left
    }

    /// Arms `due` for `at`. A Lambda execution has one entry: arming it again moves it.
    pub(crate) fn arm(&self, at: SystemTime, due: Due) {
        let when = self.instant_of(at);
        let mut table = self.table.lock();
        let seq = table.next_seq;
        table.next_seq += 1;
        if let Due::Lambda(id) = &due
            && let Some(old) = table.lambda.insert(id.clone(), (when, seq))
        {
            table.due.remove(&old);
        }
        let earliest = table.due.keys().next().is_none_or(|k| (when, seq) < *k);
        table.due.insert((when, seq), due);
        drop(table);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Removes the entry of Lambda execution `id`, if it has one (it ended, or went to
    /// another node).
    pub(crate) fn disarm(&self, id: &str) {
        let mut table = self.table.lock();
        if let Some(key) = table.lambda.remove(id) {
            table.due.remove(&key);
        }
    }

    /// How many entries are armed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.table.lock().due.len()
    }

    /// The entries due by `now`, taken out of the table, and the time of the next one.
    fn take_due(&self, now: Instant) -> (Vec<Due>, Option<Instant>) {
        let mut table = self.table.lock();
        let mut fired = Vec::new();
        while let Some(entry) = table.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let due = entry.remove();
            if let Due::Lambda(id) = &due {
                table.lambda.remove(id);
            }
            fired.push(due);
        }
        let next = table.due.keys().next().map(|k| k.0);
        (fired, next)
    }

    /// Fires every entry when it is due, with `fire`, until the table is dropped.
    pub(crate) async fn serve(timers: Weak<Timers>, fire: impl Fn(Due)) {
        let Some(changed) = timers.upgrade().map(|t| t.changed.clone()) else {
            return;
        };
        loop {
            let next = {
                let Some(timers) = timers.upgrade() else {
                    return;
                };
                let (fired, next) = timers.take_due(Instant::now());
                drop(timers);
                for due in fired {
                    fire(due);
                }
                next
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed.notified() => {}
                    }
                }
                None => changed.notified().await,
            }
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        // The task that serves the table sees it gone.
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhub_core::{ExecutionId, SystemClock};

    fn lambda(id: &str) -> Due {
        Due::Lambda(id.to_owned())
    }

    fn fired_ids(fired: &[Due]) -> Vec<String> {
        fired
            .iter()
            .map(|d| match d {
                Due::Lambda(id) => id.clone(),
                Due::Engine { wake, .. } => wake.execution.to_string(),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn entries_fire_in_time_order_and_a_lambda_execution_has_one() {
        // Wall-clock time stands still, as the runtime's does.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = fnhub_core::ManualClock::starting_at(std::time::Instant::now(), now);
        let timers = Timers::new(Arc::new(clock));
        timers.arm(now + Duration::from_secs(30), lambda("a"));
        timers.arm(now + Duration::from_secs(10), lambda("b"));
        // Moved: "a" is due at 20 s now, not at 30.
        timers.arm(now + Duration::from_secs(20), lambda("a"));
        let execution = ExecutionId::random();
        timers.arm(
            now + Duration::from_secs(15),
            Due::Engine {
                function: FunctionName::new("f").unwrap(),
                version: Version::new(1).unwrap(),
                wake: Wake::new(execution, 2, Ok(bytes::Bytes::new())),
            },
        );
        timers.arm(now + Duration::from_secs(12), lambda("ended"));
        timers.disarm("ended");
        timers.disarm("never armed");
        assert_eq!(timers.len(), 3);
        let start = Instant::now();
        let (fired, next) = timers.take_due(start + Duration::from_secs(16));
        assert_eq!(fired_ids(&fired), ["b".to_owned(), execution.to_string()]);
        assert_eq!(next, Some(start + Duration::from_secs(20)));
        let (fired, next) = timers.take_due(start + Duration::from_secs(40));
        assert_eq!(fired_ids(&fired), ["a"]);
        assert_eq!(next, None);
        assert_eq!(timers.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_fires_each_when_due_and_ends_with_the_table() {
        let timers = Timers::new(Arc::new(SystemClock));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(Timers::serve(Arc::downgrade(&timers), move |due| {
            let _ = tx.send(fired_ids(&[due]).remove(0));
        }));
        let now = SystemTime::now();
        timers.arm(now + Duration::from_secs(60), lambda("late"));
        tokio::task::yield_now().await;
        // An earlier entry armed while the task sleeps towards the later one.
        timers.arm(now + Duration::from_secs(5), lambda("early"));
        let start = Instant::now();
        assert_eq!(rx.recv().await.unwrap(), "early");
        assert!(Instant::now() - start >= Duration::from_secs(5));
        assert!(Instant::now() - start < Duration::from_secs(60));
        assert_eq!(rx.recv().await.unwrap(), "late");
        drop(timers);
        task.await.unwrap();
    }
}
