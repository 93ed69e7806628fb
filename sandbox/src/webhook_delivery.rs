//! Delivering outgoing webhooks off the request path, the same for every simulator that
//! sends them (Virtuous, Mailchimp): one dispatcher task owns the reqwest client (pooled
//! connections belong to the runtime that made them) and delivers each job in its own task,
//! retrying a refused or failed POST after fixed pauses.

use std::time::Duration;

use tokio::sync::mpsc;

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
        while let Some(job) = receiver.recv().await {
            tokio::task::spawn_local(deliver(
                client.clone(),
                job,
                policy.platform,
                policy.retry_backoff_ms,
            ));
        }
    });
    (sender, task)
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
