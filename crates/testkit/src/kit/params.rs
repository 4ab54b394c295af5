//! Query-string parsing with Go's rules (`url.Values`, `time.ParseDuration`,
//! `strconv.ParseBool`), so malformed input gets the same 400s as from Consul and Nomad,
//! and the `index`/`wait` parameters of blocking reads.

use std::time::Duration;

/// Default blocking wait when `wait` is absent or zero (Consul and Nomad alike: 5 min).
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul and Nomad clamp longer waits to this (10 min).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

/// An error answer: status and `text/plain` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub body: String,
}

impl ApiError {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        ApiError {
            status,
            body: body.into(),
        }
    }

    pub fn bad_request(body: impl Into<String>) -> Self {
        Self::new(400, body)
    }
}

/// Decoded query parameters in order; a bare `?passing` has the value `""`, as in Go.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k, true), decode(v, true)),
                None => (decode(p, true), String::new()),
            })
            .collect();
        Query { pairs }
    }

    /// First value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// First decoded value of `key` in the raw query string `raw` (`Some("")` for a bare flag).
    pub fn first(raw: &str, key: &str) -> Option<String> {
        Query::parse(raw).get(key).map(str::to_string)
    }

    /// Every value of a repeatable key such as `tag`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        let hits = self.pairs.iter().filter(|(k, _)| k == key);
        hits.map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean flag: absent is false, bare is true, otherwise Go's `ParseBool`.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(v) => parse_bool(v)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid value for ?{key}"))),
        }
    }

    /// An optional unsigned integer such as `cas` or `flags`.
    pub fn uint(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("Invalid value for ?{key}: {v:?}"))),
        }
    }
}

/// Percent-decodes `s` (and `+` as space in query strings); invalid escapes stay literal.
pub(crate) fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration`, in signed nanoseconds; `None` when Go would fail
/// (notably a number without a unit such as `60`).
pub(crate) fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, next) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = whole.checked_mul(scale)?;
        let mut div = 1i128;
        for d in frac.bytes().take(18) {
            div *= 10;
            part += i128::from(d - b'0') * scale / div;
        }
        total = total.checked_add(part)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
        rest = next;
    }
    Some(if neg { -total } else { total })
}

/// Blocking parameters of a read: `index` 0 means "do not block".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocking {
    pub index: u64,
    pub wait: Duration,
}

/// What a negative `wait` means: Consul takes it as no wait given (the default wait),
/// Nomad rejects it like any duration it cannot parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NegativeWait {
    Default,
    Invalid,
}

/// Parses `index` and `wait` with the errors both APIs give (400 `Invalid wait time`,
/// 400 `Invalid index`), the default wait and the clamp.
pub(crate) fn blocking(q: &Query, negative: NegativeWait) -> Result<Blocking, ApiError> {
    let invalid_wait = || ApiError::bad_request("Invalid wait time");
    let wait = match q.get("wait") {
        None | Some("") => DEFAULT_WAIT,
        Some(w) => match parse_go_duration(w) {
            None => return Err(invalid_wait()),
            Some(ns) if ns < 0 && negative == NegativeWait::Invalid => return Err(invalid_wait()),
            Some(ns) if ns <= 0 => DEFAULT_WAIT,
            Some(ns) => Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)).min(MAX_WAIT),
        },
    };
    let index = match q.get("index") {
        None | Some("") => 0,
        Some(i) => i
            .parse()
            .map_err(|_| ApiError::bad_request("Invalid index"))?,
    };
    Ok(Blocking { index, wait })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let s = 1_000_000_000i128;
        assert_eq!(parse_go_duration("10s"), Some(10 * s));
        assert_eq!(parse_go_duration("300000ms"), Some(300 * s));
        assert_eq!(parse_go_duration("1m30s"), Some(90 * s));
        assert_eq!(parse_go_duration("1.5s"), Some(3 * s / 2));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("60"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn query_decoding_and_bare_flags() {
        let q = Query::parse("passing&tag=a%20b&tag=C+d&index=5");
        assert_eq!(q.flag("passing"), Ok(true));
        assert_eq!(q.all("tag"), vec!["a b", "C d"]);
        assert!(Query::parse("passing=maybe").flag("passing").is_err());
        assert_eq!(decode("%zz%4", false), "%zz%4");
    }

    #[test]
    fn negative_wait_is_the_default_or_invalid() {
        let q = Query::parse("index=3&wait=-5s");
        let default = blocking(&q, NegativeWait::Default);
        assert_eq!(default.map(|b| (b.index, b.wait)), Ok((3, DEFAULT_WAIT)));
        let invalid = blocking(&q, NegativeWait::Invalid);
        assert_eq!(invalid, Err(ApiError::bad_request("Invalid wait time")));
        let zero = blocking(&Query::parse("wait=-0s"), NegativeWait::Invalid);
        assert_eq!(zero.map(|b| b.wait), Ok(DEFAULT_WAIT));
    }
}
