//! A pair's cross-match job, advanced one step per pair-loop round (docs/two-way.md
//! "Cross-match"): page the partner's contacts, then Virtuous's (`FullContact`, every call
//! drawn from the budget's reconcile lane), each page stored with the job's progress in one
//! batch so a restart resumes where it was; then match (`two_way::cross_match`) and keep the
//! report. Nothing is written until an operator approves it; approval is applied in chunks,
//! each chunk's links stored with the job's position in one batch, so each record is handled
//! once.

use crate::hub::TenantShared;
use crate::ports::{PartnerAnswer, PartnerSpec};
use crate::store::two_way_ops::TwoWayUpdate;
use crate::store::{Lane, StoreError};
use crate::two_way::cross_match::{
    cross_match, summarise, CrossMatchJob, Group, JobState, MatchedPolicy, OneSidePolicy,
    PartnerRow, Policies, ReportRow, VirtuousRow,
};
use crate::two_way::decide::seed;
use crate::two_way::fields::{from_virtuous, virtuous_references};
use crate::two_way::{Incoming, Link, PairSettings, Side};

/// Report rows applied per step.
const APPLY_CHUNK: u64 = 200;
/// Example rows kept per group in the job.
const EXAMPLES: usize = 5;

/// One step of the pair's job, if one runs; true when it should go on at once.
pub(super) async fn step(
    shared: &TenantShared,
    pair: &PairSettings,
    partner: &PartnerSpec,
) -> Result<bool, StoreError> {
    let store = shared.tenant_store();
    let Some(mut job) = store.cross_match_job::<CrossMatchJob>(&pair.pair)? else {
        return Ok(false);
    };
    let now_ms = shared.clock.now_ms();
    match job.state {
        JobState::PagingPartner => {
            let answer = partner.writer.list(job.partner_cursor.clone()).await;
            let page = match answer {
                PartnerAnswer::Done(page) => page,
                PartnerAnswer::Retry { reason, .. } => {
                    job.error = Some(format!("listing the partner: {reason} (retrying)"));
                    store.save_cross_match(&pair.pair, &job, &[], &[], &[])?;
                    return Ok(false);
                }
                PartnerAnswer::Refused { reason } => {
                    job.state = JobState::Failed;
                    job.error = Some(format!("listing the partner: {reason}"));
                    store.save_cross_match(&pair.pair, &job, &[], &[], &[])?;
                    return Ok(false);
                }
            };
            let rows: Vec<PartnerRow> = page
                .contacts
                .into_iter()
                .map(|contact| PartnerRow {
                    id: contact.id,
                    fields: contact.fields,
                })
                .collect();
            job.partner_rows += rows.len() as u64;
            job.partner_cursor = page.next_cursor;
            if job.partner_cursor.is_none() {
                job.state = JobState::PagingVirtuous;
            }
            job.error = None;
            job.updated_at_ms = now_ms;
            store.save_cross_match(&pair.pair, &job, &rows, &[], &[])?;
            Ok(true)
        }
        JobState::PagingVirtuous => page_virtuous(shared, pair, job).await,
        JobState::Applying => apply(shared, pair, job),
        JobState::Ready | JobState::Done | JobState::Failed => Ok(false),
    }
}

async fn page_virtuous(
    shared: &TenantShared,
    pair: &PairSettings,
    mut job: CrossMatchJob,
) -> Result<bool, StoreError> {
    let store = shared.tenant_store();
    let take = shared.settings().pull.poll_take.max(1);
    let now_ms = shared.clock.now_ms();
    if let Some(total) = job.virtuous_total {
        let remaining_calls = total
            .saturating_sub(job.virtuous_rows)
            .div_ceil(u64::from(take));
        let allowance = shared.budget.view(now_ms).allowance_per_hour.max(1);
        job.eta_ms = Some(remaining_calls * 3_600_000 / allowance);
    }
    if let Err(_at_ms) = shared.draw_call(Lane::Reconcile) {
        return Ok(false);
    }
    // Keyset paging by id: edits made while the job reads cannot shift a page.
    let (reply, page) = shared
        .crm()
        .query_contacts_after(job.virtuous_after_id, take)
        .await;
    shared.observe_reply(&reply);
    let Some(page) = page else {
        job.error = Some(format!(
            "reading Virtuous contacts: status {:?} (retrying)",
            reply.facts.status
        ));
        store.save_cross_match(&pair.pair, &job, &[], &[], &[])?;
        return Ok(false);
    };
    let rows: Vec<VirtuousRow> = page
        .changes
        .iter()
        .map(|change| {
            let record: serde_json::Value =
                serde_json::from_str(&change.record_json).unwrap_or(serde_json::Value::Null);
            VirtuousRow {
                id: change.id.clone(),
                fields: from_virtuous(&record),
                partner_refs: virtuous_references(&record)
                    .into_iter()
                    .filter(|(source, _)| source.eq_ignore_ascii_case(&pair.reference_source))
                    .map(|(_, id)| id)
                    .collect(),
            }
        })
        .collect();
    // `total` counts what remains after the cursor: the whole is what was read plus it.
    job.virtuous_total = Some(job.virtuous_rows + page.total);
    job.virtuous_rows += rows.len() as u64;
    let last_id = rows
        .iter()
        .filter_map(|row| row.id.parse::<u64>().ok())
        .max();
    job.virtuous_after_id =
        last_id.map_or(job.virtuous_after_id, |id| id.max(job.virtuous_after_id));
    job.error = None;
    job.updated_at_ms = now_ms;
    let done = rows.len() < take as usize || last_id.is_none();
    if !done {
        store.save_cross_match(&pair.pair, &job, &[], &rows, &[])?;
        return Ok(true);
    }
    store.save_cross_match(&pair.pair, &job, &[], &rows, &[])?;
    report(shared, pair, job)?;
    Ok(true)
}

/// Both sides read: match them and keep the report.
fn report(
    shared: &TenantShared,
    pair: &PairSettings,
    mut job: CrossMatchJob,
) -> Result<(), StoreError> {
    let store = shared.tenant_store();
    let partners: Vec<PartnerRow> = store.cross_match_rows(&pair.pair, true)?;
    let virtuous: Vec<VirtuousRow> = store.cross_match_rows(&pair.pair, false)?;
    let rows = cross_match(&partners, &virtuous, |partner_id| {
        store
            .two_way_link(&pair.pair, partner_id)
            .ok()
            .flatten()
            .and_then(|link| link.virtuous_id)
    });
    job.summary = summarise(&rows);
    job.examples.clear();
    for row in &rows {
        let examples = job
            .examples
            .entry(row.group.name().to_string())
            .or_default();
        if examples.len() < EXAMPLES {
            examples.push(row.clone());
        }
    }
    job.report_rows = rows.len() as u64;
    job.eta_ms = None;
    job.updated_at_ms = shared.clock.now_ms();
    let numbered: Vec<(u64, ReportRow)> = rows
        .into_iter()
        .enumerate()
        .map(|(index, row)| (index as u64 + 1, row))
        .collect();
    // The rows first (a crash between chunks matches again), then `ready` with the last.
    let chunks: Vec<&[(u64, ReportRow)]> = numbered.chunks(5_000).collect();
    for chunk in chunks.iter().take(chunks.len().saturating_sub(1)) {
        store.save_cross_match(&pair.pair, &job, &[], &[], chunk)?;
    }
    job.state = JobState::Ready;
    store.save_cross_match(
        &pair.pair,
        &job,
        &[],
        &[],
        chunks.last().copied().unwrap_or(&[]),
    )?;
    Ok(())
}

/// Applies the next chunk of the approved report.
fn apply(
    shared: &TenantShared,
    pair: &PairSettings,
    mut job: CrossMatchJob,
) -> Result<bool, StoreError> {
    let store = shared.tenant_store();
    let Some(policies) = job.policies else {
        return Ok(false);
    };
    let rows = store.cross_match_report(&pair.pair, job.applied_through, APPLY_CHUNK as usize)?;
    let now_ms = shared.clock.now_ms();
    let partners: std::collections::BTreeMap<String, PartnerRow> = if rows.is_empty() {
        Default::default()
    } else {
        store
            .cross_match_rows::<PartnerRow>(&pair.pair, true)?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect()
    };
    let virtuous: std::collections::BTreeMap<String, VirtuousRow> = if rows.is_empty() {
        Default::default()
    } else {
        store
            .cross_match_rows::<VirtuousRow>(&pair.pair, false)?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect()
    };
    let _guard = shared.two_way_guard();
    let mut update = TwoWayUpdate::default();
    for (seq, row) in &rows {
        if let Some(link) = applied_link(
            shared, pair, &policies, row, &partners, &virtuous, &mut job, now_ms,
        )? {
            update.links.push(link);
        }
        job.applied_through = *seq;
    }
    if rows.len() < APPLY_CHUNK as usize {
        job.state = JobState::Done;
    }
    job.updated_at_ms = now_ms;
    update.cross_match_job = Some((
        pair.pair.clone(),
        serde_json::to_value(&job).unwrap_or_default(),
    ));
    store.save_two_way(update)?;
    shared.two_way_wake.notify_waiters();
    Ok(job.state == JobState::Applying)
}

/// The link one report row leads to under the policies (`None`: left as it is).
// Size: one arm per group and policy.
#[allow(clippy::too_many_arguments)]
fn applied_link(
    shared: &TenantShared,
    pair: &PairSettings,
    policies: &Policies,
    row: &ReportRow,
    partners: &std::collections::BTreeMap<String, PartnerRow>,
    virtuous: &std::collections::BTreeMap<String, VirtuousRow>,
    job: &mut CrossMatchJob,
    now_ms: u64,
) -> Result<Option<Link>, StoreError> {
    let store = shared.tenant_store();
    let partner_row = row.partner_ids.first().and_then(|id| partners.get(id));
    let virtuous_row = row.virtuous_ids.first().and_then(|id| virtuous.get(id));
    let existing = |partner_id: &str| -> Result<Link, StoreError> {
        Ok(store
            .two_way_link(&pair.pair, partner_id)?
            .unwrap_or_else(|| Link::new(&pair.pair, partner_id)))
    };
    let link = match (row.group, partner_row, virtuous_row) {
        (Group::Matched, Some(p), Some(v)) if policies.matched == MatchedPolicy::Link => {
            let mut link = existing(&p.id)?;
            link.virtuous_id = Some(v.id.clone());
            let version_ms = link.partner_version_ms;
            seed(&mut link, Side::Partner, &p.fields, version_ms);
            // Virtuous's values decided against the partner's by the pair's rules: a field
            // they disagree on is written where its rule says.
            let incoming = Incoming {
                side: Side::Virtuous,
                fields: v.fields.clone(),
                version_ms: link.virtuous_version_ms,
                ours: false,
            };
            crate::two_way::decide::decide(&mut link, pair, &incoming, now_ms);
            link.record(now_ms, link.state, "linked by the cross-match");
            job.applied.linked += 1;
            link
        }
        (Group::PartnerOnly, Some(p), _) => {
            let mut link = existing(&p.id)?;
            let version_ms = link.partner_version_ms;
            seed(&mut link, Side::Partner, &p.fields, version_ms);
            match policies.partner_only {
                OneSidePolicy::Create => {
                    link.create_virtuous = true;
                    job.applied.create_virtuous += 1;
                }
                OneSidePolicy::ExternalOnly => {
                    link.external_only = true;
                    job.applied.external_only += 1;
                }
            }
            link.record(now_ms, link.state, "cross-match: partner only");
            link
        }
        (Group::VirtuousOnly, _, Some(v)) => {
            let mut link = existing(&format!("virtuous:{}", v.id))?;
            link.virtuous_id = Some(v.id.clone());
            let version_ms = link.virtuous_version_ms;
            seed(&mut link, Side::Virtuous, &v.fields, version_ms);
            match policies.virtuous_only {
                OneSidePolicy::Create => {
                    link.create_partner = true;
                    let values: crate::two_way::Fields = pair
                        .synced_fields()
                        .filter_map(|name| {
                            v.fields
                                .get(name)
                                .map(|value| (name.to_string(), value.clone()))
                        })
                        .collect();
                    *link.pending_mut(Side::Partner) = values;
                    job.applied.create_partner += 1;
                }
                OneSidePolicy::ExternalOnly => {
                    link.external_only = true;
                    job.applied.external_only += 1;
                }
            }
            link.record(now_ms, link.state, "cross-match: Virtuous only");
            link
        }
        _ => {
            job.applied.left += 1;
            return Ok(None);
        }
    };
    Ok(Some(link))
}
