//! The embedded store's writes: one thread runs them in arrival order, and
//! each batch that arrived together is made durable by one flush (group
//! commit) before any of it is acknowledged.
//!
//! One writer at a time is what the store needs anyway (every write appends
//! to the audit chain, so concurrent sled transactions all conflict on its
//! head and retry), and a check made inside a write holds until it commits.
//! A thread of its own, fed by a queue, does this without a lock that 16
//! blocking threads sleep on and wake from, and without a blocking-pool hop
//! per write; writers that queue while a flush runs share the next one
//! (`strace -c` of 4 KiB pushes at concurrency 16: 45 futex calls and 10
//! `sched_yield`s per push with a lock and a flush per writer; 21.5 and 1.3
//! with this thread and the in-memory upload lease).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use super::MetaError;

/// Jobs taken into one batch at most, so that a flood of writes still gets
/// its acknowledgements in bounded steps.
const BATCH: usize = 256;
/// How long dropping the store waits for the thread to finish its batch
/// (it may be stuck in sled for good: then the process is ending anyway).
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// What a job's caller is told once the job's batch is flushed (or at once,
/// for a job that needs no flush or failed).
type Reply = Box<dyn FnOnce(Result<(), &MetaError>) + Send>;

struct Job<S> {
    run: Box<dyn FnOnce(&S) -> Reply + Send>,
    durable: bool,
}

pub struct Writer<S> {
    jobs: Option<mpsc::Sender<Job<S>>>,
    /// Told when the thread ends (in a mutex only to make the store `Sync`).
    exited: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl<S: Send + Sync + 'static> Writer<S> {
    /// Starts the thread; `flush` makes everything written so far durable.
    pub fn start(state: Arc<S>, flush: impl Fn(&S) -> Result<(), MetaError> + Send + 'static) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job<S>>();
        let (done, exited) = mpsc::channel();
        std::thread::Builder::new().name("amber-meta-writer".into()).spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut waiting = Vec::new();
                for job in std::iter::once(first).chain(queue.try_iter().take(BATCH - 1)) {
                    // A job that panics ends only itself: its caller's reply
                    // is dropped, which it sees as a failed write.
                    let Ok(reply) = std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(&state))) else {
                        continue;
                    };
                    if job.durable {
                        waiting.push(reply);
                    } else {
                        reply(Ok(()));
                    }
                }
                if !waiting.is_empty() {
                    let flushed = std::panic::catch_unwind(AssertUnwindSafe(|| flush(&state)))
                        .unwrap_or_else(|_| Err(MetaError::Store("the flush panicked".into())));
                    for reply in waiting {
                        reply(flushed.as_ref().map(|_| ()));
                    }
                }
            }
            drop(state);
            let _ = done.send(());
        })?;
        Ok(Self { jobs: Some(jobs), exited: std::sync::Mutex::new(exited) })
    }

    /// Queues `call`; the answer arrives once it ran and, if `durable` and it
    /// succeeded, once a flush after it ended. A failed flush fails every
    /// write of its batch (each may or may not be on disk, like any write
    /// whose flush failed).
    pub fn submit<T: Send + 'static>(
        &self,
        durable: bool,
        call: impl FnOnce(&S) -> Result<T, MetaError> + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<Result<T, MetaError>> {
        let (answer, receiver) = tokio::sync::oneshot::channel();
        let run = Box::new(move |state: &S| -> Reply {
            // A caller that has gone (its request was dropped) was never
            // answered: its write is not made, and waits for nothing.
            if answer.is_closed() {
                return Box::new(|_| ());
            }
            let result = call(state);
            Box::new(move |flushed: Result<(), &MetaError>| {
                let _ = answer.send(match (result, flushed) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Ok(_), Err(err)) => Err(err.clone()),
                    (Err(err), _) => Err(err),
                });
            })
        });
        if let Some(jobs) = &self.jobs {
            // If the thread is gone the job is dropped with its sender, and
            // the caller is told the write failed.
            let _ = jobs.send(Job { run, durable });
        }
        receiver
    }
}

impl<S> Drop for Writer<S> {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its batch; waiting for it
        // lets the store be opened again at once (sled locks its directory
        // until its last handle is dropped).
        self.jobs = None;
        let exited = self.exited.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = exited.recv_timeout(EXIT_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A store of numbers: what was written, and what the last flush saw.
    #[derive(Default)]
    struct Numbers {
        written: Mutex<Vec<u64>>,
        durable: AtomicU64,
        flushes: AtomicU64,
    }

    fn writer(numbers: &Arc<Numbers>, fail_flush: bool) -> Writer<Numbers> {
        Writer::start(numbers.clone(), move |n: &Numbers| {
            n.flushes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            if fail_flush {
                return Err(MetaError::NoSpace("full".into()));
            }
            n.durable.store(n.written.lock().unwrap().len() as u64, Ordering::SeqCst);
            Ok(())
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_run_in_order_and_are_acknowledged_only_once_flushed_in_shared_batches() {
        let numbers = Arc::new(Numbers::default());
        let writer = Arc::new(writer(&numbers, false));
        let mut tasks = Vec::new();
        for i in 0..1000u64 {
            let (writer, numbers) = (writer.clone(), numbers.clone());
            tasks.push(tokio::spawn(async move {
                let position = writer
                    .submit(true, move |n: &Numbers| {
                        let mut written = n.written.lock().unwrap();
                        written.push(i);
                        Ok(written.len() as u64)
                    })
                    .await
                    .unwrap()
                    .unwrap();
                assert!(numbers.durable.load(Ordering::SeqCst) >= position, "acknowledged before its flush");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(numbers.written.lock().unwrap().len(), 1000);
        let flushes = numbers.flushes.load(Ordering::SeqCst);
        assert!(flushes < 1000, "{flushes} flushes for 1000 writes");
    }

    #[tokio::test]
    async fn a_failed_flush_fails_its_writes_a_failed_job_only_itself_and_a_panic_only_its_own() {
        let numbers = Arc::new(Numbers::default());
        let failing = writer(&numbers, true);
        let err = failing.submit(true, |_: &Numbers| Ok(1)).await.unwrap().unwrap_err();
        assert!(matches!(err, MetaError::NoSpace(_)));
        // Not durable: answered without a flush.
        assert_eq!(failing.submit(false, |_: &Numbers| Ok(2)).await.unwrap().unwrap(), 2);

        let writer = writer(&numbers, false);
        let refused = writer.submit(true, |_: &Numbers| Err::<(), _>(MetaError::Conflict("x".into())));
        assert!(matches!(refused.await.unwrap(), Err(MetaError::Conflict(_))));
        let panicked = writer.submit(true, |_: &Numbers| -> Result<(), MetaError> { panic!("a bug in one write") });
        assert!(panicked.await.is_err(), "a panicking job's caller is told it failed");
        assert_eq!(writer.submit(true, |_: &Numbers| Ok(3)).await.unwrap().unwrap(), 3, "the thread lives on");
    }

    #[tokio::test]
    async fn a_write_whose_caller_has_gone_is_not_made() {
        let numbers = Arc::new(Numbers::default());
        let writer = writer(&numbers, false);
        // Holds the thread while the next write queues and its caller leaves.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let first = writer.submit(true, move |_: &Numbers| {
            hold.recv().unwrap();
            Ok(())
        });
        drop(writer.submit(true, |n: &Numbers| {
            n.written.lock().unwrap().push(1);
            Ok(())
        }));
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        writer.submit(true, |_: &Numbers| Ok(())).await.unwrap().unwrap();
        assert!(numbers.written.lock().unwrap().is_empty(), "the abandoned write was made");
    }
}
