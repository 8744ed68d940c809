//! `server.max_in_flight_per_caller`: how many requests one caller may have in flight at
//! once, so that one pipeline (a runaway backfill, trickling uploads) cannot take every slot
//! of `server.max_in_flight` from the others. A [`Slot`] is held until the response is over.
//!
//! Counts live in a `DashMap` (sharded locks, held for an increment or a decrement, never
//! across I/O); a caller's entry is removed when its count drops to zero, so idle callers
//! cost nothing.

use std::sync::Arc;

use dashmap::DashMap;

/// Requests in flight per caller.
#[derive(Debug)]
pub struct Concurrency {
    max: usize,
    /// foldhash rather than SipHash (looked up twice per request): the keys are verified
    /// caller emails, not text an attacker picks freely, and the seed is random per process.
    counts: DashMap<Arc<str>, usize, foldhash::fast::RandomState>,
}

/// One in-flight request of a caller; released on drop.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Concurrency>,
    caller: Arc<str>,
}

impl Concurrency {
    /// At most `max` requests per caller.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Concurrency {
            max,
            counts: DashMap::with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    /// A slot for `caller`, or `Err(max)` when it has `max` requests in flight already.
    pub fn acquire(self: &Arc<Self>, caller: &Arc<str>) -> Result<Slot, usize> {
        let mut count = self.counts.entry(caller.clone()).or_insert(0);
        if *count >= self.max {
            return Err(self.max);
        }
        *count += 1;
        drop(count);
        Ok(Slot {
            owner: self.clone(),
            caller: caller.clone(),
        })
    }

    /// Requests `caller` has in flight.
    pub fn in_flight(&self, caller: &str) -> usize {
        self.counts.get(caller).map_or(0, |c| *c)
    }

    /// Callers with requests in flight.
    pub fn callers(&self) -> usize {
        self.counts.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // One lookup: count down, and remove the caller at zero.
        self.owner.counts.remove_if_mut(&self.caller, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caller_is_capped_and_others_are_not() {
        let c = Concurrency::new(2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a@p"), Arc::from("b@p"));
        let a1 = c.acquire(&a).expect("1");
        let a2 = c.acquire(&a).expect("2");
        assert_eq!(c.acquire(&a).err(), Some(2));
        let _b = c.acquire(&b).expect("another caller");
        drop(a1);
        let a3 = c.acquire(&a).expect("a slot came back");
        drop((a2, a3));
        assert_eq!(c.in_flight("a@p"), 0);
        assert_eq!(c.callers(), 1, "idle callers are forgotten");
    }
}
