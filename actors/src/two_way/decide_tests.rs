//! The decision, one scenario per defence layer and per rule; and a property: whatever two
//! sides do, once every write lands and conflicts are settled, both sides agree.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::decide::{complete_write, decide, resolve, seed, Verdict};
use super::fields::Fields;
use super::{EchoLayer, Incoming, Link, Mode, PairKind, PairSettings, Rule, Side, SyncState};

fn pair(mode: Mode, rules: &[(&str, Rule)]) -> PairSettings {
    PairSettings {
        pair: "platform:crm".into(),
        kind: PairKind::Platform("crm".into()),
        mode,
        echo_window_ms: 120_000,
        rules: rules
            .iter()
            .map(|(field, rule)| (field.to_string(), *rule))
            .collect(),
        source: "crm".into(),
        reference_source: "CRM".into(),
    }
}

fn fields(pairs: &[(&str, Value)]) -> Fields {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

fn change(side: Side, version_ms: u64, pairs: &[(&str, Value)]) -> Incoming {
    Incoming {
        side,
        fields: fields(pairs),
        version_ms,
        ours: false,
    }
}

/// A link in sync on first name and email.
fn synced_link() -> Link {
    let mut link = Link::new("platform:crm", "p1");
    link.virtuous_id = Some("7".into());
    let both = fields(&[
        ("first_name", json!("Ann")),
        ("last_name", Value::Null),
        ("email", json!("ann@x.org")),
    ]);
    seed(&mut link, Side::Partner, &both, 1);
    seed(&mut link, Side::Virtuous, &both, 1);
    link
}

#[test]
fn a_partner_edit_goes_to_virtuous_and_its_echo_is_dropped_by_the_ledger() {
    // Goal: the write is ordered once; the exact echo (no origin mark) is layer 2's.
    let settings = pair(Mode::On, &[]);
    let mut link = synced_link();
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("first_name", json!("Anne"))]),
        1_000,
    );
    assert_eq!(
        decision.to_virtuous,
        fields(&[("first_name", json!("Anne"))])
    );
    assert!(decision.to_partner.is_empty());
    assert_eq!(link.state, SyncState::VirtuousPending);
    complete_write(&mut link, Side::Virtuous, &decision.to_virtuous, 1_100);
    assert_eq!(link.state, SyncState::InSync);
    let echo = change(
        Side::Virtuous,
        20,
        &[("first_name", json!("Anne")), ("email", json!("ann@x.org"))],
    );
    let decision = decide(&mut link, &settings, &echo, 500_000);
    assert_eq!(decision.verdict, Some(Verdict::Echo(EchoLayer::Ledger)));
    assert!(decision.to_partner.is_empty());
}

#[test]
fn only_the_origin_layer_catches_an_echo_of_an_earlier_write() {
    // Goal: two writes in a row; the first one's echo differs from the ledger (which holds
    // the second) — only the origin mark recognises it.
    let settings = pair(Mode::On, &[]);
    let mut link = synced_link();
    decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("first_name", json!("Anne"))]),
        1_000,
    );
    decide(
        &mut link,
        &settings,
        &change(Side::Partner, 11, &[("first_name", json!("Annie"))]),
        1_001,
    );
    let mut first_echo = change(Side::Virtuous, 20, &[("first_name", json!("Anne"))]);
    let without_origin = decide(&mut link.clone(), &settings, &first_echo, 1_002);
    assert_eq!(
        without_origin.verdict,
        Some(Verdict::Applied),
        "not an echo by ledger or window"
    );
    first_echo.ours = true;
    let decision = decide(&mut link, &settings, &first_echo, 1_002);
    assert_eq!(decision.verdict, Some(Verdict::Echo(EchoLayer::Origin)));
    assert!(decision.to_partner.is_empty());
}

#[test]
fn only_the_window_catches_a_reformatted_echo_and_only_inside_the_window() {
    // Goal: a partner that lower-cases emails sends back what we wrote, reformatted.
    let settings = pair(Mode::On, &[]);
    let mut link = synced_link();
    decide(
        &mut link,
        &settings,
        &change(Side::Virtuous, 10, &[("email", json!("Ann.Lee@X.org"))]),
        1_000,
    );
    assert_eq!(link.pending(Side::Partner)["email"], json!("Ann.Lee@X.org"));
    let reformatted = change(Side::Partner, 20, &[("email", json!("ann.lee@x.org"))]);
    let late = decide(&mut link.clone(), &settings, &reformatted, 1_000 + 121_000);
    assert_ne!(late.verdict, Some(Verdict::Echo(EchoLayer::Window)));
    let decision = decide(&mut link, &settings, &reformatted, 5_000);
    assert_eq!(decision.verdict, Some(Verdict::Echo(EchoLayer::Window)));
    // The window never drops a different value.
    let mut link = synced_link();
    decide(
        &mut link,
        &settings,
        &change(Side::Virtuous, 10, &[("email", json!("ann.lee@x.org"))]),
        1_000,
    );
    let different = change(Side::Partner, 20, &[("email", json!("ann.li@x.org"))]);
    let decision = decide(&mut link, &settings, &different, 2_000);
    assert_eq!(decision.verdict, Some(Verdict::Applied));
}

#[test]
fn only_ownership_keeps_a_field_the_other_side_owns() {
    // Goal: Virtuous owns email; a partner edit is set aside and put back.
    let settings = pair(Mode::On, &[("email", Rule::VirtuousWins)]);
    let mut link = synced_link();
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("email", json!("new@x.org"))]),
        1_000,
    );
    assert_eq!(decision.ownership_drops, 1);
    assert!(decision.to_virtuous.is_empty());
    assert_eq!(
        decision.to_partner,
        fields(&[("email", json!("ann@x.org"))])
    );
    // The owner's edit goes across.
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Virtuous, 11, &[("email", json!("v@x.org"))]),
        1_001,
    );
    assert_eq!(decision.to_partner, fields(&[("email", json!("v@x.org"))]));
}

#[test]
fn only_a_conflict_catches_both_sides_editing_a_shared_field() {
    // Goal: a partner edit on its way to Virtuous and a staff edit of the same field → a
    // conflict with both values; nothing is written for the field; resolving writes it.
    let settings = pair(Mode::On, &[]);
    let mut link = synced_link();
    decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("first_name", json!("Anne"))]),
        1_000,
    );
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Virtuous, 11, &[("first_name", json!("Annabel"))]),
        1_500,
    );
    assert_eq!(decision.conflicts.len(), 1);
    assert_eq!(decision.conflicts[0].partner, json!("Anne"));
    assert_eq!(decision.conflicts[0].virtuous, json!("Annabel"));
    assert!(
        link.pending(Side::Virtuous).is_empty(),
        "the partner value no longer goes across"
    );
    assert_eq!(link.state, SyncState::Conflict);
    let decision = resolve(&mut link, "first_name", &json!("Annabel"), 2_000);
    assert_eq!(
        decision.to_partner,
        fields(&[("first_name", json!("Annabel"))])
    );
    assert!(decision.to_virtuous.is_empty());
    complete_write(&mut link, Side::Partner, &decision.to_partner, 2_100);
    assert_eq!(link.state, SyncState::InSync);
    assert_eq!(link.synced["first_name"], json!("Annabel"));
}

#[test]
fn prefer_partner_unless_blank_fills_a_blank_partner_from_virtuous() {
    // Goal: a blank partner value loses to Virtuous's; a partner value wins otherwise.
    let settings = pair(Mode::On, &[("first_name", Rule::PreferPartnerUnlessBlank)]);
    let mut link = synced_link();
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("first_name", json!(""))]),
        1_000,
    );
    assert_eq!(decision.to_partner, fields(&[("first_name", json!("Ann"))]));
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Virtuous, 11, &[("first_name", json!("Annie"))]),
        1_001,
    );
    assert_eq!(decision.ownership_drops, 1);
    assert!(decision.to_partner.is_empty());
}

#[test]
fn observing_writes_nothing_and_reports_what_it_would_do() {
    // Goal: observe mode leaves nothing pending and no ledger, but says what would go.
    let settings = pair(Mode::Observe, &[]);
    let mut link = synced_link();
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("first_name", json!("Anne"))]),
        1_000,
    );
    assert_eq!(decision.to_virtuous.len(), 1);
    assert!(link.pending(Side::Virtuous).is_empty());
    assert!(link.virtuous_ledger.is_none());
    assert_eq!(link.state, SyncState::VirtuousPending);
}

#[test]
fn a_stale_change_changes_nothing() {
    // Goal: an older version after a newer one is dropped whole.
    let settings = pair(Mode::On, &[]);
    let mut link = synced_link();
    decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("first_name", json!("Anne"))]),
        1_000,
    );
    let before = link.clone();
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Partner, 5, &[("first_name", json!("Old"))]),
        1_001,
    );
    assert_eq!(decision.verdict, Some(Verdict::Stale));
    assert_eq!(link, before);
}

#[test]
fn an_edit_our_put_overwrote_is_a_conflict_not_a_loss() {
    // Goal: a staff edit dated between the version our PUT read and the one it made was
    // replaced by our write: it opens a conflict with both values instead of going across.
    let settings = pair(Mode::On, &[]);
    let mut link = synced_link();
    let decision = decide(
        &mut link,
        &settings,
        &change(Side::Partner, 10, &[("first_name", json!("Anne"))]),
        1_000,
    );
    complete_write(&mut link, Side::Virtuous, &decision.to_virtuous, 1_100);
    link.virtuous_overwrite = Some(super::Overwrite {
        read_ms: 100,
        written_ms: 200,
        fields: fields(&[("first_name", json!("Anne"))]),
    });
    let staff = change(Side::Virtuous, 150, &[("first_name", json!("Stacy"))]);
    let decision = decide(&mut link, &settings, &staff, 1_200);
    assert!(
        decision.to_partner.is_empty(),
        "the overwritten value does not go across"
    );
    assert_eq!(decision.conflicts.len(), 1);
    assert_eq!(decision.conflicts[0].partner, json!("Anne"));
    assert_eq!(decision.conflicts[0].virtuous, json!("Stacy"));
    assert_eq!(
        link.values(Side::Virtuous)["first_name"],
        json!("Anne"),
        "Virtuous holds ours"
    );
    // An edit after our write is an ordinary change.
    let mut link = synced_link();
    link.virtuous_overwrite = Some(super::Overwrite {
        read_ms: 100,
        written_ms: 200,
        fields: fields(&[("first_name", json!("Ann"))]),
    });
    let later = change(Side::Virtuous, 250, &[("first_name", json!("Later"))]);
    let decision = decide(&mut link, &settings, &later, 1_300);
    assert_eq!(
        decision.to_partner,
        fields(&[("first_name", json!("Later"))])
    );
}

#[derive(Debug, Clone)]
enum Step {
    Edit(Side, usize, usize),
    LandPartner,
    LandVirtuous,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<bool>(), 0..3usize, 0..4usize).prop_map(|(partner, field, value)| Step::Edit(
            if partner {
                Side::Partner
            } else {
                Side::Virtuous
            },
            field,
            value
        )),
        Just(Step::LandPartner),
        Just(Step::LandVirtuous),
    ]
}

const NAMES: [&str; 3] = ["first_name", "last_name", "email"];
const RULES: [Rule; 3] = [Rule::NewestWins, Rule::PartnerWins, Rule::VirtuousWins];

/// Lands a side's pending write: the side holds it and its echo comes back.
fn land(
    link: &mut Link,
    settings: &PairSettings,
    side: Side,
    world: &mut BTreeMap<(Side, String), Value>,
    version: &mut u64,
    now: u64,
) -> u64 {
    let written = link.pending(side).clone();
    if written.is_empty() {
        return 0;
    }
    for (name, value) in &written {
        world.insert((side, name.clone()), value.clone());
    }
    complete_write(link, side, &written, now);
    *version += 1;
    let echo = Incoming {
        side,
        fields: NAMES
            .iter()
            .map(|name| (name.to_string(), world[&(side, name.to_string())].clone()))
            .collect(),
        version_ms: *version,
        ours: side == Side::Virtuous,
    };
    decide(link, settings, &echo, now);
    1
}

proptest! {
    #[test]
    fn any_edits_converge_once_writes_land_and_conflicts_are_settled(steps in prop::collection::vec(step(), 1..40)) {
        // Goal: whatever the order of edits and landings, after the writes land and each
        // conflict is resolved (taking Virtuous), both sides hold equal values, no write is
        // left pending, and the writes made number at most one per edit plus one per
        // resolution.
        let settings = pair(Mode::On, &[("last_name", RULES[1]), ("email", RULES[2])]);
        let mut link = synced_link();
        let mut world: BTreeMap<(Side, String), Value> = BTreeMap::new();
        for side in [Side::Partner, Side::Virtuous] {
            for name in NAMES {
                let value = link.values(side).get(name).cloned().unwrap_or(Value::Null);
                world.insert((side, name.to_string()), value);
            }
        }
        let mut version = 100;
        let (mut edits, mut writes, mut resolutions) = (0u64, 0u64, 0u64);
        for (now, step) in (1_000u64..).step_by(1_000).zip(steps) {
            match step {
                Step::Edit(side, field, value) => {
                    let name = NAMES[field];
                    let new_value = json!(format!("{name}-{value}"));
                    world.insert((side, name.to_string()), new_value.clone());
                    version += 1;
                    edits += 1;
                    decide(&mut link, &settings, &Incoming { side, fields: [(name.to_string(), new_value)].into_iter().collect(), version_ms: version, ours: false }, now);
                }
                Step::LandPartner => writes += land(&mut link, &settings, Side::Partner, &mut world, &mut version, now),
                Step::LandVirtuous => writes += land(&mut link, &settings, Side::Virtuous, &mut world, &mut version, now),
            }
        }
        let mut now = 10_000_000;
        for _ in 0..6 {
            for field in link.conflicts.clone() {
                let value = world[&(Side::Virtuous, field.clone())].clone();
                resolve(&mut link, &field, &value, now);
                resolutions += 1;
            }
            writes += land(&mut link, &settings, Side::Partner, &mut world, &mut version, now);
            writes += land(&mut link, &settings, Side::Virtuous, &mut world, &mut version, now);
            now += 1_000;
        }
        prop_assert!(link.conflicts.is_empty());
        prop_assert!(link.pending(Side::Partner).is_empty() && link.pending(Side::Virtuous).is_empty());
        for name in NAMES {
            prop_assert_eq!(&world[&(Side::Partner, name.to_string())], &world[&(Side::Virtuous, name.to_string())], "field {}", name);
        }
        prop_assert!(writes <= 2 * (edits + resolutions), "writes {} edits {} resolutions {}", writes, edits, resolutions);
        prop_assert_eq!(link.state, SyncState::InSync);
    }
}
