//! Prometheus metrics, per tenant, instance and plugin: invocations by kind
//! and outcome, their durations, egress requests by outcome (denials
//! included), and queue depth.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    tenant: String,
    instance: String,
    plugin: String,
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Target {
    tenant: String,
    instance: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Egress {
    tenant: String,
    instance: String,
    plugin: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Queue {
    tenant: String,
    instance: String,
    state: String,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    invocations: Family<Call, Counter>,
    durations: Family<Target, Histogram>,
    egress: Family<Egress, Counter>,
    queue: Family<Queue, Gauge>,
    released: Family<Instance, Counter>,
    deliveries: Family<Delivery, Counter>,
    logs_dropped: Family<Instance, Counter>,
    memory: Family<Instance, Gauge>,
    leases: Counter,
    scheduler_passes: Counter,
    plugin_files_refused: Gauge,
    tenants_failed: Gauge,
    instances_failed: Gauge,
    plugins_compiling: Gauge,
    instances_compiling: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Delivery {
    tenant: String,
    instance: String,
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Instance {
    tenant: String,
    instance: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let invocations = Family::<Call, Counter>::default();
        let durations = Family::<Target, Histogram>::new_with_constructor(|| {
            // 1 ms to ~33 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let egress = Family::<Egress, Counter>::default();
        let queue = Family::<Queue, Gauge>::default();
        let released = Family::<Instance, Counter>::default();
        let deliveries = Family::<Delivery, Counter>::default();
        let logs_dropped = Family::<Instance, Counter>::default();
        let memory = Family::<Instance, Gauge>::default();
        let leases = Counter::default();
        let scheduler_passes = Counter::default();
        let plugin_files_refused = Gauge::default();
        let tenants_failed = Gauge::default();
        let instances_failed = Gauge::default();
        let plugins_compiling = Gauge::default();
        let instances_compiling = Gauge::default();
        let mut registry = Registry::with_prefix("switchyard");
        registry.register(
            "invocations",
            "Plugin invocations by kind (action, webhook, job) and outcome",
            invocations.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Wall-clock time of plugin invocations",
            durations.clone(),
        );
        registry.register(
            "egress_requests",
            "Outbound requests by outcome (ok, denied, timeout, ...)",
            egress.clone(),
        );
        registry.register(
            "queue_jobs",
            "Jobs in the durable queue by state",
            queue.clone(),
        );
        registry.register(
            "jobs_released",
            "Leased jobs put back without running (no wasm slot was free, or the instance's \
             storage migration is failing); not counted as attempts",
            released.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome: queued, duplicate, processed (synchronous), paused, \
             refused_<reason>",
            deliveries.clone(),
        );
        registry.register(
            "plugin_log_records_dropped",
            "Plugin log records dropped: over an invocation's budget or the tenant's rate",
            logs_dropped.clone(),
        );
        registry.register(
            "instance_memory_bytes",
            "The most linear memory any invocation of the instance grew to since the daemon \
             started (bytes; the instance's memory limit bounds it)",
            memory.clone(),
        );
        registry.register(
            "worker_leases",
            "Lease passes of the queue worker over the queue",
            leases.clone(),
        );
        registry.register(
            "scheduler_passes",
            "Passes of the scheduler over due schedules (a stalled scheduler stops counting)",
            scheduler_passes.clone(),
        );
        registry.register(
            "plugin_files_refused",
            "Plugin files in plugin_dir that are refused and not served (see the log or `switchyard check`)",
            plugin_files_refused.clone(),
        );
        registry.register(
            "tenants_failed",
            "Tenants not served because their file has errors (see the log or `switchyard check`)",
            tenants_failed.clone(),
        );
        registry.register(
            "instances_failed",
            "Instances not served because they could not be built (see the log or their status)",
            instances_failed.clone(),
        );
        registry.register(
            "plugins_compiling",
            "Plugin components being compiled in the background (not in the compile cache at start)",
            plugins_compiling.clone(),
        );
        registry.register(
            "instances_compiling",
            "Instances not served yet because their plugin is being compiled",
            instances_compiling.clone(),
        );
        Self {
            registry,
            plugins_compiling,
            instances_compiling,
            plugin_files_refused,
            tenants_failed,
            instances_failed,
            invocations,
            durations,
            egress,
            queue,
            released,
            deliveries,
            logs_dropped,
            memory,
            leases,
            scheduler_passes,
        }
    }
}

impl Metrics {
    /// Records one invocation and the egress requests it made.
    pub fn record(
        &self,
        tenant: &str,
        instance: &str,
        plugin: &str,
        kind: &str,
        outcome: &str,
        report: &switchyard_runtime::Report,
    ) {
        self.count_call(tenant, instance, plugin, kind, outcome);
        self.durations
            .get_or_create(&Target {
                tenant: tenant.into(),
                instance: instance.into(),
                plugin: plugin.into(),
            })
            .observe(report.duration.as_secs_f64());
        // A call that never instantiated (no wasm slot) says nothing of it.
        if report.memory_bytes > 0 {
            self.memory
                .get_or_create(&Instance {
                    tenant: tenant.into(),
                    instance: instance.into(),
                })
                .inner()
                .fetch_max(
                    i64::try_from(report.memory_bytes).unwrap_or(i64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
        }
        if report.logs_dropped > 0 {
            self.logs_dropped
                .get_or_create(&Instance {
                    tenant: tenant.into(),
                    instance: instance.into(),
                })
                .inc_by(u64::from(report.logs_dropped));
        }
        let outcomes = report
            .egress
            .iter()
            .map(|e| (&e.outcome, 1))
            .chain(report.egress_omitted.iter().map(|(o, n)| (o, *n)));
        for (outcome, n) in outcomes {
            self.egress
                .get_or_create(&Egress {
                    tenant: tenant.into(),
                    instance: instance.into(),
                    plugin: plugin.into(),
                    outcome: outcome.clone(),
                })
                .inc_by(n);
        }
    }

    /// Counts one call by outcome; on its own, for a call refused before
    /// it ran (over a share, or the daemon busy), which has no duration.
    pub fn count_call(
        &self,
        tenant: &str,
        instance: &str,
        plugin: &str,
        kind: &str,
        outcome: &str,
    ) {
        self.invocations
            .get_or_create(&Call {
                tenant: tenant.into(),
                instance: instance.into(),
                plugin: plugin.into(),
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets the queue depth gauges of one instance.
    pub fn set_queue(&self, tenant: &str, instance: &str, queued: i64, running: i64, dead: i64) {
        for (state, n) in [("queued", queued), ("running", running), ("dead", dead)] {
            self.queue
                .get_or_create(&Queue {
                    tenant: tenant.into(),
                    instance: instance.into(),
                    state: state.into(),
                })
                .set(n);
        }
    }

    /// Log records of an instance dropped since the daemon started.
    pub fn logs_dropped(&self, tenant: &str, instance: &str) -> u64 {
        self.logs_dropped
            .get(&Instance {
                tenant: tenant.into(),
                instance: instance.into(),
            })
            .map_or(0, |c| c.get())
    }

    /// Counts one webhook delivery by what became of it.
    pub fn delivery(&self, tenant: &str, instance: &str, route: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&Delivery {
                tenant: tenant.into(),
                instance: instance.into(),
                route: route.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts one lease pass of the worker.
    pub fn worker_lease(&self) {
        self.leases.inc();
    }

    /// Counts a job put back without running (no wasm slot was free, or its
    /// instance's storage migration is failing).
    pub fn job_released(&self, tenant: &str, instance: &str) {
        self.released
            .get_or_create(&Instance {
                tenant: tenant.into(),
                instance: instance.into(),
            })
            .inc();
    }

    /// Sets how many plugin files are refused.
    pub fn set_plugin_files_refused(&self, n: usize) {
        self.plugin_files_refused.set(n as i64);
    }

    /// Sets how many tenants and instances are not served.
    pub fn set_failed(&self, tenants: usize, instances: usize) {
        self.tenants_failed.set(tenants as i64);
        self.instances_failed.set(instances as i64);
    }

    /// Sets how many plugins compile in the background, and how many
    /// instances wait for them.
    pub fn set_compiling(&self, plugins: usize, instances: usize) {
        self.plugins_compiling.set(plugins as i64);
        self.instances_compiling.set(instances as i64);
    }

    /// Counts one pass of the scheduler.
    pub fn scheduler_pass(&self) {
        self.scheduler_passes.inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters() {
        let m = Metrics::default();
        let report = switchyard_runtime::Report {
            duration_ms: 0,
            duration: std::time::Duration::from_micros(300),
            egress: vec![switchyard_runtime::http::EgressRecord {
                method: "GET".into(),
                destination: "https://x:443".into(),
                path: "/".into(),
                status: None,
                duration_ms: 1,
                outcome: "denied".into(),
            }],
            ..Default::default()
        };
        m.record("acme", "echo-1", "echo", "action", "ok", &report);
        m.set_queue("acme", "echo-1", 3, 1, 0);
        let text = m.render();
        assert!(text.contains(r#"switchyard_invocations_total{tenant="acme",instance="echo-1",plugin="echo",kind="action",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"switchyard_egress_requests_total{tenant="acme",instance="echo-1",plugin="echo",outcome="denied"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"switchyard_queue_jobs{tenant="acme",instance="echo-1",state="queued"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains("switchyard_invocation_duration_seconds_count"),
            "{text}"
        );
        // Sub-millisecond calls still add up (seconds as floats).
        assert!(
            text.contains(r#"switchyard_invocation_duration_seconds_sum{tenant="acme",instance="echo-1",plugin="echo"} 0.0003"#),
            "{text}"
        );
    }

    /// The memory gauge keeps the most any call reached: a smaller call
    /// after a larger one does not lower it, and a call that never ran
    /// (0 bytes) leaves no series.
    #[test]
    fn the_memory_gauge_is_a_high_water_mark() {
        let m = Metrics::default();
        let call = |tenant: &str, memory_bytes| {
            let report = switchyard_runtime::Report {
                memory_bytes,
                ..Default::default()
            };
            m.record(tenant, "i", "echo", "action", "ok", &report);
        };
        call("acme", 10 << 20);
        call("acme", 1 << 20);
        call("idle", 0);
        let text = m.render();
        let line = r#"switchyard_instance_memory_bytes{tenant="acme",instance="i"} 10485760"#;
        assert!(text.contains(line), "{text}");
        assert!(
            !text.contains(r#"switchyard_instance_memory_bytes{tenant="idle""#),
            "{text}"
        );
    }
}
