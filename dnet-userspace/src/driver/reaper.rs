//! Link removals finished in the background.
//!
//! Deleting a veth takes the kernel tens of milliseconds (it unregisters
//! both ends, detaches their programs and waits for RCU grace periods,
//! all under the rtnl lock), none of which the caller needs to wait for
//! once the endpoint is out of the state and out of the datapath's maps:
//! its programs, still attached, drop whatever the container sends
//! (`unknown-endpoint`). So a removal hands the link to the reaper, one
//! thread of the daemon with a netlink socket of its own (a delete blocks
//! the socket it is sent on), which deletes it and then removes its pins.
//!
//! Nothing is lost if the daemon stops first: the link carries dnet's
//! alias and its pins sit in dnet's bpffs folder, and the next start
//! removes what the state no longer holds (`engine::reconcile`). A new
//! endpoint in a namespace with a removal under way waits for it
//! ([`Reaper::settled_in`], bounded): the old container end may still hold
//! the interface name the new one takes.
//!
//! A removal counts as under way exactly as long as its job exists: the
//! job owns its entry ([`Pending`]), so a job done, dropped by a thread
//! that panicked, or left in the channel of a thread that is gone never
//! leaves an entry anyone could wait for. Only a `del_link` that never
//! returns keeps one, and waiters give up after their bound.

use std::{
    io,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use crate::netlink::Netlink;

/// (device, inode) of a network namespace (see `netns::identity`).
pub type NsId = (u64, u64);

struct Job {
    ifindex: u32,
    name: String,
    pins: Vec<PathBuf>,
    /// Its entry among the removals under way, gone with the job.
    _pending: Pending,
}

/// One removal's entry in `Shared::pending`: made with its job, removed
/// (and waiters woken) when the job is dropped, however that happens.
struct Pending {
    id: u64,
    shared: Arc<Shared>,
}

impl Pending {
    fn new(shared: &Arc<Shared>, netns: Option<NsId>) -> Pending {
        let id = shared.next.fetch_add(1, Ordering::Relaxed);
        shared.pending().push((id, netns));
        Pending {
            id,
            shared: shared.clone(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.shared.pending().retain(|(i, _)| *i != self.id);
        self.shared.done.notify_waiters();
    }
}

#[derive(Default)]
struct Shared {
    /// Removals handed over and not yet done: id and the container's
    /// namespace.
    pending: Mutex<Vec<(u64, Option<NsId>)>>,
    done: tokio::sync::Notify,
    next: AtomicU64,
    /// Attaches waiting in [`Reaper::settled_in`].
    waiting: AtomicUsize,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Option<NsId>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle on the reaper's thread (clones share it).
#[derive(Clone)]
pub struct Reaper {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Reaper {
    /// Starts the reaper's thread in the calling thread's namespace (the
    /// daemon's) and opens its netlink socket there.
    pub fn start() -> io::Result<Reaper> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let shared = Arc::new(Shared::default());
        std::thread::Builder::new()
            .name("dnet-reaper".into())
            .spawn(move || run(rx, ready_tx))?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the reaper thread ended at once"))??;
        Ok(Reaper { tx, shared })
    }

    /// Deletes link `ifindex` (called `name`, of a container in namespace
    /// `netns`) in the background, then the files at `pins`.
    pub fn remove_link(&self, ifindex: u32, name: &str, netns: Option<NsId>, pins: Vec<PathBuf>) {
        let job = Job {
            ifindex,
            name: name.to_owned(),
            pins,
            _pending: Pending::new(&self.shared, netns),
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            // The thread is gone: the next start collects the link; the
            // job's entry goes with it, so nobody waits for it meanwhile.
            tracing::warn!(link = %job.name, "the reaper is gone: the link stays until the next start");
        }
    }

    /// Removals under way.
    pub fn pending(&self) -> usize {
        self.shared.pending().len()
    }

    /// Attaches waiting for a removal ([`Reaper::settled_in`]).
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Waits, `bound` at most, until no removal of a container in
    /// namespace `netns` is under way; whether none is.
    pub async fn settled_in(&self, netns: NsId, bound: Duration) -> bool {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        let _w = Waiting(&self.shared.waiting);
        let busy = |p: &[(u64, Option<NsId>)]| p.iter().any(|(_, n)| *n == Some(netns));
        tokio::time::timeout(bound, self.wait(busy)).await.is_ok()
    }

    /// Waits until no removal is under way.
    pub async fn settled(&self) {
        self.wait(|p| !p.is_empty()).await
    }

    async fn wait(&self, busy: impl Fn(&[(u64, Option<NsId>)]) -> bool) {
        loop {
            // Registered before the look, so that no completion between
            // the two is missed.
            let done = self.shared.done.notified();
            if !busy(&self.shared.pending()) {
                return;
            }
            done.await;
        }
    }
}

fn run(rx: mpsc::Receiver<Job>, ready: mpsc::SyncSender<io::Result<()>>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let nl = match rt.block_on(async { Netlink::open() }) {
        Ok(nl) => nl,
        Err(e) => {
            let _ = ready.send(Err(io::Error::other(e.to_string())));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // A job dropped anywhere (done, or in the channel with this thread
    // gone) takes its pending entry with it (`Pending`).
    while let Ok(job) = rx.recv() {
        crate::engine::crash::hold("reaper:remove");
        match rt.block_on(nl.del_link(job.ifindex)) {
            Ok(()) => {}
            // Gone with its namespace meanwhile.
            Err(e) if e.errno() == Some(libc::ENODEV) => {}
            Err(e) => tracing::warn!(link = %job.name, "removing: {e} (the next start removes it)"),
        }
        for p in &job.pins {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(pin = %p.display(), "removing: {e}"),
            }
        }
        tracing::debug!(link = %job.name, "removed");
        drop(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reaper whose thread is the test: jobs sent stay in `rx`.
    fn idle() -> (Reaper, Arc<Shared>, mpsc::Receiver<Job>) {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Job>();
        let reaper = Reaper {
            tx,
            shared: shared.clone(),
        };
        (reaper, shared, rx)
    }

    fn job(shared: &Arc<Shared>, netns: NsId) -> Job {
        Job {
            ifindex: 0,
            name: "x".into(),
            pins: Vec::new(),
            _pending: Pending::new(shared, Some(netns)),
        }
    }

    /// A removal's entry lives exactly as long as its job: a job left in
    /// the channel of a reaper thread that is gone (it panicked, say)
    /// takes its entry with it, and a waiter returns at once instead of
    /// waiting for good.
    #[tokio::test]
    async fn a_job_dropped_by_a_dead_reaper_leaves_no_removal_to_wait_for() {
        let (reaper, shared, rx) = idle();
        reaper.tx.send(job(&shared, (1, 2))).unwrap();
        let other = job(&shared, (1, 3));
        assert_eq!(reaper.pending(), 2);
        // Under way: a waiter gives up after its bound.
        assert!(!reaper.settled_in((1, 2), Duration::from_millis(1)).await);
        assert_eq!(reaper.waiting(), 0);
        // The thread is gone: its receiver drops what it had not taken.
        drop(rx);
        assert_eq!(reaper.pending(), 1);
        assert!(reaper.settled_in((1, 2), Duration::from_secs(600)).await);
        // A send to the dead thread leaves nothing either.
        reaper.remove_link(7, "y", Some((1, 2)), Vec::new());
        assert_eq!(reaper.pending(), 1);
        drop(other);
        assert_eq!(reaper.pending(), 0);
    }

    /// A waiter is woken when the job of its namespace is dropped.
    #[tokio::test]
    async fn a_waiter_is_woken_when_its_namespaces_job_goes() {
        let (reaper, shared, _rx) = idle();
        let j = job(&shared, (4, 5));
        let w = reaper.clone();
        let waiter =
            tokio::spawn(async move { w.settled_in((4, 5), Duration::from_secs(600)).await });
        while reaper.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(j);
        assert!(waiter.await.unwrap());
    }
}
