//! A Prometheus registry per service instance, on the `metrics` facade's handles and rendered
//! by `metrics-exporter-prometheus` in the text exposition format (version 0.0.4).
//!
//! Not the facade's process-wide recorder: the tests run a gateway and orchestrators in one
//! process, and each must expose its own figures.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

static METADATA: Metadata<'static> = Metadata::new("grid", Level::INFO, Some("grid"));

/// Latency buckets, in seconds: 0.5 ms to 10 s.
const SECONDS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Size buckets (messages in a batch, …): 1 to 10,000.
const SIZES: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 10_000.0];

/// What a metric is, with its help text.
pub enum Described {
    Counter(&'static str, &'static str),
    Gauge(&'static str, &'static str),
    Histogram(&'static str, &'static str),
}

pub struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry whose histograms ending in `_seconds` get latency buckets and the others size
    /// buckets; each described metric gets its `# HELP` line.
    pub fn new(described: &[Described]) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS)
            .and_then(|builder| builder.set_buckets(&SIZES))
            .expect("constant buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        for metric in described {
            match *metric {
                Described::Counter(name, help) => {
                    recorder.describe_counter(KeyName::from(name), None, SharedString::from(help));
                }
                Described::Gauge(name, help) => {
                    recorder.describe_gauge(KeyName::from(name), None, SharedString::from(help));
                }
                Described::Histogram(name, help) => {
                    recorder.describe_histogram(KeyName::from(name), None, SharedString::from(help));
                }
            }
        }
        Self { recorder, handle }
    }

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels.iter().map(|(key, value)| Label::new(*key, (*value).to_owned())).collect();
        Key::from_parts(name, labels)
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder.register_counter(&Self::key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&Self::key(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder.register_histogram(&Self::key(name, labels), &METADATA)
    }

    /// The exposition, for `GET /metrics`.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds the histograms' recorded samples into their buckets. Without a scrape they would
    /// pile up: the services call this every few seconds ([`UPKEEP_EVERY`]).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// How often a service folds its histograms' samples (see [`Registry::upkeep`]).
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The content type of [`Registry::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_registries_keep_their_own_figures() {
        let first = Registry::new(&[Described::Counter("grid_things_total", "Things.")]);
        let second = Registry::new(&[]);
        first.counter("grid_things_total", &[("kind", "a")]).increment(2);
        second.counter("grid_things_total", &[("kind", "a")]).increment(5);
        first.histogram("grid_wait_seconds", &[]).record(0.003);
        first.histogram("grid_batch_messages", &[]).record(7.0);
        let text = first.render();
        assert!(text.contains("# HELP grid_things_total Things."), "{text}");
        assert!(text.contains("grid_things_total{kind=\"a\"} 2"), "{text}");
        assert!(text.contains("grid_wait_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("grid_batch_messages_bucket{le=\"10\"} 1"), "{text}");
        assert!(second.render().contains("grid_things_total{kind=\"a\"} 5"));
    }
}
