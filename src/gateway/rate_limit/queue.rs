//! Wait mode's queue: callers of one credential take turns in arrival order (tokio's mutex is fair),
//! and only the one at the front asks the store, so a freed slot goes to whoever waited longest. The
//! queue is bounded: a caller that would make it longer than `max_queue` is refused at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct Queue {
    turn: Mutex<()>,
    waiting: AtomicUsize,
}

/// A place in the queue, given up when dropped.
pub struct Place<'a>(&'a Queue);

impl Queue {
    /// Joins the queue unless `max` callers are in it already.
    pub fn join(&self, max: usize) -> Option<Place<'_>> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(self))
    }
}

impl Place<'_> {
    /// Waits until every caller that joined earlier has had its turn.
    pub async fn turn(&self) -> MutexGuard<'_, ()> {
        self.0.turn.lock().await
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded() {
        let queue = Queue::default();
        let first = queue.join(2).unwrap();
        let _second = queue.join(2).unwrap();
        assert!(queue.join(2).is_none());
        drop(first);
        assert!(queue.join(2).is_some());
    }
}
