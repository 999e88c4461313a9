//! Kubernetes resource quantities (`250m`, `1.5`, `128974848`, `129e6`, `123Mi`, `1Gi`, …),
//! parsed by hand into exact integers so that summing thousands of pod requests never drifts.
//!
//! The grammar is the API server's (`k8s.io/apimachinery/pkg/api/resource`):
//! `<sign><digits>[.<digits>]<suffix>` where the suffix is a binary SI one (`Ki` … `Ei`),
//! a decimal SI one (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or an exponent (`e3`, `E-2`).
//! Conversions round up, as Kubernetes does (`0.5m` CPU is 1 millicore).

use crate::Error;

/// A parsed quantity: `mantissa × 10^pow10 × 2^pow2`, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    pow10: i32,
    pow2: u32,
}

/// Beyond this, any quantity is nonsense for CPU or memory; the bound keeps the arithmetic in i128.
const MAX_DIGITS: usize = 30;
const MAX_EXPONENT: i32 = 30;

fn bad(text: &str, reason: impl Into<String>) -> Error {
    Error::Quantity {
        text: text.to_string(),
        reason: reason.into(),
    }
}

impl Quantity {
    /// Parses a quantity; the error names the text and what is wrong with it.
    pub fn parse(text: &str) -> Result<Quantity, Error> {
        let s = text.trim();
        if s.is_empty() {
            return Err(bad(text, "empty quantity"));
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad(text, "no number before the suffix"));
        }
        if fraction.contains('.') {
            return Err(bad(text, "more than one decimal point"));
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0');
        if significant.len() > MAX_DIGITS {
            return Err(bad(text, "too many digits"));
        }
        let mut mantissa: i128 = 0;
        for d in significant.bytes() {
            mantissa = mantissa * 10 + i128::from(d - b'0');
        }
        if negative {
            mantissa = -mantissa;
        }
        let fraction_len =
            i32::try_from(fraction.len()).map_err(|_| bad(text, "too many digits"))?;
        let (pow10, pow2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ => {
                let exponent = suffix
                    .strip_prefix(['e', 'E'])
                    .ok_or_else(|| bad(text, format!("unknown suffix {suffix:?}")))?;
                let value: i32 = exponent
                    .parse()
                    .map_err(|_| bad(text, format!("bad exponent {exponent:?}")))?;
                if !(-MAX_EXPONENT..=MAX_EXPONENT).contains(&value) {
                    return Err(bad(text, format!("exponent {value} out of range")));
                }
                (value, 0)
            }
        };
        Ok(Quantity {
            mantissa,
            pow10: pow10 - fraction_len,
            pow2,
        })
    }

    /// The quantity × 10^`scale`, rounded up to an integer (toward positive infinity).
    fn scaled(&self, text: &str, scale: i32) -> Result<i128, Error> {
        let overflow = || bad(text, "too large");
        let mut value = self
            .mantissa
            .checked_mul(1i128.checked_shl(self.pow2).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let pow10 = self.pow10 + scale;
        if pow10 >= 0 {
            let factor = 10i128
                .checked_pow(pow10.unsigned_abs())
                .ok_or_else(overflow)?;
            value = value.checked_mul(factor).ok_or_else(overflow)?;
        } else {
            // Digits below the unit can only make a value round up; past 10^38 they all are.
            match 10i128.checked_pow(pow10.unsigned_abs()) {
                Some(divisor) => {
                    value = value.div_euclid(divisor) + i128::from(value.rem_euclid(divisor) != 0)
                }
                None => value = i128::from(value > 0),
            }
        }
        Ok(value)
    }
}

fn non_negative(text: &str, value: i128) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| {
        if value < 0 {
            bad(text, "negative")
        } else {
            bad(text, "too large")
        }
    })
}

/// A CPU quantity in millicores (`250m` → 250, `2` → 2000, `1.5` → 1500), rounded up.
pub fn millis(text: &str) -> Result<u64, Error> {
    let value = Quantity::parse(text)?.scaled(text, 3)?;
    non_negative(text, value)
}

/// A quantity as a whole number (`123Mi` → 128974848 bytes, `129e6`, `1k` → 1000), rounded up.
pub fn units(text: &str) -> Result<u64, Error> {
    let value = Quantity::parse(text)?.scaled(text, 0)?;
    non_negative(text, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(millis("250m").unwrap(), 250);
        assert_eq!(millis("2").unwrap(), 2000);
        assert_eq!(millis("1.5").unwrap(), 1500);
        assert_eq!(millis("0.1").unwrap(), 100);
        assert_eq!(millis(".5").unwrap(), 500);
        assert_eq!(millis("0.5m").unwrap(), 1, "rounds up");
        assert_eq!(millis("100u").unwrap(), 1);
        assert_eq!(millis("1k").unwrap(), 1_000_000);
        assert_eq!(millis("+3").unwrap(), 3000);
        assert_eq!(millis("0").unwrap(), 0);
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(units("128974848").unwrap(), 128_974_848);
        assert_eq!(units("129e6").unwrap(), 129_000_000);
        assert_eq!(units("129E6").unwrap(), 129_000_000);
        assert_eq!(units("123Mi").unwrap(), 128_974_848);
        assert_eq!(units("1Gi").unwrap(), 1 << 30);
        assert_eq!(units("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(units("1k").unwrap(), 1000);
        assert_eq!(units("1Ki").unwrap(), 1024);
        assert_eq!(units("1M").unwrap(), 1_000_000);
        assert_eq!(units("2T").unwrap(), 2_000_000_000_000);
        assert_eq!(units("1Ei").unwrap(), 1 << 60);
        assert_eq!(units("1500m").unwrap(), 2, "rounds up");
        assert_eq!(units("12e-1").unwrap(), 2);
        assert_eq!(units("1e-30").unwrap(), 1);
        assert_eq!(units("007").unwrap(), 7);
    }

    #[test]
    fn bad_input_names_the_text() {
        for (text, reason) in [
            ("", "empty"),
            ("abc", "no number"),
            ("Mi", "no number"),
            ("12X", "unknown suffix \"X\""),
            ("1.2.3", "more than one decimal point"),
            ("1e", "bad exponent"),
            ("1e99", "out of range"),
            ("1 Gi", "unknown suffix"),
            ("-1", "negative"),
            ("100Ei", "too large"),
            ("99999999999999999999999999999999", "too many digits"),
        ] {
            let message = units(text).unwrap_err().to_string();
            assert!(
                message.contains(&format!("{text:?}")) && message.contains(reason),
                "{text:?}: {message}"
            );
        }
    }
}
