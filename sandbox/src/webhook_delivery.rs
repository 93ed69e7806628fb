//! Delivering outgoing webhooks off the request path, the same for every simulator that
//! sends them (Virtuous, Mailchimp, partners): one dispatcher task owns the reqwest client
//! (pooled connections belong to the runtime that made them) and delivers each job in its own
//! task — or, for a job with a lane, after the previous job of its lane (in order) — retrying a
//! refused or failed POST after fixed pauses. Also the HMAC-SHA256 that signs bodies.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

/// HMAC-SHA256 of `body` with `secret`: the digest webhook signatures encode.
pub(crate) fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// How a simulator's webhooks are sent.
pub(crate) struct DeliveryPolicy {
    /// Names the simulator in logs.
    pub(crate) platform: &'static str,
    /// How long a receiver has to answer one POST.
    pub(crate) timeout_ms: u64,
    /// Pauses before the 2nd, 3rd, … attempt.
    pub(crate) retry_backoff_ms: &'static [u64],
}

/// One POST to one URL.
pub(crate) trait WebhookPost: 'static {
    fn url(&self) -> &str;
    /// The POST with its headers and body.
    fn post(&self, client: &reqwest::Client) -> reqwest::RequestBuilder;
    /// Counts a 2xx answer.
    fn delivered(&self);
    /// Counts a job given up after its last attempt.
    fn failed(&self);
    /// A pause before the first attempt (a simulator delivering out of order).
    fn delay_ms(&self) -> u64 {
        0
    }
    /// Jobs of one lane are delivered one after the other, in the order they were sent
    /// (retries included); `None` = on its own, at once.
    fn lane(&self) -> Option<&str> {
        None
    }
}

/// Starts the dispatcher on the current runtime.
pub(crate) fn spawn_dispatcher<Job: WebhookPost>(
    policy: DeliveryPolicy,
) -> (mpsc::UnboundedSender<Job>, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    let task = tokio::task::spawn_local(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_millis(policy.timeout_ms))
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(platform = policy.platform, error = %error, "sandbox webhook client failed to build; webhooks disabled");
                return;
            }
        };
        let mut lanes: HashMap<String, mpsc::UnboundedSender<Job>> = HashMap::new();
        while let Some(job) = receiver.recv().await {
            let Some(lane) = job.lane().map(str::to_owned) else {
                tokio::task::spawn_local(deliver(
                    client.clone(),
                    job,
                    policy.platform,
                    policy.retry_backoff_ms,
                ));
                continue;
            };
            let lane_sender = lanes
                .entry(lane)
                .or_insert_with(|| spawn_lane(client.clone(), &policy));
            // A lane task ends only with the runtime; a failed send drops the job.
            let _ = lane_sender.send(job);
        }
    });
    (sender, task)
}

/// One lane: a task that delivers its jobs one at a time, in order.
fn spawn_lane<Job: WebhookPost>(
    client: reqwest::Client,
    policy: &DeliveryPolicy,
) -> mpsc::UnboundedSender<Job> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    let (platform, retry_backoff_ms) = (policy.platform, policy.retry_backoff_ms);
    tokio::task::spawn_local(async move {
        while let Some(job) = receiver.recv().await {
            deliver(client.clone(), job, platform, retry_backoff_ms).await;
        }
    });
    sender
}

async fn deliver<Job: WebhookPost>(
    client: reqwest::Client,
    job: Job,
    platform: &'static str,
    retry_backoff_ms: &'static [u64],
) {
    if job.delay_ms() > 0 {
        tokio::time::sleep(Duration::from_millis(job.delay_ms())).await;
    }
    for attempt in 0..=retry_backoff_ms.len() {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(retry_backoff_ms[attempt - 1])).await;
        }
        match job.post(&client).send().await {
            Ok(response) if response.status().is_success() => {
                job.delivered();
                return;
            }
            Ok(response) => tracing::debug!(
                platform, url = %without_query(job.url()), attempt = attempt + 1,
                status = response.status().as_u16(), "sandbox webhook refused"
            ),
            Err(error) => tracing::debug!(
                platform, url = %without_query(job.url()), attempt = attempt + 1, error = %error.without_url(),
                "sandbox webhook failed"
            ),
        }
    }
    tracing::warn!(platform, url = %without_query(job.url()), "sandbox webhook given up after retries");
    job.failed();
}

/// A delivery URL for the log: its query may hold a secret (Mailchimp's `?key=`).
fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    #[test]
    fn logged_urls_lose_their_query() {
        // Goal: a webhook URL's `?key=…` (its secret) never reaches the log.
        assert_eq!(
            super::without_query("http://h/hooks/t/mailchimp?key=s3cret"),
            "http://h/hooks/t/mailchimp"
        );
        assert_eq!(super::without_query("http://h/a"), "http://h/a");
    }
}
