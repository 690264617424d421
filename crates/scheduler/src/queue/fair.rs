//! Fair share between principals inside one priority class, by stride scheduling (see
//! the [queue](super)'s documentation), and the limits and weights it reads.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::FastMap;

use fnhub_core::Principal;

use super::Key;

/// The pass increment of a principal of weight 1.
pub(super) const STRIDE_ONE: u64 = 1 << 20;

/// Queue limits and principal weights.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) capacity: usize,
    pub(crate) per_function: usize,
    pub(crate) per_tenant: usize,
    pub(crate) weights: FastMap<Principal, u32>,
    pub(crate) tenant_limits: FastMap<Principal, usize>,
}

impl Limits {
    pub(super) fn weight(&self, p: &Principal) -> u32 {
        self.weights.get(p).copied().unwrap_or(1).max(1)
    }

    pub(super) fn tenant_limit(&self, p: &Principal) -> usize {
        self.tenant_limits
            .get(p)
            .copied()
            .unwrap_or(self.per_tenant)
    }
}

/// The fairness guarantee: while principal `i` (weight `weight_i`) is backlogged in a
/// priority class, another principal `j` (weight `weight_j`) is served at most this many
/// times between two services of `i`, or before `i`'s first: `⌊w_j / w_i⌋ + 1`.
pub fn fairness_bound(weight_i: u32, weight_j: u32) -> u64 {
    u64::from(weight_j.max(1) / weight_i.max(1)) + 1
}

pub(super) struct Tenant {
    pub(super) jobs: BinaryHeap<Key>,
    pub(super) pass: u64,
}

/// Idle tenants kept for their pass before a sweep drops those with no debt.
pub(super) const IDLE_SWEEP: usize = 64;

#[derive(Default)]
pub(super) struct Class {
    pub(super) tenants: FastMap<Principal, Tenant>,
    /// Backlogged principals by (pass, join order).
    pub(super) ready: BinaryHeap<Reverse<(u64, u64, Principal)>>,
    pub(super) vtime: u64,
    pub(super) joins: u64,
}

impl Class {
    pub(super) fn push(&mut self, principal: &Principal, key: Key) {
        let vtime = self.vtime;
        let tenant = match self.tenants.get_mut(principal) {
            Some(t) => t,
            None => self.tenants.entry(principal.clone()).or_insert(Tenant {
                jobs: BinaryHeap::new(),
                pass: vtime,
            }),
        };
        if tenant.jobs.is_empty() {
            tenant.pass = tenant.pass.max(vtime);
            self.joins += 1;
            self.ready
                .push(Reverse((tenant.pass, self.joins, principal.clone())));
        }
        tenant.jobs.push(key);
    }

    pub(super) fn pop(&mut self, limits: &Limits) -> Option<Key> {
        while let Some(Reverse((pass, _, principal))) = self.ready.pop() {
            let Some(tenant) = self.tenants.get_mut(&principal) else {
                continue;
            };
            // A stale entry: the tenant was emptied by cancellation, or re-joined later.
            if tenant.pass != pass {
                continue;
            }
            let Some(key) = tenant.jobs.pop() else {
                continue;
            };
            self.vtime = pass;
            tenant.pass = pass + STRIDE_ONE / u64::from(limits.weight(&principal));
            if tenant.jobs.is_empty() {
                // Kept, with its pass, until a sweep finds it owes nothing.
                self.sweep();
            } else {
                self.joins += 1;
                self.ready
                    .push(Reverse((tenant.pass, self.joins, principal)));
            }
            return Some(key);
        }
        None
    }

    /// Drops idle tenants whose pass is not ahead of the virtual time: they would rejoin at
    /// the virtual time anyway.
    pub(super) fn sweep(&mut self) {
        if self.tenants.len() > self.ready.len() + IDLE_SWEEP {
            let vtime = self.vtime;
            self.tenants
                .retain(|_, t| !t.jobs.is_empty() || t.pass > vtime);
        }
    }

    /// Removes the key of slab slot `slot` from `principal`'s heap.
    pub(super) fn remove_slot(&mut self, principal: &Principal, slot: u32) -> bool {
        let Some(tenant) = self.tenants.get_mut(principal) else {
            return false;
        };
        let before = tenant.jobs.len();
        tenant.jobs.retain(|k| k.slot != slot);
        tenant.jobs.len() != before
    }

    /// Whether no tenant has a job queued.
    pub(super) fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}
