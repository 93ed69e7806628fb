//! Listing jobs (a source's listing read through its poller) over the real sled store, with
//! a scripted `Poller` (the adapters are tested against the simulators in the `steward`
//! crate, the whole path end to end in `tests/it`).

use std::sync::{Arc, Mutex};

use super::backfill_tests::{gift_entry, gifts_sent, job, start, MemoryFiles};
use super::poll_tests::{spec as poller_spec, Answer, ScriptedPoller};
use super::tests::test_store;
use super::*;
use crate::backfill::{
    BackfillAction, JobSpec, JobState, ListingWindow, LISTING_FORMAT, OUTSIDE_WINDOW,
};
use crate::poll::{PollFetch, PollPage, PolledItem, SourceLimits};
use crate::store::Lane;
use crate::test_support::{eventually, reply, FakeCrm};

const FROM_MS: u64 = 500;
const TO_MS: u64 = 5_000;

fn listing_spec() -> JobSpec {
    JobSpec {
        // The scripted poller's source key.
        source: "cc".into(),
        format: LISTING_FORMAT.into(),
        mapping_json: String::new(),
        label: "history".into(),
        listing: Some(ListingWindow {
            from_ms: FROM_MS,
            to_ms: TO_MS,
        }),
    }
}

fn gift(id: &str, version_ms: u64) -> PolledItem {
    PolledItem {
        record_id: id.into(),
        version_ms,
        entries: Ok(vec![gift_entry(id, Lane::Live)]),
    }
}

fn unmappable(id: &str, version_ms: u64) -> PolledItem {
    PolledItem {
        record_id: id.into(),
        version_ms,
        entries: Err("no amount".into()),
    }
}

fn page(items: Vec<PolledItem>, next_cursor: Option<&str>) -> Answer {
    Answer::Fetch(PollFetch::Page(PollPage {
        items,
        next_cursor: next_cursor.map(str::to_string),
        calls: 1,
        ..Default::default()
    }))
}

/// The listing's first page: g1 (also live), g2, an unmappable record.
fn first_page() -> Answer {
    page(
        vec![
            gift("g1", 1_000),
            gift("g2", 2_000),
            unmappable("bad", 1_500),
        ],
        Some("c1"),
    )
}

/// Its second and last: g3 changed after the window, and g4.
fn second_page() -> Answer {
    page(vec![gift("g3", 9_000), gift("g4", 3_000)], None)
}

fn push_listing(poller: &ScriptedPoller) {
    poller.push(first_page());
    poller.push(second_page());
}

/// A running tenant polling the scripted source, over the real store.
struct Fixture {
    runtime: Runtime,
    crm: Arc<FakeCrm>,
    poller: Arc<ScriptedPoller>,
    handle: TenantHandle,
    _store: super::tests::TestStore,
}

impl Fixture {
    async fn start(limits: SourceLimits) -> Fixture {
        let store = test_store();
        let runtime = Runtime::new(1);
        let crm = FakeCrm::scripted(|_| reply(200));
        let poller = Arc::new(ScriptedPoller::default());
        let handle = with_poller(&runtime, &store, &crm, &poller, limits).await;
        Fixture {
            runtime,
            crm,
            poller,
            handle,
            _store: store,
        }
    }
}

/// Creates listing job `bf_1` of `spec`.
async fn create(handle: &TenantHandle, spec: JobSpec) -> crate::backfill::BackfillJob {
    handle
        .backfill_command("bf_1", BackfillAction::Create { spec })
        .await
        .unwrap()
}

async fn with_poller(
    runtime: &Runtime,
    store: &super::tests::TestStore,
    crm: &Arc<FakeCrm>,
    poller: &Arc<ScriptedPoller>,
    limits: SourceLimits,
) -> TenantHandle {
    let files = Arc::new(MemoryFiles {
        rows: 0,
        opened_at: Mutex::new(Vec::new()),
    });
    let handle = start(runtime, store, Arc::clone(crm), files);
    eventually("children started", 5_000, || handle.children_started()).await;
    handle.replace_pollers(vec![poller_spec(poller, limits)]);
    eventually("the poller to load", 5_000, || {
        handle.pollers().unwrap().len() == 1
    })
    .await;
    handle
}

fn cursors(poller: &ScriptedPoller) -> Vec<(u64, Option<String>)> {
    poller
        .requests()
        .into_iter()
        .map(|request| (request.since_ms, request.cursor))
        .collect()
}

#[actix_rt::test]
async fn a_listing_is_read_page_by_page_from_the_window_dry_run_first_and_sends_each_record_once() {
    // Goal: a listing job starts validating with no file; its dry run reads every page from the window's start (counting the record outside the window as skipped, the unmappable one as rejected with its row, the one seen live as known) and queues nothing; the run reads the listing again and sends each new gift once, in the backfill lane, and ends done.
    let Fixture {
        runtime,
        crm,
        poller,
        handle,
        _store,
    } = Fixture::start(SourceLimits::default()).await;
    handle
        .enqueue(vec![gift_entry("g1", Lane::Live)])
        .await
        .unwrap();
    eventually("the live gift sent", 5_000, || gifts_sent(&crm).len() == 1).await;

    push_listing(&poller);
    let created = create(&handle, listing_spec()).await;
    assert_eq!(created.state, JobState::Validating, "no file to wait for");
    eventually("the dry run to finish", 10_000, || {
        job(&handle).state == JobState::Ready
    })
    .await;
    let dry = job(&handle).dry_run;
    assert_eq!(
        (
            dry.counts.rows,
            dry.counts.payments,
            dry.counts.known,
            dry.counts.rejected,
            dry.counts.skipped
        ),
        (5, 3, 1, 1, 1)
    );
    assert_eq!(dry.counts.skip_reasons.get(OUTSIDE_WINDOW), Some(&1));
    assert_eq!(dry.calls_needed, 1, "g2 and g4 in one call");
    assert_eq!(gifts_sent(&crm).len(), 1, "the dry run queued nothing");
    let rejects = handle.backfill_rejects("bf_1", 0, 100).unwrap();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].row, 3, "the third record listed");
    assert!(rejects[0].reason.contains("bad"), "{}", rejects[0].reason);
    assert_eq!(
        cursors(&poller),
        vec![(FROM_MS, None), (FROM_MS, Some("c1".to_string()))],
        "every page asked from the window's start, the second at the first's cursor"
    );

    push_listing(&poller);
    handle
        .backfill_command("bf_1", BackfillAction::Start)
        .await
        .unwrap();
    eventually("the run to finish", 10_000, || {
        job(&handle).state == JobState::Done
    })
    .await;
    let mut sent = gifts_sent(&crm);
    sent.sort();
    assert_eq!(sent, vec!["g1", "g2", "g4"], "each gift once; g3 left out");
    let done = job(&handle);
    assert_eq!(done.progress.queued, 2);
    assert_eq!(done.progress.submitted, 2);
    assert_eq!(done.progress.counts.known, 1);
    assert_eq!(poller.requests().len(), 4, "two pages a pass");
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn a_listing_spends_the_sources_own_daily_quota_and_leaves_the_live_poller_its_share() {
    // Goal: a listing's pages count against the source's daily quota like the poller's own calls, and a listing stops at 80 % of it: with 5 calls a day the fifth page is not asked (the day's count shows 4, one left for the live poller); the job stays validating at its cursor.
    let Fixture {
        runtime,
        crm: _crm,
        poller,
        handle,
        _store,
    } = Fixture::start(SourceLimits {
        daily: Some(5),
        ..SourceLimits::default()
    })
    .await;
    for n in 1..=5 {
        let next = format!("c{n}");
        poller.push(page(
            vec![gift(&format!("g{n}"), 1_000)],
            Some(next.as_str()),
        ));
    }
    poller.push(page(vec![gift("g6", 1_000)], None));
    create(&handle, listing_spec()).await;
    eventually("four pages read", 5_000, || {
        job(&handle).dry_run.cursor.offset == 4
    })
    .await;
    // Deliberate: a fifth call would come within milliseconds if the share were not kept.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(poller.requests().len(), 4, "no call past 80 % of the quota");
    assert_eq!(
        handle.pollers().unwrap()[0].state.quota_calls,
        4,
        "the listing's calls are the source's day's calls"
    );
    let waiting = job(&handle);
    assert_eq!(waiting.state, JobState::Validating);
    assert_eq!(waiting.dry_run.cursor.page.as_deref(), Some("c4"));
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn a_failed_page_is_read_again_and_refused_credentials_pause_the_run_until_resumed() {
    // Goal: a failed page read is retried at the same cursor; a source that refuses the credentials during the run pauses the job with the reason; resumed, the run reads on from its stored cursor and completes with each gift once.
    let Fixture {
        runtime,
        crm,
        poller,
        handle,
        _store,
    } = Fixture::start(SourceLimits::default()).await;
    poller.push(Answer::Fetch(PollFetch::Failed {
        message: "503 from the source".into(),
        calls: 1,
    }));
    push_listing(&poller);
    create(&handle, listing_spec()).await;
    eventually("the dry run to finish", 10_000, || {
        job(&handle).state == JobState::Ready
    })
    .await;
    assert_eq!(
        cursors(&poller)[..2],
        [(FROM_MS, None), (FROM_MS, None)],
        "the failed first page asked again"
    );

    poller.push(first_page());
    poller.push(Answer::Fetch(PollFetch::AuthRefused {
        message: "401 invalid_token".into(),
    }));
    handle
        .backfill_command("bf_1", BackfillAction::Start)
        .await
        .unwrap();
    eventually("the run paused by the refusal", 10_000, || {
        job(&handle).state == JobState::Paused
    })
    .await;
    let paused = job(&handle);
    let error = paused.error.clone().unwrap_or_default();
    assert!(error.contains("credentials"), "{error}");
    assert_eq!(paused.cursor.page.as_deref(), Some("c1"));

    poller.push(second_page());
    handle
        .backfill_command("bf_1", BackfillAction::Resume)
        .await
        .unwrap();
    eventually("the run to finish", 10_000, || {
        job(&handle).state == JobState::Done
    })
    .await;
    let requests = cursors(&poller);
    assert_eq!(
        requests.last(),
        Some(&(FROM_MS, Some("c1".to_string()))),
        "resumed at the stored cursor: {requests:?}"
    );
    let mut sent = gifts_sent(&crm);
    sent.sort();
    assert_eq!(sent, vec!["g1", "g2", "g4"]);
    runtime.shutdown().await;
}

#[actix_rt::test]
async fn a_listing_job_without_a_poller_for_its_source_fails_with_the_reason() {
    // Goal: a listing job for a source the tenant does not poll fails its dry run with a reason naming the source, and asks nothing.
    let Fixture {
        runtime,
        crm: _crm,
        poller,
        handle,
        _store,
    } = Fixture::start(SourceLimits::default()).await;
    let mut spec = listing_spec();
    spec.source = "mailchimp".into();
    create(&handle, spec).await;
    eventually("the job to fail", 5_000, || {
        job(&handle).state == JobState::Failed
    })
    .await;
    let error = job(&handle).error.unwrap_or_default();
    assert!(
        error.contains("no poller for source `mailchimp`"),
        "{error}"
    );
    assert!(poller.requests().is_empty());
    runtime.shutdown().await;
}
