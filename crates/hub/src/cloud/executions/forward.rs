//! Requests of the durable execution API forwarded between nodes: a node asked about an
//! execution another node runs sends the request to that node
//! (`fnhub.{deployment}.executions.{node}`, NATS request and reply: the method, path and
//! query in headers, the body as the payload) and relays its answer.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::dex::api::{self, ApiError, Asker};
use crate::dex::replica::Answer;

/// Answers the requests other nodes forward for the executions this node runs.
pub(in crate::cloud) async fn answer_forwarded(
    client: async_nats::Client,
    subject: String,
    hub: crate::edge::WeakHub,
) {
    let Ok(mut requests) = client.subscribe(subject).await else {
        tracing::warn!("cannot take forwarded durable execution requests");
        return;
    };
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let Some(edge) = hub.upgrade() else { return };
        let (client, hub) = (client.clone(), hub.clone());
        tokio::spawn(async move {
            let field = |key: &str| {
                request
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(key))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            let (method, rest, query) = (
                field("Fnhub-Method"),
                field("Fnhub-Path"),
                field("Fnhub-Query"),
            );
            // The asking node checked the caller's right to the execution's function.
            let asker = Asker {
                from_function: false,
                may_invoke: &|_| true,
            };
            let dex = edge.dex().clone();
            drop(edge);
            dex.ready().await;
            let mut answer =
                api::serve(&dex, &hub, &asker, &method, &rest, &query, &request.payload);
            if !dex.flushed().await {
                answer = Err(ApiError {
                    status: 503,
                    kind: "ServiceException",
                    message: "the change could not be stored in time; retry".into(),
                });
            }
            let _ = client.publish(reply, encode_answer(&answer)).await;
        });
    }
}

pub(super) fn encode_answer(answer: &Answer) -> Bytes {
    let v = match answer {
        Ok((status, body)) => json!({"status": status, "body": body}),
        Err(e) => json!({"status": e.status, "kind": e.kind, "message": e.message}),
    };
    Bytes::from(v.to_string())
}

/// A forwarded answer; what does not parse is a `ServiceException`.
pub(super) fn decode_answer(bytes: &[u8]) -> Answer {
    let garbled = || ApiError {
        status: 502,
        kind: "ServiceException",
        message: "the node running this execution answered something that does not parse".into(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| garbled())?;
    let status = v["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(garbled)?;
    match v.get("body") {
        Some(body) => Ok((status, body.clone())),
        None => Err(ApiError {
            status,
            kind: api::known_kind(v["kind"].as_str().unwrap_or_default()),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_garbage_is_a_service_exception() {
        let ok: Answer = Ok((200, json!({"Status": "RUNNING"})));
        let back = decode_answer(&encode_answer(&ok)).unwrap();
        assert_eq!(back, (200, json!({"Status": "RUNNING"})));
        let err: Answer = Err(ApiError {
            status: 404,
            kind: "ResourceNotFoundException",
            message: "gone".into(),
        });
        let back = decode_answer(&encode_answer(&err)).unwrap_err();
        assert_eq!(
            (back.status, back.kind, back.message.as_str()),
            (404, "ResourceNotFoundException", "gone")
        );
        for garbage in [
            &b""[..],
            b"[]",
            b"{\"status\": 99}",
            b"{\"status\": \"x\"}",
            b"\xff",
        ] {
            let e = decode_answer(garbage).unwrap_err();
            assert_eq!((e.status, e.kind), (502, "ServiceException"));
        }
        // A kind this hub does not know becomes a ServiceException, not a made-up type.
        let odd = br#"{"status": 400, "kind": "MadeUpException", "message": "m"}"#;
        assert_eq!(decode_answer(odd).unwrap_err().kind, "ServiceException");
    }
}
