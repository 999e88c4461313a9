//! Operator commands against a running controller's API: `status`, `weight`, `drain`,
//! `undrain`, `explain`, `history` and `audit`.

use std::path::PathBuf;

use super::table::{Align, Table};
use anyhow::Context;
use meridian_controller::client::ApiClient;

/// How to reach the controller.
#[derive(clap::Args)]
pub struct Api {
    /// The controller's base URL.
    #[arg(
        long,
        env = "MERIDIAN_CONTROLLER",
        default_value = "http://127.0.0.1:8090"
    )]
    controller: String,
    /// File holding the bearer token (else env MERIDIAN_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    tls: super::TlsArgs,
}

impl Api {
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let token = match super::read_token(self.token_file.as_deref())? {
            Some(token) => Some(token),
            None => std::env::var("MERIDIAN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        Ok(ApiClient::with_tls(
            &self.controller,
            token,
            &self.tls.client_tls(),
        )?)
    }
}

/// Arguments of `meridian status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: Api,
}

/// Arguments of `meridian weight`.
#[derive(clap::Args)]
pub struct WeightArgs {
    #[command(flatten)]
    api: Api,
    /// The app.
    app: String,
    /// The cluster of the target.
    cluster: String,
    /// The new weight (0 to 10000); omit with --reset.
    #[arg(required_unless_present = "reset")]
    weight: Option<u32>,
    /// Remove the override: the configured weight applies again.
    #[arg(long, conflicts_with = "weight")]
    reset: bool,
}

/// Arguments of `meridian drain` and `meridian undrain`.
#[derive(clap::Args)]
pub struct DrainArgs {
    #[command(flatten)]
    api: Api,
    /// The cluster.
    cluster: String,
    /// Only this app's target in the cluster.
    #[arg(long)]
    app: Option<String>,
}

/// Arguments of `meridian explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    api: Api,
    /// The hostname asked for.
    host: String,
    /// The client's IP address.
    client: String,
}

/// Arguments of `meridian history` and `meridian audit`.
#[derive(clap::Args)]
pub struct LogArgs {
    #[command(flatten)]
    api: Api,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

fn block_on<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(f)
}

/// Prints the API's answer as JSON (a macro, as the root package needs no serde of its own).
macro_rules! print_json {
    ($value:expr) => {{
        println!("{}", serde_json::to_string_pretty(&$value)?);
        Ok(())
    }};
}

/// An effective weight as the table keeps it (thousandths, so ramps move smoothly) in the
/// units of the configured weight: `100`, `52.5`.
fn effective(thousandths: u32) -> String {
    let whole = f64::from(thousandths) / 1000.0;
    let text = format!("{whole:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A time as the reader's local time and how long ago: `14:03:27 CET (12 s ago)`; the date
/// too when it is not today.
fn time(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    time_at(ms, now, &jiff::tz::TimeZone::system())
}

fn time_at(ms: u64, now_ms: u64, zone: &jiff::tz::TimeZone) -> String {
    let zoned = |ms: u64| {
        jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
            .map(|t| t.to_zoned(zone.clone()))
    };
    let (Ok(at), Ok(now)) = (zoned(ms), zoned(now_ms)) else {
        return "(time out of range)".into();
    };
    let clock = if at.date() == now.date() {
        at.strftime("%H:%M:%S %Z").to_string()
    } else {
        at.strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
    };
    format!("{clock} ({})", ago(ms, now_ms))
}

/// How long before `now_ms`, in the largest fitting unit.
fn ago(ms: u64, now_ms: u64) -> String {
    if ms > now_ms {
        // The controller's clock runs ahead of this host's.
        return format!("in {} s", (ms - now_ms).div_ceil(1000));
    }
    let s = (now_ms - ms) / 1000;
    match s {
        0..90 => format!("{s} s ago"),
        90..5_400 => format!("{} min ago", (s + 30) / 60),
        5_400..172_800 => format!("{} h ago", (s + 1_800) / 3_600),
        _ => format!("{} days ago", s / 86_400),
    }
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    block_on(async {
        let status = args.api.client()?.status().await?;
        if args.api.json {
            return print_json!(status);
        }
        println!("table version {}", status.table_version);
        let mut clusters = Table::new(&[
            ("CLUSTER", Align::Left),
            ("REGION", Align::Left),
            ("PROVIDER", Align::Left),
            ("DRAIN", Align::Left),
        ]);
        for c in &status.clusters {
            let drain = c
                .drain_started_at_ms
                .map_or("-".to_string(), |t| format!("since {}", time(t)));
            clusters.row(vec![
                c.name.clone(),
                c.region.clone(),
                c.provider.clone(),
                drain,
            ]);
        }
        print!("\n{}", clusters.render(""));
        for app in &status.apps {
            println!(
                "\nAPP {} ({}, {}) {}",
                app.name,
                app.policy,
                app.failure_mode,
                app.hostnames.join(" ")
            );
            let mut targets = Table::new(&[
                ("TARGET", Align::Left),
                ("WEIGHT", Align::Right),
                ("EFFECTIVE", Align::Right),
                ("HEALTH", Align::Left),
                ("VOTES", Align::Left),
            ]);
            for t in &app.targets {
                let weight = match t.weight_override {
                    Some(_) => format!("{}*", t.weight),
                    None => t.weight.to_string(),
                };
                // The share of its weight it gets now, which the effective column shows
                // too (a slow start's progress would not match it: it starts at a floor).
                let health = match t.weight_percent {
                    Some(p) => format!("{} {p:.0}%", t.health),
                    None => t.health.clone(),
                };
                let votes: Vec<String> = t
                    .verdict
                    .votes
                    .iter()
                    .map(|v| format!("{}:{}", v.vantage, if v.healthy { "up" } else { "down" }))
                    .collect();
                targets.row(vec![
                    t.cluster.clone(),
                    weight,
                    effective(t.effective_weight),
                    health,
                    votes.join(" "),
                ]);
            }
            print!("{}", targets.render("  "));
        }
        let overridden = status
            .apps
            .iter()
            .flat_map(|a| &a.targets)
            .any(|t| t.weight_override.is_some());
        if overridden {
            println!("\n(* weight set by an operator)");
        }
        if status
            .apps
            .iter()
            .flat_map(|a| &a.targets)
            .any(|t| t.weight_percent.is_some())
        {
            println!("(draining and slow-start: the percentage of its weight the target gets now)");
        }
        Ok(())
    })
}

pub fn weight(args: WeightArgs) -> anyhow::Result<()> {
    block_on(async {
        let client = args.api.client()?;
        let change = match args.weight {
            Some(w) if !args.reset => client.set_weight(&args.app, &args.cluster, w).await?,
            _ => client.reset_weight(&args.app, &args.cluster).await?,
        };
        if args.api.json {
            return print_json!(change);
        }
        println!(
            "{} {}: {} (audit #{}, table version {})",
            change.audit.action,
            change.audit.subject,
            change.audit.detail,
            change.audit.seq,
            change.table_version
        );
        Ok(())
    })
}

pub fn drain(args: DrainArgs, drain: bool) -> anyhow::Result<()> {
    block_on(async {
        let change = args
            .api
            .client()?
            .drain(&args.cluster, args.app.as_deref(), drain)
            .await?;
        if args.api.json {
            return print_json!(change);
        }
        println!(
            "{} {} (audit #{}, table version {})",
            change.audit.action, change.audit.subject, change.audit.seq, change.table_version
        );
        Ok(())
    })
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    block_on(async {
        let e = args.api.client()?.explain(&args.host, &args.client).await?;
        if args.api.json {
            return print_json!(e);
        }
        println!("{}", e["summary"].as_str().unwrap_or_default());
        for t in e["targets"].as_array().into_iter().flatten() {
            println!(
                "{} {} ({}) tier {} weight {} effective {} {}{}",
                if t["chosen"] == true { "→" } else { " " },
                t["cluster"].as_str().unwrap_or_default(),
                t["region"].as_str().unwrap_or_default(),
                t["tier"],
                t["weight"],
                t["effective_weight"],
                t["health"]["state"].as_str().unwrap_or_default(),
                if t["candidate"] == true {
                    ""
                } else {
                    " (not a candidate)"
                }
            );
        }
        println!("table version {}", e["table_version"]);
        Ok(())
    })
}

pub fn history(args: LogArgs) -> anyhow::Result<()> {
    block_on(async {
        let entries = args.api.client()?.history(args.limit).await?;
        if args.api.json {
            return print_json!(entries);
        }
        if entries.is_empty() {
            println!("no failover history yet: no target has changed state since the store began");
        }
        for h in &entries {
            let votes: Vec<String> = h
                .change
                .votes
                .iter()
                .map(|v| format!("{}:{}", v.vantage, if v.healthy { "up" } else { "down" }))
                .collect();
            println!(
                "#{} {} {}/{} → {}: {} [{}]",
                h.seq,
                time(h.change.at_ms),
                h.change.app,
                h.change.cluster,
                if h.change.healthy {
                    "healthy"
                } else {
                    "unhealthy"
                },
                h.change.cause,
                votes.join(" ")
            );
        }
        Ok(())
    })
}

pub fn audit(args: LogArgs) -> anyhow::Result<()> {
    block_on(async {
        let entries = args.api.client()?.audit(args.limit).await?;
        if args.api.json {
            return print_json!(entries);
        }
        if entries.is_empty() {
            println!("no operator changes yet: weights, drains and undrains are recorded here");
        }
        for a in &entries {
            println!(
                "#{} {} {} ({}) {} {} {}",
                a.seq,
                time(a.at_ms),
                a.who,
                a.role,
                a.action,
                a.subject,
                a.detail
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_local_clock_and_age_never_as_epoch_numbers() {
        let zone = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // 2026-12-02 14:00:00 UTC is 15:00 in Berlin (CET).
        let now = 1_796_220_000_000;
        assert_eq!(time_at(now - 12_000, now, &zone), "14:59:48 CET (12 s ago)");
        assert_eq!(
            time_at(now - 600_000, now, &zone),
            "14:50:00 CET (10 min ago)"
        );
        assert_eq!(
            time_at(now - 3 * 86_400_000, now, &zone),
            "2026-11-29 15:00:00 CET (3 days ago)"
        );
        assert_eq!(time_at(now + 1_500, now, &zone), "15:00:01 CET (in 2 s)");
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(
            time_at(now - 7_200_000, now, &utc),
            "12:00:00 UTC (2 h ago)"
        );
    }
}
