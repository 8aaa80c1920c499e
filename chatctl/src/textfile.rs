//! OpenMetrics text (what chatd writes) turned into the Prometheus text format 0.0.4, which
//! node_exporter's textfile collector reads: it refuses the `info` type, and it expects a
//! counter's `# TYPE` to name the samples (`x_total`), not the family (`x`).
//!
//! Families are rewritten line by line: `# UNIT` and `# EOF` go (comments to that parser, but
//! noise), a counter family `x` becomes `x_total`, an info family `x` becomes the gauge
//! `x_info`. Samples are already named as Prometheus expects and pass unchanged.

/// `text` (OpenMetrics, as chatd writes it) in the Prometheus text format.
pub fn prometheus(text: &str) -> String {
    // The families' types first: a family's HELP line comes before its TYPE line.
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            types.insert(name.to_string(), kind.to_string());
        }
    }
    let renamed = |name: &str| -> (String, Option<&str>) {
        match types.get(name).map(String::as_str) {
            Some("counter") => (format!("{name}_total"), None),
            Some("info") => (format!("{name}_info"), Some("gauge")),
            _ => (name.to_string(), None),
        }
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some((name, help)) = line.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')) {
            out.push_str(&format!("# HELP {} {help}\n", renamed(name).0));
        } else if let Some((name, kind)) =
            line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' '))
        {
            let (name, new_kind) = renamed(name);
            out.push_str(&format!("# TYPE {name} {}\n", new_kind.unwrap_or(kind)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_info_are_renamed_units_and_eof_dropped() {
        let open = "# HELP chatd_build chatd's version.\n# TYPE chatd_build info\n\
                    chatd_build_info{version=\"0.1.0\"} 1\n\
                    # HELP chatd_logins Login attempts.\n# TYPE chatd_logins counter\n\
                    chatd_logins_total{result=\"ok\"} 2\n\
                    # HELP process_cpu_seconds CPU.\n# TYPE process_cpu_seconds counter\n\
                    # UNIT process_cpu_seconds seconds\nprocess_cpu_seconds_total 0.5\n\
                    # HELP chatd_sessions Sessions.\n# TYPE chatd_sessions gauge\n\
                    chatd_sessions{wire=\"json\"} 1\n\
                    # HELP chatd_login_duration_seconds Time.\n\
                    # TYPE chatd_login_duration_seconds histogram\n\
                    chatd_login_duration_seconds_bucket{le=\"+Inf\"} 3\n# EOF\n";
        let expected = "# HELP chatd_build_info chatd's version.\n# TYPE chatd_build_info gauge\n\
                        chatd_build_info{version=\"0.1.0\"} 1\n\
                        # HELP chatd_logins_total Login attempts.\n\
                        # TYPE chatd_logins_total counter\n\
                        chatd_logins_total{result=\"ok\"} 2\n\
                        # HELP process_cpu_seconds_total CPU.\n\
                        # TYPE process_cpu_seconds_total counter\n\
                        process_cpu_seconds_total 0.5\n\
                        # HELP chatd_sessions Sessions.\n# TYPE chatd_sessions gauge\n\
                        chatd_sessions{wire=\"json\"} 1\n\
                        # HELP chatd_login_duration_seconds Time.\n\
                        # TYPE chatd_login_duration_seconds histogram\n\
                        chatd_login_duration_seconds_bucket{le=\"+Inf\"} 3\n";
        assert_eq!(prometheus(open), expected);
    }
}
