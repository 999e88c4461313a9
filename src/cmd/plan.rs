//! `meridian plan`: the dry-run planner of a running controller — what if a cluster fails, is
//! drained, or a peak arrives — as a table per app or as the API's JSON.

use anyhow::Context;

use super::table::{Align, Table};
use meridian_controller::plan::{AppPlan, Plan, Scenario, TransitionStatus};

/// Arguments of `meridian plan`. Without a scenario flag: the plan for now.
#[derive(clap::Args)]
pub struct Args {
    /// What if this cluster fails.
    #[arg(long, value_name = "CLUSTER", conflicts_with_all = ["drain", "peak"])]
    fail: Option<String>,
    /// What if this cluster is drained.
    #[arg(long, value_name = "CLUSTER", conflicts_with = "peak")]
    drain: Option<String>,
    /// What if every app's traffic grows by this factor (such as 3 or 1.5).
    #[arg(long, value_name = "FACTOR", value_parser = parse_factor)]
    peak: Option<f64>,
    #[command(flatten)]
    api: super::operator::Api,
}

fn parse_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err(format!(
            "{text:?} is not a peak factor (a finite number >= 0, such as 3 or 1.5)"
        )),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let scenario = match (&args.fail, &args.drain, args.peak) {
        (Some(cluster), _, _) => Scenario::Fail {
            cluster: cluster.clone(),
        },
        (_, Some(cluster), _) => Scenario::Drain {
            cluster: cluster.clone(),
        },
        (_, _, Some(factor)) => Scenario::Peak { factor },
        _ => Scenario::Now,
    };
    let client = args.api.client()?;
    let plan = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(client.plan(&scenario))?;
    if args.api.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render(&plan));
    }
    Ok(())
}

fn describe(scenario: &Scenario) -> String {
    match scenario {
        Scenario::Now => "now (the current traffic)".to_owned(),
        Scenario::Fail { cluster } => format!("cluster {cluster} fails"),
        Scenario::Drain { cluster } => format!("cluster {cluster} is drained"),
        Scenario::Peak { factor } => format!("a peak of {factor}x the current traffic"),
    }
}

/// A weight as its share of the app's weights, in percent.
fn share(weights: &std::collections::BTreeMap<String, u32>, cluster: &str) -> String {
    let sum: f64 = weights.values().map(|&w| f64::from(w)).sum();
    match weights.get(cluster) {
        Some(&w) if sum > 0.0 => format!("{:.1}%", 100.0 * f64::from(w) / sum),
        Some(_) => "0.0%".to_owned(),
        None => "-".to_owned(),
    }
}

fn count(map: &std::collections::BTreeMap<String, u32>, cluster: &str) -> String {
    map.get(cluster).map_or("-".to_owned(), u32::to_string)
}

/// Whether the app's capacity suffices after the scenario, and if not, why.
fn app_status(app: &AppPlan) -> String {
    let mut short = Vec::new();
    if app.replica_shortfall > 0 {
        short.push(format!(
            "{} replicas fit in no cluster",
            app.replica_shortfall
        ));
    }
    match &app.status {
        TransitionStatus::CapacityShort {
            missing_rps,
            reason,
        } => {
            short.push(format!(
                "{missing_rps:.1} req/s beyond what the replicas carry"
            ));
            short.push(reason.clone());
        }
        TransitionStatus::WaitingForCapacity {
            cluster,
            ready,
            wanted,
        } => short.push(format!("{cluster} has {ready} of {wanted} replicas ready")),
        TransitionStatus::Converged => {}
    }
    if short.is_empty() && !app.replicas_known {
        "sufficient: unknown, replicas unknown".to_owned()
    } else if short.is_empty() {
        "sufficient: yes".to_owned()
    } else {
        format!("sufficient: NO: {}", short.join("; "))
    }
}

/// The text form: a table per app, then nodes and cost.
pub fn render(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "plan: {}", describe(&plan.scenario));
    for app in &plan.apps {
        let _ = writeln!(out, "\nAPP {}  ({})", app.app, app_status(app));
        if !app.replicas_known {
            let _ = writeln!(
                out,
                "  replicas unknown: no placement.total_replicas or scaling; weights and traffic only"
            );
        }
        let mut table = Table::new(&[
            ("CLUSTER", Align::Left),
            ("WEIGHT NOW→AFTER", Align::Change),
            ("REQ/S NOW→AFTER", Align::Change),
            ("REPLICAS", Align::Change),
            ("MACHINES", Align::Change),
        ]);
        for cluster in app.weights.keys() {
            let weight = format!(
                "{} → {}",
                share(&app.weights_before, cluster),
                share(&app.weights, cluster)
            );
            let rps = format!(
                "{:.1} → {:.1}",
                app.traffic_rps_before.get(cluster).copied().unwrap_or(0.0),
                app.traffic_rps.get(cluster).copied().unwrap_or(0.0)
            );
            let replicas = format!(
                "{} → {}",
                count(&app.replicas_before, cluster),
                count(&app.replicas, cluster)
            );
            let machines = plan.nodes.get(cluster).map_or("-".to_owned(), |n| {
                format!("{} → {}", n.machines_now, n.machines_needed)
            });
            table.row(vec![cluster.clone(), weight, rps, replicas, machines]);
        }
        out.push_str(&table.render("  "));
    }
    if !plan.nodes.is_empty() {
        let _ = writeln!(out, "\nNODES");
        let mut table = Table::new(&[
            ("CLUSTER", Align::Left),
            ("MACHINES NOW→NEEDED", Align::Change),
            ("MAX", Align::Right),
            ("", Align::Left),
        ]);
        for (cluster, n) in &plan.nodes {
            let fits = if n.machines_needed <= n.max_machines {
                "fits"
            } else {
                "ABOVE the pool's maximum"
            };
            table.row(vec![
                cluster.clone(),
                format!("{} → {}", n.machines_now, n.machines_needed),
                n.max_machines.to_string(),
                fits.to_string(),
            ]);
        }
        out.push_str(&table.render("  "));
    }
    let _ = writeln!(
        out,
        "\ncost/h: {:.2} → {:.2}{}",
        plan.cost_per_hour_before,
        plan.cost_per_hour_after,
        if plan.unknown_cost.is_empty() {
            String::new()
        } else {
            format!(
                " (cost unknown, counted as 0: {})",
                plan.unknown_cost.join(", ")
            )
        }
    );
    let _ = writeln!(
        out,
        "capacity sufficient: {}",
        if plan.sufficient { "yes" } else { "NO" }
    );
    out
}
