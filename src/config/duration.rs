//! Human durations in config files: `500ms`, `10s`, `5m`, `1h`, and sums such as `1m30s`.

use std::time::Duration;

/// Parses a duration with mandatory units; a bare number is refused because its unit would be a guess.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration (write e.g. \"10s\" or \"500ms\")".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?} (write e.g. \"10s\" or \"500ms\")"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "" => {
                return Err(format!(
                    "duration {text:?} has no unit (write e.g. \"{value}s\" or \"{value}ms\")"
                ))
            }
            unit => {
                return Err(format!(
                    "unknown unit {unit:?} in duration {text:?} (use ms, s, m or h)"
                ))
            }
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Renders a duration back in the shortest exact unit, for `check-config` output.
pub fn render(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serializes a duration as the text [`parse`] reads back.
pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&render(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn refuses_missing_or_unknown_units() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("10d").unwrap_err().contains("unknown unit"));
        assert!(parse("s").unwrap_err().contains("invalid duration"));
        assert!(parse("").is_err());
    }

    #[test]
    fn render_round_trips() {
        for text in ["500ms", "10s", "2m", "1h", "0s", "1500ms"] {
            assert_eq!(render(parse(text).unwrap()), text);
        }
    }
}
