//! The op's own rayon pool, rebuilt in a forked child.
//!
//! rayon's global pool does not survive `fork`: the child inherits its bookkeeping but
//! none of its threads, so the first parallel call waits forever (a multiprocessing
//! fork pool, gunicorn `--preload`). The op therefore runs on a pool it owns, tagged
//! with the process id; a call that finds another pid builds a new pool. The parent's
//! handle is leaked in the child, not dropped: dropping would wait for threads that
//! do not exist there.

use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use rayon::{ThreadPool, ThreadPoolBuilder};

static POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);

/// How long a call waits for the pool's lock before running on its own thread: the
/// lock is held only to look up or build the pool, but a fork taken while another
/// thread held it leaves it locked for good in the child.
const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// The pool of this process, or `None` when none can be had (threads could not be
/// started, or the lock stayed taken): the caller then runs sequentially, and the
/// next call tries again.
pub(crate) fn current() -> Option<Arc<ThreadPool>> {
    let pid = std::process::id();
    let start = Instant::now();
    let mut guard = loop {
        match POOL.try_lock() {
            Ok(g) => break g,
            // The lock only guards a lookup: a panic while holding it leaves nothing
            // half-done.
            Err(TryLockError::Poisoned(p)) => break p.into_inner(),
            Err(TryLockError::WouldBlock) if start.elapsed() < LOCK_PATIENCE => {
                std::thread::yield_now()
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    };
    if let Some((owner, pool)) = guard.as_ref()
        && *owner == pid
    {
        return Some(pool.clone());
    }
    if let Some((_, inherited)) = guard.take() {
        std::mem::forget(inherited);
    }
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .thread_name(|i| format!("blockres-{i}"))
            .build()
            .ok()?,
    );
    *guard = Some((pid, pool.clone()));
    Some(pool)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_pool_per_process() {
        let a = super::current().expect("pool");
        let b = super::current().expect("pool");
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert_eq!(
            a.install(rayon::current_num_threads),
            a.current_num_threads()
        );
    }
}
