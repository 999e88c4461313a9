//! Deltas between table versions: what changed from one version to the next (regions,
//! clusters, apps, the targets of an app, geo map entries, round-trip times), so a
//! subscriber holding version N builds N+k from it instead of receiving the whole table.
//!
//! [`TableDelta::between`] is what the controller sends; [`RoutingTable::apply`] is what a
//! subscriber does with it. Applying is pure and checked twice: the delta names the version
//! and digest it starts from (a delta for another table is refused before anything is
//! built), and the digest of the result (a table that differs from the controller's in any
//! field is refused after). Either refusal means: ask for a snapshot.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::app::{App, Target};
use crate::cluster::{Cluster, Region};
use crate::digest::Digest;
use crate::error::TableError;
use crate::geo::SubnetRegion;
use crate::table::{RoutingTable, RttSample, TableData};

/// An item of a table list with a key unique within the list (a name, a CIDR).
pub trait Keyed: Clone + PartialEq {
    /// The key.
    type Key: Clone + Eq + Hash + Debug + Serialize + DeserializeOwned;
    /// This item's key.
    fn key(&self) -> Self::Key;
}

impl Keyed for Region {
    type Key = String;
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for Cluster {
    type Key = String;
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for App {
    type Key = String;
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for Target {
    type Key = String;
    fn key(&self) -> String {
        self.cluster.clone()
    }
}

impl Keyed for SubnetRegion {
    type Key = IpNet;
    fn key(&self) -> IpNet {
        self.cidr
    }
}

impl Keyed for RttSample {
    type Key = (String, String);
    fn key(&self) -> (String, String) {
        (self.region.clone(), self.cluster.clone())
    }
}

/// How one list of a table changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub enum ListDelta<T: Keyed> {
    /// Not at all.
    Same,
    /// Items removed by key, then items changed in place or added at the end, then (when the
    /// order is not the one those steps leave) the keys in their new order.
    Edit {
        /// Keys of the items removed.
        remove: Vec<T::Key>,
        /// Items changed (replaced where their key is) or added (at the end).
        upsert: Vec<T>,
        /// Every key in the new order, when it differs from the order the edit leaves.
        order: Option<Vec<T::Key>>,
    },
    /// Replaced whole (a list whose keys are not unique cannot be edited by key).
    Whole(Vec<T>),
}

/// The targets of one app whose other fields did not change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetsDelta {
    /// The app, by name.
    pub app: String,
    /// How its targets changed.
    pub targets: ListDelta<Target>,
}

/// How the country → region map changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CountriesDelta {
    /// Countries removed.
    pub remove: Vec<String>,
    /// Countries added or mapped to another region: (country, region).
    pub upsert: Vec<(String, String)>,
}

/// What changed from one table version to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableDelta {
    /// The version this delta applies to.
    pub base_version: u64,
    /// The digest of that version.
    pub base_digest: Digest,
    /// The version it makes.
    pub version: u64,
    /// When the controller computed that version.
    pub generated_at_ms: u64,
    /// The digest of that version.
    pub digest: Digest,
    /// Regions.
    pub regions: ListDelta<Region>,
    /// Clusters.
    pub clusters: ListDelta<Cluster>,
    /// Apps added, or changed in more than their targets (sent whole).
    pub apps: ListDelta<App>,
    /// Apps whose targets alone changed.
    pub targets: Vec<TargetsDelta>,
    /// Country → region entries.
    pub countries: CountriesDelta,
    /// CIDR → region overrides.
    pub subnets: ListDelta<SubnetRegion>,
    /// Round-trip times.
    pub rtt: ListDelta<RttSample>,
}

fn unique_keys<T: Keyed>(items: &[T]) -> bool {
    let mut seen = HashSet::with_capacity(items.len());
    items.iter().all(|i| seen.insert(i.key()))
}

/// The delta from `old` to `new`. `same(old, new)` says whether an item with the same key
/// in both is unchanged for this list (apps use it to send target changes apart).
fn diff_list<T: Keyed>(old: &[T], new: &[T], mut same: impl FnMut(&T, &T) -> bool) -> ListDelta<T> {
    if !unique_keys(old) || !unique_keys(new) {
        return if old == new {
            ListDelta::Same
        } else {
            ListDelta::Whole(new.to_vec())
        };
    }
    let old_at: HashMap<T::Key, &T> = old.iter().map(|i| (i.key(), i)).collect();
    let new_keys: Vec<T::Key> = new.iter().map(Keyed::key).collect();
    let in_new: HashSet<&T::Key> = new_keys.iter().collect();
    let remove: Vec<T::Key> = old
        .iter()
        .map(Keyed::key)
        .filter(|k| !in_new.contains(k))
        .collect();
    let mut upsert = Vec::new();
    let mut added = Vec::new();
    for (item, key) in new.iter().zip(&new_keys) {
        match old_at.get(key) {
            Some(before) if same(before, item) => {}
            Some(_) => upsert.push(item.clone()),
            None => {
                upsert.push(item.clone());
                added.push(key.clone());
            }
        }
    }
    // The order the edit leaves: the old items kept, in their order, then the added ones.
    let removed: HashSet<&T::Key> = remove.iter().collect();
    let left = old
        .iter()
        .map(Keyed::key)
        .filter(|k| !removed.contains(k))
        .chain(added);
    let order = (!left.eq(new_keys.iter().cloned())).then_some(new_keys);
    if remove.is_empty() && upsert.is_empty() && order.is_none() {
        ListDelta::Same
    } else {
        ListDelta::Edit {
            remove,
            upsert,
            order,
        }
    }
}

fn corrupt(what: &str, message: String) -> TableError {
    TableError::DeltaCorrupt(format!("{what}: {message}"))
}

fn apply_list<T: Keyed>(
    list: &mut Vec<T>,
    delta: &ListDelta<T>,
    what: &str,
) -> Result<(), TableError> {
    let (remove, upsert, order) = match delta {
        ListDelta::Same => return Ok(()),
        ListDelta::Whole(items) => {
            list.clone_from(items);
            return Ok(());
        }
        ListDelta::Edit {
            remove,
            upsert,
            order,
        } => (remove, upsert, order),
    };
    let mut at: HashMap<T::Key, usize> = list
        .iter()
        .enumerate()
        .map(|(i, item)| (item.key(), i))
        .collect();
    if at.len() != list.len() {
        return Err(corrupt(
            what,
            "an edit of a list with duplicate keys".into(),
        ));
    }
    if !remove.is_empty() {
        let mut gone = vec![false; list.len()];
        for key in remove {
            match at.get(key) {
                Some(&i) if !gone[i] => gone[i] = true,
                _ => {
                    return Err(corrupt(
                        what,
                        format!("removes {key:?}, which is not there"),
                    ));
                }
            }
        }
        let mut i = 0;
        list.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
        at = list
            .iter()
            .enumerate()
            .map(|(i, item)| (item.key(), i))
            .collect();
    }
    for item in upsert {
        let key = item.key();
        match at.get(&key) {
            Some(&i) => list[i] = item.clone(),
            None => {
                at.insert(key, list.len());
                list.push(item.clone());
            }
        }
    }
    if let Some(order) = order {
        if order.len() != list.len() {
            return Err(corrupt(
                what,
                format!("an order of {} keys for {} items", order.len(), list.len()),
            ));
        }
        let mut slots: Vec<Option<T>> = std::mem::take(list).into_iter().map(Some).collect();
        for key in order {
            let item = at.get(key).and_then(|&i| slots[i].take()).ok_or_else(|| {
                corrupt(what, format!("orders {key:?}, which is not there or twice"))
            })?;
            list.push(item);
        }
    }
    Ok(())
}

/// True when two apps differ in their targets at most.
fn same_head(a: &App, b: &App) -> bool {
    a.name == b.name
        && a.hostnames == b.hostnames
        && a.policy == b.policy
        && a.failure_mode == b.failure_mode
        && a.dns_ttl == b.dns_ttl
        && a.geo_preferences == b.geo_preferences
}

impl TableDelta {
    /// What changed from `old` to `new`.
    pub fn between(old: &RoutingTable, new: &RoutingTable) -> TableDelta {
        let (o, n) = (old.data(), new.data());
        // Apps at the same position with the same digest are equal: most apps, most of the
        // time, compared without looking inside.
        let unchanged: HashSet<&str> = o
            .apps
            .iter()
            .zip(&n.apps)
            .enumerate()
            .filter(|(i, (a, b))| a.name == b.name && old.app_digest(*i) == new.app_digest(*i))
            .map(|(_, (a, _))| a.name.as_str())
            .collect();
        let mut targets = Vec::new();
        let apps = diff_list(&o.apps, &n.apps, |a, b| {
            if unchanged.contains(a.name.as_str()) || a == b {
                return true;
            }
            if same_head(a, b) {
                targets.push(TargetsDelta {
                    app: b.name.clone(),
                    targets: diff_list(&a.targets, &b.targets, |x, y| x == y),
                });
                return true;
            }
            false
        });
        let countries = CountriesDelta {
            remove: o
                .geo
                .countries
                .keys()
                .filter(|c| !n.geo.countries.contains_key(*c))
                .cloned()
                .collect(),
            upsert: n
                .geo
                .countries
                .iter()
                .filter(|(c, r)| o.geo.countries.get(*c) != Some(r))
                .map(|(c, r)| (c.clone(), r.clone()))
                .collect(),
        };
        TableDelta {
            base_version: o.version,
            base_digest: old.digest(),
            version: n.version,
            generated_at_ms: n.generated_at_ms,
            digest: new.digest(),
            regions: diff_list(&o.regions, &n.regions, |a, b| a == b),
            clusters: diff_list(&o.clusters, &n.clusters, |a, b| a == b),
            apps,
            targets,
            countries,
            subnets: diff_list(&o.geo.subnets, &n.geo.subnets, |a, b| a == b),
            rtt: diff_list(&o.rtt, &n.rtt, |a, b| a == b),
        }
    }

    /// The table data this delta makes from `base` (no validation, no digest check).
    fn apply_data(&self, base: &TableData) -> Result<TableData, TableError> {
        let mut data = base.clone();
        data.version = self.version;
        data.generated_at_ms = self.generated_at_ms;
        apply_list(&mut data.regions, &self.regions, "regions")?;
        apply_list(&mut data.clusters, &self.clusters, "clusters")?;
        apply_list(&mut data.apps, &self.apps, "apps")?;
        if !self.targets.is_empty() {
            let at: HashMap<&str, usize> = data
                .apps
                .iter()
                .enumerate()
                .map(|(i, a)| (a.name.as_str(), i))
                .collect();
            let mut edits = Vec::with_capacity(self.targets.len());
            for t in &self.targets {
                let i = *at
                    .get(t.app.as_str())
                    .ok_or_else(|| corrupt("targets", format!("app {:?} is not there", t.app)))?;
                edits.push((i, &t.targets));
            }
            for (i, targets) in edits {
                let what = format!("apps[{i}].targets");
                apply_list(&mut data.apps[i].targets, targets, &what)?;
            }
        }
        for country in &self.countries.remove {
            if data.geo.countries.remove(country).is_none() {
                return Err(corrupt(
                    "geo.countries",
                    format!("removes {country:?}, which is not there"),
                ));
            }
        }
        for (country, region) in &self.countries.upsert {
            data.geo.countries.insert(country.clone(), region.clone());
        }
        apply_list(&mut data.geo.subnets, &self.subnets, "geo.subnets")?;
        apply_list(&mut data.rtt, &self.rtt, "rtt")?;
        Ok(data)
    }

    /// Names of the apps this delta touches (sent whole or by their targets).
    fn touched(&self) -> HashSet<&str> {
        let mut touched: HashSet<&str> = self.targets.iter().map(|t| t.app.as_str()).collect();
        match &self.apps {
            ListDelta::Same => {}
            ListDelta::Edit { upsert, .. } | ListDelta::Whole(upsert) => {
                touched.extend(upsert.iter().map(|a| a.name.as_str()))
            }
        }
        touched
    }
}

impl RoutingTable {
    /// The next version: `delta` applied to this table, validated, with its digest checked.
    ///
    /// Refused with [`TableError::DeltaBase`] when the delta starts from another version or
    /// another table of the same version (out of order, or a lineage this subscriber does
    /// not hold), [`TableError::DeltaCorrupt`] when it edits what is not there,
    /// [`TableError::Invalid`] when the result breaks a rule, and
    /// [`TableError::DigestMismatch`] when the result is not the table the controller made.
    pub fn apply(&self, delta: &TableDelta) -> Result<RoutingTable, TableError> {
        if delta.base_version != self.version() || delta.base_digest != self.digest() {
            return Err(TableError::DeltaBase {
                held: self.version(),
                base: delta.base_version,
            });
        }
        if delta.version <= delta.base_version {
            return Err(corrupt(
                "version",
                format!(
                    "{} does not follow its base {}",
                    delta.version, delta.base_version
                ),
            ));
        }
        let data = delta.apply_data(self.data())?;
        // An app the delta did not touch, still at its position, keeps its digest.
        let touched = delta.touched();
        let base = self.data();
        let known = |i: usize, app: &App| {
            (base.apps.get(i).is_some_and(|b| b.name == app.name)
                && !touched.contains(app.name.as_str()))
            .then(|| self.app_digest(i))
            .flatten()
        };
        let table = RoutingTable::build(data, &known)?;
        if table.digest() != delta.digest {
            return Err(TableError::DigestMismatch {
                version: delta.version,
            });
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use crate::table::tests::sample;

    fn table(data: TableData) -> RoutingTable {
        RoutingTable::new(data).unwrap()
    }

    fn next(data: &TableData, change: impl FnOnce(&mut TableData)) -> TableData {
        let mut d = data.clone();
        d.version += 1;
        d.generated_at_ms += 1000;
        change(&mut d);
        d
    }

    #[test]
    fn one_weight_is_one_target() {
        let v1 = table(sample());
        let v2 = table(next(v1.data(), |d| d.apps[1].targets[2].weight = 7));
        let delta = TableDelta::between(&v1, &v2);
        assert_eq!(delta.apps, ListDelta::Same);
        assert_eq!(delta.regions, ListDelta::Same);
        assert_eq!(delta.targets.len(), 1);
        assert_eq!(delta.targets[0].app, "maps");
        let ListDelta::Edit {
            upsert,
            remove,
            order,
        } = &delta.targets[0].targets
        else {
            panic!("{delta:?}");
        };
        assert_eq!((upsert.len(), remove.len(), order), (1, 0, &None));
        let applied = v1.apply(&delta).unwrap();
        assert_eq!(applied, v2);
        assert_eq!(applied.digest(), v2.digest());
    }

    #[test]
    fn a_corrupt_delta_is_caught_by_the_digest() {
        let v1 = table(sample());
        let v2 = table(next(v1.data(), |d| {
            d.apps[0].targets[0].health = Health::Unhealthy
        }));
        let mut delta = TableDelta::between(&v1, &v2);
        let ListDelta::Edit { upsert, .. } = &mut delta.targets[0].targets else {
            panic!("{delta:?}");
        };
        upsert[0].health = Health::Healthy;
        upsert[0].weight = 99;
        assert!(matches!(
            v1.apply(&delta),
            Err(TableError::DigestMismatch { version: 2 })
        ));
    }

    #[test]
    fn an_out_of_order_or_foreign_delta_is_refused_before_it_is_applied() {
        let v1 = table(sample());
        let v2 = table(next(v1.data(), |d| d.apps[0].dns_ttl = 60));
        let v3 = table(next(v2.data(), |d| d.apps[0].dns_ttl = 90));
        let skip = TableDelta::between(&v2, &v3);
        assert!(matches!(
            v1.apply(&skip),
            Err(TableError::DeltaBase { held: 1, base: 2 })
        ));
        // Same version, other content: a table from another lineage.
        let other = table(next(v1.data(), |d| d.apps[0].dns_ttl = 61));
        assert!(matches!(
            other.apply(&skip),
            Err(TableError::DeltaBase { held: 2, base: 2 })
        ));
        // Applied twice: the second time its base is no longer held.
        let v3b = v2.apply(&skip).unwrap();
        assert!(matches!(
            v3b.apply(&skip),
            Err(TableError::DeltaBase { held: 3, base: 2 })
        ));
    }

    #[test]
    fn edits_of_what_is_not_there_are_corrupt() {
        let v1 = table(sample());
        let v2 = table(next(v1.data(), |d| {
            d.apps.remove(1);
        }));
        let mut delta = TableDelta::between(&v1, &v2);
        let ListDelta::Edit { remove, .. } = &mut delta.apps else {
            panic!("{delta:?}");
        };
        remove[0] = "nope".into();
        let err = v1.apply(&delta).unwrap_err().to_string();
        assert!(err.contains("apps: removes \"nope\""), "{err}");
        let mut delta = TableDelta::between(&v1, &v2);
        delta.targets.push(TargetsDelta {
            app: "ghost".into(),
            targets: ListDelta::Same,
        });
        let err = v1.apply(&delta).unwrap_err().to_string();
        assert!(err.contains("app \"ghost\" is not there"), "{err}");
    }

    #[test]
    fn order_changes_travel() {
        let v1 = table(sample());
        let v2 = table(next(v1.data(), |d| {
            d.apps.swap(0, 1);
            d.apps[0].targets.swap(0, 2);
        }));
        let delta = TableDelta::between(&v1, &v2);
        assert_eq!(v1.apply(&delta).unwrap(), v2);
    }
}
