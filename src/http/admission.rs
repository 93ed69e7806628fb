//! Ingress admission (`[ingress]`, docs/operations.md "Ingress limits"): what a webhook
//! delivery may take before anything about it is known to be genuine.
//!
//! A route first decides whether the tenant and source can accept anything at all (404, 401
//! at once, body unread), then starts a [`DeliveryPermit`] ([`Admission::start`]):
//! - the body is read through the permit ([`DeliveryPermit::read_body`]): its bytes are
//!   reserved against the global and the tenant's cap of bytes being read at once *before*
//!   they are read (the declared `Content-Length` in full; a chunked body as it arrives),
//!   refused at once past a cap, and the read must end within `body_read_timeout_s`;
//! - once the signature is verified, the permit takes one of the tenant's
//!   `max_in_flight_per_tenant` places ([`DeliveryPermit::take_place`]), waiting up to
//!   `admission_wait_ms` for one, so one tenant's flood is served at its own pace and cannot
//!   crowd a neighbour out of the workers and the store's group commit. Unauthenticated or
//!   slow clients never hold a place.
//!
//! Past a cap → `503 overloaded` + `Retry-After`, past the deadline → `408`; both close the
//! connection and store nothing. The permit gives everything back when it is dropped, that
//! is when the request ends, however it ends (answered, failed, or the client gone).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ErrorCode};
use crate::config::IngressSection;

/// Counter of deliveries refused by admission, by `reason` (`in_flight`, `body_bytes`,
/// `body_bytes_tenant`, `body_timeout`). No tenant label (metric cardinality).
pub const INGRESS_ADMISSION_REFUSED_TOTAL: &str = "steward_ingress_admission_refused_total";

/// The process's admission state: one per process, in `AppState`.
pub struct Admission {
    limits: IngressSection,
    body_bytes_in_flight: Arc<AtomicU64>,
    contention: Arc<Contention>,
    /// Per running tenant that ever received a delivery (bounded by the tenants: routes
    /// admit only after finding the running tenant).
    tenants: DashMap<String, Arc<TenantLoad>>,
}

/// One tenant's share of what is in flight.
struct TenantLoad {
    /// `max_in_flight_per_tenant` places, handed out in arrival order (tokio's semaphore is
    /// fair), so a delivery that waits is not overtaken by later ones.
    deliveries: Arc<Semaphore>,
    /// `max_in_flight_alone − max_in_flight_per_tenant` more, lent only while no other tenant
    /// is sending: a tenant on its own keeps the store's large write groups.
    burst: Arc<Semaphore>,
    body_bytes: AtomicU64,
}

/// Whether more than one tenant is sending: a tenant whose verified delivery follows another
/// tenant's within [`CONTENDED_FOR`] marks the ingress contended for that long. A few atomics,
/// no scan: cheap per delivery at any number of tenants.
struct Contention {
    started: std::time::Instant,
    last_tenant: AtomicUsize,
    last_at_ms: AtomicU64,
    contended_until_ms: AtomicU64,
}

/// How long one delivery of another tenant keeps the per-tenant cap in force.
const CONTENDED_FOR: Duration = Duration::from_secs(1);

impl Contention {
    /// Notes a verified delivery of `tenant` (an identity, not a name); whether other tenants
    /// are sending.
    fn observe(&self, tenant: usize) -> bool {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let window_ms = CONTENDED_FOR.as_millis() as u64;
        let last_tenant = self.last_tenant.swap(tenant, Ordering::AcqRel);
        let last_at_ms = self.last_at_ms.swap(now_ms, Ordering::AcqRel);
        if last_tenant != 0
            && last_tenant != tenant
            && now_ms.saturating_sub(last_at_ms) < window_ms
        {
            self.contended_until_ms
                .fetch_max(now_ms + window_ms, Ordering::AcqRel);
        }
        now_ms < self.contended_until_ms.load(Ordering::Acquire)
    }
}

/// One admitted delivery. Dropping it releases its place and its reserved bytes.
pub struct DeliveryPermit {
    limits: IngressSection,
    global_bytes: Arc<AtomicU64>,
    tenant: Arc<TenantLoad>,
    reserved_bytes: u64,
    contention: Arc<Contention>,
    /// The tenant's place in flight, once taken; given back when the permit drops.
    place: Option<OwnedSemaphorePermit>,
}

fn overloaded(reason: &'static str, message: String) -> ApiError {
    metrics::counter!(INGRESS_ADMISSION_REFUSED_TOTAL, "reason" => reason).increment(1);
    ApiError::new(ErrorCode::Overloaded, message)
}

/// Adds `amount` to `counter` unless that would pass `cap`; whether it was added.
fn try_add(counter: &AtomicU64, amount: u64, cap: u64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            current.checked_add(amount).filter(|total| *total <= cap)
        })
        .is_ok()
}

impl Admission {
    pub fn new(limits: IngressSection) -> Admission {
        metrics::describe_counter!(
            INGRESS_ADMISSION_REFUSED_TOTAL,
            "Webhook deliveries refused by ingress admission (503 overloaded, 408), by reason (in_flight, body_bytes, body_bytes_tenant, body_timeout)"
        );
        Admission {
            limits,
            body_bytes_in_flight: Arc::new(AtomicU64::new(0)),
            contention: Arc::new(Contention {
                started: std::time::Instant::now(),
                last_tenant: AtomicUsize::new(0),
                last_at_ms: AtomicU64::new(0),
                contended_until_ms: AtomicU64::new(0),
            }),
            tenants: DashMap::new(),
        }
    }

    /// A delivery's permit, before its body is read: its bytes are reserved as they are
    /// read ([`DeliveryPermit::read_body`]), its place in flight is taken once it is proven
    /// genuine ([`DeliveryPermit::take_place`]).
    pub fn start(&self, tenant_id: &str) -> DeliveryPermit {
        // Cloned out: no dashmap guard is held past this line (STYLE.md).
        let tenant = match self.tenants.get(tenant_id) {
            Some(load) => Arc::clone(load.value()),
            None => {
                let places = self.limits.max_in_flight_per_tenant as usize;
                let burst = (self.limits.max_in_flight_alone as usize).saturating_sub(places);
                Arc::clone(
                    self.tenants
                        .entry(tenant_id.to_string())
                        .or_insert_with(|| {
                            Arc::new(TenantLoad {
                                deliveries: Arc::new(Semaphore::new(places)),
                                burst: Arc::new(Semaphore::new(burst)),
                                body_bytes: AtomicU64::new(0),
                            })
                        })
                        .value(),
                )
            }
        };
        DeliveryPermit {
            limits: self.limits.clone(),
            global_bytes: Arc::clone(&self.body_bytes_in_flight),
            tenant,
            reserved_bytes: 0,
            contention: Arc::clone(&self.contention),
            place: None,
        }
    }
}

impl DeliveryPermit {
    /// A place among the tenant's deliveries in flight (verified deliveries being written).
    /// When all are taken the delivery waits up to `admission_wait_ms` for one, in arrival
    /// order, then `503 overloaded`. The wait costs no CPU, so a sender that retries the
    /// moment it is refused is slowed to the pace its tenant is served at instead of spinning.
    pub async fn take_place(&mut self) -> Result<(), ApiError> {
        let contended = self.contention.observe(Arc::as_ptr(&self.tenant) as usize);
        let places = Arc::clone(&self.tenant.deliveries);
        let place = match Arc::clone(&places).try_acquire_owned() {
            Ok(place) => Some(place),
            Err(_) if !contended && self.tenant.burst.available_permits() > 0 => {
                Arc::clone(&self.tenant.burst).try_acquire_owned().ok()
            }
            Err(_) if self.limits.admission_wait_ms == 0 => None,
            Err(_) => tokio::time::timeout(
                Duration::from_millis(self.limits.admission_wait_ms),
                places.acquire_owned(),
            )
            .await
            .ok()
            .and_then(Result::ok),
        };
        let Some(place) = place else {
            let cap = self.limits.max_in_flight_per_tenant;
            return Err(overloaded(
                "in_flight",
                format!("this tenant already has {cap} deliveries in flight (ingress.max_in_flight_per_tenant); retry later"),
            ));
        };
        self.place = Some(place);
        Ok(())
    }

    /// Reserves bytes so that `total_bytes` of this body are covered (only the difference is
    /// new), against the tenant's cap and the global one; `503 overloaded` past either.
    fn reserve_up_to(&mut self, total_bytes: u64) -> Result<(), ApiError> {
        let Some(more) = total_bytes
            .checked_sub(self.reserved_bytes)
            .filter(|n| *n > 0)
        else {
            return Ok(());
        };
        let tenant_cap = self.limits.max_body_bytes_in_flight_per_tenant;
        if !try_add(&self.tenant.body_bytes, more, tenant_cap) {
            return Err(overloaded(
                "body_bytes_tenant",
                format!("this tenant's bodies being read would pass {tenant_cap} bytes (ingress.max_body_bytes_in_flight_per_tenant); retry later"),
            ));
        }
        let global_cap = self.limits.max_body_bytes_in_flight;
        if !try_add(&self.global_bytes, more, global_cap) {
            self.tenant.body_bytes.fetch_sub(more, Ordering::AcqRel);
            return Err(overloaded(
                "body_bytes",
                format!("bodies being read would pass {global_cap} bytes (ingress.max_body_bytes_in_flight); retry later"),
            ));
        }
        self.reserved_bytes += more;
        Ok(())
    }

    /// Reads the body (at most `limit_bytes`, else 413) with its bytes reserved before they
    /// are read, within `body_read_timeout_s` (else `408 request_timeout`).
    pub async fn read_body(
        &mut self,
        request: &actix_web::HttpRequest,
        payload: web::Payload,
        limit_bytes: usize,
    ) -> Result<web::Bytes, ApiError> {
        let timeout_s = self.limits.body_read_timeout_s;
        let reading = super::read_body_reserving(request, payload, limit_bytes, |total| {
            self.reserve_up_to(total as u64)
        });
        match tokio::time::timeout(Duration::from_secs(timeout_s), reading).await {
            Ok(body) => body,
            Err(_) => {
                metrics::counter!(INGRESS_ADMISSION_REFUSED_TOTAL, "reason" => "body_timeout")
                    .increment(1);
                Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!("the body did not arrive within {timeout_s} s (ingress.body_read_timeout_s)"),
                ))
            }
        }
    }
}

impl Drop for DeliveryPermit {
    fn drop(&mut self) {
        if self.reserved_bytes > 0 {
            self.tenant
                .body_bytes
                .fetch_sub(self.reserved_bytes, Ordering::AcqRel);
            self.global_bytes
                .fetch_sub(self.reserved_bytes, Ordering::AcqRel);
        }
    }
}

/// Connections each ingress worker may hold: `max_connections` split evenly over `workers`
/// (actix's limit is per worker), at least one each, and within what the process's file
/// limit allows. Raises the soft `RLIMIT_NOFILE` to the hard limit first.
pub fn connections_per_worker(limits: &IngressSection, workers: usize) -> usize {
    /// Descriptors kept for everything but ingress connections (store, admin, clients).
    const RESERVED_FDS: u64 = 256;
    let mut total = limits.max_connections;
    if let Some(file_limit) = raise_file_limit() {
        let usable = file_limit.saturating_sub(RESERVED_FDS).max(1) as usize;
        if usable < total {
            tracing::warn!(
                configured = total,
                usable,
                file_limit,
                "ingress.max_connections lowered to fit the open-file limit"
            );
            total = usable;
        }
    }
    (total / workers.max(1)).max(1)
}

/// Raises the soft open-file limit to the hard one; the resulting soft limit.
fn raise_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> IngressSection {
        IngressSection {
            max_body_bytes_in_flight: 100,
            max_body_bytes_in_flight_per_tenant: 60,
            body_read_timeout_s: 1,
            max_connections: 10,
            max_in_flight_per_tenant: 2,
            max_in_flight_alone: 2,
            admission_wait_ms: 0,
        }
    }

    /// A permit holding a place in flight.
    async fn placed(admission: &Admission, tenant_id: &str) -> Result<DeliveryPermit, ApiError> {
        let mut permit = admission.start(tenant_id);
        permit.take_place().await?;
        Ok(permit)
    }

    #[actix_rt::test]
    async fn places_and_bytes_are_capped_and_given_back_on_drop() {
        // Goal: the in-flight cap, the tenant and global byte caps refuse past their limit and
        // a dropped permit gives back its place and its bytes.
        let admission = Admission::new(limits());
        let mut first = placed(&admission, "a").await.unwrap();
        let second = placed(&admission, "a").await.unwrap();
        assert_eq!(
            placed(&admission, "a").await.err().map(|err| err.code),
            Some(ErrorCode::Overloaded)
        );
        first.reserve_up_to(50).unwrap();
        first.reserve_up_to(60).unwrap();
        assert!(first.reserve_up_to(61).is_err(), "tenant cap");
        // Reading a body needs no place: bytes are capped on their own.
        let mut neighbour = admission.start("b");
        neighbour.reserve_up_to(40).unwrap();
        assert!(neighbour.reserve_up_to(41).is_err(), "global cap");
        assert_eq!(admission.body_bytes_in_flight.load(Ordering::Acquire), 100);
        drop(first);
        drop(second);
        assert_eq!(admission.body_bytes_in_flight.load(Ordering::Acquire), 40);
        let mut again = placed(&admission, "a").await.unwrap();
        again.reserve_up_to(60).unwrap();
        drop((again, neighbour));
        assert_eq!(admission.body_bytes_in_flight.load(Ordering::Acquire), 0);
    }

    #[actix_rt::test]
    async fn a_lone_tenant_borrows_places_that_a_contended_one_does_not() {
        // Goal: alone, a tenant may have max_in_flight_alone deliveries in flight; once
        // another tenant sends, it gets no more than max_in_flight_per_tenant.
        let admission = Admission::new(IngressSection {
            max_in_flight_alone: 4,
            ..limits()
        });
        let mut alone = Vec::new();
        for _ in 0..4 {
            alone.push(placed(&admission, "a").await.expect("a place while alone"));
        }
        assert!(placed(&admission, "a").await.is_err(), "alone: 4 at most");
        let _neighbour = placed(&admission, "b")
            .await
            .expect("the neighbour's place");
        // Two of a's four are borrowed: giving one back lends nothing while b sends.
        drop(alone.pop());
        assert!(
            placed(&admission, "a").await.is_err(),
            "contended: no borrowed place"
        );
        // Its own places are still its own.
        alone.truncate(1);
        assert!(
            placed(&admission, "a").await.is_ok(),
            "contended: its own place"
        );
    }

    #[actix_rt::test]
    async fn a_delivery_waits_for_a_place_then_is_refused() {
        // Goal: with admission_wait_ms set, a delivery past the cap gets the place freed
        // within the wait, and is refused 503 only when none frees in time.
        let admission = Admission::new(IngressSection {
            admission_wait_ms: 300,
            ..limits()
        });
        let first = placed(&admission, "a").await.unwrap();
        let _second = placed(&admission, "a").await.unwrap();
        let waiting = placed(&admission, "a");
        let release = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(first);
        };
        let (third, ()) = tokio::join!(waiting, release);
        let _third = third.expect("the freed place is handed to the waiting delivery");
        let started = std::time::Instant::now();
        let refused = placed(&admission, "a").await;
        assert_eq!(
            refused.err().map(|err| err.code),
            Some(ErrorCode::Overloaded)
        );
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "refused only after the wait"
        );
    }

    #[test]
    fn connections_are_split_over_the_workers() {
        // Goal: actix's per-worker limit times the workers never exceeds the configured total
        // (one per worker at least).
        let limits = limits();
        assert_eq!(connections_per_worker(&limits, 2), 5);
        assert_eq!(connections_per_worker(&limits, 3), 3);
        assert_eq!(connections_per_worker(&limits, 40), 1);
    }
}
