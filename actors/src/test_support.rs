//! Helpers the crate's tests share: the one deadline poll and the one scripted fake Virtuous.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::outcome::ResponseFacts;
use crate::ports::{Crm, CrmGift, CrmGiftPage, CrmReply, CrmWrite, LocalFuture, RateLimitFacts};

/// Polls `condition` every 5 ms until it holds; panics after `deadline_ms`, naming `what`.
pub(crate) async fn eventually(what: &str, deadline_ms: u64, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_millis(deadline_ms),
            "timed out after {deadline_ms} ms waiting for {what}"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An answer with `status` and nothing else.
pub(crate) fn reply(status: u16) -> CrmReply {
    CrmReply {
        facts: ResponseFacts::answered(status),
        rate_limit: RateLimitFacts::default(),
        body: String::new(),
        elapsed_ms: 1,
    }
}

type Responder = Box<dyn FnMut(&CrmWrite) -> CrmReply + Send>;

/// A fake Virtuous that records every call.
///
/// - Writes are answered by the responder (with the time of each, ms since the fake was
///   made); the first write can be held until `gate` opens.
/// - FullGift queries are answered from `gifts` (filtered by transaction source, paged by
///   skip/take) with `status`; webhook registrations get ids `wh-{n}` with `status`.
/// - A fake made with [`FakeCrm::with_gifts`] is strict: a write, a single-gift read or a
///   connection test panics (confirmation never makes them).
pub(crate) struct FakeCrm {
    started: Instant,
    requests: Mutex<Vec<(u64, CrmWrite)>>,
    responder: Mutex<Responder>,
    pub(crate) gate: Mutex<Option<oneshot::Receiver<()>>>,
    pub(crate) gifts: Vec<CrmGift>,
    /// (transaction source, created on or after, skip, take) of each query.
    pub(crate) queries: Mutex<Vec<(String, u64, u64, u32)>>,
    /// Payload URLs of each webhook registration.
    pub(crate) registrations: Mutex<Vec<String>>,
    /// Status of query and registration answers.
    pub(crate) status: u16,
    strict: bool,
}

impl FakeCrm {
    /// Writes answered by `responder`; queries and registrations answered 500.
    pub(crate) fn scripted(
        responder: impl FnMut(&CrmWrite) -> CrmReply + Send + 'static,
    ) -> Arc<FakeCrm> {
        Arc::new(FakeCrm::new(Box::new(responder), Vec::new(), 500, false))
    }

    /// Queries answered from `gifts` with `status`; a write panics.
    pub(crate) fn with_gifts(gifts: Vec<CrmGift>, status: u16) -> FakeCrm {
        let responder: Responder = Box::new(|_| unreachable!("confirmation never writes"));
        FakeCrm::new(responder, gifts, status, true)
    }

    fn new(responder: Responder, gifts: Vec<CrmGift>, status: u16, strict: bool) -> FakeCrm {
        FakeCrm {
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            responder: Mutex::new(responder),
            gate: Mutex::new(None),
            gifts,
            queries: Mutex::new(Vec::new()),
            registrations: Mutex::new(Vec::new()),
            status,
            strict,
        }
    }

    pub(crate) fn requests(&self) -> Vec<CrmWrite> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }
    pub(crate) fn request_times_ms(&self) -> Vec<u64> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .collect()
    }
    /// Writes received.
    pub(crate) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    /// Ms since the fake was made (the clock of `request_times_ms`).
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

fn ready<T: 'static>(value: T) -> LocalFuture<T> {
    Box::pin(async move { value })
}

impl Crm for FakeCrm {
    fn write(&self, request: CrmWrite) -> LocalFuture<CrmReply> {
        self.requests
            .lock()
            .unwrap()
            .push((self.elapsed_ms(), request.clone()));
        let answer = (self.responder.lock().unwrap())(&request);
        let gate = self.gate.lock().unwrap().take();
        Box::pin(async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            answer
        })
    }
    fn query_gifts(
        &self,
        transaction_source: &str,
        created_on_or_after_ms: u64,
        skip: u64,
        take: u32,
    ) -> LocalFuture<(CrmReply, Option<CrmGiftPage>)> {
        self.queries.lock().unwrap().push((
            transaction_source.to_string(),
            created_on_or_after_ms,
            skip,
            take,
        ));
        let matching: Vec<CrmGift> = self
            .gifts
            .iter()
            .filter(|gift| gift.transaction_source.as_deref() == Some(transaction_source))
            .cloned()
            .collect();
        let page = CrmGiftPage {
            total: matching.len() as u64,
            gifts: matching
                .into_iter()
                .skip(skip as usize)
                .take(take as usize)
                .collect(),
        };
        let status = self.status;
        ready((reply(status), (status == 200).then_some(page)))
    }
    fn gift_by_transaction(
        &self,
        _transaction_source: &str,
        _transaction_id: &str,
    ) -> LocalFuture<(CrmReply, Option<Option<CrmGift>>)> {
        assert!(!self.strict, "not used by confirmation passes");
        ready((reply(500), None))
    }
    fn register_webhook(
        &self,
        payload_url: &str,
        _flags: &[String],
    ) -> LocalFuture<(CrmReply, Option<String>)> {
        let mut registrations = self.registrations.lock().unwrap();
        registrations.push(payload_url.to_string());
        let id = format!("wh-{}", registrations.len());
        let status = self.status;
        ready((reply(status), (status == 200).then_some(id)))
    }
    fn organization_current(&self) -> LocalFuture<(CrmReply, Option<String>)> {
        assert!(!self.strict, "not used by confirmation passes");
        ready((reply(500), None))
    }
    fn query_contacts_after(
        &self,
        _after_id: u64,
        _take: u32,
    ) -> LocalFuture<(CrmReply, Option<crate::pull::ChangePage>)> {
        ready((reply(500), None))
    }
    fn read_contact(
        &self,
        _id: &str,
    ) -> LocalFuture<(CrmReply, Option<Option<serde_json::Value>>)> {
        ready((reply(500), None))
    }
    fn put_contact(&self, _id: &str, _body: String) -> LocalFuture<CrmReply> {
        ready(reply(500))
    }
    fn update_webhook(
        &self,
        _subscription_id: &str,
        payload_url: &str,
        _flags: &[String],
    ) -> LocalFuture<CrmReply> {
        self.registrations
            .lock()
            .unwrap()
            .push(payload_url.to_string());
        ready(reply(self.status))
    }
    fn query_modified(
        &self,
        _kind: crate::pull::ChangeKind,
        _modified_on_or_after_ms: u64,
        _skip: u64,
        _take: u32,
    ) -> LocalFuture<(CrmReply, Option<crate::ports::ChangePage>)> {
        let status = self.status;
        ready((
            reply(status),
            (status == 200).then(crate::ports::ChangePage::default),
        ))
    }
    fn read_records(
        &self,
        _kind: crate::pull::ChangeKind,
        _ids: &[String],
    ) -> LocalFuture<(CrmReply, Option<crate::ports::ChangePage>)> {
        let status = self.status;
        ready((
            reply(status),
            (status == 200).then(crate::ports::ChangePage::default),
        ))
    }
}

/// A tenant registered in `store`'s registry (scans over every tenant go through it) and its
/// store.
pub(crate) fn registered_tenant(
    store: &crate::store::Store,
    id: &str,
) -> crate::store::TenantStore {
    store
        .registry()
        .insert_new(&crate::store::TenantRecord {
            id: id.into(),
            config_json: "{}".into(),
            sealed_secrets: Vec::new(),
            state: "running".into(),
            created_at_ms: 1,
            updated_at_ms: 1,
        })
        .unwrap();
    store.tenant(id).unwrap()
}
