//! The retry budget: how much load retries and hedges may add to the upstreams.
//!
//! Only retries that add load to a struggling upstream are budgeted. A retry after an
//! attempt that sent nothing (the connection could not be opened), or after a failure on a
//! target that is ejected now, is free: the first is the request's first real attempt, and
//! the second moves traffic that ejection moves away anyway. So a burst of in-flight
//! failures on one dying target costs the budget at most the few failures before its
//! ejection, and no client sees an error for want of a token.
//!
//! Budgeted retries and hedges spend tokens from a bucket: every request adds
//! `budget_ratio` of a token, and `budget_min_per_second` tokens arrive each second
//! whatever the traffic, up to `budget_burst` tokens (it starts full). Over any span of
//! T seconds the budgeted retries are therefore at most
//! `budget_burst + budget_ratio × requests + budget_min_per_second × T`; free retries add
//! at most one attempt per request in flight on a target when it is ejected; and no request
//! makes more than `max_attempts` attempts. The config reference (`RetryConfig`) states
//! this bound, and `tests/proxy_fault_matrix.rs` checks it with every cluster failing.
//!
//! A token bucket rather than a cap on concurrent retries: a cap of N retries in flight
//! refuses the N+1-th request that needs one at the very moment a target dies, though the
//! proxy had been retrying nothing for hours (Finagle's and gRPC's retry budgets are
//! buckets for the same reason).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use meridian_config::proxy::RetryConfig;

/// One token, in the bucket's unit (thousandths of a token).
const TOKEN: i64 = 1000;

/// The shared bucket of retry tokens; one per proxy.
pub(crate) struct RetryBudget {
    /// Thousandths of a token.
    balance: AtomicI64,
    cap: i64,
    /// Added per request.
    deposit: i64,
    /// Added per millisecond (thousandths of a token per ms = tokens per second).
    per_ms: i64,
    /// When the time-based refill last ran, ms on the proxy's clock.
    refilled_ms: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        let cap = i64::from(config.budget_burst) * TOKEN;
        RetryBudget {
            balance: AtomicI64::new(cap),
            cap,
            deposit: (config.budget_ratio * TOKEN as f64).round() as i64,
            per_ms: i64::from(config.budget_min_per_second),
            refilled_ms: AtomicU64::new(0),
        }
    }

    /// A request arrived: it earns its share of a token. On the hot path: while the bucket
    /// is full (no failures lately), one shared read.
    pub(crate) fn deposit(&self) {
        if self.balance.load(Ordering::Relaxed) < self.cap {
            self.balance.fetch_add(self.deposit, Ordering::Relaxed);
        }
    }

    /// Takes a token for a budgeted retry or hedge; false when none is left.
    pub(crate) fn withdraw(&self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= TOKEN).then_some(b - TOKEN)
            })
            .is_ok()
    }

    /// Adds the time-based tokens since the last refill (one caller wins each instant).
    fn refill(&self, now_ms: u64) {
        let last = self.refilled_ms.load(Ordering::Relaxed);
        if now_ms <= last
            || self
                .refilled_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let add = (now_ms - last).min(u64::from(u32::MAX)) as i64 * self.per_ms;
        let cap = self.cap;
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.max((b + add).min(cap)))
            });
    }

    /// Whole tokens left, for tests.
    #[cfg(test)]
    fn tokens(&self) -> i64 {
        self.balance.load(Ordering::Relaxed) / TOKEN
    }
}

/// Whether a retry after a failed attempt spends a token: not when the attempt sent
/// nothing, nor when its target is ejected now (by this failure or before it).
pub(crate) fn is_budgeted(sent_nothing: bool, target_ejected: bool) -> bool {
    !(sent_nothing || target_ejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ratio: f64, burst: u32, per_second: u32) -> RetryConfig {
        RetryConfig {
            budget_ratio: ratio,
            budget_burst: burst,
            budget_min_per_second: per_second,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn a_burst_spends_what_was_saved_then_the_ratio_holds() {
        let budget = RetryBudget::new(&config(0.2, 10, 0));
        // Starts full: ten retries at once.
        for _ in 0..10 {
            assert!(budget.withdraw(1));
        }
        assert!(!budget.withdraw(1));
        // Then one retry per five requests.
        for round in 0..3 {
            for _ in 0..5 {
                budget.deposit();
            }
            assert!(budget.withdraw(1), "round {round}");
            assert!(!budget.withdraw(1), "round {round}");
        }
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let budget = RetryBudget::new(&config(1.0, 3, 1000));
        for _ in 0..100 {
            budget.deposit();
        }
        budget.withdraw(10_000);
        assert_eq!(budget.tokens(), 2, "3 at most, one taken");
    }

    #[test]
    fn time_refills_the_bucket_without_traffic() {
        let budget = RetryBudget::new(&config(0.0, 5, 10));
        for _ in 0..5 {
            assert!(budget.withdraw(1_000));
        }
        assert!(!budget.withdraw(1_000));
        // 10 a second: one token every 100 ms.
        assert!(!budget.withdraw(1_050));
        assert!(budget.withdraw(1_100));
        assert!(!budget.withdraw(1_100));
        // A long quiet spell fills it to the burst, no further.
        budget.withdraw(100_000);
        assert_eq!(budget.tokens(), 4);
    }

    #[test]
    fn an_empty_budget_allows_only_free_retries() {
        let budget = RetryBudget::new(&config(0.0, 0, 0));
        assert!(!budget.withdraw(5_000));
        assert!(!is_budgeted(true, false), "nothing was sent");
        assert!(!is_budgeted(false, true), "the target is ejected");
        assert!(is_budgeted(false, false));
    }
}
