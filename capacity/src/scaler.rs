//! The scaler: traffic-driven desired replicas for one app in one cluster.
//!
//! `recommended = clamp(⌈rps / target⌉, floor, max)`, where the floor is the higher of
//! `min_replicas` and every scheduled floor whose cron window is open at `now_ms`. From the
//! recommendation to the replicas to write:
//!
//! - **Scale down** only to the *highest* recommendation seen within the stabilization window,
//!   so a dip shorter than the window never removes replicas (and never below the current count
//!   when any recommendation in the window was at or above it).
//! - **Scale up** at most to `max(⌈base × factor⌉, base + step)` per period, where `base` is the
//!   lowest count seen or written within the last period (at least one replica from zero).
//! - A scheduled floor applies at once, past the rate limit: a sale at 09:00 gets its replicas
//!   at 09:00.
//!
//! The caller keeps a [`ScalerHistory`] per app and cluster between calls; it is plain data.

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::Offset;
use serde::{Deserialize, Serialize};

use crate::{CapacityError, check_bounds, check_rate};

/// Replicas that carry `rps` at `target` requests/s each: `⌈rps / target⌉`.
pub fn replicas_for_rps(rps: f64, target: f64) -> Result<u32, CapacityError> {
    check_rate("requests/s", rps)?;
    check_target("scaler", target)?;
    let n = (rps / target - 1e-9).ceil().max(0.0);
    Ok(if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        n as u32
    })
}

/// Checks a target of requests/s per replica.
pub(crate) fn check_target(what: &str, target: f64) -> Result<f64, CapacityError> {
    if target.is_finite() && target > 0.0 {
        Ok(target)
    } else {
        Err(CapacityError::BadTarget {
            what: what.to_owned(),
            value: target,
        })
    }
}

/// The scale-up rate limit: at most `×factor` or `+step` per period, whichever allows more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleUpLimit {
    /// Growth factor per period, such as 2.0; `None` = no factor rule.
    pub factor: Option<f64>,
    /// Replicas added per period; `None` = no step rule.
    pub step: Option<u32>,
    /// The period, milliseconds.
    pub period_ms: u64,
}

/// A floor that holds while a cron window is open: from each match of `cron` (UTC) for
/// `duration_ms`.
#[derive(Clone, Debug)]
pub struct ScheduledFloor {
    expr: String,
    cron: Cron,
    duration_ms: u64,
    min_replicas: u32,
}

impl ScheduledFloor {
    /// Parses a cron expression (five fields, or six with seconds) for a window of
    /// `duration_ms` with a floor of `min_replicas`.
    pub fn new(expr: &str, duration_ms: u64, min_replicas: u32) -> Result<Self, CapacityError> {
        let bad = |reason: String| CapacityError::BadSchedule {
            expr: expr.to_owned(),
            reason,
        };
        let cron: Cron = expr
            .parse()
            .map_err(|e: croner::errors::CronError| bad(e.to_string()))?;
        if duration_ms == 0 {
            return Err(bad("the window's duration must be > 0".to_owned()));
        }
        Ok(Self {
            expr: expr.to_owned(),
            cron,
            duration_ms,
            min_replicas,
        })
    }

    /// The cron expression.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The floor while the window is open.
    pub fn min_replicas(&self) -> u32 {
        self.min_replicas
    }

    /// Whether a window is open at `now_ms` (UTC milliseconds): the latest match at or before
    /// now started less than the duration ago.
    pub fn active_at(&self, now_ms: u64) -> bool {
        let Some(now) = i64::try_from(now_ms)
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        else {
            return false;
        };
        let civil = Offset::UTC.to_datetime(now);
        let Ok(start) = self.cron.find_previous_occurrence(&civil, true) else {
            return false;
        };
        let Ok(start) = Offset::UTC.to_timestamp(start) else {
            return false;
        };
        let elapsed = now.as_millisecond() - start.as_millisecond();
        elapsed >= 0 && (elapsed as u64) < self.duration_ms
    }
}

/// How one app scales in one cluster.
#[derive(Clone, Debug)]
pub struct ScalerConfig {
    /// Requests/s one replica should carry (> 0).
    pub target_rps_per_replica: f64,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas; `None` = no bound.
    pub max_replicas: Option<u32>,
    /// Scale-down stabilization window, milliseconds (0 = none).
    pub scale_down_window_ms: u64,
    /// Scale-up rate limit; `None` = none.
    pub scale_up: Option<ScaleUpLimit>,
    /// Scheduled floors.
    pub schedules: Vec<ScheduledFloor>,
}

impl ScalerConfig {
    /// A config with a target and no bounds, windows, limits or schedules.
    pub fn new(target_rps_per_replica: f64) -> Self {
        Self {
            target_rps_per_replica,
            min_replicas: 0,
            max_replicas: None,
            scale_down_window_ms: 0,
            scale_up: None,
            schedules: Vec::new(),
        }
    }

    /// Checks the config: a target > 0, min ≤ max, a sane rate limit.
    pub fn validate(&self) -> Result<(), CapacityError> {
        check_target("scaler", self.target_rps_per_replica)?;
        check_bounds("scaler", self.min_replicas, self.max_replicas)?;
        if let Some(limit) = &self.scale_up {
            if let Some(f) = limit.factor {
                check_rate("scale-up factor", f)?;
                if f < 1.0 {
                    return Err(CapacityError::Invalid(format!(
                        "scale-up factor must be >= 1, got {f}"
                    )));
                }
            }
            if limit.period_ms == 0 {
                return Err(CapacityError::Invalid(
                    "scale-up period must be > 0".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// The floor at `now_ms`: `min_replicas` raised by every open scheduled window, cut to max.
    pub fn floor_at(&self, now_ms: u64) -> u32 {
        let scheduled = self
            .schedules
            .iter()
            .filter(|s| s.active_at(now_ms))
            .map(|s| s.min_replicas)
            .max()
            .unwrap_or(0);
        let floor = self.min_replicas.max(scheduled);
        self.max_replicas.map_or(floor, |m| floor.min(m))
    }

    /// The recommendation for `rps` at `now_ms`, before stabilization and rate limit.
    pub fn recommend(&self, rps: f64, now_ms: u64) -> Result<u32, CapacityError> {
        let raw = replicas_for_rps(rps, self.target_rps_per_replica)?;
        let r = raw.max(self.floor_at(now_ms));
        Ok(self.max_replicas.map_or(r, |m| r.min(m)))
    }

    /// The replicas to write now, given the current count and the observed request rate;
    /// records the step in `history`.
    pub fn desired(
        &self,
        history: &mut ScalerHistory,
        current: u32,
        rps: f64,
        now_ms: u64,
    ) -> Result<ScaleDecision, CapacityError> {
        self.validate()?;
        let recommended = self.recommend(rps, now_ms)?;
        let floor = self.floor_at(now_ms);
        let keep = self
            .scale_down_window_ms
            .max(self.scale_up.as_ref().map_or(0, |l| l.period_ms));
        history.prune(now_ms.saturating_sub(keep));
        history.recommendations.push((now_ms, recommended));
        // The count before this step belongs to the period too: it is the base of the limit.
        history.counts.push((now_ms, current));

        let (mut replicas, mut reason) = if recommended > current {
            match &self.scale_up {
                Some(limit) => {
                    let since = now_ms.saturating_sub(limit.period_ms);
                    let base = history
                        .counts
                        .iter()
                        .filter(|(t, _)| *t >= since)
                        .map(|&(_, r)| r)
                        .chain([current])
                        .min()
                        .unwrap_or(current);
                    let by_factor = limit
                        .factor
                        .map(|f| (f64::from(base) * f).ceil().min(f64::from(u32::MAX)) as u32);
                    let by_step = limit.step.map(|s| base.saturating_add(s));
                    let allowed = match (by_factor, by_step) {
                        (None, None) => u32::MAX,
                        (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)).max(1),
                    };
                    if recommended > allowed {
                        (
                            allowed,
                            format!(
                                "scale up limited to {allowed} from {base} this period (wanted {recommended})"
                            ),
                        )
                    } else {
                        (
                            recommended,
                            format!("scale up to {recommended} for {rps} req/s"),
                        )
                    }
                }
                None => (
                    recommended,
                    format!("scale up to {recommended} for {rps} req/s"),
                ),
            }
        } else if recommended < current {
            let since = now_ms.saturating_sub(self.scale_down_window_ms);
            let stabilized = history
                .recommendations
                .iter()
                .filter(|(t, _)| *t >= since)
                .map(|&(_, r)| r)
                .max()
                .unwrap_or(recommended);
            if stabilized >= current {
                (
                    current,
                    format!("hold {current}: stabilization window saw {stabilized}"),
                )
            } else {
                (
                    stabilized,
                    format!("scale down to {stabilized} (highest in window)"),
                )
            }
        } else {
            (current, format!("hold {current}"))
        };
        if replicas < floor {
            replicas = floor;
            reason = format!("scheduled or minimum floor {floor}");
        }
        history.counts.push((now_ms, replicas));
        Ok(ScaleDecision {
            replicas,
            recommended,
            reason,
        })
    }
}

/// What the scaler remembers between calls, for one app in one cluster. Plain data the caller
/// stores; timestamps are UTC milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalerHistory {
    /// Recommendations `(at, replicas)` within the longest window.
    pub recommendations: Vec<(u64, u32)>,
    /// Replica counts seen or written `(at, replicas)` within the longest window.
    pub counts: Vec<(u64, u32)>,
}

impl ScalerHistory {
    fn prune(&mut self, before: u64) {
        self.recommendations.retain(|(t, _)| *t >= before);
        self.counts.retain(|(t, _)| *t >= before);
    }
}

/// The scaler's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleDecision {
    /// Replicas to write.
    pub replicas: u32,
    /// The recommendation for the traffic, before stabilization and rate limit.
    pub recommended: u32,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    /// 2026-11-28T00:00:00Z.
    const DAY: u64 = 1_795_824_000_000;

    #[test]
    fn replicas_follow_traffic_within_bounds() {
        assert_eq!(replicas_for_rps(250.0, 100.0).unwrap(), 3);
        assert_eq!(replicas_for_rps(200.0, 100.0).unwrap(), 2);
        assert_eq!(replicas_for_rps(0.0, 100.0).unwrap(), 0);
        let mut cfg = ScalerConfig::new(100.0);
        cfg.min_replicas = 2;
        cfg.max_replicas = Some(5);
        assert_eq!(cfg.recommend(0.0, 0).unwrap(), 2);
        assert_eq!(cfg.recommend(1e6, 0).unwrap(), 5);
    }

    #[test]
    fn bad_input_is_named() {
        let e = replicas_for_rps(-1.0, 100.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "requests/s must be a finite number >= 0, got -1"
        );
        let e = replicas_for_rps(f64::NAN, 100.0).unwrap_err();
        assert!(e.to_string().contains("got NaN"), "{e}");
        let e = replicas_for_rps(1.0, 0.0).unwrap_err();
        assert!(
            e.to_string()
                .contains("target requests/s per replica must be a finite number > 0, got 0")
        );
        let mut cfg = ScalerConfig::new(10.0);
        cfg.min_replicas = 3;
        cfg.max_replicas = Some(1);
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("min replicas 3 is above max replicas 1")
        );
        let mut cfg = ScalerConfig::new(10.0);
        cfg.scale_up = Some(ScaleUpLimit {
            factor: Some(0.5),
            step: None,
            period_ms: 1,
        });
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("factor must be >= 1")
        );
        let e = ScheduledFloor::new("61 9 * * *", MIN, 1).unwrap_err();
        assert!(e.to_string().starts_with("schedule \"61 9 * * *\":"), "{e}");
        let e = ScheduledFloor::new("0 9 * * *", 0, 1).unwrap_err();
        assert!(e.to_string().contains("duration must be > 0"), "{e}");
    }

    #[test]
    fn scale_down_waits_for_the_window() {
        let mut cfg = ScalerConfig::new(100.0);
        cfg.scale_down_window_ms = 5 * MIN;
        let mut h = ScalerHistory::default();
        assert_eq!(cfg.desired(&mut h, 0, 1000.0, 0).unwrap().replicas, 10);
        // Traffic drops: held at 10 for the whole window.
        for t in 1..5 {
            let d = cfg.desired(&mut h, 10, 200.0, t * MIN).unwrap();
            assert_eq!(d.replicas, 10, "minute {t}: {d:?}");
            assert_eq!(d.recommended, 2);
        }
        // The 1000 req/s sample has left the window; the highest left is 2.
        let d = cfg.desired(&mut h, 10, 200.0, 5 * MIN + 1).unwrap();
        assert_eq!(d.replicas, 2, "{d:?}");
        // Without a window the drop is immediate.
        let cfg = ScalerConfig::new(100.0);
        let mut h = ScalerHistory::default();
        assert_eq!(cfg.desired(&mut h, 10, 200.0, 0).unwrap().replicas, 2);
    }

    #[test]
    fn scale_down_goes_to_the_highest_in_window_not_the_latest() {
        let mut cfg = ScalerConfig::new(100.0);
        cfg.scale_down_window_ms = 3 * MIN;
        let mut h = ScalerHistory::default();
        cfg.desired(&mut h, 10, 600.0, 0).unwrap();
        let d = cfg.desired(&mut h, 10, 100.0, MIN).unwrap();
        assert_eq!(d.replicas, 6);
    }

    #[test]
    fn scale_up_is_rate_limited_per_period() {
        let mut cfg = ScalerConfig::new(10.0);
        cfg.scale_up = Some(ScaleUpLimit {
            factor: Some(2.0),
            step: Some(4),
            period_ms: MIN,
        });
        let mut h = ScalerHistory::default();
        // ×2 of 2 is 4, +4 is 6: the larger wins.
        let d = cfg.desired(&mut h, 2, 1000.0, 0).unwrap();
        assert_eq!(d.replicas, 6, "{d:?}");
        assert_eq!(d.recommended, 100);
        // Within the same period the base is still 2.
        assert_eq!(cfg.desired(&mut h, 6, 1000.0, MIN / 2).unwrap().replicas, 6);
        // Next period: base 6 → ×2 = 12.
        assert_eq!(
            cfg.desired(&mut h, 6, 1000.0, MIN + MIN / 2 + 1)
                .unwrap()
                .replicas,
            12
        );
        // From zero, at least one replica.
        cfg.scale_up = Some(ScaleUpLimit {
            factor: Some(2.0),
            step: None,
            period_ms: MIN,
        });
        let mut h = ScalerHistory::default();
        assert_eq!(cfg.desired(&mut h, 0, 1000.0, 0).unwrap().replicas, 1);
    }

    #[test]
    fn cron_floor_holds_for_its_window_and_skips_the_rate_limit() {
        let sale = ScheduledFloor::new("0 9 * * *", 2 * 60 * MIN, 10).unwrap();
        assert!(!sale.active_at(DAY + 9 * 60 * MIN - 1));
        assert!(sale.active_at(DAY + 9 * 60 * MIN));
        assert!(sale.active_at(DAY + 11 * 60 * MIN - 1));
        assert!(!sale.active_at(DAY + 11 * 60 * MIN));
        let mut cfg = ScalerConfig::new(100.0);
        cfg.schedules.push(sale);
        cfg.scale_up = Some(ScaleUpLimit {
            factor: Some(2.0),
            step: None,
            period_ms: MIN,
        });
        let mut h = ScalerHistory::default();
        let d = cfg.desired(&mut h, 2, 0.0, DAY + 9 * 60 * MIN + 5).unwrap();
        assert_eq!(d.replicas, 10, "{d:?}");
        // After the window, the floor is gone (and no stabilization window is set).
        let d = cfg.desired(&mut h, 10, 0.0, DAY + 11 * 60 * MIN).unwrap();
        assert_eq!(d.replicas, 0, "{d:?}");
        // A max still caps the floor.
        cfg.max_replicas = Some(4);
        assert_eq!(cfg.floor_at(DAY + 10 * 60 * MIN), 4);
    }
}
