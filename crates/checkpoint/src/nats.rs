//! Checkpoints in a NATS JetStream object store (feature `nats`), so that an execution
//! suspended on one node of the cloud runtime resumes on any other.
//!
//! Each checkpoint is one object named by its execution id, holding the checkpoint in the
//! format of [`crate::encode`]. The object store writes an object's chunks first and its
//! metadata last, so a reader sees either the previous checkpoint or the new one whole; the
//! format's checksums catch anything else, which [`load`](fnhub_core::CheckpointStore::load)
//! reports as [`StoreError::Corrupt`], never as a checkpoint.

use async_nats::jetstream::{self, object_store};
use fnhub_core::{BoxFuture, Checkpoint, CheckpointStore, ExecutionId, StoreError};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

/// The bucket used when none is named.
pub const DEFAULT_BUCKET: &str = "fnhub-checkpoints";

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// A [`CheckpointStore`] in a JetStream object store bucket.
#[derive(Clone)]
pub struct NatsStore {
    store: object_store::ObjectStore,
    /// The bucket's stream, for reading a one-chunk object with one direct get.
    stream: jetstream::stream::Stream,
    bucket: String,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore").finish_non_exhaustive()
    }
}

impl NatsStore {
    /// The store in `bucket` of `js`, created when it is not there.
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<NatsStore, StoreError> {
        NatsStore::open_replicated(js, bucket, 1).await
    }

    /// [`open`](NatsStore::open), creating the bucket with `replicas` copies (1 to 5) in a
    /// JetStream cluster, so checkpoints outlive the loss of a server.
    pub async fn open_replicated(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<NatsStore, StoreError> {
        let store = match js.get_object_store(bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.to_owned(),
                    description: Some("fnhub checkpoints of suspended executions".into()),
                    num_replicas: replicas.clamp(1, 5),
                    ..Default::default()
                })
                .await
                .map_err(backend)?,
        };
        let stream = js
            .get_stream(format!("OBJ_{bucket}"))
            .await
            .map_err(backend)?;
        Ok(NatsStore {
            store,
            stream,
            bucket: bucket.to_owned(),
        })
    }
}

impl CheckpointStore for NatsStore {
    /// Every process connected to the same bucket sees the same checkpoints.
    fn is_shared(&self) -> bool {
        true
    }

    fn save<'a>(&'a self, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let bytes = crate::encode(checkpoint).map_err(backend)?;
            let name = checkpoint.execution_id.to_string();
            self.store
                .put(name.as_str(), &mut &bytes[..])
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn load(&self, id: ExecutionId) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
        Box::pin(async move {
            let name = id.to_string();
            // The object's info from the stream's leader: a direct get may be answered by
            // a replica still catching up after a restart, and an execution whose
            // checkpoint seemed missing would be taken for finished.
            let meta = format!("$O.{}.M.{}", self.bucket, url_safe_base64(&name));
            let info: Meta = match self.stream.get_last_raw_message_by_subject(&meta).await {
                Ok(m) => serde_json::from_slice(&m.payload).map_err(backend)?,
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    tracing::debug!(execution = %id, "no checkpoint: the stream's leader has no info for it");
                    return Ok(None);
                }
                Err(e) => return Err(backend(e)),
            };
            if info.deleted {
                tracing::debug!(execution = %id, "no checkpoint: its info says deleted");
                return Ok(None);
            }
            // A checkpoint is most often one chunk (128 KiB): read it with one direct get
            // of its chunk's subject (ADR-20's `$O.{bucket}.C.{nuid}`). The object store's
            // own reader goes through an ordered consumer, which in a cluster that just lost
            // a server can wait for seconds before it delivers.
            let chunk = format!("$O.{}.C.{}", self.bucket, info.nuid);
            let direct = match info.chunks {
                1 => self
                    .stream
                    .get_last_raw_message_by_subject(&chunk)
                    .await
                    .ok()
                    .map(|m| m.payload.to_vec())
                    .filter(|b| b.len() == info.size),
                0 if info.size == 0 => Some(Vec::new()),
                _ => None,
            };
            let bytes = match direct {
                Some(bytes) => bytes,
                None => {
                    let mut object = match self.store.get(name.as_str()).await {
                        Ok(o) => o,
                        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                            tracing::debug!(execution = %id, "no checkpoint: the object store found none");
                            return Ok(None);
                        }
                        Err(e) => return Err(backend(e)),
                    };
                    let mut bytes = Vec::new();
                    object.read_to_end(&mut bytes).await?;
                    bytes
                }
            };
            crate::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    id,
                    source: Box::new(e),
                })
        })
    }

    fn remove(&self, id: ExecutionId) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            // A deleted object keeps its info, marked deleted.
            match self.store.info(id.to_string()).await {
                Ok(info) if !info.deleted => {}
                _ => return Ok(false),
            }
            self.store.delete(id.to_string()).await.map_err(backend)?;
            tracing::debug!(execution = %id, "checkpoint removed");
            Ok(true)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ExecutionId>, StoreError>> {
        Box::pin(async move {
            tokio::time::timeout(LIST_TIMEOUT, self.list_objects())
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Backend(
                        format!(
                            "listing the bucket {} took over {LIST_TIMEOUT:?}",
                            self.bucket
                        )
                        .into(),
                    ))
                })
        })
    }
}

/// The longest [`NatsStore`]'s `list` takes before it is an error.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl NatsStore {
    /// Every object not deleted, from the last meta message of each object's subject
    /// (see [`last_per_subject`]).
    ///
    /// Not the object store's own `list`: it follows an ordered push consumer until a message
    /// says nothing is pending, and when a checkpoint is removed while it lists (its meta
    /// message rolled up) that message may never come, so the list never ends.
    async fn list_objects(&self) -> Result<Vec<ExecutionId>, StoreError> {
        let metas = last_per_subject(&self.stream, &format!("$O.{}.M.>", self.bucket)).await?;
        Ok(metas
            .iter()
            .filter_map(|m| serde_json::from_slice::<Meta>(&m.payload).ok())
            .filter(|info| !info.deleted)
            .filter_map(|info| info.name?.parse().ok())
            .collect())
    }
}

/// The last message of each subject of `stream` that matches `filter`, up to the stream's
/// last message when the call began (what is stored meanwhile may or may not be in it), read
/// through a pull consumer of its own. It ends however the stream changes while it reads
/// (the object store's and the key-value store's own listings wait for a message that says
/// nothing is pending, which a subject rolled up meanwhile can keep from ever coming); the
/// caller bounds how long it may take.
///
/// A no-wait fetch that the server leaves unanswered (no message and no "no messages" status
/// for 2 s; nats-server has had such races) does not hold the scan: the scan
/// starts again on a new consumer, since what the stalled one had sent elsewhere is gone.
pub async fn last_per_subject(
    stream: &jetstream::stream::Stream,
    filter: &str,
) -> Result<Vec<jetstream::Message>, StoreError> {
    loop {
        if let Some(messages) = scan_last_per_subject(stream, filter, FETCH_STALL).await? {
            return Ok(messages);
        }
        tracing::debug!(filter, "a fetch stalled: scanning again");
    }
}

/// How long a fetch of [`last_per_subject`] may go without a message or an answer before the
/// scan starts again: the server answers a no-wait fetch at once, so seconds mean it never
/// will.
const FETCH_STALL: std::time::Duration = std::time::Duration::from_secs(2);

/// One scan of [`last_per_subject`]: `None` when a fetch went `stall` without a word.
async fn scan_last_per_subject(
    stream: &jetstream::stream::Stream,
    filter: &str,
    stall: std::time::Duration,
) -> Result<Option<Vec<jetstream::Message>>, StoreError> {
    use jetstream::consumer::{self, AckPolicy, DeliverPolicy};
    let last = stream
        .get_info()
        .await
        .map_err(backend)?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(Some(Vec::new()));
    }
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            filter_subject: filter.to_owned(),
            inactive_threshold: std::time::Duration::from_secs(60),
            description: Some("fnhub: the last message of each subject".into()),
            ..Default::default()
        })
        .await
        .map_err(backend)?;
    let read = async {
        let mut messages = Vec::new();
        let mut done = false;
        while !done {
            let mut batch = consumer
                .fetch()
                .max_messages(1024)
                .messages()
                .await
                .map_err(backend)?;
            let mut fetched = 0;
            loop {
                let Ok(next) = tokio::time::timeout(stall, batch.next()).await else {
                    return Ok(None);
                };
                let Some(message) = next else { break };
                let message = message.map_err(StoreError::Backend)?;
                fetched += 1;
                if message.info().is_ok_and(|i| i.stream_sequence >= last) {
                    done = true;
                }
                messages.push(message);
            }
            done |= fetched == 0;
        }
        Ok(Some(messages))
    };
    let messages = read.await;
    // Ephemeral: it would go by itself after its inactive threshold.
    let name = consumer.cached_info().name.clone();
    let _ = stream.delete_consumer(&name).await;
    messages
}

/// What [`NatsStore::load`] reads of an object's info (ADR-20's meta message).
#[derive(serde::Deserialize)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    nuid: String,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    chunks: usize,
    #[serde(default)]
    deleted: bool,
}

/// Base64 with the URL-safe alphabet and padding, as object names are encoded in subjects.
fn url_safe_base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// A fetch the server never answers (here: a user who may not ask a consumer for its
    /// next messages, whose requests the server drops as a permissions violation) ends a
    /// scan with `None` after the stall, where it used to wait for ever; the same scan by
    /// a user who may fetch reads the last message of each subject.
    #[tokio::test]
    async fn a_fetch_left_unanswered_ends_the_scan_instead_of_holding_it() {
        use async_nats::jetstream;
        let config = r#"authorization {
            users = [
                { user: all, password: all }
                { user: nofetch, password: nofetch, permissions: {
                    publish: { allow: [">"], deny: ["$JS.API.CONSUMER.MSG.NEXT.>"] } } }
            ]
        }"#;
        let Some(server) = fnhub_testkit::NatsServer::start_with_config(config) else {
            return;
        };
        let connect = |user: &str| {
            let options =
                async_nats::ConnectOptions::with_user_and_password(user.into(), user.into());
            let url = server.url().to_owned();
            async move { jetstream::new(options.connect(url).await.unwrap()) }
        };
        let all = connect("all").await;
        let stream = all
            .create_stream(jetstream::stream::Config {
                name: "S".into(),
                subjects: vec!["s.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        for (subject, payload) in [("s.a", "1"), ("s.b", "2"), ("s.a", "3")] {
            all.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let stall = std::time::Duration::from_millis(300);
        let read = super::scan_last_per_subject(&stream, "s.>", stall)
            .await
            .unwrap()
            .expect("a scan that can fetch ends");
        let mut last: Vec<_> = read
            .iter()
            .map(|m| (m.subject.to_string(), m.payload.clone()))
            .collect();
        last.sort();
        assert_eq!(
            last,
            [
                ("s.a".to_owned(), "3".into()),
                ("s.b".to_owned(), "2".into())
            ]
        );

        let nofetch = connect("nofetch").await;
        let stream = nofetch.get_stream("S").await.unwrap();
        let scan = super::scan_last_per_subject(&stream, "s.>", stall);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(20), scan)
            .await
            .expect("the scan waited for an answer that never comes");
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }

    #[test]
    fn object_names_encode_as_the_object_store_does() {
        assert_eq!(super::url_safe_base64(""), "");
        assert_eq!(super::url_safe_base64("f"), "Zg==");
        assert_eq!(super::url_safe_base64("fo"), "Zm8=");
        assert_eq!(super::url_safe_base64("foo"), "Zm9v");
        assert_eq!(super::url_safe_base64("\u{fb}\u{ff}"), "w7vDvw==");
        assert_eq!(
            super::url_safe_base64("6a0c1e4e-0d4c-4b8e-9a55-7a3f2c1d9e10"),
            "NmEwYzFlNGUtMGQ0Yy00YjhlLTlhNTUtN2EzZjJjMWQ5ZTEw"
        );
    }
}
