//! The initial cross-match of a pair (docs/two-way.md "Cross-match"): both sides' contacts,
//! matched by `contactReferences`, then by Virtuous ids a link already knows, then by
//! normalised email. A key that several records share on either side is ambiguous and never
//! merged. Pure: the job (`inbound::cross_match`) pages both sides into the store and hands
//! the rows here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::fields::Fields;

/// A partner contact as the cross-match sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerRow {
    pub id: String,
    pub fields: Fields,
}

/// A Virtuous contact as the cross-match sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtuousRow {
    pub id: String,
    pub fields: Fields,
    /// `contactReferences` naming the pair's source: the partner ids it carries.
    pub partner_refs: Vec<String>,
}

/// The groups of the report. The names are the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Matched,
    Ambiguous,
    PartnerOnly,
    VirtuousOnly,
}

impl Group {
    pub const ALL: [Group; 4] = [
        Group::Matched,
        Group::Ambiguous,
        Group::PartnerOnly,
        Group::VirtuousOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Matched => "matched",
            Group::Ambiguous => "ambiguous",
            Group::PartnerOnly => "partner_only",
            Group::VirtuousOnly => "virtuous_only",
        }
    }
}

/// One line of the report (one NDJSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    pub group: Group,
    /// `reference`, `known_id` or `email` (matched and ambiguous rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The shared key (the normalised email, the reference id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub partner_ids: Vec<String>,
    pub virtuous_ids: Vec<String>,
}

/// The normalised email of a row (trimmed, lower-cased), if any.
pub fn email_key(fields: &Fields) -> Option<String> {
    let email = fields.get("email")?.as_str()?.trim().to_lowercase();
    (!email.is_empty()).then_some(email)
}

/// Matches both sides. `known(partner_id)` is the Virtuous id a link already holds.
pub fn cross_match(
    partners: &[PartnerRow],
    virtuous: &[VirtuousRow],
    known: impl Fn(&str) -> Option<String>,
) -> Vec<ReportRow> {
    let mut rows = Vec::new();
    let mut taken_partner: BTreeSet<&str> = BTreeSet::new();
    let mut taken_virtuous: BTreeSet<&str> = BTreeSet::new();
    let virtuous_ids: BTreeSet<&str> = virtuous.iter().map(|row| row.id.as_str()).collect();

    // 1. contactReferences: the Virtuous contacts that name the partner id.
    let mut by_reference: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in virtuous {
        for partner_id in &row.partner_refs {
            by_reference
                .entry(partner_id.as_str())
                .or_default()
                .push(row.id.as_str());
        }
    }
    // A Virtuous contact naming several of these partner records is ambiguous for each.
    let partner_ids: BTreeSet<&str> = partners.iter().map(|row| row.id.as_str()).collect();
    let named_by: BTreeMap<&str, usize> = virtuous
        .iter()
        .map(|row| {
            let named = row
                .partner_refs
                .iter()
                .filter(|id| partner_ids.contains(id.as_str()))
                .count();
            (row.id.as_str(), named)
        })
        .collect();
    for partner in partners {
        let Some(found) = by_reference.get(partner.id.as_str()) else {
            continue;
        };
        let group = if found.len() == 1 && named_by.get(found[0]).copied().unwrap_or(0) <= 1 {
            Group::Matched
        } else {
            Group::Ambiguous
        };
        rows.push(ReportRow {
            group,
            by: Some("reference".into()),
            key: Some(partner.id.clone()),
            partner_ids: vec![partner.id.clone()],
            virtuous_ids: found.iter().map(|id| id.to_string()).collect(),
        });
        taken_partner.insert(partner.id.as_str());
        taken_virtuous.extend(found.iter().copied());
    }

    // 2. Virtuous ids a link already knows.
    for partner in partners {
        if taken_partner.contains(partner.id.as_str()) {
            continue;
        }
        let Some(virtuous_id) = known(&partner.id) else {
            continue;
        };
        let Some(&id) = virtuous_ids.get(virtuous_id.as_str()) else {
            continue;
        };
        if taken_virtuous.contains(id) {
            continue;
        }
        rows.push(ReportRow {
            group: Group::Matched,
            by: Some("known_id".into()),
            key: Some(virtuous_id.clone()),
            partner_ids: vec![partner.id.clone()],
            virtuous_ids: vec![virtuous_id],
        });
        taken_partner.insert(partner.id.as_str());
        taken_virtuous.insert(id);
    }

    // 3. Normalised email, among what is left.
    let mut partner_by_email: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for partner in partners {
        if taken_partner.contains(partner.id.as_str()) {
            continue;
        }
        if let Some(email) = email_key(&partner.fields) {
            partner_by_email
                .entry(email)
                .or_default()
                .push(partner.id.as_str());
        } else {
            rows.push(one_side(Group::PartnerOnly, &partner.id));
            taken_partner.insert(partner.id.as_str());
        }
    }
    let mut virtuous_by_email: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for row in virtuous {
        if taken_virtuous.contains(row.id.as_str()) {
            continue;
        }
        if let Some(email) = email_key(&row.fields) {
            virtuous_by_email
                .entry(email)
                .or_default()
                .push(row.id.as_str());
        }
    }
    for (email, partner_ids) in &partner_by_email {
        let found = virtuous_by_email.get(email).cloned().unwrap_or_default();
        let group = match (partner_ids.len(), found.len()) {
            (_, 0) if partner_ids.len() == 1 => Group::PartnerOnly,
            (1, 1) => Group::Matched,
            _ => Group::Ambiguous,
        };
        rows.push(ReportRow {
            group,
            by: (group != Group::PartnerOnly).then(|| "email".to_string()),
            key: Some(email.clone()),
            partner_ids: partner_ids.iter().map(|id| id.to_string()).collect(),
            virtuous_ids: found.iter().map(|id| id.to_string()).collect(),
        });
        taken_virtuous.extend(found);
    }
    for row in virtuous {
        if !taken_virtuous.contains(row.id.as_str()) {
            rows.push(ReportRow {
                virtuous_ids: vec![row.id.clone()],
                partner_ids: Vec::new(),
                ..one_side(Group::VirtuousOnly, "")
            });
        }
    }
    rows
}

fn one_side(group: Group, partner_id: &str) -> ReportRow {
    ReportRow {
        group,
        by: None,
        key: None,
        partner_ids: if partner_id.is_empty() {
            Vec::new()
        } else {
            vec![partner_id.to_string()]
        },
        virtuous_ids: Vec::new(),
    }
}

/// Counts per group: matched pairs, ambiguous keys (one row each, whatever the records it
/// names), partner-only and Virtuous-only records.
pub fn summarise(rows: &[ReportRow]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = Group::ALL
        .iter()
        .map(|group| (group.name().to_string(), 0))
        .collect();
    for row in rows {
        *counts.entry(row.group.name().to_string()).or_default() += 1;
    }
    counts
}

/// What to do with each group on approval (`POST …/cross-match/approve`). Ambiguous
/// records are never merged: they are left as they are, listed in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// `link` (the pair syncs them from now on) or `leave`.
    pub matched: MatchedPolicy,
    /// `create` (a Virtuous contact is made) or `external_only` (never synced).
    pub partner_only: OneSidePolicy,
    /// `create` (a partner contact is made) or `external_only`.
    pub virtuous_only: OneSidePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedPolicy {
    Link,
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OneSidePolicy {
    Create,
    ExternalOnly,
}

/// A cross-match job's state. The names are the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading the partner's contacts.
    PagingPartner,
    /// Reading Virtuous contacts (budget-paced, reconcile lane).
    PagingVirtuous,
    /// The report is ready; nothing is written until an operator approves it.
    Ready,
    /// Applying the approved policies.
    Applying,
    Done,
    Failed,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// What applying the policies did (each record once).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Applied {
    pub linked: u64,
    pub create_virtuous: u64,
    pub create_partner: u64,
    pub external_only: u64,
    pub left: u64,
}

/// A pair's cross-match job (stored; `GET /v1/tenants/{id}/cross-match` shows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossMatchJob {
    pub pair: String,
    pub state: JobState,
    pub started_at_ms: u64,
    pub updated_at_ms: u64,
    /// The partner listing's next cursor (`None` before the first page and when done).
    pub partner_cursor: Option<String>,
    pub partner_rows: u64,
    /// Virtuous rows read, and the total the query reported.
    pub virtuous_rows: u64,
    pub virtuous_total: Option<u64>,
    /// The highest Virtuous contact id read (the listing goes on after it).
    #[serde(default)]
    pub virtuous_after_id: u64,
    /// Records per group, and up to five example rows of each.
    pub summary: BTreeMap<String, u64>,
    pub examples: BTreeMap<String, Vec<ReportRow>>,
    /// Report rows stored (`GET …/cross-match/report` streams them).
    pub report_rows: u64,
    pub policies: Option<Policies>,
    /// Report rows applied so far (resumes from here after a restart).
    pub applied_through: u64,
    pub applied: Applied,
    /// Estimated time to finish paging Virtuous at the current allowance.
    pub eta_ms: Option<u64>,
    pub error: Option<String>,
}

impl CrossMatchJob {
    pub fn new(pair: &str, now_ms: u64) -> CrossMatchJob {
        CrossMatchJob {
            pair: pair.to_string(),
            state: JobState::PagingPartner,
            started_at_ms: now_ms,
            updated_at_ms: now_ms,
            partner_cursor: None,
            partner_rows: 0,
            virtuous_rows: 0,
            virtuous_total: None,
            virtuous_after_id: 0,
            summary: BTreeMap::new(),
            examples: BTreeMap::new(),
            report_rows: 0,
            policies: None,
            applied_through: 0,
            applied: Applied::default(),
            eta_ms: None,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn partner(id: &str, email: &str) -> PartnerRow {
        PartnerRow {
            id: id.into(),
            fields: [("email".to_string(), json!(email))].into_iter().collect(),
        }
    }

    fn contact(id: &str, email: &str, refs: &[&str]) -> VirtuousRow {
        VirtuousRow {
            id: id.into(),
            fields: [("email".to_string(), json!(email))].into_iter().collect(),
            partner_refs: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn group_of(rows: &[ReportRow], partner_id: &str) -> Group {
        rows.iter()
            .find(|row| row.partner_ids.iter().any(|id| id == partner_id))
            .map(|row| row.group)
            .expect("every partner row is reported")
    }

    #[test]
    fn references_then_known_ids_then_emails_and_shared_keys_are_ambiguous() {
        // Goal: each key in its order; a family email shared by two partners or two Virtuous
        // contacts is ambiguous, never merged; case and whitespace of emails do not matter.
        let partners = vec![
            partner("p1", "one@x.org"),
            partner("p2", "two@x.org"),
            partner("p3", " Three@X.org "),
            partner("p4", "family@x.org"),
            partner("p5", "family@x.org"),
            partner("p6", "dup@x.org"),
            partner("p7", "alone@x.org"),
            partner("p8", ""),
        ];
        let virtuous = vec![
            contact("v1", "other@x.org", &["p1"]),
            contact("v2", "two@x.org", &[]),
            contact("v3", "three@x.org", &[]),
            contact("v4", "family@x.org", &[]),
            contact("v5", "dup@x.org", &[]),
            contact("v6", "DUP@x.org", &[]),
            contact("v7", "virtuous-only@x.org", &[]),
        ];
        let rows = cross_match(&partners, &virtuous, |id| {
            (id == "p2").then(|| "v2".to_string())
        });
        assert_eq!(group_of(&rows, "p1"), Group::Matched);
        assert_eq!(group_of(&rows, "p2"), Group::Matched);
        assert_eq!(group_of(&rows, "p3"), Group::Matched);
        assert_eq!(group_of(&rows, "p4"), Group::Ambiguous);
        assert_eq!(group_of(&rows, "p6"), Group::Ambiguous);
        assert_eq!(group_of(&rows, "p7"), Group::PartnerOnly);
        assert_eq!(group_of(&rows, "p8"), Group::PartnerOnly);
        let by_p2 = rows.iter().find(|row| row.partner_ids == ["p2"]).unwrap();
        assert_eq!(by_p2.by.as_deref(), Some("known_id"));
        let virtuous_only: Vec<_> = rows
            .iter()
            .filter(|row| row.group == Group::VirtuousOnly)
            .flat_map(|row| row.virtuous_ids.clone())
            .collect();
        assert_eq!(virtuous_only, ["v7"]);
        let counts = summarise(&rows);
        assert_eq!(counts["matched"], 3);
        assert_eq!(counts["ambiguous"], 2);
    }

    #[test]
    fn a_virtuous_contact_naming_two_partner_records_matches_neither() {
        // Goal: references are checked both ways; a contact naming p1 and p2 is ambiguous.
        let partners = vec![partner("p1", "a@x.org"), partner("p2", "b@x.org")];
        let virtuous = vec![contact("v1", "c@x.org", &["p1", "p2"])];
        let rows = cross_match(&partners, &virtuous, |_| None);
        assert_eq!(group_of(&rows, "p1"), Group::Ambiguous);
        assert_eq!(group_of(&rows, "p2"), Group::Ambiguous);
    }
}
