//! Logging to the journal: tracing levels mapped to syslog priorities as journalctl reads them,
//! and an event's `error` field repeated in its MESSAGE text.
//!
//! tracing-journald maps INFO to NOTICE (5) by default, so `journalctl -p notice` would be all
//! routine traffic; chatd maps INFO to informational (6) and DEBUG and TRACE to debug (7).
//! Structured fields stay fields (`ERROR=...`), but `journalctl -u chatd` shows only MESSAGE,
//! so an event with an `error` field has ": <error>" appended to its message, e.g.
//! `reload refused; the previous configuration stays in force: ... max_text_bytes ...`.

use std::fmt;

use tracing::field::{Field, Value, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::layer::{Context, Layer};

/// The priorities chatd logs at: ERROR 3, WARN 4, INFO 6, DEBUG and TRACE 7.
pub fn priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// The journald layer chatd uses: [`priorities`], no field prefix (`USER=`, not
/// `F_USER=`), and [`ReasonInMessage`] around it.
pub fn layer() -> std::io::Result<ReasonInMessage<tracing_journald::Layer>> {
    Ok(ReasonInMessage(
        tracing_journald::layer()?
            .with_field_prefix(None)
            .with_priority_mappings(priorities()),
    ))
}

/// Wraps a layer so that it sees an event with an `error` field as if its message ended with
/// ": <error>"; every other field, and the event itself, are passed on unchanged.
pub struct ReasonInMessage<L>(pub L);

/// The most fields an event may have to be rewritten (the callsites in chatd have far fewer);
/// an event with more is passed on as it is.
const MAX_FIELDS: usize = 32;

/// Every field of an event, as the text a layer would record.
#[derive(Default)]
struct Fields {
    values: Vec<(Field, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.values.push((field.clone(), value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.values.push((field.clone(), format!("{value:?}")));
    }
}

impl<L: Layer<S>, S: Subscriber> Layer<S> for ReasonInMessage<L> {
    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(span, values, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let reason = fields
            .values
            .iter()
            .find(|(f, _)| f.name() == "error")
            .map(|(_, v)| v.clone());
        let has_message = fields.values.iter().any(|(f, _)| f.name() == "message");
        let (Some(reason), true) = (reason, has_message) else {
            return self.0.on_event(event, ctx);
        };
        if fields.values.len() > MAX_FIELDS {
            return self.0.on_event(event, ctx);
        }
        for (field, value) in &mut fields.values {
            if field.name() == "message" {
                value.push_str(": ");
                value.push_str(&reason);
            }
        }
        let metadata = event.metadata();
        // A fixed-size array (what `value_set` takes): the fields, then unused slots that
        // record nothing.
        let Some((first, _)) = fields.values.first() else {
            return self.0.on_event(event, ctx);
        };
        let slots: [(&Field, Option<&dyn Value>); MAX_FIELDS] =
            std::array::from_fn(|i| match fields.values.get(i) {
                Some((field, value)) => (field, Some(value as &dyn Value)),
                None => (first, None),
            });
        let values = metadata.fields().value_set(&slots);
        let rewritten = if event.is_contextual() {
            Event::new(metadata, &values)
        } else {
            Event::new_child_of(event.parent().cloned(), metadata, &values)
        };
        self.0.on_event(&rewritten, ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// An event's fields as (name, value) pairs.
    type Pairs = Vec<(String, String)>;

    /// Records each event as (name, value) pairs.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Pairs>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let pairs = fields
                .values
                .into_iter()
                .map(|(f, v)| (f.name().to_string(), v))
                .collect();
            if let Ok(mut events) = self.0.lock() {
                events.push(pairs);
            }
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_error_is_appended_to_the_message_and_kept_as_a_field() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(ReasonInMessage(capture.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let e = std::io::Error::other("max_text_bytes must be at least 1");
            tracing::error!(trigger = "SIGHUP", error = %e, user = ?"bob", "reload refused");
            tracing::info!(user = "bob", "no error here");
            tracing::warn!(error = "only a field");
        });
        let events = capture.0.lock().unwrap().clone();
        assert_eq!(
            events,
            vec![
                pairs(&[
                    (
                        "message",
                        "reload refused: max_text_bytes must be at least 1"
                    ),
                    ("trigger", "SIGHUP"),
                    ("error", "max_text_bytes must be at least 1"),
                    ("user", "\"bob\""),
                ]),
                pairs(&[("message", "no error here"), ("user", "bob")]),
                pairs(&[("error", "only a field")]),
            ]
        );
    }

    #[test]
    fn info_is_informational_not_notice() {
        let p = priorities();
        assert_eq!(p.error, Priority::Error);
        assert_eq!(p.warn, Priority::Warning);
        assert_eq!(p.info, Priority::Informational);
        assert_eq!(p.info as u8, b'6');
        assert_eq!(p.debug, Priority::Debug);
        assert_eq!(p.trace, Priority::Debug);
    }
}
