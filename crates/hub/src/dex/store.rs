//! Lambda durable executions in the hub's checkpoint store, the one the engine keeps the
//! Rust `DurableContext` executions in (a `DirStore` in the config file's `checkpoint_dir`;
//! the cloud runtime's own store on a node): one store, one format (checksummed, two slots,
//! group commit). A hub takes up both kinds from it when it is built: its Lambda
//! executions ([`Dex::take_up`](super::Dex::take_up)), and the engine's on a store of its
//! own ([`EdgeHub::recover_durable`], which leaves the Lambda ones alone: [`is_lambda`]).
//!
//! Each execution is one [`Checkpoint`] whose `state` is the execution as JSON behind
//! [`TAG`]. A change is queued under the hub's lock of its executions and written by one
//! task off that lock: it takes the latest copy of every changed execution, saves them
//! together (so a `DirStore` commits them with one sync) and waits for all before it takes
//! the next, so a save never overtakes an older one of the same execution. An answer waits
//! for [`Saver::flushed`] first.
//!
//! [`EdgeHub::recover_durable`]: crate::EdgeHub::recover_durable

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use fnhub_core::{Checkpoint, CheckpointStore, ExecutionId, FunctionName, StoreError, Version};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::Execution;
use crate::files;

/// What a Lambda execution's checkpoint state starts with, so that the engine's recovery
/// leaves it to the Lambda side (see [`is_lambda`]).
const TAG: &[u8] = b"fnhub.lambda-durable.v1\n";

/// How long the writer waits after a failed save before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether `checkpoint` is a Lambda durable execution (not one of the engine's).
pub(crate) fn is_lambda(checkpoint: &Checkpoint) -> bool {
    checkpoint
        .state
        .as_ref()
        .is_some_and(|s| s.starts_with(TAG))
}

/// The execution a Lambda checkpoint holds; `None` if it is not one or does not parse.
pub(super) fn execution_of(checkpoint: &Checkpoint) -> Option<Execution> {
    let json = checkpoint.state.as_ref()?.strip_prefix(TAG)?;
    let exec: Execution = serde_json::from_slice(json).ok()?;
    (exec.id.parse::<ExecutionId>().ok() == Some(checkpoint.execution_id)).then_some(exec)
}

/// The checkpoint that keeps `exec`; `None` if its id is not an execution id (ids are
/// made by [`super::random_id`], so only a forged copy from elsewhere has another).
fn checkpoint_of(exec: &Execution, now_ms: u64, origin: &str) -> Option<Checkpoint> {
    let id = exec.id.parse::<ExecutionId>().ok()?;
    let function = FunctionName::new(&exec.function).ok()?;
    let version = Version::new(exec.version).unwrap_or(Version::FIRST);
    let input = exec
        .op(&exec.id)
        .and_then(|o| o.input.clone())
        .unwrap_or_default();
    let mut cp = Checkpoint::new(
        id,
        function,
        version,
        Bytes::from(input),
        origin,
        UNIX_EPOCH + Duration::from_millis(exec.start_ms),
    );
    let mut state = TAG.to_vec();
    serde_json::to_writer(&mut state, exec).ok()?;
    cp.state = Some(Bytes::from(state));
    cp.updated_at = UNIX_EPOCH + Duration::from_millis(now_ms);
    Some(cp)
}

/// What is to be written for one execution.
enum Pending {
    Save(Box<Checkpoint>),
    Remove,
}

#[derive(Default)]
struct Queue {
    pending: HashMap<ExecutionId, Pending>,
    /// Changes queued so far (a change's number is the count when it was queued).
    queued: u64,
}

/// How far the writer got.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    /// Every change up to this number is written, or failed.
    through: u64,
    /// The highest change number of a batch in which a write failed.
    failed_through: u64,
}

struct Shared {
    store: Arc<dyn CheckpointStore>,
    /// The hub's name: its executions' checkpoints carry it, and it takes up only those
    /// (the nodes of a cloud runtime may share one store; each keeps to its own).
    origin: String,
    queue: Mutex<Queue>,
    written: watch::Sender<Written>,
}

/// Writes a hub's Lambda executions to its checkpoint store.
pub(super) struct Saver {
    shared: Arc<Shared>,
    /// Rings the writer; dropped with the saver, which ends the writer once it has
    /// written what is queued.
    doorbell: mpsc::UnboundedSender<()>,
}

impl Saver {
    /// A saver to `store` for the hub named `origin`, its writer a task of the current
    /// tokio runtime.
    pub(super) fn new(store: Arc<dyn CheckpointStore>, origin: &str) -> Saver {
        let shared = Arc::new(Shared {
            store,
            origin: origin.to_owned(),
            queue: Mutex::default(),
            written: watch::Sender::new(Written::default()),
        });
        let (doorbell, rung) = mpsc::unbounded_channel();
        tokio::spawn(write(shared.clone(), rung));
        Saver { shared, doorbell }
    }

    /// Queues `exec` to be saved as it is now; false (and said) if it cannot be kept in a
    /// checkpoint: an id or function name no execution of ours has.
    pub(super) fn save(&self, exec: &Execution, now_ms: u64) -> bool {
        let Some(cp) = checkpoint_of(exec, now_ms, &self.shared.origin) else {
            tracing::error!(execution = %exec.id, "a durable execution with an unusable id or function name is not saved");
            return false;
        };
        self.queue(cp.execution_id, Pending::Save(Box::new(cp)));
        true
    }

    /// Queues the removal of execution `id`.
    pub(super) fn remove(&self, id: &str) {
        if let Ok(id) = id.parse() {
            self.queue(id, Pending::Remove);
        }
    }

    fn queue(&self, id: ExecutionId, what: Pending) {
        {
            let mut q = self.shared.queue.lock();
            q.pending.insert(id, what);
            q.queued += 1;
        }
        let _ = self.doorbell.send(());
    }

    /// Resolves once every change queued before the call is written: true if they all
    /// were, false if a write among them failed (it is tried again; the change that
    /// follows it answers true once it is written).
    pub(super) async fn flushed(&self) -> bool {
        let upto = self.shared.queue.lock().queued;
        let mut written = self.shared.written.subscribe();
        match written.wait_for(|w| w.through >= upto).await {
            Ok(w) => w.failed_through < upto || upto == 0,
            Err(_) => false,
        }
    }

    /// This hub's Lambda executions in the store: every checkpoint [`is_lambda`] says is
    /// one, saved by a hub of this name. Executions that do not parse are said and left in
    /// the store.
    pub(super) async fn load(&self) -> Result<Vec<Execution>, StoreError> {
        let store = &self.shared.store;
        let mut out = Vec::new();
        for id in store.list().await? {
            let cp = match store.load(id).await {
                Ok(Some(cp)) => cp,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(execution = %id, %error, "a checkpoint could not be read");
                    continue;
                }
            };
            if !is_lambda(&cp) || cp.origin_hub != self.shared.origin {
                continue;
            }
            match execution_of(&cp) {
                Some(exec) => out.push(exec),
                None => {
                    tracing::warn!(execution = %id, "a Lambda durable execution's checkpoint does not parse; left in the store")
                }
            }
        }
        Ok(out)
    }
}

/// The writer: takes every queued change, writes them together, and marks how far it got.
async fn write(shared: Arc<Shared>, mut rung: mpsc::UnboundedReceiver<()>) {
    loop {
        let (batch, upto) = {
            let mut q = shared.queue.lock();
            (std::mem::take(&mut q.pending), q.queued)
        };
        if batch.is_empty() {
            // Ended when the saver is dropped and nothing is left to write.
            if rung.recv().await.is_none() {
                return;
            }
            while rung.try_recv().is_ok() {}
            continue;
        }
        let mut writes = tokio::task::JoinSet::new();
        for (id, what) in batch {
            let store = shared.store.clone();
            writes.spawn(async move {
                let result = match &what {
                    Pending::Save(cp) => store.save(cp).await,
                    Pending::Remove => store.remove(id).await.map(drop),
                };
                (id, what, result)
            });
        }
        let mut failed = false;
        while let Some(joined) = writes.join_next().await {
            let Ok((id, what, result)) = joined else {
                failed = true;
                continue;
            };
            let label = if result.is_ok() { "ok" } else { "failed" };
            metrics::counter!("fnhub_durable_execution_writes_total", "result" => label)
                .increment(1);
            if let Err(error) = result {
                failed = true;
                tracing::error!(execution = %id, %error, "a durable execution could not be written to the checkpoint store; trying again");
                // Again, unless a newer change of it is queued meanwhile.
                let mut q = shared.queue.lock();
                if let std::collections::hash_map::Entry::Vacant(slot) = q.pending.entry(id) {
                    slot.insert(what);
                    q.queued += 1;
                }
            }
        }
        shared.written.send_modify(|w| {
            w.through = upto;
            if failed {
                w.failed_through = upto;
            }
        });
        if failed {
            if rung.is_closed() {
                tracing::error!(
                    "the hub is gone: durable executions that could not be written are left as last written"
                );
                return;
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// Moves the executions an earlier hub kept as one JSON file each in `dir` (its
/// `checkpoint_dir/durable-executions`) into `saver`'s store, and removes each file once
/// its execution is written; the folder goes when empty. A file that does not parse is
/// set aside as `{id}.corrupt`. The number moved.
pub(super) async fn import_folder(saver: &Saver, dir: &Path) -> std::io::Result<usize> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut moved = Vec::new();
    for (path, name) in files::entries(dir)? {
        if !name.ends_with(".json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Execution>(&b).ok());
        match parsed {
            Some(exec) if saver.save(&exec, exec.end_ms.unwrap_or(exec.start_ms)) => {
                moved.push(name);
            }
            _ => {
                tracing::warn!(file = %path.display(), "a durable execution file does not parse; set aside");
                let _ = std::fs::rename(&path, path.with_extension("corrupt"));
            }
        }
    }
    if !saver.flushed().await {
        return Err(std::io::Error::other(
            "the executions could not be written to the checkpoint store",
        ));
    }
    for name in &moved {
        files::remove(dir, name)?;
    }
    // Only when nothing is left in it (a set-aside file stays, with its folder).
    let _ = std::fs::remove_dir(dir);
    if !moved.is_empty() {
        tracing::info!(executions = moved.len(), from = %dir.display(), "Lambda durable executions moved into the checkpoint store");
    }
    Ok(moved.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhub_checkpoint::MemoryStore;

    fn exec(id: &str) -> Execution {
        let dex = super::super::Dex::new(None, Arc::new(fnhub_core::SystemClock), "hub-a");
        dex.declare("f", super::super::DurableConfig::default());
        let (started, _, _) = dex.start("f", 1, "{\"n\":1}".into(), None).unwrap();
        let mut e = dex.snapshot(&started).unwrap();
        // The execution's own operation carries its id.
        e.id = id.to_owned();
        e.ops[0].id = id.to_owned();
        e
    }

    #[test]
    fn an_execution_goes_into_a_checkpoint_and_comes_back_whole() {
        let e = exec(&super::super::random_id());
        let cp = checkpoint_of(&e, 5, "hub-a").unwrap();
        assert!(is_lambda(&cp));
        assert_eq!(cp.origin_hub, "hub-a");
        assert_eq!(cp.function.as_str(), "f");
        assert_eq!(&cp.input[..], b"{\"n\":1}");
        let back = execution_of(&cp).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&e).unwrap()
        );
    }

    #[test]
    fn a_checkpoint_of_the_engine_or_a_forged_one_is_not_taken_for_an_execution() {
        let e = exec(&super::super::random_id());
        let mut cp = checkpoint_of(&e, 5, "hub-a").unwrap();
        // Another execution's id than the one inside.
        cp.execution_id = ExecutionId::random();
        assert!(is_lambda(&cp) && execution_of(&cp).is_none());
        // An engine checkpoint: no state, or state without the tag.
        cp.state = None;
        assert!(!is_lambda(&cp));
        cp.state = Some(Bytes::from_static(b"{\"id\":\"x\"}"));
        assert!(!is_lambda(&cp) && execution_of(&cp).is_none());
        // The tag, then garbage.
        let mut garbage = TAG.to_vec();
        garbage.extend_from_slice(b"\xff{not json");
        cp.state = Some(Bytes::from(garbage));
        assert!(execution_of(&cp).is_none());
        // An id that is not an execution id is not saved at all.
        assert!(checkpoint_of(&exec("../../etc/passwd"), 5, "hub-a").is_none());
    }

    /// A store whose saves fail while `failing` is set.
    struct Flaky {
        inner: MemoryStore,
        failing: std::sync::atomic::AtomicBool,
    }

    impl CheckpointStore for Flaky {
        fn save<'a>(
            &'a self,
            cp: &'a Checkpoint,
        ) -> fnhub_core::BoxFuture<'a, Result<(), StoreError>> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Box::pin(std::future::ready(Err(StoreError::Io(
                    std::io::Error::other("disk full"),
                ))));
            }
            self.inner.save(cp)
        }
        fn load(
            &self,
            id: ExecutionId,
        ) -> fnhub_core::BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
            self.inner.load(id)
        }
        fn remove(&self, id: ExecutionId) -> fnhub_core::BoxFuture<'_, Result<bool, StoreError>> {
            self.inner.remove(id)
        }
        fn list(&self) -> fnhub_core::BoxFuture<'_, Result<Vec<ExecutionId>, StoreError>> {
            self.inner.list()
        }
    }

    #[tokio::test]
    async fn the_last_change_of_each_execution_is_what_the_store_keeps() {
        let store = Arc::new(MemoryStore::new());
        let saver = Saver::new(store.clone(), "hub-a");
        let mut a = exec(&super::super::random_id());
        let b = exec(&super::super::random_id());
        for n in 0..50 {
            a.needs_invoke = n % 2 == 0;
            a.start_ms = n;
            saver.save(&a, n);
        }
        saver.save(&b, 1);
        assert!(saver.flushed().await);
        let loaded = saver.load().await.unwrap();
        assert_eq!(loaded.len(), 2);
        let kept = loaded.iter().find(|e| e.id == a.id).unwrap();
        assert_eq!((kept.start_ms, kept.needs_invoke), (49, false));
        saver.remove(&b.id);
        assert!(saver.flushed().await);
        assert_eq!(saver.load().await.unwrap().len(), 1);
        // Another hub on the same store keeps to its own.
        let other = Saver::new(store.clone(), "hub-b");
        assert!(other.load().await.unwrap().is_empty());
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn executions_an_earlier_hub_kept_as_files_move_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("durable-executions");
        std::fs::create_dir(&legacy).unwrap();
        let e = exec(&super::super::random_id());
        std::fs::write(
            legacy.join(format!("{}.json", e.id)),
            serde_json::to_vec(&e).unwrap(),
        )
        .unwrap();
        let store = Arc::new(MemoryStore::new());
        let saver = Saver::new(store.clone(), "hub-a");
        assert_eq!(import_folder(&saver, &legacy).await.unwrap(), 1);
        let loaded = saver.load().await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, e.id);
        assert!(!legacy.exists(), "the emptied folder is gone");
        // A file that does not parse is set aside, with its folder; nothing is lost.
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join("bad.json"), b"{torn").unwrap();
        // So is one whose id no execution of ours has.
        let odd = exec("not-an-id");
        std::fs::write(legacy.join("odd.json"), serde_json::to_vec(&odd).unwrap()).unwrap();
        assert_eq!(import_folder(&saver, &legacy).await.unwrap(), 0);
        assert!(legacy.join("bad.corrupt").exists());
        assert!(legacy.join("odd.corrupt").exists());
        assert_eq!(saver.load().await.unwrap().len(), 1);
        // No folder: nothing to do.
        assert_eq!(
            import_folder(&saver, &dir.path().join("none"))
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_answers_false_and_is_written_when_the_store_mends() {
        let store = Arc::new(Flaky {
            inner: MemoryStore::new(),
            failing: true.into(),
        });
        let saver = Saver::new(store.clone(), "hub-a");
        let e = exec(&super::super::random_id());
        saver.save(&e, 1);
        assert!(
            !saver.flushed().await,
            "a failed write was answered as written"
        );
        assert!(saver.load().await.unwrap().is_empty());
        store
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        // The writer tries again after its pause; nothing new needs to be queued.
        tokio::time::sleep(RETRY_AFTER * 2).await;
        assert!(saver.flushed().await);
        assert_eq!(saver.load().await.unwrap().len(), 1);
    }
}
