//! The JSON log line, one object per event, every field a JSON value of its own type: numbers and
//! booleans as such, strings as strings, a field declared but not given a value (an `Option`
//! that is `None`, `tracing::field::Empty`) as `null`, and a value wrapped in [`json`] (a list,
//! an object) as that JSON — never as its `Debug` text (`Some("v1")`, `["a"]` in a string).
//!
//! Keys: `timestamp`, `level`, the event's fields in the order declared (`message` first),
//! `target`, and `spans` (root first, each `{"name": …, fields…}`) when the event is in a span.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{DebugValue, Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Starts the text of a [`json`] value when the JSON formatter is installed, so its visitor can
/// tell it from any other `Debug` or `Display` text (which never starts with a NUL).
const MARK: &str = "\u{0}json:";

/// Whether [`json`] values carry [`MARK`]: only under the JSON formatter. Under the text
/// formatter they print as plain compact JSON.
static MARKED: AtomicBool = AtomicBool::new(false);

pub(super) fn mark_json_values() {
    MARKED.store(true, Ordering::Relaxed);
}

/// A field value logged as JSON: `waiting = json(&waiting)` gives `"waiting":["v2"]`.
pub fn json<T: Serialize>(value: T) -> DebugValue<Json<T>> {
    tracing::field::debug(Json(value))
}

/// See [`json`].
pub struct Json<T>(T);

impl<T: Serialize> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(&self.0).map_err(|_| fmt::Error)?;
        if MARKED.load(Ordering::Relaxed) {
            f.write_str(MARK)?;
        }
        f.write_str(&text)
    }
}

/// Collects fields as JSON text, each value written once into `text` (no intermediate values):
/// the line is assembled from these slices in the order the call site declares its fields.
#[derive(Default)]
struct Fields {
    text: String,
    at: Vec<(&'static str, usize, usize)>,
}

impl Fields {
    fn clear(&mut self) {
        self.text.clear();
        self.at.clear();
    }

    fn put(&mut self, field: &Field, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        self.at.push((field.name(), start, self.text.len()));
    }

    fn value(&self, i: usize) -> &str {
        let (_, a, b) = self.at[i];
        &self.text[a..b]
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |t| {
            if value.is_finite() {
                // Display never uses an exponent: always a valid JSON number.
                let _ = write!(t, "{value}");
            } else {
                t.push_str("null");
            }
        });
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |t| {
            let _ = write!(t, "{value}");
        });
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |t| {
            let _ = write!(t, "{value}");
        });
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        // Beyond 64 bits, as a string: JSON readers lose such integers.
        match i64::try_from(value) {
            Ok(v) => self.record_i64(field, v),
            Err(_) => self.put(field, |t| push_str(t, &value.to_string())),
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => self.put(field, |t| push_str(t, &value.to_string())),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |t| t.push_str(if value { "true" } else { "false" }));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |t| push_str(t, value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |t| push_str(t, &value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |t| {
            let start = t.len();
            let _ = write!(t, "{value:?}");
            if t[start..].starts_with(MARK) {
                // A [`json`] value: its text is JSON already (serde_json wrote it).
                t.replace_range(start..start + MARK.len(), "");
            } else if t.as_bytes()[start..].iter().any(|b| needs_escape(*b)) {
                let text = t.split_off(start);
                push_str(t, &text);
            } else {
                // The usual case (a method, a path, an address): quoted where it stands.
                t.insert(start, '"');
                t.push('"');
            }
        });
    }
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `s` as a JSON string: quotes, backslashes and control characters escaped.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    // Most text needs no escaping: one scan, one copy.
    let Some(first) = s.bytes().position(needs_escape) else {
        out.push_str(s);
        out.push('"');
        return;
    };
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate().skip(first) {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Appends `fields` as one JSON object.
fn push_object(out: &mut String, fields: &Fields) {
    out.push('{');
    for (i, (k, _, _)) in fields.at.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, k);
        out.push(':');
        out.push_str(fields.value(i));
    }
    out.push('}');
}

thread_local! {
    /// Reused per thread: a line costs no allocation once the buffers have grown.
    static SCRATCH: std::cell::RefCell<(Fields, String)> = Default::default();
}

/// The event format: one JSON object per line.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut s) => {
                let (fields, out) = &mut *s;
                format_line(ctx, event, fields, out);
                writer.write_str(out)
            }
            // A value's Debug logged an event of its own: fresh buffers for that one.
            Err(_) => {
                let (mut fields, mut out) = Default::default();
                format_line(ctx, event, &mut fields, &mut out);
                writer.write_str(&out)
            }
        })
    }
}

/// Writes the event's line into `out`: `timestamp`, `level`, the fields in the order declared
/// (one declared but given no value is null, not left out), `target`, then `spans`.
fn format_line<S, N>(
    ctx: &FmtContext<'_, S, N>,
    event: &Event<'_>,
    fields: &mut Fields,
    out: &mut String,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    fields.clear();
    event.record(fields);
    out.clear();
    out.push_str("{\"timestamp\":\"");
    let _ = SystemTime.format_time(&mut Writer::new(out));
    out.push_str("\",\"level\":\"");
    out.push_str(meta.level().as_str());
    out.push('"');
    let mut used = 0u64;
    for f in meta.fields() {
        out.push(',');
        push_str(out, f.name());
        out.push(':');
        // Recorded in declaration order: usually the next one, found by its name's pointer.
        let name = f.name();
        let same = |k: &&str| std::ptr::eq(k.as_ptr(), name.as_ptr()) || *k == name;
        match fields.at.iter().position(|(k, _, _)| same(k)) {
            Some(i) => {
                out.push_str(fields.value(i));
                used |= 1u64.checked_shl(i as u32).unwrap_or(0);
            }
            None => out.push_str("null"),
        }
    }
    // Fields the call site did not declare (none from `tracing` macros; kept, not dropped).
    for (i, (k, _, _)) in fields.at.iter().enumerate() {
        let seen = i < 64 && used & (1 << i) != 0;
        if !seen && meta.fields().field(k).is_none() {
            out.push(',');
            push_str(out, k);
            out.push(':');
            out.push_str(fields.value(i));
        }
    }
    out.push_str(",\"target\":");
    push_str(out, meta.target());
    if let Some(scope) = ctx.event_scope() {
        out.push_str(",\"spans\":[");
        for (i, span) in scope.from_root().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            push_str(out, span.name());
            let ext = span.extensions();
            // The span's fields are kept as an object's text: spliced in, not parsed again.
            if let Some(f) = ext.get::<FormattedFields<N>>() {
                let inner = f
                    .fields
                    .strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .unwrap_or("");
                if !inner.is_empty() {
                    out.push(',');
                    out.push_str(inner);
                }
            }
            out.push('}');
        }
        out.push(']');
    }
    out.push_str("}\n");
}

/// Span fields, kept as a JSON object text that [`JsonLines`] splices into each line.
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut f = Fields::default();
        fields.record(&mut f);
        let mut out = String::new();
        push_object(&mut out, &f);
        writer.write_str(&out)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Rare (`Span::record`): parsed and merged so a recorded field replaces its old value.
        let mut f = Fields::default();
        fields.record(&mut f);
        let mut merged: Map<String, Value> =
            serde_json::from_str(&current.fields).unwrap_or_default();
        for (i, (k, _, _)) in f.at.iter().enumerate() {
            let v = serde_json::from_str(f.value(i)).unwrap_or(Value::Null);
            merged.insert(k.to_string(), v);
        }
        current.fields = Value::Object(merged).to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines written while `log` runs, as text and parsed.
    fn lines(log: impl FnOnce()) -> Vec<(String, Value)> {
        mark_json_values();
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, log);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| (l.to_string(), serde_json::from_str(l).unwrap()))
            .collect()
    }

    #[test]
    fn every_field_is_a_value_of_its_type() {
        let none: Option<&str> = None;
        let got = lines(|| {
            let span = tracing::info_span!("watch", file = "u.toml", n = 2u64);
            let _g = span.enter();
            tracing::info!(
                target: "zerodown::swap",
                old = none,
                new = Some("v2"),
                count = 3u64,
                ratio = 0.5,
                ok = true,
                waiting = json(["v2", "v3"]),
                changes = json(serde_json::json!({"added": ["a"], "removed": []})),
                peer = %"[::1]:80",
                "pool swap"
            );
        });
        assert_eq!(got.len(), 1);
        let (text, v) = &got[0];
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
        let order = [
            "timestamp",
            "level",
            "message",
            "old",
            "new",
            "count",
            "ratio",
            "ok",
            "waiting",
            "changes",
            "peer",
            "target",
            "spans",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "pool swap");
        assert!(v["old"].is_null());
        assert_eq!(v["new"], "v2");
        assert_eq!(v["count"], 3);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["ok"], true);
        assert_eq!(v["waiting"], serde_json::json!(["v2", "v3"]));
        assert_eq!(v["changes"]["added"], serde_json::json!(["a"]));
        assert_eq!(v["peer"], "[::1]:80", "display text stays a string");
        assert_eq!(v["target"], "zerodown::swap");
        assert_eq!(
            v["spans"],
            serde_json::json!([{"name": "watch", "file": "u.toml", "n": 2}])
        );
    }

    #[test]
    fn text_is_escaped_and_reads_back_as_written() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{7f}h é 日本 🙂";
        let got = lines(|| {
            let span = tracing::info_span!("conn", peer = nasty);
            let _g = span.enter();
            tracing::info!(
                path = nasty,
                dbg = ?nasty,
                big = u128::MAX,
                small = -5i128,
                nan = f64::NAN,
                "{}",
                nasty
            );
        });
        let (text, v) = &got[0];
        assert_eq!(v["message"], nasty, "{text}");
        assert_eq!(v["path"], nasty);
        assert_eq!(v["dbg"], format!("{nasty:?}"));
        assert_eq!(v["big"], u128::MAX.to_string());
        assert_eq!(v["small"], -5);
        assert!(v["nan"].is_null());
        assert_eq!(v["spans"][0]["peer"], nasty);
        assert!(!text.contains('\n'), "one line: {text}");
    }
}
