//! Kubernetes Events (`events.k8s.io/v1`) without a cache.
//!
//! kube's `Recorder` keeps every Event it published for six minutes (to turn repeats into a
//! `series`), and only expires them on its next publish: after 1,000 Falco CRs were created that
//! was about 8 MiB of the operator's memory, held until the next Event. This operator publishes on
//! transitions only, so a repeat of the same Event is rare and needs no series: each publish is
//! one `create`, and nothing is kept.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// The API server refuses an Event whose `note` is longer than this (bytes).
const NOTE_MAX: usize = 1024;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something worked.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

/// Publishes Events as one controller (`reportingController`) of one operator instance.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    /// A publisher for `controller` (e.g. `falco-controller`) in operator instance `instance`.
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
        }
    }

    /// Creates one Event about `regarding`, in its namespace.
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let event = build(
            &self.controller,
            &self.instance,
            regarding,
            type_,
            reason,
            note,
            Timestamp::now(),
        );
        let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// The Event object (pure).
fn build(
    controller: &str,
    instance: &str,
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
    now: Timestamp,
) -> Event {
    let name = format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or(controller),
        now.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        action: Some(reason.to_owned()),
        reason: Some(reason.to_owned()),
        note: Some(truncate(note, NOTE_MAX)),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some(controller.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_owned(),
        ),
        ..Default::default()
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_the_object_and_the_controller() {
        let regarding = ObjectReference {
            kind: Some("Falco".into()),
            namespace: Some("falco".into()),
            name: Some("edge".into()),
            ..Default::default()
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let e = build(
            "falco-controller",
            "pod-1",
            regarding.clone(),
            EventType::Warning,
            "ReconcileFailed",
            "quota exceeded".into(),
            now,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("falco"));
        assert_eq!(
            e.metadata.name,
            Some(format!("edge.{:x}", now.as_nanosecond()))
        );
        assert_eq!(e.regarding, Some(regarding));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("ReconcileFailed"));
        assert_eq!(e.action.as_deref(), Some("ReconcileFailed"));
        assert_eq!(e.reporting_controller.as_deref(), Some("falco-controller"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(600); // 1,200 bytes
        let cut = truncate(note, NOTE_MAX);
        assert_eq!(cut.len(), 1024);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short".into(), NOTE_MAX), "short");
        assert_eq!(truncate("aé".into(), 2), "a");
    }
}
