//! One refresh at a time, without holding a lock across I/O: the JWKS refetch for an
//! unknown `kid` and the store read after an upstream 401 each let one request (the
//! leader) do the I/O while the others wait for it to finish, a bounded time, on a watch
//! channel. The lock guards only a flag and a timestamp, for nanoseconds. If the leader is
//! dropped mid-way (its caller went away), waiters are released at once.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// At most one run at a time, and at most one start per interval.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    done: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    running: bool,
}

/// What a caller of [`Gate::turn`] is to do.
#[derive(Debug)]
pub enum Turn<'a> {
    /// Run it; the [`Leader`] marks the end when dropped.
    Lead(Leader<'a>),
    /// Another caller runs it: wait with [`wait`].
    Wait(watch::Receiver<u64>),
    /// It ran less than the interval ago: do not run it again.
    Refused,
}

/// The one caller running it; releases the waiters when dropped.
#[derive(Debug)]
pub struct Leader<'a> {
    gate: &'a Gate,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: Mutex::default(),
            done: watch::Sender::new(0),
        }
    }
}

impl Gate {
    /// Whether to run, wait for the run in progress, or leave it: a run may start once per
    /// `interval`.
    pub fn turn(&self, interval: Duration) -> Turn<'_> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.running {
            return Turn::Wait(self.done.subscribe());
        }
        let now = Instant::now();
        if state.last.is_some_and(|t| now.duration_since(t) < interval) {
            return Turn::Refused;
        }
        state.last = Some(now);
        state.running = true;
        Turn::Lead(Leader { gate: self })
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.gate
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running = false;
        self.gate.done.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Waits until the run in progress ends, or at most `at_most`.
pub async fn wait(mut done: watch::Receiver<u64>, at_most: Duration) {
    let _ = tokio::time::timeout(at_most, done.changed()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_leader_waiters_released_when_it_ends_and_one_start_per_interval() {
        let gate = Gate::default();
        let interval = Duration::from_secs(10);
        let Turn::Lead(leader) = gate.turn(interval) else {
            panic!("the first caller leads");
        };
        let Turn::Wait(done) = gate.turn(interval) else {
            panic!("a second caller waits");
        };
        let waiter = tokio::spawn(wait(done, Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished(), "waits while the leader runs");
        drop(leader);
        waiter.await.expect("released");
        assert!(matches!(gate.turn(interval), Turn::Refused));
        tokio::time::advance(interval).await;
        assert!(matches!(gate.turn(interval), Turn::Lead(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_its_bound() {
        let gate = Gate::default();
        let _leader = gate.turn(Duration::ZERO);
        let Turn::Wait(done) = gate.turn(Duration::ZERO) else {
            panic!("waits");
        };
        let started = Instant::now();
        wait(done, Duration::from_secs(2)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
