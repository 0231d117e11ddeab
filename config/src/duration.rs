//! The one duration syntax: every duration in the config (`ttl`,
//! `cacheTtl`, `timeout`, …) and the wrapper's `--timeout` are read by
//! [`parse_duration`]. One or more `<number><unit>` parts added up —
//! `30s`, `1h30m`, `250ms`, `1.5s` — with units `ms`, `s`, `m`, `h`, `d`;
//! a bare number is seconds (`12`, `0.5`). No sign: nothing here waits a
//! negative time.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("{text:?} is not a duration like 30s, 5m, 1h30m")]
    Malformed { text: String },
    #[error("{text:?}: unknown unit {unit:?}; use ms, s, m, h or d")]
    UnknownUnit { text: String, unit: String },
    #[error("{text:?}: number too large")]
    TooLarge { text: String },
}

impl DurationError {
    /// What is wrong, without the text itself: a config may alias a secret
    /// `value` into a duration field, and this is what its error shows.
    pub fn reason(&self) -> &'static str {
        match self {
            DurationError::Empty => "empty duration",
            DurationError::Malformed { .. } => "not a duration like 30s, 5m, 1h30m",
            DurationError::UnknownUnit { .. } => "unknown unit; use ms, s, m, h or d",
            DurationError::TooLarge { .. } => "number too large",
        }
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    if is_number(t) {
        return part(text, t, "s");
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(DurationError::Malformed { text: text.into() });
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        total = total.saturating_add(part(text, number, unit)?);
        rest = after;
    }
    Ok(total)
}

fn is_number(t: &str) -> bool {
    t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// One `<number><unit>` part. Whole numbers are counted exactly (and
/// saturate); a fraction goes through seconds as a float.
fn part(text: &str, number: &str, unit: &str) -> Result<Duration, DurationError> {
    let unit_secs: u64 = match unit {
        "ms" => 0,
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.into(),
                unit: unit.into(),
            });
        }
    };
    if number.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = number
            .parse()
            .map_err(|_| DurationError::TooLarge { text: text.into() })?;
        return Ok(match unit_secs {
            0 => Duration::from_millis(n),
            secs => Duration::from_secs(n.saturating_mul(secs)),
        });
    }
    let n: f64 = number
        .parse()
        .map_err(|_| DurationError::Malformed { text: text.into() })?;
    let secs = match unit_secs {
        0 => n / 1000.0,
        s => n * s as f64,
    };
    Duration::try_from_secs_f64(secs).map_err(|_| DurationError::TooLarge { text: text.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_parts_add_up() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.5h"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1m0.5s"), Ok(Duration::from_millis(60_500)));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "x"
        ));
        assert!(matches!(
            parse_duration("1h30"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit.is_empty()
        ));
        for bad in ["m", "-1s", "1.2.3s", "s5"] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Malformed { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999999s"),
            Err(DurationError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_duration("1e300s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration(&format!("{}.5d", u64::MAX)),
            Err(DurationError::TooLarge { .. })
        ));
    }

    #[test]
    fn huge_whole_numbers_saturate() {
        assert_eq!(
            parse_duration(&format!("{}d", u64::MAX)),
            Ok(Duration::from_secs(u64::MAX))
        );
    }
}
