//! `--runs` and `--compare`: the median of every figure over several runs (their reports'
//! JSON form, so any mode's figures), and the main ones for people, each run's value beside
//! the median.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::stats::median_of_sorted;
use crate::table::Table;

/// The figures `--runs` summarises in text, with their labels, in this order; a mode shows
/// the ones it has.
const SUMMARY: &[(&str, &str)] = &[
    ("deliveries_per_sec", "deliveries/s"),
    ("deliveries_per_cpu_sec", "per chatd CPU-s"),
    ("deliveries_per_cluster_cpu_sec", "per cluster CPU-s"),
    ("latency_p50_ms", "latency p50 ms"),
    ("latency_p99_ms", "latency p99 ms"),
    ("latency_max_ms", "latency max ms"),
    ("quiet_latency_p99_ms", "quiet p99 ms"),
    ("storm_latency_p99_ms", "storm p99 ms"),
    ("p99_delta_ms", "storm - quiet ms"),
    ("storm_logins", "storm logins"),
    ("setups_per_sec", "setups/s"),
    ("setups_per_chatd_cpu_sec", "setups/chatd CPU-s"),
    ("rss_per_connection_bytes", "RSS/connection B"),
    ("chatd_cpu_secs", "chatd CPU s"),
    ("nats_cpu_secs", "nats-server CPU s"),
    ("postgres_cpu_secs", "PostgreSQL CPU s"),
    ("bench_cpu_secs", "chat-bench CPU s"),
    ("lost", "lost"),
    ("out_of_order", "out of order"),
    ("dropped", "dropped"),
    ("host_wake_late_p99_ms", "host wake p99 ms"),
    ("host_steal_percent", "host steal %"),
];

/// Numbers in a run's figures that name something rather than measure it.
const NOT_FIGURES: &[&str] = &["chatd_pid"];

/// `--runs`: every run's figures and their medians.
#[derive(Debug, Serialize)]
pub struct Runs<'a> {
    /// How many runs.
    runs: usize,
    /// The median of every figure that is a number in every run.
    median: Value,
    /// Each run's figures.
    each: &'a [Value],
}

impl<'a> Runs<'a> {
    /// The summary of `each` run's figures.
    pub fn new(each: &'a [Value]) -> Runs<'a> {
        Runs {
            runs: each.len(),
            median: medians(each),
            each,
        }
    }

    /// For people: the main figures' medians, each with every run's value.
    pub fn text(&self) -> String {
        let mut t = Table::default();
        let title = format!(
            "median of {} runs (each run's value in brackets)",
            self.runs
        );
        summary_rows(&mut t, &title, &self.median, self.each);
        t.finish()
    }
}

/// One chatd's runs in a comparison.
#[derive(Debug, Serialize)]
struct Side<'a> {
    /// The binary's path (or, for `--cluster`, what ran).
    chatd: String,
    /// The median of every figure that is a number in every run.
    median: Value,
    /// Each run's figures.
    each: &'a [Value],
}

impl<'a> Side<'a> {
    fn new(chatd: String, each: &'a [Value]) -> Side<'a> {
        Side {
            chatd,
            median: medians(each),
            each,
        }
    }
}

/// `--compare`: each chatd's runs and medians, and the median of the per-pair differences
/// (second minus first).
#[derive(Debug, Serialize)]
pub struct Comparison<'a> {
    /// Pairs of runs.
    pairs: usize,
    /// The first chatd (`--chatd`).
    a: Side<'a>,
    /// The second (`--compare`).
    b: Side<'a>,
    /// The median of the differences, not B's median minus A's.
    b_minus_a_median: Value,
    /// Each pair's differences.
    #[serde(skip)]
    differences: Vec<Value>,
}

impl<'a> Comparison<'a> {
    /// The comparison of `a`'s runs (of the chatd at `a_path`) with `b`'s, pair by pair.
    pub fn new(a_path: &Path, a: &'a [Value], b_path: &Path, b: &'a [Value]) -> Comparison<'a> {
        let name = |p: &Path| p.display().to_string();
        Comparison::named(name(a_path), a, name(b_path), b)
    }

    /// The comparison of runs `a` (of what `a_name` names) with `b`, pair by pair.
    fn named(a_name: String, a: &'a [Value], b_name: String, b: &'a [Value]) -> Comparison<'a> {
        let differences = differences(a, b);
        Comparison {
            pairs: a.len().min(b.len()),
            a: Side::new(a_name, a),
            b: Side::new(b_name, b),
            b_minus_a_median: medians(&differences),
            differences,
        }
    }

    /// For people: each chatd's medians, then the per-pair differences'.
    pub fn text(&self) -> String {
        let mut t = Table::default();
        for (name, side) in [("A", &self.a), ("B", &self.b)] {
            let title = format!("{name} {}: median of {} runs", side.chatd, side.each.len());
            summary_rows(&mut t, &title, &side.median, side.each);
        }
        let title = format!(
            "B - A: median of {} pairs' differences (each pair's in brackets)",
            self.pairs
        );
        summary_rows(&mut t, &title, &self.b_minus_a_median, &self.differences);
        t.finish()
    }
}

/// `--cluster`: pairs of runs, one node (A) then the cluster (B), compared as `--compare`
/// does, then the figures that say what the cluster costs: the cluster's deliveries per
/// CPU-second of its nodes and nats-server against one node's per chatd CPU-second, and the
/// latency, losses and order of both.
#[derive(Debug, Serialize)]
pub struct ClusterComparison<'a> {
    /// The nodes of the cluster.
    nodes: usize,
    /// Each side, and the pairs' differences.
    #[serde(flatten)]
    comparison: Comparison<'a>,
    /// Per pair: the cluster's `deliveries_per_cluster_cpu_sec` over one node's
    /// `deliveries_per_cpu_sec`, in percent (null where either is unknown).
    cluster_over_one_node_percent: Vec<Option<f64>>,
    /// Their median.
    cluster_over_one_node_percent_median: Option<f64>,
}

impl<'a> ClusterComparison<'a> {
    /// The comparison of `one`'s runs (one node) with `cluster`'s (of `nodes` nodes).
    pub fn new(nodes: usize, one: &'a [Value], cluster: &'a [Value]) -> ClusterComparison<'a> {
        let ratios: Vec<Option<f64>> = one
            .iter()
            .zip(cluster)
            .map(|(a, b)| {
                let (a, b) = (
                    a["deliveries_per_cpu_sec"].as_f64()?,
                    b["deliveries_per_cluster_cpu_sec"].as_f64()?,
                );
                (a > 0.0).then(|| b * 100.0 / a)
            })
            .collect();
        let mut known: Vec<f64> = ratios.iter().flatten().copied().collect();
        known.sort_by(f64::total_cmp);
        ClusterComparison {
            nodes,
            comparison: Comparison::named(
                "one chatd (SQLite)".into(),
                one,
                format!("{nodes} chatd nodes (PostgreSQL, nats-server)"),
                cluster,
            ),
            cluster_over_one_node_percent_median: (known.len() == ratios.len())
                .then(|| median_of_sorted(&known))
                .flatten(),
            cluster_over_one_node_percent: ratios,
        }
    }

    /// For people: the comparison, then the cluster's figures against one node's.
    pub fn text(&self) -> String {
        let (a, b) = (&self.comparison.a, &self.comparison.b);
        let mut t = Table::default();
        t.line(format_args!(
            "== cluster of {} nodes against one node: medians of {} pairs (each pair's in \
             brackets)",
            self.nodes, self.comparison.pairs
        ));
        let each = |side: &Side, key: &str, show: &dyn Fn(f64) -> String| {
            let xs: Vec<String> = side
                .each
                .iter()
                .map(|r| r[key].as_f64().map_or_else(|| "?".into(), show))
                .collect();
            let m = side.median[key].as_f64().map_or_else(|| "?".into(), show);
            format!("{m} [{}]", xs.join(", "))
        };
        let whole = |x: f64| format!("{x:.0}");
        let ms = |x: f64| format!("{x:.3}");
        t.row(
            "one node",
            format_args!(
                "{} deliveries per chatd CPU-s",
                each(a, "deliveries_per_cpu_sec", &whole)
            ),
        );
        t.row(
            "cluster",
            format_args!(
                "{} deliveries per CPU-s of its nodes and nats-server",
                each(b, "deliveries_per_cluster_cpu_sec", &whole)
            ),
        );
        let pct = |x: &Option<f64>| x.map_or_else(|| "?".into(), |p| format!("{p:.1}"));
        let ratios: Vec<String> = self.cluster_over_one_node_percent.iter().map(pct).collect();
        t.row(
            "cluster/one node",
            format_args!(
                "{} % [{}]",
                pct(&self.cluster_over_one_node_percent_median),
                ratios.join(", ")
            ),
        );
        t.row(
            "PostgreSQL CPU",
            format_args!(
                "{} s (not counted above)",
                each(b, "postgres_cpu_secs", &ms)
            ),
        );
        t.row(
            "p99 one node",
            format_args!("{} ms", each(a, "latency_p99_ms", &ms)),
        );
        t.row(
            "p99 cluster",
            format_args!("{} ms", each(b, "latency_p99_ms", &ms)),
        );
        let diffs: Vec<String> = self
            .comparison
            .differences
            .iter()
            .map(|d| {
                d["latency_p99_ms"]
                    .as_f64()
                    .map_or_else(|| "?".into(), |x| format!("{x:+.3}"))
            })
            .collect();
        let diff = self.comparison.b_minus_a_median["latency_p99_ms"]
            .as_f64()
            .map_or_else(|| "?".into(), |x| format!("{x:+.3}"));
        t.row(
            "p99 difference",
            format_args!("{diff} ms [{}] (cluster - one node)", diffs.join(", ")),
        );
        let total = |side: &Side, key: &str| -> u64 {
            side.each.iter().filter_map(|r| r[key].as_u64()).sum()
        };
        for (label, key) in [("lost", "lost"), ("out of order", "out_of_order")] {
            t.row(
                label,
                format_args!(
                    "one node {}, cluster {} (all runs)",
                    total(a, key),
                    total(b, key)
                ),
            );
        }
        let mut text = self.comparison.text();
        text.push_str(&t.finish());
        text
    }
}

/// The median of every figure that is a number in every run (the mean of the middle two
/// for an even count); other keys are left out.
pub fn medians(runs: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    let Some(Value::Object(first)) = runs.first() else {
        return Value::Object(out);
    };
    for key in first.keys().filter(|k| !NOT_FIGURES.contains(&k.as_str())) {
        let mut xs: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
        if xs.len() != runs.len() {
            continue;
        }
        xs.sort_by(f64::total_cmp);
        if let Some(median) = median_of_sorted(&xs) {
            out.insert(key.clone(), Value::from(median));
        }
    }
    Value::Object(out)
}

/// Per pair, every figure that is a number in both runs: `b` minus `a`.
fn differences(a: &[Value], b: &[Value]) -> Vec<Value> {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            let mut diff = serde_json::Map::new();
            if let Value::Object(b_figures) = b {
                for (key, y) in b_figures {
                    if let (Some(x), Some(y)) = (a[key].as_f64(), y.as_f64()) {
                        diff.insert(key.clone(), Value::from(y - x));
                    }
                }
            }
            Value::Object(diff)
        })
        .collect()
}

/// A `== title` line, then the main figures' `median` over `runs`, each with every run's
/// value.
fn summary_rows(t: &mut Table, title: &str, median: &Value, runs: &[Value]) {
    t.line(format_args!("== {title}"));
    for (key, label) in SUMMARY {
        let Some(m) = median[*key].as_f64() else {
            continue;
        };
        // Counts as counts (a median of two may be a half), large figures without decimals.
        let counts = runs.iter().all(|r| r[*key].is_u64());
        let large = runs
            .iter()
            .any(|r| r[*key].as_f64().is_some_and(|x| x.abs() >= 1000.0));
        let show = |x: f64| {
            if counts {
                format!("{}", (x * 2.0).round() / 2.0)
            } else if large {
                format!("{x:.0}")
            } else {
                format!("{x:.3}")
            }
        };
        let each: Vec<String> = runs
            .iter()
            .filter_map(|r| r[*key].as_f64())
            .map(show)
            .collect();
        t.row(label, format_args!("{} [{}]", show(m), each.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// [`summary_rows`] alone.
    fn summary_text(title: &str, runs: &[Value]) -> String {
        let mut t = Table::default();
        summary_rows(&mut t, title, &medians(runs), runs);
        t.finish()
    }

    #[test]
    fn medians_of_numbers_present_in_every_run() {
        let runs = [
            json!({"mode": "fanout", "a": 3.0, "b": 1, "c": null, "d": 5, "chatd_pid": 9}),
            json!({"mode": "fanout", "a": 1.0, "b": 2, "c": 1.0}),
            json!({"mode": "fanout", "a": 2.0, "b": 4, "c": 2.0, "d": 7}),
        ];
        let m = medians(&runs);
        assert_eq!(
            m,
            json!({"a": 2.0, "b": 2.0}),
            "c is null once, d missing once"
        );
        let m = medians(&runs[..2]);
        assert_eq!(m["a"], 2.0, "even count: the mean of the middle two");
        assert_eq!(m["b"], 1.5);
        assert_eq!(medians(&[]), json!({}));
    }

    #[test]
    fn runs_text_shows_each_value_beside_the_median() {
        let runs = [
            json!({"deliveries_per_sec": 2_100_000.0, "latency_p99_ms": 4.5, "lost": 0}),
            json!({"deliveries_per_sec": 2_500_000.0, "latency_p99_ms": 5.25, "lost": 0}),
            json!({"deliveries_per_sec": 2_300_000.5, "latency_p99_ms": 4.75, "lost": 1}),
        ];
        let text = Runs::new(&runs).text();
        assert!(text.starts_with("== median of 3 runs"), "{text}");
        assert!(
            text.contains("deliveries/s       2300000 [2100000, 2500000, 2300000]\n"),
            "{text}"
        );
        assert!(
            text.contains("latency p99 ms     4.750 [4.500, 5.250, 4.750]\n"),
            "{text}"
        );
        assert!(text.contains("lost               0 [0, 0, 1]\n"), "{text}");
        let two = Runs::new(&runs[1..]).text();
        assert!(two.contains("lost               0.5 [0, 1]\n"), "{two}");
        assert!(!text.contains("storm"), "{text}");
        let v = serde_json::to_value(Runs::new(&runs)).unwrap();
        assert_eq!(v["runs"], 3);
        assert_eq!(v["median"]["latency_p99_ms"], 4.75);
        assert_eq!(v["each"][1]["deliveries_per_sec"], 2_500_000.0);
    }

    #[test]
    fn a_cluster_comparison_puts_its_cpu_against_one_nodes() {
        let one = [
            json!({"deliveries_per_cpu_sec": 4_000_000.0, "latency_p99_ms": 5.0, "lost": 0,
                   "out_of_order": 0}),
            json!({"deliveries_per_cpu_sec": 2_000_000.0, "latency_p99_ms": 4.0, "lost": 0,
                   "out_of_order": 0}),
        ];
        let cluster = [
            json!({"deliveries_per_cpu_sec": 3_600_000.0, "deliveries_per_cluster_cpu_sec":
                   3_400_000.0, "latency_p99_ms": 6.5, "lost": 3, "out_of_order": 1,
                   "postgres_cpu_secs": 0.25}),
            json!({"deliveries_per_cpu_sec": 1_900_000.0, "deliveries_per_cluster_cpu_sec":
                   1_800_000.0, "latency_p99_ms": 4.5, "lost": 0, "out_of_order": 0,
                   "postgres_cpu_secs": 0.5}),
        ];
        let c = ClusterComparison::new(3, &one, &cluster);
        assert_eq!(c.cluster_over_one_node_percent, [Some(85.0), Some(90.0)]);
        assert_eq!(c.cluster_over_one_node_percent_median, Some(87.5));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["nodes"], 3);
        assert_eq!(v["pairs"], 2);
        assert_eq!(v["a"]["chatd"], "one chatd (SQLite)");
        assert_eq!(
            v["b"]["median"]["deliveries_per_cluster_cpu_sec"],
            2_600_000.0
        );
        assert_eq!(v["b_minus_a_median"]["latency_p99_ms"], 1.0);
        let text = c.text();
        assert!(
            text.contains("== B 3 chatd nodes (PostgreSQL, nats-server): median of 2 runs\n"),
            "{text}"
        );
        assert!(
            text.contains("per cluster CPU-s  2600000 [3400000, 1800000]\n"),
            "{text}"
        );
        assert!(
            text.contains("\none node           3000000 [4000000, 2000000] deliveries per chatd"),
            "{text}"
        );
        assert!(
            text.contains("\ncluster/one node   87.5 % [85.0, 90.0]\n"),
            "{text}"
        );
        assert!(
            text.contains("\nPostgreSQL CPU     0.375 [0.250, 0.500] s"),
            "{text}"
        );
        assert!(
            text.contains("\np99 difference     +1.000 ms [+1.500, +0.500] (cluster"),
            "{text}"
        );
        assert!(text.contains("\nlost               one node 0, cluster 3 (all runs)\n"));
        assert!(text.contains("\nout of order       one node 0, cluster 1 (all runs)\n"));
        // A run without a figure: no median ratio.
        let c = ClusterComparison::new(3, &one, &cluster[..1]);
        assert_eq!(c.comparison.pairs, 1);
        let unknown = [json!({"lost": 0})];
        let c = ClusterComparison::new(3, &one[..1], &unknown);
        assert_eq!(c.cluster_over_one_node_percent, [None]);
        assert_eq!(c.cluster_over_one_node_percent_median, None);
        assert!(c.text().contains("cluster/one node   ? % [?]\n"));
    }

    #[test]
    fn a_comparison_reports_each_side_and_the_pairs_differences() {
        let a = [
            json!({"mode": "fanout", "latency_p99_ms": 5.0, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 6.0, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 4.0, "lost": 0}),
        ];
        let b = [
            json!({"mode": "fanout", "latency_p99_ms": 4.5, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 6.25, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 3.0, "lost": 0}),
        ];
        let diffs = differences(&a, &b);
        assert_eq!(diffs[1], json!({"latency_p99_ms": 0.25, "lost": 0.0}));
        // One figure, one format: a small median among large differences has no decimals.
        let rates = [
            json!({"deliveries_per_sec": 2000.0}),
            json!({"deliveries_per_sec": -1800.0}),
        ];
        let text = summary_text("t", &rates);
        assert!(
            text.contains("deliveries/s       100 [2000, -1800]\n"),
            "{text}"
        );
        let (pa, pb) = (Path::new("/x/chatd-a"), Path::new("/x/chatd-b"));
        let v = serde_json::to_value(Comparison::new(pa, &a, pb, &b)).unwrap();
        assert_eq!(v["pairs"], 3);
        assert_eq!(v["a"]["chatd"], "/x/chatd-a");
        assert_eq!(v["a"]["median"]["latency_p99_ms"], 5.0);
        assert_eq!(v["b"]["median"]["latency_p99_ms"], 4.5);
        assert_eq!(v["b"]["each"][2]["latency_p99_ms"], 3.0);
        // The differences' median (−0.5 of −0.5, +0.25, −1.0), not B's median minus A's.
        assert_eq!(v["b_minus_a_median"]["latency_p99_ms"], -0.5);
        let text = Comparison::new(pa, &a, pb, &b).text();
        assert!(
            text.contains("== A /x/chatd-a: median of 3 runs\n"),
            "{text}"
        );
        assert!(
            text.contains("== B /x/chatd-b: median of 3 runs\n"),
            "{text}"
        );
        assert!(
            text.contains("latency p99 ms     -0.500 [-0.500, 0.250, -1.000]\n"),
            "{text}"
        );
    }
}
