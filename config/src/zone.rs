//! Static zone records: owner names made absolute and values parsed per type, so the DNS
//! server receives checked data and `meridian check` can say which value is wrong.

use std::net::{Ipv4Addr, Ipv6Addr};

use meridian_routing::table::is_valid_hostname;

use crate::schema::{RecordConfig, RecordType, ZoneConfig};

/// A record's data, parsed. Names are absolute, lower-case, without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Canonical name.
    Cname(String),
    /// Mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The exchanger's name.
        exchange: String,
    },
    /// Text, as one string (split into 255-byte character-strings on the wire).
    Txt(String),
    /// Certification authority authorisation.
    Caa {
        /// Flags; 128 is "issuer critical".
        flags: u8,
        /// `issue`, `issuewild` or `iodef`.
        tag: String,
        /// The value.
        value: String,
    },
    /// Service location.
    Srv {
        /// Lower is preferred.
        priority: u16,
        /// Relative weight among equal priorities.
        weight: u16,
        /// Port.
        port: u16,
        /// Target host.
        target: String,
    },
    /// Delegation to a name server.
    Ns(String),
}

/// Normalises a domain name: lower case, no trailing dot; `None` if it is not a valid name.
pub fn normalize_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (name.is_empty() || is_valid_hostname(&name) && !name.starts_with("*.")).then_some(name)
}

/// True when `name` is `zone` or below it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|rest| rest.ends_with('.'))
}

impl ZoneConfig {
    /// The apex, normalised.
    pub fn apex(&self) -> String {
        normalize_name(&self.name).unwrap_or_else(|| self.name.to_ascii_lowercase())
    }

    /// The absolute owner name of a record: `@` is the apex, a name with a trailing dot is
    /// absolute, anything else is relative to the apex.
    pub fn owner(&self, record: &RecordConfig) -> Result<String, String> {
        let apex = self.apex();
        let name = if record.name == "@" {
            apex.clone()
        } else if record.name.ends_with('.') {
            normalize_name(&record.name)
                .ok_or_else(|| format!("{:?} is not a valid name", record.name))?
        } else {
            normalize_name(&format!("{}.{apex}", record.name))
                .ok_or_else(|| format!("{:?} is not a valid name", record.name))?
        };
        if in_zone(&name, &apex) {
            Ok(name)
        } else {
            Err(format!("{name:?} is outside zone {apex:?}"))
        }
    }
}

fn name_value(value: &str) -> Result<String, String> {
    normalize_name(value)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| format!("{value:?} is not a valid domain name"))
}

fn number<T: std::str::FromStr>(field: &str, what: &str) -> Result<T, String> {
    field
        .parse()
        .map_err(|_| format!("{what} {field:?} is not a number in range"))
}

impl RecordConfig {
    /// Parses the value for the record's type.
    pub fn data(&self) -> Result<RecordData, String> {
        let value = self.value.trim();
        let fields: Vec<&str> = value.split_whitespace().collect();
        let expect = |n: usize, shape: &str| {
            if fields.len() == n {
                Ok(())
            } else {
                Err(format!("{value:?} is not of the form {shape:?}"))
            }
        };
        Ok(match self.rtype {
            RecordType::A => RecordData::A(
                value
                    .parse()
                    .map_err(|_| format!("{value:?} is not an IPv4 address"))?,
            ),
            RecordType::Aaaa => RecordData::Aaaa(
                value
                    .parse()
                    .map_err(|_| format!("{value:?} is not an IPv6 address"))?,
            ),
            RecordType::Cname => RecordData::Cname(name_value(value)?),
            RecordType::Ns => RecordData::Ns(name_value(value)?),
            RecordType::Mx => {
                expect(2, "PREFERENCE EXCHANGE")?;
                RecordData::Mx {
                    preference: number(fields[0], "preference")?,
                    exchange: name_value(fields[1])?,
                }
            }
            RecordType::Srv => {
                expect(4, "PRIORITY WEIGHT PORT TARGET")?;
                RecordData::Srv {
                    priority: number(fields[0], "priority")?,
                    weight: number(fields[1], "weight")?,
                    port: number(fields[2], "port")?,
                    target: name_value(fields[3])?,
                }
            }
            RecordType::Txt => {
                if value.is_empty() {
                    return Err("a TXT record needs some text".into());
                }
                RecordData::Txt(self.value.clone())
            }
            RecordType::Caa => {
                let mut parts = value.splitn(3, char::is_whitespace);
                let (Some(flags), Some(tag), Some(rest)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("{value:?} is not of the form \"FLAGS TAG VALUE\""));
                };
                let tag = tag.to_ascii_lowercase();
                if !matches!(tag.as_str(), "issue" | "issuewild" | "iodef") {
                    return Err(format!(
                        "CAA tag {tag:?} is not one of issue, issuewild, iodef"
                    ));
                }
                let rest = rest.trim();
                let unquoted = rest
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .unwrap_or(rest);
                RecordData::Caa {
                    flags: number(flags, "flags")?,
                    tag,
                    value: unquoted.to_string(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rtype: RecordType, value: &str) -> RecordConfig {
        RecordConfig {
            name: "x".into(),
            rtype,
            ttl: 60,
            value: value.into(),
        }
    }

    #[test]
    fn values_parse_per_type() {
        assert_eq!(
            record(RecordType::A, "192.0.2.1").data(),
            Ok(RecordData::A("192.0.2.1".parse().unwrap()))
        );
        assert!(
            record(RecordType::A, "::1")
                .data()
                .unwrap_err()
                .contains("not an IPv4 address")
        );
        assert_eq!(
            record(RecordType::Mx, "10 Mail.Demo.Test.").data(),
            Ok(RecordData::Mx {
                preference: 10,
                exchange: "mail.demo.test".into()
            })
        );
        assert!(
            record(RecordType::Mx, "mail.demo.test")
                .data()
                .unwrap_err()
                .contains("PREFERENCE EXCHANGE")
        );
        assert!(
            record(RecordType::Srv, "1 2 99999 a.b")
                .data()
                .unwrap_err()
                .contains("port \"99999\"")
        );
        assert_eq!(
            record(RecordType::Caa, "0 issue \"letsencrypt.org\"").data(),
            Ok(RecordData::Caa {
                flags: 0,
                tag: "issue".into(),
                value: "letsencrypt.org".into()
            })
        );
        assert!(
            record(RecordType::Caa, "0 bogus x")
                .data()
                .unwrap_err()
                .contains("CAA tag")
        );
        assert!(
            record(RecordType::Cname, "not a name")
                .data()
                .unwrap_err()
                .contains("not a valid domain name")
        );
    }

    #[test]
    fn owner_names() {
        let zone = ZoneConfig {
            name: "Demo.Test.".into(),
            soa: serde_norway::from_str("{mname: ns1.demo.test, rname: h.demo.test}").unwrap(),
            ns: vec![],
            records: vec![],
            dnssec: None,
        };
        let owner = |name: &str| {
            zone.owner(&RecordConfig {
                name: name.into(),
                rtype: RecordType::A,
                ttl: 1,
                value: String::new(),
            })
        };
        assert_eq!(owner("@"), Ok("demo.test".into()));
        assert_eq!(owner("WWW"), Ok("www.demo.test".into()));
        assert_eq!(owner("www.demo.test."), Ok("www.demo.test".into()));
        assert!(
            owner("www.other.test.")
                .unwrap_err()
                .contains("outside zone")
        );
        assert!(in_zone("a.demo.test", "demo.test"));
        assert!(!in_zone("ademo.test", "demo.test"));
    }
}
