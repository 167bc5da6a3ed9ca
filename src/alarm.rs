//! Alarms kept off tokio's timer wheel.
//!
//! While any timer sits in tokio's wheel, the runtime's driver reads the
//! clock and works out its next deadline at every park: about 400
//! instructions per keep-alive request end to end, paid by every request
//! however rarely the timer itself goes off (the figures are in the
//! performance report, `benches/README.md`). The crate's timers are seconds
//! long, set rarely (a connection's, once per shortest timeout), and need
//! only go off a little after their deadline, never before. So one keeper
//! task per runtime thread holds them all, earliest first, and waits for
//! the earliest on a `timerfd` in tokio's reactor, which a park already
//! waits on at no extra cost; where there is no `timerfd`, on one tokio
//! timer for all of them.
//!
//! A second thread would do as well without the reactor, but a process
//! with one thread, a current-thread runtime's, would then pay glibc's
//! cancellation hooks on every system call: about as much again as the
//! wheel cost.
//!
//! Tokio's paused test clock does not reach these alarms.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

/// Alarms falling due within one step ring together: a keeper wakes at
/// most once a step, however many connections it times.
const STEP: Duration = Duration::from_millis(10);

/// An alarm's `due` while it is not set, or once it rang.
const NOT_SET: u64 = 0;

/// No alarm is waiting.
const NEVER: u64 = u64::MAX;

/// A task's alarm: set to an instant, it wakes the task when the instant
/// has passed.
#[derive(Debug)]
pub(crate) struct Alarm(Arc<Bell>);

#[derive(Debug, Default)]
struct Bell {
    /// The step it rings at, or [`NOT_SET`].
    due: AtomicU64,
    waker: AtomicWaker,
}

impl Alarm {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Bell::default()))
    }

    /// Whether the alarm is set and has not rung: the task will be woken.
    pub(crate) fn is_set(&self) -> bool {
        self.0.due.load(Ordering::Acquire) != NOT_SET
    }

    /// Makes a set alarm wake `cx`'s task instead of the one that set it.
    pub(crate) fn rewake(&self, cx: &Context<'_>) {
        self.0.waker.register(cx.waker());
    }

    /// Sets the alarm to wake `cx`'s task at `at`. Returns `true`, setting
    /// nothing, when `at` is not after `now`: it is due already. Outside a
    /// runtime, which a connection is never served from, it never rings:
    /// a timer that cannot be kept must not be taken for one run out.
    pub(crate) fn set(&self, at: Instant, now: Instant, cx: &mut Context<'_>) -> bool {
        if at <= now {
            self.0.due.store(NOT_SET, Ordering::Release);
            return true;
        }
        let due = step_at(at);
        self.0.waker.register(cx.waker());
        self.0.due.store(due, Ordering::Release);
        if let Some(keeper) = Keeper::current() {
            keeper.push(due, Entry::Bell(Arc::clone(&self.0)));
        }
        false
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // A keeper holds the bell until its step: the task, which a waker
        // keeps alive, must not wait that long to be freed.
        self.0.due.store(NOT_SET, Ordering::Release);
        drop(self.0.waker.take());
    }
}

/// `future`'s output, or `None` once `limit` has passed first: tokio's
/// `timeout`, off its wheel, for the waits every connection has (its first
/// bytes, a handshake, a PROXY header). Outside a runtime it never runs out.
#[cfg_attr(
    not(any(
        feature = "server",
        feature = "rustls",
        all(feature = "proxy-protocol", any(feature = "axum", feature = "tonic"))
    )),
    allow(dead_code)
)]
pub(crate) async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let start = Instant::now();
    // A limit past what an `Instant` holds never runs out.
    let deadline = start.checked_add(limit);
    let alarm = Alarm::new();
    let mut set = false;
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        if !set {
            set = true;
            return if alarm.set(deadline, start, cx) {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        if alarm.is_set() {
            alarm.rewake(cx);
            return Poll::Pending;
        }
        Poll::Ready(None)
    })
    .await
}

/// Work a keeper runs every so often, for as long as its owner lives: a
/// rate limiter's sweep of idle clients.
pub(crate) trait Chore: Send + Sync {
    fn run(&self);
}

/// Runs `chore` every `every` on the current runtime, until the chore is
/// dropped or the runtime shuts down; without a runtime, never.
pub(crate) fn every(every: Duration, chore: Weak<dyn Chore>) {
    if let Some(keeper) = Keeper::current() {
        keeper.push(step_at(Instant::now() + every), Entry::Chore(chore, every));
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The first step at or after `at`: the step that begins `n - 1` steps
/// after the epoch is `n`, so an alarm never rings early.
fn step_at(at: Instant) -> u64 {
    let since = at.saturating_duration_since(epoch()).as_nanos();
    u64::try_from(since.div_ceil(STEP.as_nanos()) + 1).unwrap_or(NEVER - 1)
}

/// The step under way.
fn step_now() -> u64 {
    let since = epoch().elapsed().as_nanos();
    u64::try_from(since / STEP.as_nanos() + 1).unwrap_or(NEVER - 1)
}

/// When `step` begins.
fn start_of(step: u64) -> Option<Instant> {
    let steps = u32::try_from(step.checked_sub(1)?).ok()?;
    epoch().checked_add(STEP.checked_mul(steps)?)
}

enum Entry {
    Bell(Arc<Bell>),
    Chore(Weak<dyn Chore>, Duration),
}

/// An entry and the step it falls due at, ordered by the step alone.
struct Due(u64, Entry);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// The alarms set from one runtime thread, and the task that rings them.
/// Entries earliest first, including those of alarms set again or
/// dropped since, which are skipped when they fall due.
struct Queue {
    heap: BinaryHeap<Reverse<Due>>,
    /// The length at which the entries no alarm still waits for are swept
    /// out: connections that close leave theirs, and a flood of them must
    /// not hold memory for a whole timeout.
    sweep_at: usize,
}

/// The fewest entries worth a sweep.
const SWEEP_FLOOR: usize = 1024;

impl Queue {
    fn push(&mut self, due: Due) {
        if self.heap.len() >= self.sweep_at {
            self.heap.retain(|Reverse(d)| d.is_waited_for());
            self.sweep_at = SWEEP_FLOOR.max(self.heap.len() * 2);
        }
        self.heap.push(Reverse(due));
    }
}

impl Due {
    /// Whether an alarm still waits for this entry.
    fn is_waited_for(&self) -> bool {
        match &self.1 {
            Entry::Bell(bell) => bell.due.load(Ordering::Acquire) == self.0,
            Entry::Chore(chore, _) => chore.strong_count() > 0,
        }
    }
}

struct Keeper {
    queue: Mutex<Queue>,
    /// The step the keeper's timer is set to, or [`NEVER`]: an alarm due
    /// before it wakes the keeper to set it sooner.
    waits_for: AtomicU64,
    nudge: AtomicWaker,
    /// Cleared when the keeper's task is dropped with its runtime.
    alive: AtomicBool,
}

thread_local! {
    static KEEPER: RefCell<Weak<Keeper>> = const { RefCell::new(Weak::new()) };
}

impl Keeper {
    /// This thread's keeper, started on the current runtime if it has
    /// none, or its last one went with its runtime.
    fn current() -> Option<Arc<Self>> {
        KEEPER.with(|cell| {
            let kept = cell.borrow().upgrade();
            if let Some(keeper) = kept.filter(|k| k.alive.load(Ordering::Acquire)) {
                return Some(keeper);
            }
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let keeper = Arc::new(Self {
                queue: Mutex::new(Queue {
                    heap: BinaryHeap::new(),
                    sweep_at: SWEEP_FLOOR,
                }),
                waits_for: AtomicU64::new(NEVER),
                nudge: AtomicWaker::new(),
                alive: AtomicBool::new(true),
            });
            let _entered = runtime.enter();
            let timer = Timer::new()?;
            runtime.spawn(Keep {
                keeper: Arc::clone(&keeper),
                timer,
            });
            *cell.borrow_mut() = Arc::downgrade(&keeper);
            Some(keeper)
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, due: u64, entry: Entry) {
        self.queue().push(Due(due, entry));
        if due < self.waits_for.load(Ordering::Acquire) {
            self.nudge.wake();
        }
    }

    /// Rings what is due by `now`; the step the next alarm falls due at.
    fn ring(&self, now: u64, ringing: &mut Vec<Due>) -> u64 {
        let next = {
            let mut queue = self.queue();
            while queue.heap.peek().is_some_and(|Reverse(d)| d.0 <= now) {
                let Reverse(due) = queue.heap.pop().expect("peeked");
                ringing.push(due);
            }
            let next = queue.heap.peek().map_or(NEVER, |Reverse(d)| d.0);
            // Published under the lock: an alarm pushed after this sees
            // when the keeper wakes, and one pushed before is in the queue.
            self.waits_for.store(next, Ordering::Release);
            next
        };
        let mut next = next;
        for Due(due, entry) in ringing.drain(..) {
            match entry {
                // Rung only if still set to this step: a bell set again
                // since has an entry of its own.
                Entry::Bell(bell) => {
                    if bell
                        .due
                        .compare_exchange(due, NOT_SET, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        bell.waker.wake();
                    }
                }
                Entry::Chore(chore, every) => {
                    if let Some(owner) = chore.upgrade() {
                        owner.run();
                        drop(owner);
                        let due = step_at(Instant::now() + every);
                        next = next.min(due);
                        self.queue().push(Due(due, Entry::Chore(chore, every)));
                        self.waits_for.fetch_min(due, Ordering::AcqRel);
                    }
                }
            }
        }
        next
    }
}

/// The keeper's task.
struct Keep {
    keeper: Arc<Keeper>,
    timer: Timer,
}

impl Future for Keep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.keeper.nudge.register(cx.waker());
        let mut ringing = Vec::new();
        loop {
            let next = this.keeper.ring(step_now(), &mut ringing);
            if this.timer.poll_until(cx, next).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Keep {
    fn drop(&mut self) {
        self.keeper.alive.store(false, Ordering::Release);
    }
}

/// What a keeper waits on.
enum Timer {
    /// A `timerfd` in the runtime's reactor.
    #[cfg(target_os = "linux")]
    Fd {
        fd: tokio::io::unix::AsyncFd<TimerFd>,
        set_for: u64,
    },
    /// One tokio timer, for want of a `timerfd`.
    Sleep {
        sleep: Pin<Box<tokio::time::Sleep>>,
        set_for: u64,
    },
}

impl Timer {
    /// Needs the runtime entered. A runtime without the reactor, or
    /// without the time driver for want of a `timerfd`, has no keeper.
    fn new() -> Option<Self> {
        #[cfg(target_os = "linux")]
        if let Ok(Some(fd)) = std::panic::catch_unwind(timer_fd) {
            return Some(Self::Fd { fd, set_for: NEVER });
        }
        let now = tokio::time::Instant::now();
        let sleep = std::panic::catch_unwind(|| Box::pin(tokio::time::sleep_until(now))).ok()?;
        Some(Self::Sleep {
            sleep,
            set_for: NEVER,
        })
    }

    /// Ready once `step` has begun; `Pending` with the task registered
    /// until then, or forever for [`NEVER`].
    fn poll_until(&mut self, cx: &mut Context<'_>, step: u64) -> Poll<()> {
        match self {
            #[cfg(target_os = "linux")]
            Self::Fd { fd, set_for } => {
                use nix::sys::time::TimeSpec;
                use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
                if *set_for != step {
                    let set = match start_of(step) {
                        None => fd.get_ref().0.unset(),
                        Some(at) => {
                            // A zero expiry would disarm it: a step begun
                            // already waits one nanosecond.
                            let left = at
                                .saturating_duration_since(Instant::now())
                                .max(Duration::from_nanos(1));
                            fd.get_ref().0.set(
                                Expiration::OneShot(TimeSpec::from_duration(left)),
                                TimerSetTimeFlags::empty(),
                            )
                        }
                    };
                    if set.is_err() {
                        // Never seen; a keeper that cannot wait looks
                        // again at the next poll rather than stall.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    *set_for = step;
                }
                loop {
                    let Poll::Ready(Ok(mut ready)) = fd.poll_read_ready(cx) else {
                        return Poll::Pending;
                    };
                    // Reading the count of expiries clears it.
                    let mut count = [0u8; 8];
                    match nix::unistd::read(&fd.get_ref().0, &mut count) {
                        Ok(_) => {
                            *set_for = NEVER;
                            return Poll::Ready(());
                        }
                        Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                        // Never seen: looked at again on the next turn,
                        // rather than a keeper that stalls.
                        Err(_) => {
                            *set_for = NEVER;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
            }
            Self::Sleep { sleep, set_for } => {
                if *set_for != step {
                    let Some(at) = start_of(step) else {
                        *set_for = step;
                        return Poll::Pending;
                    };
                    sleep.as_mut().reset(at.into());
                    *set_for = step;
                }
                if step == NEVER {
                    return Poll::Pending;
                }
                let ready = sleep.as_mut().poll(cx);
                if ready.is_ready() {
                    *set_for = NEVER;
                }
                ready
            }
        }
    }
}

/// A `timerfd` on the monotonic clock, `Instant`'s, in the reactor of the
/// runtime entered; panics without one.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn timer_fd() -> Option<tokio::io::unix::AsyncFd<TimerFd>> {
    use nix::sys::timerfd::{ClockId, TimerFlags};
    let fd = nix::sys::timerfd::TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .ok()
    .map(TimerFd)?;
    // SAFETY: the `AsyncFd` owns the `TimerFd`, and with it the one
    // descriptor it reports, open until the `AsyncFd` drops it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()
}

/// nix's `timerfd`, with the raw descriptor tokio registers.
#[cfg(target_os = "linux")]
struct TimerFd(nix::sys::timerfd::TimerFd);

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn count() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        (count, waker)
    }

    async fn until(what: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if what() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_alarm_rings_once_after_its_instant_and_never_before() {
        let (count, waker) = count();
        let alarm = Alarm::new();
        let now = Instant::now();
        let at = now + Duration::from_millis(200);
        assert!(!alarm.set(at, now, &mut Context::from_waker(&waker)));
        assert!(alarm.is_set());
        assert!(until(|| count.0.load(Ordering::SeqCst) == 1).await);
        assert!(Instant::now() >= at, "rang early");
        assert!(!alarm.is_set());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "rang twice");
    }

    #[tokio::test]
    async fn an_instant_passed_already_is_due_at_once() {
        let alarm = Alarm::new();
        let now = Instant::now();
        assert!(alarm.set(now, now, &mut Context::from_waker(Waker::noop())));
        assert!(!alarm.is_set());
    }

    #[test]
    fn without_a_runtime_an_alarm_never_rings() {
        let (count, waker) = count();
        let alarm = Alarm::new();
        let now = Instant::now();
        let soon = now + Duration::from_millis(20);
        assert!(!alarm.set(soon, now, &mut Context::from_waker(&waker)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(alarm.is_set());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_earlier_alarm_wakes_a_keeper_waiting_for_a_later_one() {
        let (late, late_waker) = count();
        let (early, early_waker) = count();
        let now = Instant::now();
        let later = Alarm::new();
        let hour = now + Duration::from_secs(3600);
        assert!(!later.set(hour, now, &mut Context::from_waker(&late_waker)));
        // Let the keeper settle on the hour.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let sooner = Alarm::new();
        let soon = now + Duration::from_millis(50);
        assert!(!sooner.set(soon, now, &mut Context::from_waker(&early_waker)));
        assert!(until(|| early.0.load(Ordering::SeqCst) == 1).await);
        assert_eq!(late.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_alarm_does_not_ring_and_lets_its_task_go() {
        let (count, waker) = count();
        let now = Instant::now();
        let alarm = Alarm::new();
        let soon = now + Duration::from_millis(50);
        assert!(!alarm.set(soon, now, &mut Context::from_waker(&waker)));
        drop(alarm);
        drop(waker);
        assert_eq!(Arc::strong_count(&count), 1, "the waker outlived its alarm");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_keeper_gone_with_its_runtime_is_replaced_on_the_next() {
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let (count, waker) = count();
                let alarm = Alarm::new();
                let now = Instant::now();
                let soon = now + Duration::from_millis(30);
                assert!(!alarm.set(soon, now, &mut Context::from_waker(&waker)));
                assert!(until(|| count.0.load(Ordering::SeqCst) == 1).await);
            });
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn alarms_dropped_unrung_do_not_pile_up() {
        let (_count, waker) = count();
        let now = Instant::now();
        let hour = now + Duration::from_secs(3600);
        let keeper = Keeper::current().expect("a keeper");
        for _ in 0..100_000 {
            let alarm = Alarm::new();
            assert!(!alarm.set(hour, now, &mut Context::from_waker(&waker)));
        }
        let kept = keeper.queue().heap.len();
        assert!(kept <= 2 * SWEEP_FLOOR, "{kept} entries kept for 0 alarms");
        // Alarms still set are kept through every sweep.
        let set: Vec<Alarm> = (0..3 * SWEEP_FLOOR)
            .map(|_| {
                let alarm = Alarm::new();
                assert!(!alarm.set(hour, now, &mut Context::from_waker(&waker)));
                alarm
            })
            .collect();
        let waited: usize = keeper
            .queue()
            .heap
            .iter()
            .filter(|Reverse(d)| d.is_waited_for())
            .count();
        assert_eq!(waited, set.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn within_gives_the_output_in_time_and_none_after_the_limit() {
        let quick = within(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(quick, Some(7));
        let started = Instant::now();
        let slow = within(Duration::from_millis(100), std::future::pending::<()>()).await;
        assert_eq!(slow, None);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100),
            "ran out early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "ran out late: {waited:?}");
        let zero = within(Duration::ZERO, std::future::pending::<()>()).await;
        assert_eq!(zero, None);
    }

    struct Chores(AtomicUsize);

    impl Chore for Chores {
        fn run(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_chore_runs_every_interval_while_its_owner_lives() {
        let owner = Arc::new(Chores(AtomicUsize::new(0)));
        let weak: Weak<dyn Chore> = Arc::downgrade(&owner) as Weak<dyn Chore>;
        every(Duration::from_millis(20), weak);
        assert!(until(|| owner.0.load(Ordering::SeqCst) >= 3).await);
        let weak = Arc::downgrade(&owner);
        drop(owner);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(weak.upgrade().is_none());
    }
}
