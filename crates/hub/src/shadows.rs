//! Device shadows in the shape of AWS IoT's: the documents, their merge and delta, and the
//! store shared by the function endpoint, WebAssembly guests and the shadow topics. With a
//! folder, each thing's document is a file there (`{thing}.json`), replaced whole and
//! synced on every change (a temporary file renamed over it, then the folder synced), so a
//! hub killed at any moment comes back with every acknowledged document and none torn.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fnhub_core::ServiceError;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::services::MAX_SHADOW_BYTES;

/// Every thing's shadow, in memory and (with a folder) on disk.
#[derive(Debug, Default)]
pub(crate) struct ShadowStore {
    shadows: Mutex<HashMap<String, Shadow>>,
    dir: Option<PathBuf>,
}

impl ShadowStore {
    /// A store kept in `dir` (made if missing, 0700), with what it holds loaded. A file that
    /// does not parse is set aside as `{name}.corrupt` and said, not served.
    pub(crate) fn open(dir: &Path) -> std::io::Result<ShadowStore> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut shadows = HashMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(thing) = name.strip_suffix(".json") else {
                continue;
            };
            match std::fs::read(&path)
                .ok()
                .and_then(|b| Shadow::from_saved(&b))
            {
                Some(shadow) => {
                    shadows.insert(thing.to_owned(), shadow);
                }
                None => {
                    tracing::warn!(file = %path.display(), "a shadow file does not parse; set aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        Ok(ShadowStore {
            shadows: Mutex::new(shadows),
            dir: Some(dir.to_owned()),
        })
    }

    pub(crate) fn get(&self, thing: &str) -> Option<Value> {
        self.shadows.lock().get(thing).map(Shadow::document)
    }

    /// Applies `document` to `thing`'s shadow: the accepted and delta documents. Nothing
    /// changes (in memory or on disk) unless the new document is saved.
    pub(crate) fn update(
        &self,
        thing: &str,
        document: &[u8],
        now: SystemTime,
    ) -> Result<(Value, Option<Value>), ServiceError> {
        let update = ShadowUpdate::parse(document)?;
        let mut shadows = self.shadows.lock();
        let mut next = shadows.get(thing).cloned().unwrap_or_default();
        let out = next.apply(update, now)?;
        self.save(thing, Some(&next))?;
        shadows.insert(thing.to_owned(), next);
        Ok(out)
    }

    /// Deletes `thing`'s shadow; whether there was one.
    pub(crate) fn delete(&self, thing: &str) -> Result<bool, ServiceError> {
        let mut shadows = self.shadows.lock();
        if !shadows.contains_key(thing) {
            return Ok(false);
        }
        self.save(thing, None)?;
        shadows.remove(thing);
        Ok(true)
    }

    fn save(&self, thing: &str, shadow: Option<&Shadow>) -> Result<(), ServiceError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let failed = |e: std::io::Error| {
            tracing::error!(%thing, error = %e, "a shadow could not be saved; unchanged");
            ServiceError::Unavailable(format!("the shadow of {thing:?} could not be saved: {e}"))
        };
        let path = dir.join(format!("{thing}.json"));
        match shadow {
            Some(shadow) => {
                let tmp = dir.join(format!(".tmp-{thing}"));
                let mut file = std::fs::File::create(&tmp).map_err(failed)?;
                file.write_all(shadow.saved().to_string().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(failed)?;
                std::fs::rename(&tmp, &path).map_err(failed)?;
            }
            None => std::fs::remove_file(&path).map_err(failed)?,
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)
    }
}

/// One device shadow: desired and reported state, and a version that counts updates.
#[derive(Debug, Default, Clone)]
struct Shadow {
    desired: Map<String, Value>,
    reported: Map<String, Value>,
    version: u64,
    timestamp: u64,
}

/// A parsed update: `{"state":{"desired":..,"reported":..},"version":N}`, each part
/// optional; `null` for a section clears it.
#[derive(Debug)]
struct ShadowUpdate {
    desired: Option<Value>,
    reported: Option<Value>,
    version: Option<u64>,
    state: Value,
}

impl ShadowUpdate {
    fn parse(document: &[u8]) -> Result<ShadowUpdate, ServiceError> {
        let invalid = |m: &str| ServiceError::Invalid(format!("shadow document: {m}"));
        if document.len() > MAX_SHADOW_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "shadow document: {} bytes, over the {MAX_SHADOW_BYTES}-byte limit",
                document.len()
            )));
        }
        let value: Value =
            serde_json::from_slice(document).map_err(|e| invalid(&format!("not JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(invalid("not a JSON object"));
        };
        let version = match top.remove("version") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| invalid("version is not a count"))?,
            ),
        };
        let state = top.remove("state").ok_or_else(|| invalid("no \"state\""))?;
        let Value::Object(sections) = &state else {
            return Err(invalid("\"state\" is not an object"));
        };
        let section = |name: &str| -> Result<Option<Value>, ServiceError> {
            match sections.get(name) {
                None => Ok(None),
                Some(v @ (Value::Object(_) | Value::Null)) => Ok(Some(v.clone())),
                Some(_) => Err(invalid(&format!(
                    "\"state.{name}\" is not an object or null"
                ))),
            }
        };
        let (desired, reported) = (section("desired")?, section("reported")?);
        if let Some(other) = sections
            .keys()
            .find(|k| *k != "desired" && *k != "reported")
        {
            return Err(invalid(&format!("unknown section \"state.{other}\"")));
        }
        if desired.is_none() && reported.is_none() {
            return Err(invalid("\"state\" has neither desired nor reported"));
        }
        Ok(ShadowUpdate {
            desired,
            reported,
            version,
            state,
        })
    }
}

impl Shadow {
    /// Applies `update`: the accepted document, and the delta document when desired and
    /// reported now differ. A version that is not the current one changes nothing.
    fn apply(
        &mut self,
        update: ShadowUpdate,
        now: SystemTime,
    ) -> Result<(Value, Option<Value>), ServiceError> {
        if let Some(v) = update.version
            && v != self.version
        {
            return Err(ServiceError::Conflict(format!(
                "version conflict: the update is for version {v}, the shadow is at {}",
                self.version
            )));
        }
        for (section, change) in [
            (&mut self.desired, update.desired),
            (&mut self.reported, update.reported),
        ] {
            match change {
                Some(Value::Object(fields)) => merge(section, fields),
                Some(_) => section.clear(),
                None => {}
            }
        }
        self.version += 1;
        self.timestamp = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let accepted = json!({
            "state": update.state,
            "version": self.version,
            "timestamp": self.timestamp,
        });
        let delta = self
            .delta()
            .map(|d| json!({"state": d, "version": self.version, "timestamp": self.timestamp}));
        Ok((accepted, delta))
    }

    /// The desired fields whose reported value differs.
    fn delta(&self) -> Option<Value> {
        let d = diff(&self.desired, &self.reported);
        (!d.is_empty()).then_some(Value::Object(d))
    }

    fn document(&self) -> Value {
        let mut state = Map::new();
        if !self.desired.is_empty() {
            state.insert("desired".into(), Value::Object(self.desired.clone()));
        }
        if !self.reported.is_empty() {
            state.insert("reported".into(), Value::Object(self.reported.clone()));
        }
        if let Some(delta) = self.delta() {
            state.insert("delta".into(), delta);
        }
        json!({"state": state, "version": self.version, "timestamp": self.timestamp})
    }
}

/// Merges `fields` into `into`: objects merge field by field, `null` deletes, anything else
/// replaces.
fn merge(into: &mut Map<String, Value>, fields: Map<String, Value>) {
    for (k, v) in fields {
        match v {
            Value::Null => {
                into.remove(&k);
            }
            Value::Object(inner) => match into.get_mut(&k) {
                Some(Value::Object(existing)) => merge(existing, inner),
                _ => {
                    let mut fresh = Map::new();
                    merge(&mut fresh, inner);
                    into.insert(k, Value::Object(fresh));
                }
            },
            other => {
                into.insert(k, other);
            }
        }
    }
}

fn diff(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, want) in desired {
        match (want, reported.get(k)) {
            (Value::Object(w), Some(Value::Object(r))) => {
                let inner = diff(w, r);
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
            (w, Some(r)) if w == r => {}
            (w, _) => {
                out.insert(k.clone(), w.clone());
            }
        }
    }
    out
}

impl Shadow {
    /// What is saved: both sections, the version and the time.
    fn saved(&self) -> Value {
        json!({
            "desired": self.desired,
            "reported": self.reported,
            "version": self.version,
            "timestamp": self.timestamp,
        })
    }

    fn from_saved(bytes: &[u8]) -> Option<Shadow> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        Some(Shadow {
            desired: v.get("desired")?.as_object()?.clone(),
            reported: v.get("reported")?.as_object()?.clone(),
            version: v.get("version")?.as_u64()?,
            timestamp: v.get("timestamp")?.as_u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fnhub_core::ServiceError;

    fn update(shadow: &mut Shadow, doc: &str) -> Result<(Value, Option<Value>), ServiceError> {
        shadow.apply(ShadowUpdate::parse(doc.as_bytes())?, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn desired_and_reported_merge_and_the_delta_is_what_differs() {
        let mut s = Shadow::default();
        let (accepted, delta) = update(
            &mut s,
            r#"{"state":{"desired":{"on":true,"color":{"r":255,"g":0}}}}"#,
        )
        .unwrap();
        assert_eq!(accepted["version"], 1);
        assert_eq!(
            delta.unwrap()["state"],
            json!({"on": true, "color": {"r": 255, "g": 0}})
        );
        let (_, delta) = update(
            &mut s,
            r#"{"state":{"reported":{"on":true,"color":{"r":255,"g":9}}}}"#,
        )
        .unwrap();
        assert_eq!(delta.unwrap()["state"], json!({"color": {"g": 0}}));
        // null deletes a field; matching reports leave no delta.
        let (_, delta) = update(
            &mut s,
            r#"{"state":{"desired":{"color":null},"reported":{"extra":1}}}"#,
        )
        .unwrap();
        assert!(delta.is_none());
        let doc = s.document();
        assert_eq!(doc["state"]["desired"], json!({"on": true}));
        assert_eq!(doc["version"], 3);
        assert!(doc["state"].get("delta").is_none());
    }

    #[test]
    fn bad_documents_and_stale_versions_change_nothing() {
        let mut s = Shadow::default();
        update(&mut s, r#"{"state":{"reported":{"t":1}}}"#).unwrap();
        for bad in [
            "not json",
            "[1]",
            r#"{"nostate":{}}"#,
            r#"{"state":5}"#,
            r#"{"state":{"desired":3}}"#,
            r#"{"state":{"wanted":{}}}"#,
            r#"{"state":{}}"#,
            r#"{"state":{"reported":{"t":2}},"version":"x"}"#,
        ] {
            let err = update(&mut s, bad).unwrap_err();
            assert!(matches!(err, ServiceError::Invalid(_)), "{bad}: {err}");
        }
        let err = update(&mut s, r#"{"state":{"reported":{"t":2}},"version":0}"#).unwrap_err();
        assert!(matches!(err, ServiceError::Conflict(_)), "{err}");
        update(&mut s, r#"{"state":{"reported":{"t":3}},"version":1}"#).unwrap();
        assert_eq!(s.document()["state"]["reported"], json!({"t": 3}));
        assert_eq!(s.version, 2);
        let huge = format!(
            r#"{{"state":{{"reported":{{"x":"{}"}}}}}}"#,
            "a".repeat(MAX_SHADOW_BYTES)
        );
        assert!(matches!(
            update(&mut s, &huge),
            Err(ServiceError::TooLarge(_))
        ));
    }

    #[test]
    fn a_store_in_a_folder_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        {
            let store = ShadowStore::open(dir.path()).unwrap();
            store
                .update("lamp-1", br#"{"state":{"desired":{"on":true}}}"#, now)
                .unwrap();
            store
                .update("lamp-1", br#"{"state":{"reported":{"on":false}}}"#, now)
                .unwrap();
            store
                .update("fan", br#"{"state":{"reported":{"rpm":3}}}"#, now)
                .unwrap();
            assert!(store.delete("fan").unwrap());
            assert!(!store.delete("fan").unwrap());
            // Refused updates change nothing, on disk either.
            assert!(store.update("lamp-1", b"{not json", now).is_err());
            assert!(
                store
                    .update(
                        "lamp-1",
                        br#"{"state":{"reported":{"on":true}},"version":1}"#,
                        now
                    )
                    .is_err()
            );
        }
        std::fs::write(dir.path().join("broken.json"), b"{half").unwrap();
        std::fs::write(dir.path().join(".tmp-lamp-1"), b"{half").unwrap();
        let store = ShadowStore::open(dir.path()).unwrap();
        let doc = store.get("lamp-1").unwrap();
        assert_eq!(doc["version"], 2);
        assert_eq!(doc["state"]["desired"]["on"], true);
        assert_eq!(doc["state"]["delta"]["on"], true);
        assert!(store.get("fan").is_none());
        assert!(store.get("broken").is_none());
        assert!(dir.path().join("broken.corrupt").exists());
        assert!(!dir.path().join(".tmp-lamp-1").exists());
    }
}
