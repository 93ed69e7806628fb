//! A listing backfill's pages go through its source's poller slot: the slot's own limits
//! (calls a second, calls a day, a throttled answer's wait) count them like the poller's
//! own calls, and the slot's `busy` mark keeps one fetch of a poller at a time (the port's
//! rule: an adapter may rotate a refresh token while it fetches).

use std::sync::Arc;

use actix::Context;

use super::{count_answer, limits_wait, next_reset_after, LimitWait};
use crate::capture::CaptureActor;
use crate::poll::PollFetch;
use crate::ports::Poller;
use crate::store::StoreError;

/// Share (%) of a source's daily quota a listing leaves to the live poller.
pub const LIVE_QUOTA_SHARE_PCT: u64 = 20;

/// Whether a listing's next page may be fetched now.
pub enum ListingGate {
    /// Fetch with this poller now; the slot is marked busy until
    /// [`CaptureActor::listing_answered`] is called with `epoch`.
    Go { poller: Arc<dyn Poller>, epoch: u64 },
    /// The source's limits allow the next call at this time.
    WaitUntil(u64),
    /// The poller's own page is in flight.
    Busy,
    /// An operator paused the source's poller: its listing waits too.
    Paused,
    /// The tenant has no poller for this source.
    NoPoller,
}

impl CaptureActor {
    /// Takes the source's slot for one listing page when its limits allow.
    pub(in crate::capture) fn listing_gate(
        &mut self,
        source: &str,
        now_ms: u64,
    ) -> Result<ListingGate, StoreError> {
        let store = self.store().clone();
        let Some(slot) = self.behavior.polls.slots.get_mut(source) else {
            return Ok(ListingGate::NoPoller);
        };
        if slot.busy {
            return Ok(ListingGate::Busy);
        }
        if slot.state.paused.is_some() {
            return Ok(ListingGate::Paused);
        }
        if let Some(until_ms) = slot.state.quota_wait_until_ms {
            if until_ms > now_ms {
                return Ok(ListingGate::WaitUntil(until_ms));
            }
            slot.state.quota_wait_until_ms = None;
        }
        if slot.wait_until_ms > now_ms {
            return Ok(ListingGate::WaitUntil(slot.wait_until_ms));
        }
        match limits_wait(slot, now_ms) {
            Some(LimitWait::Quota(until_ms)) => {
                store.put_poller_state(source, &slot.state)?;
                return Ok(ListingGate::WaitUntil(until_ms));
            }
            Some(LimitWait::Second(at_ms)) => return Ok(ListingGate::WaitUntil(at_ms)),
            None => {}
        }
        // The last share of the day's quota is the live poller's.
        let limits = &slot.spec.settings.limits;
        if let Some(daily) = limits.daily {
            let listing_max = u64::from(daily) * (100 - LIVE_QUOTA_SHARE_PCT) / 100;
            if slot.state.quota_calls >= listing_max {
                return Ok(ListingGate::WaitUntil(next_reset_after(
                    limits.daily_reset_utc_s,
                    now_ms,
                )));
            }
        }
        slot.busy = true;
        // Counted against the day when sent (as the poller's own calls are).
        slot.state.quota_calls += 1;
        Ok(ListingGate::Go {
            poller: Arc::clone(&slot.spec.poller),
            epoch: slot.epoch,
        })
    }

    /// A listing page's answer: its calls counted against the source's limits, the slot
    /// free again (its own run may go on).
    pub(in crate::capture) fn listing_answered(
        &mut self,
        source: &str,
        epoch: u64,
        fetch: &PollFetch,
        ctx: &mut Context<Self>,
    ) -> Result<(), StoreError> {
        let now_ms = self.now_ms();
        let store = self.store().clone();
        let Some(slot) = self
            .behavior
            .polls
            .slots
            .get_mut(source)
            .filter(|slot| slot.epoch == epoch)
        else {
            // Removed (or configured again) meanwhile: the new slot starts from the store.
            return Ok(());
        };
        slot.busy = false;
        count_answer(slot, fetch, now_ms);
        match fetch {
            PollFetch::Throttled { retry_after_ms, .. } => {
                slot.wait_until_ms = now_ms + (*retry_after_ms).max(1);
            }
            PollFetch::QuotaExhausted { .. } => {
                let reset_utc_s = slot.spec.settings.limits.daily_reset_utc_s;
                slot.state.quota_wait_until_ms = Some(next_reset_after(reset_utc_s, now_ms));
            }
            _ => {}
        }
        store.put_poller_state(source, &slot.state)?;
        self.poll_wake(ctx);
        Ok(())
    }
}
