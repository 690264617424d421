//! Device shadows in the shape of AWS IoT's: the documents, their merge, delta and
//! per-field metadata, and the store shared by the function endpoint, WebAssembly guests and
//! the shadow topics. A thing has a classic shadow and any number of named ones.
//!
//! With a folder, each shadow is a file there (`{thing}.json` for the classic shadow,
//! `{thing}~{name}.json` for a named one: `~` is in neither name's alphabet), replaced whole
//! and synced on every change (a temporary file renamed over it, then the folder synced), so
//! a hub killed at any moment comes back with every acknowledged document and none torn.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fnhub_core::{ServiceError, ShadowRef};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::files;
use crate::services::MAX_SHADOW_BYTES;

/// What one accepted update produced: the documents AWS IoT publishes on
/// `…/update/accepted`, `…/update/delta` (when desired and reported differ) and
/// `…/update/documents`.
#[derive(Debug)]
pub(crate) struct Updated {
    pub(crate) accepted: Value,
    pub(crate) delta: Option<Value>,
    pub(crate) documents: Value,
}

/// Every shadow, in memory and (with a folder) on disk.
#[derive(Debug, Default)]
pub(crate) struct ShadowStore {
    shadows: Mutex<BTreeMap<ShadowRef, Shadow>>,
    dir: Option<PathBuf>,
}

fn file_stem(shadow: &ShadowRef) -> String {
    match shadow.name() {
        None => shadow.thing().to_owned(),
        Some(name) => format!("{}~{name}", shadow.thing()),
    }
}

fn from_stem(stem: &str) -> Option<ShadowRef> {
    let (thing, name) = match stem.split_once('~') {
        Some((thing, name)) => (thing, Some(name)),
        None => (stem, None),
    };
    ShadowRef::new(thing, name).ok()
}

impl ShadowStore {
    /// A store kept in `dir` (made if missing, 0700), with what it holds loaded. A file that
    /// does not parse is set aside as `{name}.corrupt` and said, not served.
    pub(crate) fn open(dir: &Path) -> std::io::Result<ShadowStore> {
        files::private_dir(dir)?;
        let mut shadows = BTreeMap::new();
        for (path, name) in files::entries(dir)? {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let loaded = from_stem(stem).and_then(|shadow| {
                let bytes = std::fs::read(&path).ok()?;
                Some((shadow, Shadow::from_saved(&bytes)?))
            });
            match loaded {
                Some((key, shadow)) => {
                    shadows.insert(key, shadow);
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

    pub(crate) fn get(&self, shadow: &ShadowRef) -> Option<Value> {
        self.shadows.lock().get(shadow).map(Shadow::document)
    }

    /// The names of `thing`'s named shadows, in order.
    pub(crate) fn names(&self, thing: &str) -> Vec<String> {
        self.shadows
            .lock()
            .keys()
            .filter(|k| k.thing() == thing)
            .filter_map(|k| k.name().map(str::to_owned))
            .collect()
    }

    /// Applies `document` to `shadow`. Nothing changes (in memory or on disk) unless the
    /// new document is saved.
    pub(crate) fn update(
        &self,
        shadow: &ShadowRef,
        document: &[u8],
        now: SystemTime,
    ) -> Result<Updated, ServiceError> {
        let update = ShadowUpdate::parse(document)?;
        let mut shadows = self.shadows.lock();
        let previous = shadows.get(shadow);
        let before = previous.map(Shadow::snapshot);
        let mut next = previous.cloned().unwrap_or_default();
        let (accepted, delta) = next.apply(update, now)?;
        self.save(shadow, Some(&next))?;
        let mut documents = json!({
            "current": next.snapshot(),
            "timestamp": next.timestamp,
        });
        if let Some(before) = before {
            documents["previous"] = before;
        }
        if let Some(token) = accepted.get("clientToken") {
            documents["clientToken"] = token.clone();
        }
        shadows.insert(shadow.clone(), next);
        Ok(Updated {
            accepted,
            delta,
            documents,
        })
    }

    /// Deletes `shadow`; AWS's answer (`version`, `timestamp`), or `None` when there was
    /// none.
    pub(crate) fn delete(
        &self,
        shadow: &ShadowRef,
        now: SystemTime,
    ) -> Result<Option<Value>, ServiceError> {
        let mut shadows = self.shadows.lock();
        let Some(version) = shadows.get(shadow).map(|s| s.version) else {
            return Ok(None);
        };
        self.save(shadow, None)?;
        shadows.remove(shadow);
        Ok(Some(json!({"version": version, "timestamp": seconds(now)})))
    }

    fn save(&self, key: &ShadowRef, shadow: Option<&Shadow>) -> Result<(), ServiceError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let failed = |e: std::io::Error| {
            tracing::error!(shadow = %key, error = %e, "a shadow could not be saved; unchanged");
            ServiceError::Unavailable(format!("{key} could not be saved: {e}"))
        };
        let stem = file_stem(key);
        match shadow {
            Some(shadow) => files::replace(
                dir,
                &format!("{stem}.json"),
                shadow.saved().to_string().as_bytes(),
            ),
            None => files::remove(dir, &format!("{stem}.json")),
        }
        .map_err(failed)
    }
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Where a field sits: its section (`desired` or `reported`), then its keys.
type FieldPath = Vec<String>;

/// One device shadow: desired and reported state, when each field was last set, and a
/// version that counts updates.
#[derive(Debug, Default, Clone)]
struct Shadow {
    desired: Map<String, Value>,
    reported: Map<String, Value>,
    /// When each leaf field was last set (seconds); a field not here dates from `timestamp`.
    stamps: HashMap<FieldPath, u64>,
    version: u64,
    timestamp: u64,
}

/// A parsed update: `{"state":{"desired":..,"reported":..},"version":N,"clientToken":..}`,
/// each part optional; `null` for a section clears it.
#[derive(Debug)]
struct ShadowUpdate {
    desired: Option<Value>,
    reported: Option<Value>,
    version: Option<u64>,
    client_token: Option<String>,
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
        let client_token = match top.remove("clientToken") {
            None => None,
            Some(Value::String(t)) if !t.is_empty() && t.len() <= 64 => Some(t),
            Some(_) => return Err(invalid("clientToken is not a string of 1 to 64 characters")),
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
            client_token,
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
        let now = seconds(now);
        let mut metadata = Map::new();
        for (name, change) in [("desired", update.desired), ("reported", update.reported)] {
            let section = if name == "desired" {
                &mut self.desired
            } else {
                &mut self.reported
            };
            match change {
                Some(Value::Object(fields)) => {
                    let mut path = vec![name.to_owned()];
                    stamp(&mut self.stamps, &mut path, &fields, now);
                    metadata.insert(name.into(), Value::Object(stamps_of(&fields, now)));
                    merge(section, fields);
                }
                Some(_) => {
                    section.clear();
                    self.stamps.retain(|path, _| path[0] != name);
                    metadata.insert(name.into(), json!({"timestamp": now}));
                }
                None => {}
            }
        }
        self.version += 1;
        self.timestamp = now;
        self.prune();
        let mut accepted = json!({
            "state": update.state,
            "metadata": metadata,
            "version": self.version,
            "timestamp": self.timestamp,
        });
        if let Some(token) = update.client_token {
            accepted["clientToken"] = Value::String(token);
        }
        let delta = self.delta().map(|d| {
            let metadata = self.metadata_of("desired", &d);
            json!({"state": d, "metadata": metadata, "version": self.version, "timestamp": self.timestamp})
        });
        Ok((accepted, delta))
    }

    /// Forgets the stamps of fields that are no longer leaves of the state.
    fn prune(&mut self) {
        let (desired, reported) = (&self.desired, &self.reported);
        self.stamps.retain(|path, _| {
            let section = if path[0] == "desired" {
                desired
            } else {
                reported
            };
            is_leaf(section, &path[1..])
        });
    }

    /// The desired fields whose reported value differs.
    fn delta(&self) -> Option<Value> {
        let d = diff(&self.desired, &self.reported);
        (!d.is_empty()).then_some(Value::Object(d))
    }

    /// The metadata of `state` (in `section`): its shape, with `{"timestamp": t}` leaves.
    fn metadata_of(&self, section: &str, state: &Value) -> Value {
        fn walk(
            stamps: &HashMap<FieldPath, u64>,
            default: u64,
            path: &mut FieldPath,
            value: &Value,
        ) -> Value {
            match value {
                Value::Object(fields) => Value::Object(
                    fields
                        .iter()
                        .map(|(k, v)| {
                            path.push(k.clone());
                            let out = walk(stamps, default, path, v);
                            path.pop();
                            (k.clone(), out)
                        })
                        .collect(),
                ),
                _ => json!({"timestamp": stamps.get(path.as_slice()).copied().unwrap_or(default)}),
            }
        }
        walk(
            &self.stamps,
            self.timestamp,
            &mut vec![section.to_owned()],
            state,
        )
    }

    /// The state as `…/update/documents` shows it: sections, metadata, version.
    fn snapshot(&self) -> Value {
        let desired = Value::Object(self.desired.clone());
        let reported = Value::Object(self.reported.clone());
        json!({
            "state": {"desired": desired, "reported": reported},
            "metadata": {
                "desired": self.metadata_of("desired", &desired),
                "reported": self.metadata_of("reported", &reported),
            },
            "version": self.version,
        })
    }

    /// The document `GetThingShadow` answers.
    fn document(&self) -> Value {
        let mut state = Map::new();
        let mut metadata = Map::new();
        for (name, section) in [("desired", &self.desired), ("reported", &self.reported)] {
            if !section.is_empty() {
                let value = Value::Object(section.clone());
                metadata.insert(name.into(), self.metadata_of(name, &value));
                state.insert(name.into(), value);
            }
        }
        if let Some(delta) = self.delta() {
            state.insert("delta".into(), delta);
        }
        json!({
            "state": state,
            "metadata": metadata,
            "version": self.version,
            "timestamp": self.timestamp,
        })
    }
}

/// Records `now` for every leaf `fields` sets under `path`; a `null` forgets what it
/// deletes.
fn stamp(
    stamps: &mut HashMap<FieldPath, u64>,
    path: &mut FieldPath,
    fields: &Map<String, Value>,
    now: u64,
) {
    for (k, v) in fields {
        path.push(k.clone());
        match v {
            Value::Object(inner) => stamp(stamps, path, inner, now),
            Value::Null => stamps.retain(|p, _| !p.starts_with(path)),
            _ => {
                stamps.insert(path.clone(), now);
            }
        }
        path.pop();
    }
}

/// The metadata of an update: its shape with `{"timestamp": now}` leaves.
fn stamps_of(fields: &Map<String, Value>, now: u64) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| {
            let meta = match v {
                Value::Object(inner) => Value::Object(stamps_of(inner, now)),
                _ => json!({"timestamp": now}),
            };
            (k.clone(), meta)
        })
        .collect()
}

/// Whether `path` names a field of `state` that is not an object.
fn is_leaf(state: &Map<String, Value>, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (state.get(first), rest.is_empty()) {
        (Some(Value::Object(_)), true) | (None, _) => false,
        (Some(_), true) => true,
        (Some(Value::Object(inner)), false) => is_leaf(inner, rest),
        (Some(_), false) => false,
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
    /// What is saved: both sections, their metadata, the version and the time.
    fn saved(&self) -> Value {
        let snapshot = self.snapshot();
        json!({
            "desired": self.desired,
            "reported": self.reported,
            "metadata": snapshot["metadata"],
            "version": self.version,
            "timestamp": self.timestamp,
        })
    }

    fn from_saved(bytes: &[u8]) -> Option<Shadow> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let mut shadow = Shadow {
            desired: v.get("desired")?.as_object()?.clone(),
            reported: v.get("reported")?.as_object()?.clone(),
            stamps: HashMap::new(),
            version: v.get("version")?.as_u64()?,
            timestamp: v.get("timestamp")?.as_u64()?,
        };
        // The stamps, from the saved metadata's `{"timestamp": t}` leaves.
        fn read(stamps: &mut HashMap<FieldPath, u64>, path: &mut FieldPath, meta: &Value) {
            let Value::Object(fields) = meta else { return };
            if let Some(t) = fields.get("timestamp").and_then(Value::as_u64)
                && fields.len() == 1
            {
                stamps.insert(path.clone(), t);
                return;
            }
            for (k, v) in fields {
                path.push(k.clone());
                read(stamps, path, v);
                path.pop();
            }
        }
        for section in ["desired", "reported"] {
            if let Some(meta) = v.get("metadata").and_then(|m| m.get(section)) {
                read(&mut shadow.stamps, &mut vec![section.to_owned()], meta);
            }
        }
        shadow.prune();
        Some(shadow)
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
    fn metadata_dates_each_field_and_documents_show_before_and_after() {
        let at = |t: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t);
        let store = ShadowStore::default();
        let lamp = ShadowRef::classic("lamp").unwrap();
        let first = store
            .update(
                &lamp,
                br#"{"state":{"desired":{"on":true,"color":{"r":1}}}}"#,
                at(100),
            )
            .unwrap();
        assert_eq!(
            first.accepted["metadata"],
            json!({"desired": {"on": {"timestamp": 100}, "color": {"r": {"timestamp": 100}}}})
        );
        assert!(
            first.documents.get("previous").is_none(),
            "{}",
            first.documents
        );
        let second = store
            .update(
                &lamp,
                br#"{"state":{"desired":{"color":{"g":2}}},"clientToken":"tok"}"#,
                at(200),
            )
            .unwrap();
        assert_eq!(second.accepted["clientToken"], "tok");
        assert_eq!(second.documents["clientToken"], "tok");
        assert_eq!(second.documents["previous"]["version"], 1);
        assert_eq!(second.documents["current"]["version"], 2);
        assert_eq!(
            second.documents["current"]["state"]["desired"]["color"],
            json!({"r": 1, "g": 2})
        );
        let delta = second.delta.unwrap();
        assert_eq!(
            delta["metadata"]["color"],
            json!({"r": {"timestamp": 100}, "g": {"timestamp": 200}})
        );
        let doc = store.get(&lamp).unwrap();
        assert_eq!(doc["metadata"]["desired"]["on"]["timestamp"], 100);
        assert_eq!(doc["metadata"]["desired"]["color"]["g"]["timestamp"], 200);
        assert_eq!(doc["timestamp"], 200);
        // A scalar replaced by an object, and a field deleted: no stale stamps.
        store
            .update(
                &lamp,
                br#"{"state":{"desired":{"on":{"level":3},"color":null}}}"#,
                at(300),
            )
            .unwrap();
        let doc = store.get(&lamp).unwrap();
        assert_eq!(
            doc["metadata"]["desired"],
            json!({"on": {"level": {"timestamp": 300}}})
        );
        assert!(
            store
                .update(
                    &lamp,
                    br#"{"state":{"desired":{}},"clientToken":5}"#,
                    at(400)
                )
                .is_err()
        );
    }

    #[test]
    fn named_shadows_are_apart_from_the_classic_one_and_listed() {
        let now = SystemTime::UNIX_EPOCH;
        let store = ShadowStore::default();
        let classic = ShadowRef::classic("lamp").unwrap();
        let config = ShadowRef::named("lamp", "config").unwrap();
        let alarm = ShadowRef::named("lamp", "alarm").unwrap();
        let other = ShadowRef::named("fan", "config").unwrap();
        for s in [&classic, &config, &alarm, &other] {
            store
                .update(s, br#"{"state":{"reported":{"n":1}}}"#, now)
                .unwrap();
        }
        store
            .update(&config, br#"{"state":{"reported":{"n":2}}}"#, now)
            .unwrap();
        assert_eq!(store.get(&classic).unwrap()["version"], 1);
        assert_eq!(store.get(&config).unwrap()["version"], 2);
        assert_eq!(
            store.names("lamp"),
            vec!["alarm".to_owned(), "config".to_owned()]
        );
        assert_eq!(store.names("fan"), vec!["config".to_owned()]);
        assert!(store.names("none").is_empty());
        let gone = store.delete(&config, now).unwrap().unwrap();
        assert_eq!(gone["version"], 2);
        assert!(store.delete(&config, now).unwrap().is_none());
        assert_eq!(store.names("lamp"), vec!["alarm".to_owned()]);
        assert!(store.get(&classic).is_some());
    }

    #[test]
    fn a_store_in_a_folder_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let lamp = ShadowRef::classic("lamp-1").unwrap();
        let named = ShadowRef::named("lamp-1", "config").unwrap();
        let fan = ShadowRef::classic("fan").unwrap();
        {
            let store = ShadowStore::open(dir.path()).unwrap();
            store
                .update(&lamp, br#"{"state":{"desired":{"on":true}}}"#, now)
                .unwrap();
            store
                .update(&lamp, br#"{"state":{"reported":{"on":false}}}"#, now)
                .unwrap();
            store
                .update(&named, br#"{"state":{"desired":{"mode":"eco"}}}"#, now)
                .unwrap();
            store
                .update(&fan, br#"{"state":{"reported":{"rpm":3}}}"#, now)
                .unwrap();
            assert!(store.delete(&fan, now).unwrap().is_some());
            assert!(store.delete(&fan, now).unwrap().is_none());
            // Refused updates change nothing, on disk either.
            assert!(store.update(&lamp, b"{not json", now).is_err());
            assert!(
                store
                    .update(
                        &lamp,
                        br#"{"state":{"reported":{"on":true}},"version":1}"#,
                        now
                    )
                    .is_err()
            );
        }
        std::fs::write(dir.path().join("broken.json"), b"{half").unwrap();
        std::fs::write(dir.path().join("bad name.json"), b"{}").unwrap();
        std::fs::write(dir.path().join(".tmp-lamp-1"), b"{half").unwrap();
        let store = ShadowStore::open(dir.path()).unwrap();
        let doc = store.get(&lamp).unwrap();
        assert_eq!(doc["version"], 2);
        assert_eq!(doc["state"]["desired"]["on"], true);
        assert_eq!(doc["state"]["delta"]["on"], true);
        assert_eq!(
            doc["metadata"]["desired"]["on"]["timestamp"],
            1_800_000_000u64
        );
        assert_eq!(
            store.get(&named).unwrap()["state"]["desired"]["mode"],
            "eco"
        );
        assert_eq!(store.names("lamp-1"), vec!["config".to_owned()]);
        assert!(store.get(&fan).is_none());
        assert!(dir.path().join("broken.corrupt").exists());
        assert!(dir.path().join("bad name.corrupt").exists());
        assert!(!dir.path().join(".tmp-lamp-1").exists());
    }
}
