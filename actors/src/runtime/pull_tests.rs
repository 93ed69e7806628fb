//! Pull's change log and delivery loops over the real sled store, with scripted
//! destinations (the adapters are tested against real receivers, Postgres and files in the
//! `steward` crate).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::tests::{fast_settings, start_test_tenant, test_store, TestStore};
use super::*;
use crate::gift_match::SourceNames;
use crate::messages::DeliveryReport;
use crate::ports::{Destination, DestinationSpec, LocalFuture};
use crate::pull::{ChangeKind, ChangeOp, DeliveryAnswer, DestinationAction, StoredChange};
use crate::settings::PullSettings;
use crate::store::TenantRunState;
use crate::test_support::eventually;
use crate::virtuous_event::{VirtuousChange, VirtuousDelivery};

/// What a scripted destination does with one `deliver` call.
enum Behaviour {
    Accept,
    /// A transient failure: nothing of the batch committed.
    Fail(&'static str),
    /// Refuses the change with this Virtuous id for good; commits the others.
    Reject(&'static str),
    /// Never answers.
    Hang,
}

/// Records what it is handed; answers from a script (accept once it runs out). A buffering
/// one commits only on `settle` once `commit_on_settle` is set.
#[derive(Default)]
struct ScriptedDestination {
    script: Mutex<VecDeque<Behaviour>>,
    received: Mutex<Vec<StoredChange>>,
    buffering: bool,
    buffered_through: Mutex<Option<u64>>,
    commit_on_settle: std::sync::atomic::AtomicBool,
    resets: AtomicU64,
}

impl ScriptedDestination {
    fn buffering() -> ScriptedDestination {
        ScriptedDestination {
            buffering: true,
            ..ScriptedDestination::default()
        }
    }
    fn push(&self, behaviour: Behaviour) {
        self.script.lock().unwrap().push_back(behaviour);
    }
    fn received(&self) -> Vec<(String, u64)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|change| (change.id.clone(), change.version_ms))
            .collect()
    }
}

impl Destination for ScriptedDestination {
    fn deliver(&self, items: Vec<StoredChange>) -> LocalFuture<DeliveryAnswer> {
        let behaviour = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Behaviour::Accept);
        let last = items.last().map(|change| change.seq);
        let answer = match behaviour {
            Behaviour::Hang => return Box::pin(std::future::pending()),
            Behaviour::Fail(message) => DeliveryAnswer::retry(message),
            Behaviour::Reject(id) => {
                self.received.lock().unwrap().extend(items.clone());
                DeliveryAnswer {
                    committed_through: last,
                    rejected: items
                        .iter()
                        .filter(|change| change.id == id)
                        .map(|change| (change.seq, "refused".to_string()))
                        .collect(),
                    retry: None,
                }
            }
            Behaviour::Accept => {
                self.received.lock().unwrap().extend(items);
                if self.buffering {
                    *self.buffered_through.lock().unwrap() = last;
                    DeliveryAnswer::default()
                } else {
                    DeliveryAnswer {
                        committed_through: last,
                        ..DeliveryAnswer::default()
                    }
                }
            }
        };
        Box::pin(async move { answer })
    }

    fn settle(&self, _now_ms: u64) -> LocalFuture<DeliveryAnswer> {
        let committed = if self.commit_on_settle.load(Ordering::SeqCst) {
            self.buffered_through.lock().unwrap().take()
        } else {
            None
        };
        Box::pin(async move {
            DeliveryAnswer {
                committed_through: committed,
                ..DeliveryAnswer::default()
            }
        })
    }

    fn reset(&self) -> LocalFuture<()> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        *self.buffered_through.lock().unwrap() = None;
        Box::pin(async {})
    }
}

fn pull_settings() -> TenantSettings {
    let mut settings = fast_settings();
    settings.submit.retry_schedule_ms = vec![30, 30, 30, 30];
    settings.pull = PullSettings {
        enabled: true,
        events: vec![ChangeKind::Gift, ChangeKind::Contact, ChangeKind::Project],
        poll_interval_ms: 0,
        own_sources: vec!["Stripe".to_string()],
        ..PullSettings::default()
    };
    settings
}

fn change(kind: ChangeKind, op: ChangeOp, id: &str, version_ms: u64) -> VirtuousChange {
    VirtuousChange {
        kind,
        op,
        id: id.to_string(),
        modified_at: None,
        modified_ms: Some(version_ms),
        record_json: format!(r#"{{"id":"{id}","v":{version_ms}}}"#),
        origin_sources: Vec::new(),
        complete: true,
    }
}

fn gift(id: &str, version_ms: u64) -> VirtuousChange {
    change(ChangeKind::Gift, ChangeOp::Upsert, id, version_ms)
}

async fn deliver(handle: &TenantHandle, changes: Vec<VirtuousChange>) -> DeliveryReport {
    handle
        .deliver_virtuous(
            VirtuousDelivery {
                event: "GiftUpdate".to_string(),
                events: Vec::new(),
                changes,
            },
            SourceNames::default(),
        )
        .await
        .expect("delivered")
}

fn spec(name: &str, destination: &Arc<ScriptedDestination>) -> DestinationSpec {
    DestinationSpec {
        name: name.to_string(),
        kind: "webhook".to_string(),
        batch_max: 50,
        destination: Arc::clone(destination) as Arc<dyn Destination>,
    }
}

async fn started(
    runtime: &Runtime,
    store: &TestStore,
    destinations: Vec<DestinationSpec>,
) -> TenantHandle {
    let handle = start_test_tenant(
        runtime,
        store,
        "pull",
        pull_settings(),
        TenantRunState::Running,
    );
    eventually("children started", 5_000, || handle.children_started()).await;
    handle.replace_destinations(destinations);
    handle
}

fn snapshot(handle: &TenantHandle, name: &str) -> DestinationSnapshot {
    handle
        .destinations()
        .unwrap()
        .into_iter()
        .find(|destination| destination.name == name)
        .unwrap()
}

fn caught_up(handle: &TenantHandle, name: &str) -> bool {
    let destination = snapshot(handle, name);
    destination.head > 0 && destination.checkpoint == destination.head
}

#[actix_rt::test]
async fn webhook_changes_reach_the_destination_and_an_older_version_never_follows_a_newer_one() {
    // Goal: changes are logged in order; the stale-update guard drops an older and a repeated version; a version superseded before delivery is skipped; own writes are not delivered (include_own off); the checkpoint reaches the head.
    let store = test_store();
    let runtime = Runtime::new(1);
    let destination = Arc::new(ScriptedDestination::default());
    let handle = started(&runtime, &store, vec![spec("partner", &destination)]).await;
    let mut own = gift("g-own", 500);
    own.origin_sources = vec!["stripe".to_string()];
    let report = deliver(
        &handle,
        vec![
            gift("g1", 100),
            change(ChangeKind::Contact, ChangeOp::Upsert, "c1", 100),
            gift("g1", 200),
            own,
            // Not pulled: ignored.
            change(ChangeKind::Event, ChangeOp::Upsert, "e1", 100),
        ],
    )
    .await;
    assert_eq!((report.pull.logged, report.pull.stale), (4, 0));
    let report = deliver(&handle, vec![gift("g1", 150), gift("g1", 200)]).await;
    assert_eq!(
        (
            report.pull.logged,
            report.pull.stale,
            report.pull.duplicates
        ),
        (0, 1, 1)
    );
    eventually("the destination to catch up", 5_000, || {
        caught_up(&handle, "partner")
    })
    .await;
    let received = destination.received();
    assert!(
        !received.contains(&("g-own".to_string(), 500)),
        "{received:?}"
    );
    assert!(!received.contains(&("g1".to_string(), 150)), "{received:?}");
    let g1: Vec<u64> = received
        .iter()
        .filter(|(id, _)| id == "g1")
        .map(|(_, version)| *version)
        .collect();
    assert_eq!(g1, vec![200], "superseded before delivery: only the newest");
    assert!(received.contains(&("c1".to_string(), 100)));
    let shown = snapshot(&handle, "partner");
    assert_eq!((shown.counts.delivered, shown.counts.own_skipped), (2, 1));
    assert_eq!(shown.counts.superseded, 1);
    assert_eq!(shown.lag_seconds, 0.0);
}

#[actix_rt::test]
async fn a_buffering_destination_moves_the_checkpoint_only_when_it_commits_and_a_new_generation_delivers_again(
) {
    // Goal: delivered-but-uncommitted changes keep the checkpoint; after an Inbound restart the destination is reset and gets them again; a commit moves the checkpoint to the head.
    let store = test_store();
    let runtime = Runtime::new(1);
    let destination = Arc::new(ScriptedDestination::buffering());
    let handle = started(&runtime, &store, vec![spec("files", &destination)]).await;
    deliver(&handle, vec![gift("g1", 100), gift("g2", 100)]).await;
    eventually("the changes handed over", 5_000, || {
        destination.received().len() == 2
    })
    .await;
    assert_eq!(snapshot(&handle, "files").checkpoint, 0);
    let resets = destination.resets.load(Ordering::SeqCst);
    handle.kill_child(ActorKind::Inbound, KillMode::Error);
    eventually("the new generation to hand them over again", 5_000, || {
        destination.received().len() == 4 && destination.resets.load(Ordering::SeqCst) > resets
    })
    .await;
    assert_eq!(snapshot(&handle, "files").checkpoint, 0);
    destination.commit_on_settle.store(true, Ordering::SeqCst);
    eventually("the commit to move the checkpoint", 5_000, || {
        caught_up(&handle, "files")
    })
    .await;
}

#[actix_rt::test]
async fn failures_are_retried_on_the_schedule_raise_an_alert_and_resolve_it_refusals_become_replayable_dead_letters(
) {
    // Goal: three failures in a row raise destination_failing, the success after resolves it, nothing is lost; a refused change is a dead letter that a replay delivers again.
    let store = test_store();
    let runtime = Runtime::new(1);
    let destination = Arc::new(ScriptedDestination::default());
    for _ in 0..3 {
        destination.push(Behaviour::Fail("partner down"));
    }
    let handle = started(&runtime, &store, vec![spec("partner", &destination)]).await;
    deliver(&handle, vec![gift("g1", 100)]).await;
    eventually("the retries to deliver", 5_000, || {
        caught_up(&handle, "partner")
    })
    .await;
    let shown = snapshot(&handle, "partner");
    assert_eq!(
        (shown.counts.failures, shown.counts.consecutive_failures),
        (3, 0)
    );
    assert_eq!(shown.counts.last_error.as_deref(), Some("partner down"));
    let tenant_store = store.store.tenant("pull").unwrap();
    let alert = tenant_store
        .alert_views()
        .unwrap()
        .into_iter()
        .find(|view| view.alert.code == crate::inbound::DESTINATION_FAILING_ALERT)
        .expect("alert raised");
    assert!(
        alert.state.resolved_at_ms.is_some(),
        "resolved after the success"
    );

    destination.push(Behaviour::Reject("g2"));
    deliver(&handle, vec![gift("g2", 100), gift("g3", 100)]).await;
    eventually("the batch to settle", 5_000, || {
        caught_up(&handle, "partner")
    })
    .await;
    let letters = handle
        .destination_dead_letters(Some("partner"), None, 10)
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].change.id, "g2");
    let before = destination.received().len();
    assert!(handle
        .settle_destination_dead_letter("partner", letters[0].change.seq, true)
        .await
        .unwrap());
    eventually("the replayed change delivered", 5_000, || {
        destination.received().len() == before + 1
    })
    .await;
    assert_eq!(destination.received().last().unwrap().0, "g2");
    assert!(handle
        .destination_dead_letters(Some("partner"), None, 10)
        .unwrap()
        .is_empty());
}

#[actix_rt::test]
async fn a_hanging_destination_blocks_neither_the_webhook_nor_another_destination() {
    // Goal: one destination never answers; deliveries are still logged and answered, the other destination catches up, and the hanging one shows its lag.
    let store = test_store();
    let runtime = Runtime::new(1);
    let stuck = Arc::new(ScriptedDestination::default());
    stuck.push(Behaviour::Hang);
    let healthy = Arc::new(ScriptedDestination::default());
    let handle = started(
        &runtime,
        &store,
        vec![spec("stuck", &stuck), spec("healthy", &healthy)],
    )
    .await;
    for n in 0..5 {
        deliver(&handle, vec![gift(&format!("g{n}"), 100)]).await;
    }
    eventually("the healthy destination to catch up", 5_000, || {
        caught_up(&handle, "healthy")
    })
    .await;
    assert_eq!(healthy.received().len(), 5);
    let stuck_view = snapshot(&handle, "stuck");
    assert_eq!((stuck_view.checkpoint, stuck_view.pending), (0, 5));
    eventually("the stuck destination's lag to show", 5_000, || {
        snapshot(&handle, "stuck").lag_seconds > 0.0
    })
    .await;
}

#[actix_rt::test]
async fn pause_holds_a_destination_and_replay_delivers_again_from_a_time() {
    // Goal: a paused destination receives nothing until resumed; a replay never moves the checkpoint forward; a replay from a time starts at the first change received then; from the start, every newest version comes again.
    let store = test_store();
    let runtime = Runtime::new(1);
    let destination = Arc::new(ScriptedDestination::default());
    let handle = started(&runtime, &store, vec![spec("partner", &destination)]).await;
    handle
        .destination_command("partner", DestinationAction::Pause)
        .await
        .unwrap();
    deliver(&handle, vec![gift("g1", 100), gift("g2", 100)]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(destination.received().is_empty(), "paused");
    assert_eq!(snapshot(&handle, "partner").state, "paused");
    // A replay from after the checkpoint changes nothing: no pending change is skipped.
    handle
        .destination_command(
            "partner",
            DestinationAction::Replay {
                from_ms: u64::MAX / 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(snapshot(&handle, "partner").checkpoint, 0);
    handle
        .destination_command("partner", DestinationAction::Resume)
        .await
        .unwrap();
    eventually("delivery after resume", 5_000, || {
        caught_up(&handle, "partner")
    })
    .await;
    assert_eq!(destination.received().len(), 2);
    // A replay from a time between two deliveries starts at the later one.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between_ms = crate::ports::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    deliver(&handle, vec![gift("g3", 100)]).await;
    eventually("g3 delivered", 5_000, || destination.received().len() == 3).await;
    handle
        .destination_command("partner", DestinationAction::Pause)
        .await
        .unwrap();
    handle
        .destination_command(
            "partner",
            DestinationAction::Replay {
                from_ms: between_ms,
            },
        )
        .await
        .unwrap();
    assert_eq!(snapshot(&handle, "partner").checkpoint, 2, "just before g3");
    handle
        .destination_command("partner", DestinationAction::Resume)
        .await
        .unwrap();
    eventually("g3 delivered again", 5_000, || {
        destination.received().len() == 4
    })
    .await;
    assert_eq!(destination.received()[3].0, "g3");
    handle
        .destination_command("partner", DestinationAction::Replay { from_ms: 0 })
        .await
        .unwrap();
    eventually("the replay delivered", 5_000, || {
        destination.received().len() == 7
    })
    .await;
    eventually("caught up again", 5_000, || caught_up(&handle, "partner")).await;
    assert!(matches!(
        handle
            .destination_command("nope", DestinationAction::Pause)
            .await,
        Err(DestinationCommandError::Unknown(_))
    ));
}

#[actix_rt::test]
async fn an_incomplete_webhook_waits_for_its_re_read_and_a_failed_re_read_keeps_it_waiting() {
    // Goal: a gift lacking fields goes on the re-read list (not into the log); Virtuous answering 500 to the re-read keeps it listed with the error shown (the sandbox tests cover the successful re-read).
    let store = test_store();
    let runtime = Runtime::new(1);
    let handle = started(&runtime, &store, Vec::new()).await;
    let mut thin = gift("g1", 100);
    thin.complete = false;
    let report = deliver(&handle, vec![thin]).await;
    assert_eq!((report.pull.logged, report.pull.rereads), (0, 1));
    eventually("the failed re-read to show", 5_000, || {
        super::tests::actor(&handle, ActorKind::Inbound).observed["pull"]["last_reread_error"]
            .as_str()
            .is_some_and(|error| error.contains("500"))
    })
    .await;
    let tenant_store = store.store.tenant("pull").unwrap();
    assert_eq!(tenant_store.rereads(10).unwrap().len(), 1);
    assert_eq!(tenant_store.change_log_head().unwrap(), 0);
}
