//! Moving a suspended execution between hubs: export, import, release.

use bytes::Bytes;
use fnhub_core::{ExecutionId, PendingDependency};

use super::answer::EngineError;
use super::engine::Engine;
use crate::format;

impl Engine {
    /// The encoded checkpoint of a suspended execution, for another hub's
    /// [`Engine::import`]. Nothing changes here: call [`Engine::release`] once the import
    /// has succeeded.
    pub async fn export(&self, execution: ExecutionId) -> Result<Bytes, EngineError> {
        let checkpoint = self
            .shared
            .store
            .load(execution)
            .await?
            .ok_or(EngineError::UnknownExecution(execution))?;
        match &checkpoint.pending {
            None => return Err(EngineError::NotSuspended(execution)),
            Some(PendingDependency::Child(_)) => return Err(EngineError::Pinned(execution)),
            Some(_) => {}
        }
        Ok(format::encode(&checkpoint)?)
    }

    /// Forgets an exported execution here: its checkpoint is removed and nothing here will
    /// resume it.
    pub async fn release(&self, execution: ExecutionId) -> Result<bool, EngineError> {
        {
            let mut waiting = self.shared.waiting.lock();
            waiting.retain(|w| w.execution != execution);
            self.shared.mark_waiting(&waiting);
        }
        Ok(self.shared.store.remove(execution).await?)
    }

    /// Takes in an execution exported by another hub: checks that this build reads its
    /// format and that its exact function version is registered here, stores it, and
    /// arranges for it to resume (its timer, or its event).
    pub async fn import(&self, bytes: &[u8]) -> Result<ExecutionId, EngineError> {
        let checkpoint = format::decode(bytes)?;
        self.starts_opened().await;
        let key = (checkpoint.function.clone(), checkpoint.version);
        if !self.shared.functions.read().contains_key(&key) {
            return Err(EngineError::UnknownFunction(key.0, key.1));
        }
        let pending = checkpoint
            .pending
            .clone()
            .ok_or(EngineError::NotSuspended(checkpoint.execution_id))?;
        self.shared.store.save(&checkpoint).await?;
        let at = checkpoint.journal.len() as u32;
        self.shared
            .schedule(checkpoint.execution_id, &key, &pending, at);
        Ok(checkpoint.execution_id)
    }
}
