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
//! ([`Reaper::settled_in`]): the old container end may still hold the
//! interface name the new one takes.

use std::{
    io,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
};

use crate::netlink::Netlink;

/// (device, inode) of a network namespace (see `netns::identity`).
pub type NsId = (u64, u64);

struct Job {
    id: u64,
    ifindex: u32,
    name: String,
    pins: Vec<PathBuf>,
}

#[derive(Default)]
struct Shared {
    /// Removals handed over and not yet done: id and the container's
    /// namespace.
    pending: Mutex<Vec<(u64, Option<NsId>)>>,
    done: tokio::sync::Notify,
    next: AtomicU64,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Option<NsId>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
        let s = shared.clone();
        std::thread::Builder::new()
            .name("dnet-reaper".into())
            .spawn(move || run(rx, s, ready_tx))?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the reaper thread ended at once"))??;
        Ok(Reaper { tx, shared })
    }

    /// Deletes link `ifindex` (called `name`, of a container in namespace
    /// `netns`) in the background, then the files at `pins`.
    pub fn remove_link(&self, ifindex: u32, name: &str, netns: Option<NsId>, pins: Vec<PathBuf>) {
        let id = self.shared.next.fetch_add(1, Ordering::Relaxed);
        self.shared.pending().push((id, netns));
        let job = Job {
            id,
            ifindex,
            name: name.to_owned(),
            pins,
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            // The thread is gone (it never panics by design): the next
            // start collects the link; nobody may wait for it meanwhile.
            tracing::warn!(link = %job.name, "the reaper is gone: the link stays until the next start");
            self.shared.pending().retain(|(i, _)| *i != job.id);
            self.shared.done.notify_waiters();
        }
    }

    /// Removals under way.
    pub fn pending(&self) -> usize {
        self.shared.pending().len()
    }

    /// Waits until no removal of a container in namespace `netns` is
    /// under way.
    pub async fn settled_in(&self, netns: NsId) {
        self.wait(|p| p.iter().any(|(_, n)| *n == Some(netns)))
            .await
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

fn run(rx: mpsc::Receiver<Job>, shared: Arc<Shared>, ready: mpsc::SyncSender<io::Result<()>>) {
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
        shared.pending().retain(|(i, _)| *i != job.id);
        shared.done.notify_waiters();
    }
}
