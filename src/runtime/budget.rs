//! A caller's daily budget of billed Ximilar calls, kept as reservations in
//! the state store: a unit is taken atomically before a try can be sent
//! (before the request takes a lease or fetches an image, too), and given back
//! when the try turns out unbilled or the request never needs it. So any
//! number of concurrent requests, on any number of instances and replicas,
//! cause at most `budget` billed calls a day. When the store cannot say, a
//! budgeted caller is refused: credits are money.

use super::stores::Counters;
use crate::auth::{self, Caller};
use crate::contract::ApiError;
use crate::retry_loop::{Outcome, TryGate};

pub struct Budget {
    key: String,
    limit: u64,
    /// A unit is taken in the store for a try not sent yet.
    held: bool,
}

impl Budget {
    /// The budget of `caller` for the UTC day of `now_ms`, if it has one.
    pub fn of(caller: &Caller, now_ms: u64) -> Option<Budget> {
        Some(Budget { key: auth::budget_key(&caller.name, now_ms), limit: caller.budget?, held: false })
    }

    /// Makes sure one unit is held for the next try: taken now, unless it already is.
    pub async fn hold(&mut self, counters: &mut Counters) -> Result<(), ApiError> {
        if self.held {
            return Ok(());
        }
        match counters.reserve(&self.key, self.limit).await {
            Ok(true) => {
                self.held = true;
                Ok(())
            }
            Ok(false) => Err(exhausted()),
            Err(_) => Err(unavailable()),
        }
    }

    /// Gives back a unit held for a try that was never sent.
    pub async fn release_held(&mut self, counters: &mut Counters) {
        if std::mem::take(&mut self.held) {
            counters.release(&self.key, 1).await;
        }
    }
}

/// The budget as a [`TryGate`]: every try spends a held unit (taking one if
/// none is held), and a try that cannot have been billed gives it back.
pub struct BudgetGate<'a> {
    pub budget: Option<&'a mut Budget>,
    pub counters: &'a mut Counters,
    /// Why a try was refused, for the caller's answer.
    pub refusal: Option<ApiError>,
}

impl TryGate for BudgetGate<'_> {
    async fn admit(&mut self) -> bool {
        let Some(budget) = self.budget.as_deref_mut() else { return true };
        match budget.hold(self.counters).await {
            Ok(()) => {
                budget.held = false;
                true
            }
            Err(refusal) => {
                self.refusal = Some(refusal);
                false
            }
        }
    }

    async fn settle(&mut self, outcome: Outcome) {
        if let Some(budget) = self.budget.as_deref_mut() {
            if !outcome.may_be_billed() {
                self.counters.release(&budget.key, 1).await;
            }
        }
    }
}

fn exhausted() -> ApiError {
    ApiError::new(429, "budget_exhausted", "this caller's daily budget of Ximilar calls is spent")
        .with_retry_after(auth::seconds_until_midnight(super::stores::now_ms()))
}

fn unavailable() -> ApiError {
    ApiError::new(
        503,
        "budget_unavailable",
        "this caller's budget cannot be checked (the state store is not answering), so no Ximilar call is made",
    )
    .with_retry_after(1)
}
