//! The JSON log line, one object per event, every field a JSON value of its own type: numbers and
//! booleans as such, strings as strings, a field declared but not given a value (an `Option`
//! that is `None`, `tracing::field::Empty`) as `null`, and a value wrapped in [`json`] (a list,
//! an object) as that JSON — never as its `Debug` text (`Some("v1")`, `["a"]` in a string).
//!
//! Keys: `timestamp`, `level`, the event's fields in the order declared (`message` first),
//! `target`, and `spans` (root first, each `{"name": …, fields…}`) when the event is in a span.

use std::fmt;
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

/// Collects fields as typed JSON values, in the order they are recorded.
#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, v);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let v = match text.strip_prefix(MARK) {
            Some(j) => serde_json::from_str(j).unwrap_or_else(|_| j.into()),
            None => text.into(),
        };
        self.put(field, v);
    }
}

fn write_object(out: &mut String, fields: &[(&str, Value)]) {
    out.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
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
        let meta = event.metadata();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line: Vec<(&str, Value)> = vec![
            ("timestamp", timestamp.into()),
            ("level", meta.level().as_str().into()),
        ];
        // In the order the call site declares them; a field declared but given no value is
        // null, not left out.
        let mut recorded = fields.0;
        for f in meta.fields() {
            let value = match recorded.iter().position(|(k, _)| *k == f.name()) {
                Some(i) => recorded.swap_remove(i).1,
                None => Value::Null,
            };
            line.push((f.name(), value));
        }
        line.extend(recorded);
        line.push(("target", meta.target().into()));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut obj = Map::new();
                    obj.insert("name".into(), span.name().into());
                    let ext = span.extensions();
                    if let Some(f) = ext.get::<FormattedFields<N>>() {
                        if let Ok(Value::Object(m)) = serde_json::from_str(&f.fields) {
                            obj.extend(m);
                        }
                    }
                    Value::Object(obj)
                })
                .collect();
            line.push(("spans", Value::Array(spans)));
        }
        let mut out = String::with_capacity(256);
        write_object(&mut out, &line);
        out.push('\n');
        writer.write_str(&out)
    }
}

/// Span fields, kept as a JSON object text that [`JsonLines`] reads back.
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
        write_object(&mut out, &f.0);
        writer.write_str(&out)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut f = Fields::default();
        fields.record(&mut f);
        let mut merged: Map<String, Value> =
            serde_json::from_str(&current.fields).unwrap_or_default();
        merged.extend(f.0.into_iter().map(|(k, v)| (k.to_string(), v)));
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
}
