//! Order inside one principal's share: earliest deadline first, then arrival.

use std::cmp::Ordering;
use std::time::SystemTime;

use super::Key;

/// "Greater" runs first: an earlier deadline (any deadline before none), then the earlier
/// arrival.
pub(crate) fn run_order(a: (Option<SystemTime>, u64), b: (Option<SystemTime>, u64)) -> Ordering {
    let deadline = match (a.0, b.0) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    };
    deadline.then(b.1.cmp(&a.1))
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        run_order((self.deadline, self.seq), (other.deadline, other.seq))
    }
}
