//! The bulk way's queue (`domain::ways`): authorize queues each bulk chunk's key on its project's
//! home region's queue; the `bulk` function takes them off.
//!
//! On AWS an SQS **fair queue**: a standard queue whose messages carry the project as their
//! message group, so when one project floods it, consumers get the other projects' messages
//! first (SQS serves the groups with a short dwell ahead of the backlogged one). Locally the same
//! behaviour in process ([`LocalBulkQueue`]): one queue per project, served in turn.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::{Deserialize, Serialize};

use crate::domain::region::Region;
use crate::ports::StoreError;

/// A chunk waiting for the bulk worker: the body of one queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedChunk {
    pub region: Region,
    pub project_id: String,
    pub message_id: String,
    pub chunk: u32,
}

/// Messages per SendMessageBatch (SQS's limit).
const SEND_BATCH: usize = 10;

/// Where bulk chunks are queued.
#[derive(Clone)]
pub enum BulkQueue {
    Sqs(SqsBulkQueues),
    Local(LocalBulkQueue),
}

impl BulkQueue {
    /// Queues chunks of one project (all or an error: a chunk not queued is queued again when
    /// mParticle retries the request, whose answer was not a 200).
    pub async fn enqueue(&self, chunks: &[QueuedChunk]) -> Result<(), StoreError> {
        match self {
            BulkQueue::Sqs(q) => q.enqueue(chunks).await,
            BulkQueue::Local(q) => {
                q.push(chunks);
                Ok(())
            }
        }
    }
}

/// One SQS client per CleverTap region and the queue name pattern (`{region}` replaced).
#[derive(Clone)]
pub struct SqsBulkQueues {
    clients: HashMap<Region, aws_sdk_sqs::Client>,
    name_pattern: String,
    urls: Arc<Mutex<HashMap<Region, String>>>,
}

impl SqsBulkQueues {
    pub fn new(clients: HashMap<Region, aws_sdk_sqs::Client>, name_pattern: String) -> Self {
        Self {
            clients,
            name_pattern,
            urls: Arc::default(),
        }
    }

    fn client(&self, region: Region) -> Result<&aws_sdk_sqs::Client, StoreError> {
        self.clients
            .get(&region)
            .ok_or_else(|| StoreError::Unavailable(format!("no SQS client for {region}")))
    }

    /// The region's queue URL, looked up once per process.
    async fn url(&self, region: Region) -> Result<String, StoreError> {
        if let Some(url) = self.urls.lock().expect("urls").get(&region) {
            return Ok(url.clone());
        }
        let name = self.name_pattern.replace("{region}", region.as_str());
        let url = (self.client(region)?.get_queue_url())
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueUrl", e))?
            .queue_url
            .ok_or_else(|| StoreError::Unavailable(format!("queue {name} has no URL")))?;
        self.urls.lock().expect("urls").insert(region, url.clone());
        Ok(url)
    }

    async fn enqueue(&self, chunks: &[QueuedChunk]) -> Result<(), StoreError> {
        for batch in chunks.chunks(SEND_BATCH) {
            let Some(first) = batch.first() else {
                continue;
            };
            let url = self.url(first.region).await?;
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(c).expect("serializes"))
                        // The fair queue's tenant.
                        .message_group_id(&c.project_id)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = (self.client(first.region)?.send_message_batch())
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sqs_error("SendMessageBatch", e))?;
            if !out.failed.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "{} of {} chunks not queued",
                    out.failed.len(),
                    batch.len()
                )));
            }
        }
        Ok(())
    }
}

fn sqs_error<E: std::error::Error + Send + Sync + 'static>(
    call: &str,
    e: aws_sdk_sqs::error::SdkError<E>,
) -> StoreError {
    StoreError::Unavailable(format!(
        "{call}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    ))
}

/// The local stand-in of the fair queue: a queue per project, served in turn (the project after
/// the last one served first), shared by the local endpoint and the local bulk workers.
#[derive(Clone, Default)]
pub struct LocalBulkQueue {
    inner: Arc<Mutex<Groups>>,
}

#[derive(Default)]
struct Groups {
    by_project: BTreeMap<String, VecDeque<QueuedChunk>>,
    last_served: Option<String>,
}

impl LocalBulkQueue {
    pub fn push(&self, chunks: &[QueuedChunk]) {
        let mut groups = self.inner.lock().expect("queue");
        for c in chunks {
            (groups.by_project.entry(c.project_id.clone()))
                .or_default()
                .push_back(c.clone());
        }
    }

    /// The next chunk, taking projects in turn.
    pub fn pop(&self) -> Option<QueuedChunk> {
        let mut groups = self.inner.lock().expect("queue");
        let next_project = {
            let after = groups.last_served.clone();
            let later = after.as_ref().and_then(|a| {
                (groups
                    .by_project
                    .range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)))
                .find(|(_, q)| !q.is_empty())
                .map(|(p, _)| p.clone())
            });
            later.or_else(|| {
                (groups.by_project.iter())
                    .find(|(_, q)| !q.is_empty())
                    .map(|(p, _)| p.clone())
            })?
        };
        let chunk = groups.by_project.get_mut(&next_project)?.pop_front();
        if groups
            .by_project
            .get(&next_project)
            .is_some_and(VecDeque::is_empty)
        {
            groups.by_project.remove(&next_project);
        }
        groups.last_served = Some(next_project);
        chunk
    }

    /// Chunks waiting.
    pub fn len(&self) -> usize {
        let groups = self.inner.lock().expect("queue");
        groups.by_project.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(project: &str, n: u32) -> QueuedChunk {
        QueuedChunk {
            region: Region::Eu1,
            project_id: project.into(),
            message_id: format!("m-{project}"),
            chunk: n,
        }
    }

    #[test]
    fn a_flooding_project_does_not_hold_up_a_quiet_one() {
        let q = LocalBulkQueue::default();
        let flood: Vec<QueuedChunk> = (0..100).map(|n| chunk("big", n)).collect();
        q.push(&flood);
        q.push(&[chunk("small", 0), chunk("small", 1)]);
        let served: Vec<String> = std::iter::from_fn(|| q.pop())
            .take(4)
            .map(|c| c.project_id)
            .collect();
        assert_eq!(served, ["big", "small", "big", "small"]);
        assert_eq!(q.len(), 98);
        assert!(std::iter::from_fn(|| q.pop()).all(|c| c.project_id == "big"));
        assert!(q.is_empty());
    }

    #[test]
    fn each_project_keeps_its_own_order() {
        let q = LocalBulkQueue::default();
        q.push(&[chunk("a", 0), chunk("a", 1), chunk("b", 0)]);
        q.push(&[chunk("a", 2)]);
        let order: Vec<(String, u32)> = std::iter::from_fn(|| q.pop())
            .map(|c| (c.project_id, c.chunk))
            .collect();
        assert_eq!(
            order,
            [
                ("a".into(), 0),
                ("b".into(), 0),
                ("a".into(), 1),
                ("a".into(), 2)
            ]
        );
    }

    #[test]
    fn a_queued_chunk_is_a_small_json_body() {
        let body = serde_json::to_string(&chunk("P1", 3)).unwrap();
        assert_eq!(
            body,
            r#"{"region":"eu1","project_id":"P1","message_id":"m-P1","chunk":3}"#
        );
    }
}
