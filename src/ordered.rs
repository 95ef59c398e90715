//! A function run over many items on several threads, its results handed
//! on strictly in item order, with a bounded number of results waiting.
//!
//! `backsweep inspect` analyses files on every core (like ripgrep) but must
//! print exactly what a serial run prints, in argument order, as it goes:
//! the output of a long file list streams instead of piling up, and a slow
//! file holds up the printing of later ones, never the work on them — up to
//! a window of finished results. The window bounds memory (a worker does
//! not start an item more than the window ahead of the printer) whatever
//! the length of the list.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// How many results per worker may wait for the printer (finished, or being
/// worked on) before the workers pause. Enough that a slow item does not
/// stall the others; small enough that waiting results cost little.
const WINDOW_PER_JOB: usize = 32;

/// Calls `map` on every item, on up to `jobs` threads, and `sink` on the
/// results in the order of `items`, on the calling thread. The calling
/// thread is one of the `jobs`: it maps items itself whenever the next
/// result is not ready yet (a printer that only waited would be a third
/// thread on two cores, woken for every item). With `jobs <= 1` (or a
/// single item) everything runs on the calling thread, one item after
/// another. The first error of `sink` stops the workers (items already
/// started finish, no new one starts) and is returned.
///
/// `sink` borrows each result; a worker's result is then handed back to
/// that worker to be dropped. Memory is best freed by the thread that
/// allocated it: the allocator (glibc's, with one arena per thread) locks
/// the other thread's arena for every foreign free, and those locks
/// collided with the worker's own allocations often enough to put a
/// thread to sleep hundreds of times in a run over a thousand files.
///
/// A panic in `map` is passed on to the caller once the workers stopped.
pub fn for_each_ordered<T, R, E>(
    items: &[T],
    jobs: usize,
    map: impl Fn(&T) -> R + Sync,
    mut sink: impl FnMut(&R) -> Result<(), E>,
) -> Result<(), E>
where
    T: Sync,
    R: Send,
{
    let workers = jobs.min(items.len());
    if workers <= 1 {
        return items.iter().try_for_each(|item| sink(&map(item)));
    }
    let window = workers * WINDOW_PER_JOB;
    let shared = Shared {
        state: Mutex::new(State {
            next: 0,
            delivered: 0,
            ready: VecDeque::new(),
            spent: (0..workers).map(|_| Vec::new()).collect(),
            stop: false,
            printer_waits: false,
        }),
        room: Condvar::new(),
        arrived: Condvar::new(),
    };
    std::thread::scope(|scope| {
        // A thread the system refuses is one worker fewer, not a panic:
        // this thread alone would still map every item.
        let (shared, map) = (&shared, &map);
        for worker in 1..workers {
            let spawned = std::thread::Builder::new()
                .spawn_scoped(scope, move || shared.work(worker, items, window, map));
            if spawned.is_err() {
                break;
            }
        }
        // A panic in `map` here must stop the workers too.
        let _alarm = PanicAlarm(shared);
        let mut outcome = Ok(());
        let mut printed = None;
        for _ in 0..items.len() {
            let Some((result, maker)) = shared.next_result(items, window, &map, printed.take())
            else {
                // A worker panicked; the scope passes its panic on.
                break;
            };
            if let Err(e) = sink(&result) {
                outcome = Err(e);
                break;
            }
            printed = Some((result, maker));
        }
        // The last result, and those the workers did not come back for,
        // are dropped here: they are few.
        shared.lock().stop = true;
        shared.room.notify_all();
        outcome
    })
}

/// What the workers and the printer share.
struct Shared<R> {
    state: Mutex<State<R>>,
    /// Signalled when the printer took a result (there is room in the
    /// window) or when the workers must stop.
    room: Condvar,
    /// Signalled when a worker stored the result the sleeping printer waits
    /// for, or died.
    arrived: Condvar,
}

struct State<R> {
    /// The index of the next item a worker takes.
    next: usize,
    /// How many results the printer has taken.
    delivered: usize,
    /// The results of items `delivered..`, each with the number of the
    /// thread that made it (0: the printer), `None` while still being
    /// worked on; at most the window long.
    ready: VecDeque<Option<(R, usize)>>,
    /// For each worker (by number), its printed results, for it to drop.
    spent: Vec<Vec<R>>,
    /// Set when no further item may start: the printer stopped or a worker
    /// panicked.
    stop: bool,
    /// Set while the printer sleeps on `arrived`.
    printer_waits: bool,
}

impl<R> Shared<R> {
    /// The state; a poisoned lock (a panic elsewhere while holding it, which
    /// none of the short critical sections here can cause) is still usable.
    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One worker (number `worker`): take the next item while the window
    /// has room, map it, store its result in its slot; drop its results
    /// the printer is done with.
    fn work<T>(&self, worker: usize, items: &[T], window: usize, map: &(impl Fn(&T) -> R + Sync)) {
        // Wakes the printer if `map` panics, so that it does not wait
        // forever for a result that will never come.
        let _alarm = PanicAlarm(self);
        // Moved out of the shared list under the lock, dropped outside it.
        // (The list keeps its buffer: it belongs to the printer.)
        let mut spent: Vec<R> = Vec::new();
        loop {
            spent.clear();
            let index = {
                let mut state = self.lock();
                spent.append(&mut state.spent[worker]);
                while !state.stop
                    && state.next < items.len()
                    && state.next >= state.delivered + window
                {
                    state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                match state.claim(items.len(), window) {
                    Some(index) => index,
                    None => break,
                }
            };
            let result = map(&items[index]);
            if self.store(index, (result, worker)) {
                self.arrived.notify_one();
            }
        }
    }

    /// Stores the result of item `index` in its slot; true if the printer
    /// sleeps waiting for exactly this result (waking it costs a system
    /// call, so it is woken only then).
    fn store(&self, index: usize, result: (R, usize)) -> bool {
        let mut state = self.lock();
        // `delivered <= index`: the printer never takes an empty slot.
        let slot = index - state.delivered;
        state.ready[slot] = Some(result);
        slot == 0 && state.printer_waits
    }

    /// The next result in item order, with the number of the thread that
    /// made it, for the printer; `printed` is the result it printed last,
    /// handed back to its maker. While the next result is not ready, the
    /// printer maps the next item itself if the window has room, else
    /// waits. `None` if a worker panicked.
    fn next_result<T>(
        &self,
        items: &[T],
        window: usize,
        map: &impl Fn(&T) -> R,
        printed: Option<(R, usize)>,
    ) -> Option<(R, usize)> {
        // The printer's own result is dropped here, before the lock is taken;
        // a worker's goes back to it.
        let handed_back = printed.filter(|(_, maker)| *maker > 0);
        let mut state = self.lock();
        if let Some((result, maker)) = handed_back {
            state.spent[maker].push(result);
        }
        loop {
            if let Some(result) = state.ready.front_mut().and_then(Option::take) {
                state.ready.pop_front();
                // Workers wait for room only when the window is full.
                let full = state.next >= state.delivered + window;
                state.delivered += 1;
                if full {
                    self.room.notify_all();
                }
                return Some(result);
            }
            if state.stop {
                return None;
            }
            if let Some(index) = state.claim(items.len(), window) {
                drop(state);
                let result = map(&items[index]);
                self.store(index, (result, 0));
                state = self.lock();
                continue;
            }
            state.printer_waits = true;
            state = self.arrived.wait(state).unwrap_or_else(|e| e.into_inner());
            state.printer_waits = false;
        }
    }
}

impl<R> State<R> {
    /// Takes the next item (its index) and opens its slot, unless the work
    /// stopped, every item is taken, or the window is full.
    fn claim(&mut self, len: usize, window: usize) -> Option<usize> {
        if self.stop || self.next >= len || self.next >= self.delivered + window {
            return None;
        }
        self.next += 1;
        self.ready.push_back(None);
        Some(self.next - 1)
    }
}

/// When a worker unwinds, stops everything and wakes the printer and the
/// other workers (a worker that simply ran out of items must not: the
/// printer still waits for the others' results).
struct PanicAlarm<'a, R>(&'a Shared<R>);

impl<R> Drop for PanicAlarm<'_, R> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.0.lock().stop = true;
        self.0.arrived.notify_all();
        self.0.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn collect(items: &[usize], jobs: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for_each_ordered(
            items,
            jobs,
            |&i| {
                // Uneven work, so that results finish out of order.
                if i % 7 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                i * 2
            },
            |r| {
                out.push(*r);
                Ok::<(), ()>(())
            },
        )
        .expect("the sink never fails");
        out
    }

    #[test]
    fn results_come_in_item_order_for_any_number_of_jobs() {
        let items: Vec<usize> = (0..500).collect();
        let expected: Vec<usize> = items.iter().map(|i| i * 2).collect();
        for jobs in [0, 1, 2, 3, 8, 1000] {
            assert_eq!(collect(&items, jobs), expected, "jobs {jobs}");
        }
        assert!(collect(&[], 4).is_empty());
    }

    #[test]
    fn workers_stay_within_the_window() {
        let items: Vec<usize> = (0..2000).collect();
        let started = AtomicUsize::new(0);
        let mut printed = 0;
        let mut most_ahead = 0;
        for_each_ordered(
            &items,
            2,
            |_| started.fetch_add(1, Ordering::SeqCst),
            |_| {
                printed += 1;
                most_ahead = most_ahead.max(started.load(Ordering::SeqCst) - printed);
                std::thread::yield_now();
                Ok::<(), ()>(())
            },
        )
        .expect("the sink never fails");
        assert_eq!(printed, 2000);
        assert!(most_ahead <= 2 * WINDOW_PER_JOB, "{most_ahead} ahead");
    }

    #[test]
    fn results_are_dropped_by_the_thread_that_made_them() {
        /// Counts the results dropped by another thread than their maker.
        struct Made<'a> {
            by: std::thread::ThreadId,
            foreign: &'a AtomicUsize,
        }
        impl Drop for Made<'_> {
            fn drop(&mut self) {
                if std::thread::current().id() != self.by {
                    self.foreign.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let items: Vec<usize> = (0..5000).collect();
        let foreign = AtomicUsize::new(0);
        let mut printed = 0;
        for_each_ordered(
            &items,
            2,
            |_| Made {
                by: std::thread::current().id(),
                foreign: &foreign,
            },
            |_| {
                printed += 1;
                Ok::<(), ()>(())
            },
        )
        .expect("the sink never fails");
        assert_eq!(printed, 5000);
        // Only those printed after the worker's last visit: at most a window.
        let foreign = foreign.load(Ordering::SeqCst);
        assert!(
            foreign <= 2 * WINDOW_PER_JOB + 1,
            "{foreign} dropped elsewhere"
        );
    }

    #[test]
    fn a_sink_error_stops_the_work() {
        let items: Vec<usize> = (0..100_000).collect();
        let started = AtomicUsize::new(0);
        let mut seen = 0;
        let outcome = for_each_ordered(
            &items,
            2,
            |_| started.fetch_add(1, Ordering::SeqCst),
            |_| {
                seen += 1;
                if seen == 10 {
                    Err("closed")
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(outcome, Err("closed"));
        assert!(started.load(Ordering::SeqCst) <= 10 + 2 * WINDOW_PER_JOB + 2);
    }

    #[test]
    fn a_panic_in_a_worker_reaches_the_caller() {
        let items: Vec<usize> = (0..100).collect();
        let outcome = std::panic::catch_unwind(|| {
            for_each_ordered(
                &items,
                2,
                |&i| {
                    assert!(i != 50, "item 50");
                    i
                },
                |_| Ok::<(), ()>(()),
            )
        });
        assert!(outcome.is_err());
    }
}
