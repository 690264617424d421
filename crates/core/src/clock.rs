//! Time, replaceable for tests.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Where policy and protocol code read the time. Never call `Instant::now()` in policy
/// code: take a `Clock`, so tests can drive time with [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for durations and timers.
    fn now(&self) -> Instant;
    /// Wall-clock time, for deadlines and timestamps that cross machines.
    fn system_time(&self) -> SystemTime;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(Instant, SystemTime)>>,
}

impl ManualClock {
    /// A clock stopped at the current time.
    pub fn new() -> ManualClock {
        ManualClock::starting_at(Instant::now(), SystemTime::now())
    }

    /// A clock stopped at the given times.
    pub fn starting_at(now: Instant, system_time: SystemTime) -> ManualClock {
        ManualClock {
            inner: Arc::new(Mutex::new((now, system_time))),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.0 += by;
        t.1 += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn system_time(&self) -> SystemTime {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn system_time(&self) -> SystemTime {
        (**self).system_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let shared = clock.clone();
        let (t0, w0) = (clock.now(), clock.system_time());
        assert_eq!(clock.now(), t0);
        shared.advance(Duration::from_millis(250));
        assert_eq!(clock.now() - t0, Duration::from_millis(250));
        assert_eq!(
            clock.system_time().duration_since(w0).unwrap(),
            Duration::from_millis(250)
        );
    }
}
