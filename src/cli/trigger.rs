//! `steward trigger stripe --tenant ID [payment|subscription|refund]`: like `stripe
//! trigger`, without a Stripe account. The server builds test-mode Stripe events, signs them
//! with the tenant's secret and delivers them through its real ingress path; the command
//! then follows the gift until Virtuous accepts it and prints its timeline (docs/cli.md).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::backfill::TenantArg;
use super::progress::{bars_shown, spinner};
use super::records::record_text;
use super::text;
use super::{Admin, AdminArgs, CliError};

/// How often the gift's record is read while waiting.
const POLL_EVERY: Duration = Duration::from_millis(250);

#[derive(Args, Debug)]
pub struct TriggerArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: TriggerCommand,
}

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Test-mode Stripe events for one new payment (the tenant needs
    /// `sources.stripe.accept_test_events`).
    Stripe {
        #[command(flatten)]
        tenant: TenantArg,
        /// What happens: a one-time payment, a subscription's payment, or a payment and its
        /// full refund.
        #[arg(value_enum, default_value = "payment")]
        kind: TestEventKind,
        /// Seconds to follow the gift until Virtuous accepts it (0: do not wait).
        #[arg(long, default_value_t = 60)]
        wait_s: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TestEventKind {
    Payment,
    Subscription,
    Refund,
}

impl TestEventKind {
    fn name(self) -> &'static str {
        match self {
            TestEventKind::Payment => "payment",
            TestEventKind::Subscription => "subscription",
            TestEventKind::Refund => "refund",
        }
    }
}

/// States at which a triggered gift has gone as far as the command follows it.
const ARRIVED: [&str; 3] = ["submitted", "confirmed", "in_sync"];
/// States that will not move without an operator.
const STUCK: [&str; 3] = ["dead", "needs_review", "duplicate_detected"];

pub fn run(args: TriggerArgs) -> Result<(), CliError> {
    let admin = Admin::connect(&args.admin)?;
    let TriggerCommand::Stripe {
        tenant,
        kind,
        wait_s,
    } = args.command;
    let path = format!("/tenants/{}/test-events/stripe", tenant.tenant);
    let answer = admin.post(&path, Some(&json!({"kind": kind.name()})))?;
    if answer["taken"] != true {
        if admin.json {
            admin.print_json(&answer);
        }
        return Err(CliError::Failed(format!(
            "delivered, but tenant {} ignores test-mode events: {}",
            tenant.tenant,
            text(&answer["hint"])
        )));
    }
    if !admin.json {
        for event in answer["events"].as_array().into_iter().flatten() {
            println!(
                "delivered {} {} → {}",
                text(&event["type"]),
                text(&event["id"]),
                text(&event["status"])
            );
        }
    }
    let record_path = text(&answer["record"]);
    let record_path = record_path.strip_prefix("/v1").unwrap_or(&record_path);
    let record = if wait_s == 0 {
        None
    } else {
        Some(follow(&admin, record_path, Duration::from_secs(wait_s))?)
    };
    if admin.json {
        admin.print_json(&json!({"trigger": answer, "record": record}));
        return Ok(());
    }
    match record {
        Some(record) => print!("\n{}", record_text(&record)),
        None => println!(
            "follow it: steward records show --tenant {} gift stripe {}",
            tenant.tenant,
            text(&answer["payment_id"])
        ),
    }
    Ok(())
}

/// Reads the record until it has reached Virtuous (or is stuck), with a spinner; an error
/// after `wait`.
fn follow(admin: &Admin, record_path: &str, wait: Duration) -> Result<Value, CliError> {
    let bar = spinner(bars_shown(admin.json));
    bar.set_message("waiting for the gift to reach Virtuous");
    let started = Instant::now();
    let outcome = loop {
        let found = match admin.get(record_path) {
            Ok(record) => Some(record),
            // Not written yet (a subscription's payment waits for its invoice).
            Err(CliError::Api { status: 404, .. }) => None,
            Err(error) => break Err(error),
        };
        if let Some(record) = found {
            let state = text(&record["state"]);
            bar.set_message(format!("gift {state}"));
            if ARRIVED.contains(&state.as_str()) || STUCK.contains(&state.as_str()) {
                break Ok(record);
            }
        }
        if started.elapsed() >= wait {
            break Err(CliError::Failed(format!(
                "the gift did not reach Virtuous within {} s (is the tenant paused? see steward tenant show)",
                wait.as_secs()
            )));
        }
        std::thread::sleep(POLL_EVERY);
    };
    bar.finish_and_clear();
    outcome
}
