//! Questions one node's control socket asks the others (request and reply on `P.admin.NAME`):
//! `chatctl who` lists the sessions of every node, and names a node that did not answer.

use std::sync::Arc;
use std::time::Duration;

use chatd_proto::control::SessionInfo;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// The only question so far: every session on the node asked.
const WHO: &[u8] = b"who";

/// How long a node may take to answer, at most; and never more than half of
/// `node_timeout_ms`, so a node is named as not answering well before it is declared gone.
const ANSWER_MAX: Duration = Duration::from_secs(2);

/// Answers the other nodes' questions to this one.
pub(super) async fn answer(
    c: Arc<Cluster>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) {
    while let Some(msg) = super::loops::next(&mut sub, &stop).await {
        let Some(reply) = msg.reply else {
            continue;
        };
        if msg.payload.as_ref() != WHO {
            tracing::warn!("dropped an unknown question from the cluster bus");
            continue;
        }
        let node = c.me().name;
        let sessions: Vec<SessionInfo> = c
            .parts
            .hub
            .sessions()
            .into_iter()
            .map(|s| SessionInfo {
                node: Some(node.clone()),
                ..s
            })
            .collect();
        let Ok(body) = serde_json::to_vec(&sessions) else {
            continue;
        };
        if let Err(e) = c.client.publish(reply, body.into()).await {
            tracing::debug!(error = %e, "cannot answer a question from the cluster bus");
        }
    }
}

impl Cluster {
    /// Every session on the other nodes this one counts alive, and the nodes that did not
    /// answer in time.
    pub async fn sessions_elsewhere(&self) -> (Vec<SessionInfo>, Vec<String>) {
        let wait = (self.timing.timeout / 2).min(ANSWER_MAX);
        let peers: Vec<String> = self.members().peers.keys().cloned().collect();
        let asks = peers.into_iter().map(|node| async move {
            let subject = self.admin_subject(&node);
            let answer = tokio::time::timeout(wait, self.client.request(subject, WHO.into())).await;
            let sessions = match answer {
                Ok(Ok(msg)) => serde_json::from_slice::<Vec<SessionInfo>>(&msg.payload).ok(),
                _ => None,
            };
            (node, sessions)
        });
        let mut sessions = Vec::new();
        let mut unanswered = Vec::new();
        for (node, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Some(list) => sessions.extend(list),
                None => unanswered.push(node),
            }
        }
        (sessions, unanswered)
    }
}
