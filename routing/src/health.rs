//! The health state of a target, as the controller's verdicts and operator actions set it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Health of one target. Draining and slow start carry their progress from 0.0 to 1.0.
///
/// In JSON (config, API) it is `{"state": "draining", "progress": 0.5}`; in the binary wire
/// format, a plain enum (an internally tagged enum needs a self-describing format).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Health {
    /// Serving at its full weight.
    #[default]
    Healthy,
    /// Failed its verdict: never chosen while another target can serve (fail-open aside).
    Unhealthy,
    /// Being taken out of traffic: its weight ramps from full (0.0) to zero (1.0).
    Draining {
        /// How far the drain has gone, 0.0 to 1.0.
        progress: f64,
    },
    /// Recovered and ramping back: its weight ramps from a floor (0.0) to full (1.0).
    SlowStart {
        /// How far the ramp has gone, 0.0 to 1.0.
        progress: f64,
    },
}

/// Health as JSON writes it.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case", deny_unknown_fields)]
enum Tagged {
    Healthy,
    Unhealthy,
    Draining { progress: f64 },
    SlowStart { progress: f64 },
}

/// Health as the binary wire format writes it.
#[derive(Serialize, Deserialize)]
enum Plain {
    Healthy,
    Unhealthy,
    Draining(f64),
    SlowStart(f64),
}

impl Serialize for Health {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match *self {
                Health::Healthy => Tagged::Healthy,
                Health::Unhealthy => Tagged::Unhealthy,
                Health::Draining { progress } => Tagged::Draining { progress },
                Health::SlowStart { progress } => Tagged::SlowStart { progress },
            }
            .serialize(s)
        } else {
            match *self {
                Health::Healthy => Plain::Healthy,
                Health::Unhealthy => Plain::Unhealthy,
                Health::Draining { progress } => Plain::Draining(progress),
                Health::SlowStart { progress } => Plain::SlowStart(progress),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(if d.is_human_readable() {
            match Tagged::deserialize(d)? {
                Tagged::Healthy => Health::Healthy,
                Tagged::Unhealthy => Health::Unhealthy,
                Tagged::Draining { progress } => Health::Draining { progress },
                Tagged::SlowStart { progress } => Health::SlowStart { progress },
            }
        } else {
            match Plain::deserialize(d)? {
                Plain::Healthy => Health::Healthy,
                Plain::Unhealthy => Health::Unhealthy,
                Plain::Draining(progress) => Health::Draining { progress },
                Plain::SlowStart(progress) => Health::SlowStart { progress },
            }
        })
    }
}

/// Share of its weight a target in slow start gets at progress 0, so a recovered target sees
/// some traffic at once (as Envoy's `min_weight_percent`).
pub const SLOW_START_FLOOR: f64 = 0.1;

impl Health {
    /// The factor, 0.0 to 1.0, applied to a target's configured weight in this state.
    pub fn weight_factor(&self) -> f64 {
        match *self {
            Health::Healthy => 1.0,
            Health::Unhealthy => 0.0,
            Health::Draining { progress } => (1.0 - progress).clamp(0.0, 1.0),
            Health::SlowStart { progress } => {
                SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * progress.clamp(0.0, 1.0)
            }
        }
    }

    /// True when the target may receive traffic while healthy targets exist.
    pub fn is_serving(&self) -> bool {
        self.weight_factor() > 0.0
    }

    /// A short name for logs, metrics labels and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Draining { progress } if *progress >= 1.0 => "drained",
            Health::Draining { .. } => "draining",
            Health::SlowStart { .. } => "slow-start",
        }
    }

    pub(crate) fn progress(&self) -> Option<f64> {
        match *self {
            Health::Draining { progress } | Health::SlowStart { progress } => Some(progress),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors() {
        assert_eq!(Health::Healthy.weight_factor(), 1.0);
        assert_eq!(Health::Unhealthy.weight_factor(), 0.0);
        assert_eq!(Health::Draining { progress: 0.25 }.weight_factor(), 0.75);
        assert_eq!(Health::Draining { progress: 1.0 }.weight_factor(), 0.0);
        assert!(!Health::Draining { progress: 1.0 }.is_serving());
        assert_eq!(
            Health::SlowStart { progress: 0.0 }.weight_factor(),
            SLOW_START_FLOOR
        );
        assert_eq!(Health::SlowStart { progress: 1.0 }.weight_factor(), 1.0);
    }

    #[test]
    fn wire_shape() {
        let json = serde_json::to_string(&Health::Draining { progress: 0.5 }).unwrap();
        assert_eq!(json, r#"{"state":"draining","progress":0.5}"#);
        let back: Health =
            serde_json::from_str(r#"{"state":"slow-start","progress":0.2}"#).unwrap();
        assert_eq!(back, Health::SlowStart { progress: 0.2 });
    }
}
