//! Where password checks run, and who may have one: a small pool on tokio's blocking
//! threads (an Argon2 check is tens of milliseconds of CPU, which must never run on the
//! I/O threads), two lanes so that a client with recent failures never makes a clean
//! one wait, a bound on the checks waiting, and a bound on failures per user name that
//! slows (delays, and sends to the suspects' lane) only the addresses that have not
//! signed in as that user recently: nobody can lock a real agent out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::server::ClientKey;
use crate::server::limits::{FailureWindow, keep_newest};

/// How the users file's checks are bounded (see [`UserDirectory::with_checks`](super::UserDirectory::with_checks)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckLimits {
    /// Slow checks (Argon2) running at once, on tokio's blocking threads. Default: the
    /// number of CPUs, at least 2. Clients with recent failures may use all but one.
    pub concurrency: usize,
    /// Slow checks waiting for their turn, at most, in each lane (clients with recent
    /// failures, and the others); past it, a handshake is answered "busy, try again"
    /// (`503` with advice to handshake later) without a check. Default: 64.
    pub max_waiting: usize,
    /// Failed checks of one user name within `window` after which the checks of that
    /// name from addresses that have not signed in as it within the window are slowed:
    /// delayed by `throttle_delay` and run in the lane of clients with failures. The
    /// agent's own address is not slowed, and nobody is refused for it, so nobody can
    /// lock a real agent out. Default: 10.
    pub max_failures_per_user: u32,
    /// How long a slowed check waits before it runs. Default: 1 s.
    pub throttle_delay: Duration,
    /// The window of `max_failures_per_user`, and how long a success keeps an address
    /// trusted for that user. Default: 60 s.
    pub window: Duration,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            concurrency: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            max_waiting: 64,
            max_failures_per_user: 10,
            throttle_delay: Duration::from_secs(1),
            window: Duration::from_secs(60),
        }
    }
}

impl CheckLimits {
    /// Sets [`CheckLimits::concurrency`] (at least 2).
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(2);
        self
    }

    /// Sets [`CheckLimits::max_waiting`].
    #[must_use]
    pub fn with_max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }

    /// Sets [`CheckLimits::max_failures_per_user`].
    #[must_use]
    pub fn with_max_failures_per_user(mut self, n: u32) -> Self {
        self.max_failures_per_user = n;
        self
    }

    /// Sets [`CheckLimits::throttle_delay`].
    #[must_use]
    pub fn with_throttle_delay(mut self, delay: Duration) -> Self {
        self.throttle_delay = delay;
        self
    }

    /// Sets [`CheckLimits::window`].
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
}

/// What the checks have done, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckStats {
    /// Slow checks run on the blocking pool.
    pub slow_checks: u64,
    /// Slow checks of clients without recent failures that had to wait for a place in
    /// the pool (only other clean clients' checks can make them wait).
    pub clean_waits: u64,
    /// Checks refused because `max_waiting` were waiting already.
    pub busy: u64,
    /// Checks slowed by `max_failures_per_user`.
    pub user_throttled: u64,
    /// Checks that failed (wrong password, unknown user).
    pub failures: u64,
}

/// The most user names and clients the throttle tracks; past it, stale entries go, then
/// an arbitrary half.
const MAX_TRACKED: usize = 65_536;

/// Per user name: recent failures, and the clients that signed in recently.
#[derive(Default)]
struct UserRecord {
    failures: FailureWindow,
    trusted: HashMap<ClientKey, Instant>,
}

/// The pool and the throttles of one users file.
pub(crate) struct Checks {
    limits: CheckLimits,
    /// Places in the pool, for everyone.
    pool: Arc<Semaphore>,
    /// Places clients with recent failures may take: all but one of the pool's.
    suspect: Arc<Semaphore>,
    /// Checks waiting for a place, by lane: clean, suspect.
    waiting: [AtomicUsize; 2],
    users: Mutex<HashMap<String, UserRecord>>,
    /// Clients with recent failures (they take the suspect lane).
    clients: Mutex<HashMap<ClientKey, FailureWindow>>,
    slow_checks: AtomicU64,
    clean_waits: AtomicU64,
    busy: AtomicU64,
    user_throttled: AtomicU64,
    failures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A check counted among those waiting for a place until dropped (taken a place, or
/// cancelled with its request).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Counts one more waiting, unless `max` wait already.
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a slow check did not run.
pub(crate) enum Skipped {
    /// The check failed to run (it panicked): answer as a wrong password.
    Failed,
    /// Too many checks waiting: answer "busy".
    Busy,
}

impl Checks {
    pub fn new(limits: CheckLimits) -> Self {
        let n = limits.concurrency.max(2);
        Checks {
            pool: Arc::new(Semaphore::new(n)),
            suspect: Arc::new(Semaphore::new(n - 1)),
            limits,
            waiting: Default::default(),
            users: Mutex::default(),
            clients: Mutex::default(),
            slow_checks: AtomicU64::new(0),
            clean_waits: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            user_throttled: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CheckStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CheckStats {
            slow_checks: load(&self.slow_checks),
            clean_waits: load(&self.clean_waits),
            busy: load(&self.busy),
            user_throttled: load(&self.user_throttled),
            failures: load(&self.failures),
        }
    }

    /// Whether `user`'s failures are over the bound and `client` has not signed in as
    /// `user` within the window.
    pub fn throttled(&self, user: &str, client: Option<ClientKey>) -> bool {
        let now = Instant::now();
        let users = lock(&self.users);
        let Some(record) = users.get(user) else {
            return false;
        };
        let full = record.failures.recent(self.limits.window, now)
            >= self.limits.max_failures_per_user.max(1) as usize;
        let trusted = client.is_some_and(|c| {
            record
                .trusted
                .get(&c)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.limits.window)
        });
        if full && !trusted {
            self.user_throttled.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether `client` failed a check within the window (its checks take the
    /// suspects' lane).
    pub fn is_suspect(&self, client: Option<ClientKey>) -> bool {
        client.is_some_and(|c| {
            lock(&self.clients)
                .get(&c)
                .is_some_and(|w| !w.is_stale(self.limits.window, Instant::now()))
        })
    }

    /// How long a slowed check waits first.
    pub fn throttle_delay(&self) -> Duration {
        self.limits.throttle_delay
    }

    /// Runs `check` on the blocking pool, in the suspects' lane if `suspect`, unless
    /// too many wait.
    pub async fn run<T: Send + 'static>(
        &self,
        suspect: bool,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Skipped> {
        // Each lane has its own bound, so suspects never make a clean client "busy".
        // Counted by a guard: a request dropped while it waits gives its place back.
        let Some(waiting) =
            Waiting::enter(&self.waiting[usize::from(suspect)], self.limits.max_waiting)
        else {
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(Skipped::Busy);
        };
        // A suspect takes a lane place first, so that suspects never hold every place
        // in the pool: a clean client finds one free, or waits for clean ones only.
        let lane = if suspect {
            self.suspect.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let place = match self.pool.clone().try_acquire_owned() {
            Ok(place) => Some(place),
            Err(_) => {
                if !suspect {
                    self.clean_waits.fetch_add(1, Ordering::Relaxed);
                }
                self.pool.clone().acquire_owned().await.ok()
            }
        };
        drop(waiting);
        self.slow_checks.fetch_add(1, Ordering::Relaxed);
        let result = tokio::task::spawn_blocking(move || {
            let result = check();
            drop((place, lane));
            result
        })
        .await;
        match result {
            Ok(value) => Ok(value),
            // The check panicked: treated as a failed check, never as a success.
            Err(_) => Err(Skipped::Failed),
        }
    }

    /// Records a failed check of `user` from `client`.
    pub fn failed(&self, user: &str, client: Option<ClientKey>) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let (max, window) = (self.limits.max_failures_per_user, self.limits.window);
        {
            let mut users = lock(&self.users);
            // Unknown names pile up as fast as they are guessed: stale entries go
            // every so often, and the oldest when the table is full.
            if !users.contains_key(user)
                && (users.len() >= MAX_TRACKED || users.len().is_power_of_two())
            {
                users.retain(|_, r| !r.failures.is_stale(window, now) || !r.trusted.is_empty());
                keep_newest(&mut users, MAX_TRACKED / 2, |r| r.failures.newest());
            }

            users
                .entry(user.to_string())
                .or_default()
                .failures
                .record(max, now);
        }
        if let Some(client) = client {
            let mut clients = lock(&self.clients);
            if !clients.contains_key(&client)
                && (clients.len() >= MAX_TRACKED || clients.len().is_power_of_two())
            {
                clients.retain(|_, w| !w.is_stale(window, now));
                keep_newest(&mut clients, MAX_TRACKED / 2, FailureWindow::newest);
            }
            clients.entry(client).or_default().record(1, now);
        }
    }

    /// Records a successful check of `user` from `client`: that client stays trusted
    /// for `user` for the window.
    pub fn succeeded(&self, user: &str, client: Option<ClientKey>) {
        let Some(client) = client else { return };
        let now = Instant::now();
        let window = self.limits.window;
        let mut users = lock(&self.users);
        let record = users.entry(user.to_string()).or_default();
        record
            .trusted
            .retain(|_, t| now.saturating_duration_since(*t) < window);
        if record.trusted.len() < 1_024 {
            record.trusted.insert(client, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<ClientKey> {
        Some(ClientKey::of(s.parse().unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn failures_per_user_spare_the_addresses_that_signed_in() {
        let checks = Checks::new(CheckLimits::default().with_max_failures_per_user(3));
        checks.succeeded("agent1", key("127.0.0.2"));
        for _ in 0..3 {
            assert!(!checks.throttled("agent1", key("127.0.0.1")));
            checks.failed("agent1", key("127.0.0.1"));
        }
        assert!(checks.throttled("agent1", key("127.0.0.1")));
        assert!(checks.throttled("agent1", key("127.0.0.3")));
        assert!(
            !checks.throttled("agent1", key("127.0.0.2")),
            "the agent's own address"
        );
        assert!(
            !checks.throttled("agent2", key("127.0.0.1")),
            "another user"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!checks.throttled("agent1", key("127.0.0.1")));
        assert_eq!(checks.stats().user_throttled, 2);
    }

    #[tokio::test]
    async fn too_many_waiting_checks_are_refused_as_busy() {
        let checks = Arc::new(Checks::new(
            CheckLimits::default()
                .with_concurrency(2)
                .with_max_waiting(2),
        ));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let mut running = Vec::new();
        for _ in 0..2 {
            let (checks, hold) = (checks.clone(), hold.clone());
            running.push(tokio::spawn(async move {
                checks
                    .run(false, move || {
                        let _ = lock(&hold).recv();
                    })
                    .await
                    .is_ok()
            }));
        }
        // Both places taken (the checks block), two more wait; a fifth is refused.
        while checks.stats().slow_checks < 2 {
            tokio::task::yield_now().await;
        }
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let checks = checks.clone();
            waiting.push(tokio::spawn(async move {
                checks.run(false, || ()).await.is_ok()
            }));
        }
        while checks.waiting[0].load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(checks.run(false, || ()).await, Err(Skipped::Busy)));
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        for task in running.into_iter().chain(waiting) {
            assert!(task.await.unwrap());
        }
        assert_eq!(checks.stats().busy, 1);
    }
}
