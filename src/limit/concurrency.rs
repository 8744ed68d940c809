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
    counts: DashMap<Box<str>, usize>,
}

/// One in-flight request of a caller; released on drop.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Concurrency>,
    caller: Box<str>,
}

impl Concurrency {
    /// At most `max` requests per caller.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Concurrency {
            max,
            counts: DashMap::new(),
        })
    }

    /// A slot for `caller`, or `Err(max)` when it has `max` requests in flight already.
    pub fn acquire(self: &Arc<Self>, caller: &str) -> Result<Slot, usize> {
        let mut count = self.counts.entry(Box::from(caller)).or_insert(0);
        if *count >= self.max {
            return Err(self.max);
        }
        *count += 1;
        drop(count);
        Ok(Slot {
            owner: self.clone(),
            caller: Box::from(caller),
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
        let counts = &self.owner.counts;
        if let Some(mut count) = counts.get_mut(&self.caller) {
            *count = count.saturating_sub(1);
        }
        counts.remove_if(&self.caller, |_, count| *count == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caller_is_capped_and_others_are_not() {
        let c = Concurrency::new(2);
        let a1 = c.acquire("a@p").expect("1");
        let a2 = c.acquire("a@p").expect("2");
        assert_eq!(c.acquire("a@p").err(), Some(2));
        let _b = c.acquire("b@p").expect("another caller");
        drop(a1);
        let a3 = c.acquire("a@p").expect("a slot came back");
        drop((a2, a3));
        assert_eq!(c.in_flight("a@p"), 0);
        assert_eq!(c.callers(), 1, "idle callers are forgotten");
    }
}
