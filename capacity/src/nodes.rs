//! Node scaling for a Cluster API MachineDeployment in one member cluster.
//!
//! - **Up** when pods are unschedulable: enough machines for their requests (the larger of the
//!   CPU and memory quotient, rounded up), at once, within the ceiling. A pod larger than one
//!   machine cannot be helped by more machines and is left out (and named in the reason).
//! - **Down** one machine at a time, only when no pod is unschedulable, the cool-down since the
//!   last scale has passed, and the requests would still use less than the threshold of the
//!   remaining machines' allocatable CPU and memory.
//! - Bounds always: a count outside `[min, max]` is brought back inside first.

use serde::{Deserialize, Serialize};

use crate::{CapacityError, check_bounds, check_rate};

/// CPU and memory, as Kubernetes requests count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// CPU and memory.
    pub fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        Self {
            cpu_millis,
            memory_bytes,
        }
    }

    fn fits_in(self, machine: Resources) -> bool {
        self.cpu_millis <= machine.cpu_millis && self.memory_bytes <= machine.memory_bytes
    }
}

/// Machines needed for `demand`: the larger of the CPU and memory quotients, rounded up. It is
/// a lower bound for bin packing; the next step adds more if pods still do not fit.
pub fn machines_for(demand: Resources, per_machine: Resources) -> Result<u32, CapacityError> {
    if per_machine.cpu_millis == 0 || per_machine.memory_bytes == 0 {
        return Err(CapacityError::Invalid(format!(
            "allocatable per machine must be > 0 for CPU and memory, got {} millicores and {} bytes",
            per_machine.cpu_millis, per_machine.memory_bytes
        )));
    }
    let cpu = demand.cpu_millis.div_ceil(per_machine.cpu_millis);
    let mem = demand.memory_bytes.div_ceil(per_machine.memory_bytes);
    Ok(u32::try_from(cpu.max(mem)).unwrap_or(u32::MAX))
}

/// A MachineDeployment's sizing and bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodePool {
    /// Allocatable resources of one machine.
    pub per_machine: Resources,
    /// Fewest machines.
    pub min_machines: u32,
    /// Most machines.
    pub max_machines: u32,
    /// Time after a scale before scaling down, milliseconds.
    pub cool_down_ms: u64,
    /// Scale down only if utilisation after removing a machine stays below this (0..=1).
    pub scale_down_utilisation: f64,
}

/// What the pool looks like now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Machine replicas now.
    pub machines: u32,
    /// Requests of each pod that cannot be scheduled.
    pub unschedulable: Vec<Resources>,
    /// Requests of the pods scheduled on the pool's machines.
    pub requested: Resources,
    /// When the pool was last scaled, UTC milliseconds.
    pub last_scale_ms: Option<u64>,
    /// Now, UTC milliseconds.
    pub now_ms: u64,
}

/// The machine count to write, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDecision {
    /// Machine replicas to write (equal to the current count when nothing changes).
    pub machines: u32,
    /// Why.
    pub reason: String,
}

/// The machine count for the pool (see the module doc).
pub fn wanted_machines(pool: &NodePool, state: &NodeState) -> Result<NodeDecision, CapacityError> {
    check_bounds("node pool", pool.min_machines, Some(pool.max_machines))?;
    check_rate("scale-down utilisation", pool.scale_down_utilisation)?;
    if pool.scale_down_utilisation > 1.0 {
        return Err(CapacityError::Invalid(format!(
            "scale-down utilisation must be within 0..=1, got {}",
            pool.scale_down_utilisation
        )));
    }
    machines_for(Resources::default(), pool.per_machine)?;
    let now = state.machines;
    if now < pool.min_machines {
        return Ok(NodeDecision {
            machines: pool.min_machines,
            reason: format!("raise to the minimum of {}", pool.min_machines),
        });
    }
    if now > pool.max_machines {
        return Ok(NodeDecision {
            machines: pool.max_machines,
            reason: format!("lower to the maximum of {}", pool.max_machines),
        });
    }

    if !state.unschedulable.is_empty() {
        let (fit, too_big): (Vec<Resources>, Vec<Resources>) = state
            .unschedulable
            .iter()
            .partition(|p| p.fits_in(pool.per_machine));
        let demand = fit.iter().fold(Resources::default(), |a, p| {
            Resources::new(a.cpu_millis + p.cpu_millis, a.memory_bytes + p.memory_bytes)
        });
        let extra = machines_for(demand, pool.per_machine)?;
        let wanted = now.saturating_add(extra).min(pool.max_machines);
        let mut reason = if wanted > now {
            format!(
                "{} unschedulable pods need {extra} more machines",
                fit.len()
            )
        } else if extra > 0 {
            format!(
                "{} unschedulable pods, but already at the maximum of {}",
                fit.len(),
                pool.max_machines
            )
        } else {
            "no unschedulable pod fits a machine".to_owned()
        };
        if wanted > now && wanted < now + extra {
            reason.push_str(&format!(", capped at the maximum of {}", pool.max_machines));
        }
        if !too_big.is_empty() {
            reason.push_str(&format!(
                "; {} pods request more than one machine's allocatable and are left out",
                too_big.len()
            ));
        }
        return Ok(NodeDecision {
            machines: wanted,
            reason,
        });
    }

    if now <= pool.min_machines {
        return Ok(NodeDecision {
            machines: now,
            reason: format!("at the minimum of {}", pool.min_machines),
        });
    }
    if let Some(last) = state.last_scale_ms {
        let since = state.now_ms.saturating_sub(last);
        if since < pool.cool_down_ms {
            return Ok(NodeDecision {
                machines: now,
                reason: format!(
                    "cooling down: {} s of {} s",
                    since / 1000,
                    pool.cool_down_ms / 1000
                ),
            });
        }
    }
    let fewer = u64::from(now - 1);
    let cpu = state.requested.cpu_millis as f64 / (fewer * pool.per_machine.cpu_millis) as f64;
    let mem = state.requested.memory_bytes as f64 / (fewer * pool.per_machine.memory_bytes) as f64;
    let util = cpu.max(mem);
    if util < pool.scale_down_utilisation {
        Ok(NodeDecision {
            machines: now - 1,
            reason: format!(
                "remove one machine: utilisation on {fewer} would be {:.0}%",
                util * 100.0
            ),
        })
    } else {
        Ok(NodeDecision {
            machines: now,
            reason: format!(
                "hold: utilisation on {fewer} machines would be {:.0}%, threshold {:.0}%",
                util * 100.0,
                pool.scale_down_utilisation * 100.0
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn pool() -> NodePool {
        NodePool {
            per_machine: Resources::new(4000, 16 * GI),
            min_machines: 2,
            max_machines: 6,
            cool_down_ms: 600_000,
            scale_down_utilisation: 0.5,
        }
    }

    fn state(machines: u32, requested: Resources) -> NodeState {
        NodeState {
            machines,
            unschedulable: Vec::new(),
            requested,
            last_scale_ms: Some(0),
            now_ms: 3_600_000,
        }
    }

    #[test]
    fn machines_for_takes_the_larger_dimension() {
        let m = Resources::new(4000, 16 * GI);
        assert_eq!(machines_for(Resources::new(4001, GI), m).unwrap(), 2);
        assert_eq!(machines_for(Resources::new(100, 33 * GI), m).unwrap(), 3);
        assert_eq!(machines_for(Resources::default(), m).unwrap(), 0);
        let e = machines_for(Resources::new(1, 1), Resources::new(0, 1)).unwrap_err();
        assert!(
            e.to_string()
                .contains("allocatable per machine must be > 0"),
            "{e}"
        );
    }

    #[test]
    fn unschedulable_pods_scale_up_at_once_within_max() {
        let mut s = state(3, Resources::new(11_000, 40 * GI));
        s.last_scale_ms = Some(s.now_ms - 1); // the cool-down does not hold back a scale-up
        s.unschedulable = vec![Resources::new(2000, GI); 3];
        let d = wanted_machines(&pool(), &s).unwrap();
        assert_eq!(d.machines, 5, "{d:?}");
        s.unschedulable = vec![Resources::new(2000, GI); 20];
        let d = wanted_machines(&pool(), &s).unwrap();
        assert_eq!(d.machines, 6, "{d:?}");
        assert!(
            d.reason.contains("capped at the maximum of 6"),
            "{}",
            d.reason
        );
        // A pod bigger than a machine does not buy machines.
        s.unschedulable = vec![Resources::new(8000, GI)];
        let d = wanted_machines(&pool(), &s).unwrap();
        assert_eq!(d.machines, 3);
        assert!(d.reason.contains("left out"), "{}", d.reason);
    }

    #[test]
    fn scale_down_one_at_a_time_after_cool_down_and_below_threshold() {
        // 5 machines, 6 cores requested: on 4 machines that is 37.5% < 50%.
        let s = state(5, Resources::new(6000, 8 * GI));
        assert_eq!(wanted_machines(&pool(), &s).unwrap().machines, 4);
        // Inside the cool-down: hold.
        let mut c = s.clone();
        c.last_scale_ms = Some(c.now_ms - 1000);
        let d = wanted_machines(&pool(), &c).unwrap();
        assert_eq!(d.machines, 5);
        assert!(d.reason.starts_with("cooling down"), "{}", d.reason);
        // Utilisation after removal too high (memory): hold.
        let busy = state(5, Resources::new(1000, 40 * GI));
        assert_eq!(wanted_machines(&pool(), &busy).unwrap().machines, 5);
        // At the minimum: hold.
        assert_eq!(
            wanted_machines(&pool(), &state(2, Resources::default()))
                .unwrap()
                .machines,
            2
        );
    }

    #[test]
    fn bounds_are_restored_first() {
        assert_eq!(
            wanted_machines(&pool(), &state(1, Resources::default()))
                .unwrap()
                .machines,
            2
        );
        assert_eq!(
            wanted_machines(&pool(), &state(9, Resources::default()))
                .unwrap()
                .machines,
            6
        );
    }

    #[test]
    fn bad_input_is_named() {
        let mut p = pool();
        p.min_machines = 7;
        assert_eq!(
            wanted_machines(&p, &state(3, Resources::default()))
                .unwrap_err()
                .to_string(),
            "node pool: min replicas 7 is above max replicas 6"
        );
        let mut p = pool();
        p.scale_down_utilisation = f64::NAN;
        assert!(
            wanted_machines(&p, &state(3, Resources::default()))
                .unwrap_err()
                .to_string()
                .contains("scale-down utilisation")
        );
        p.scale_down_utilisation = 1.5;
        assert!(
            wanted_machines(&p, &state(3, Resources::default()))
                .unwrap_err()
                .to_string()
                .contains("within 0..=1")
        );
    }
}
