//! Per-dependency duration estimates.

use std::collections::HashMap;
use std::time::Duration;

/// Moving averages of how long each dependency (a child function, by name) takes.
#[derive(Debug, Default)]
pub(crate) struct Estimator {
    ewma: HashMap<String, Duration>,
}

impl Estimator {
    /// The prediction for `dependency`, if it has been seen.
    pub(crate) fn predict(&self, dependency: &str) -> Option<Duration> {
        self.ewma.get(dependency).copied()
    }

    /// Folds one observed duration in (weight 1/4 for the newest).
    pub(crate) fn observe(&mut self, dependency: &str, took: Duration) {
        match self.ewma.get_mut(dependency) {
            Some(avg) => *avg = (*avg * 3 + took) / 4,
            None => {
                self.ewma.insert(dependency.to_owned(), took);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_moving_average() {
        let mut e = Estimator::default();
        assert_eq!(e.predict("f"), None);
        e.observe("f", Duration::from_millis(100));
        assert_eq!(e.predict("f"), Some(Duration::from_millis(100)));
        e.observe("f", Duration::from_millis(500));
        assert_eq!(e.predict("f"), Some(Duration::from_millis(200)));
    }
}
