//! The shipped alert rules and dashboard against the real thing: `promtool check rules` and
//! `promtool test rules` (deploy/prometheus), and a real Prometheus (Debian's 2.42) scraping a
//! real daemon every second, through whose HTTP API every rule expression and every dashboard
//! expression is evaluated. Each must return series: a metric renamed, relabelled (`job` →
//! `exported_job`) or never exported would make an alert silently dead.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::env::{Backend, TestEnv, http_get, json, radd_binary, stderr, switch_and_wait_archived};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

/// A Prometheus binary: `$RADD_TEST_PROMETHEUS`, /usr/bin/<name>, or <name> on PATH. Missing
/// fails the test with an install hint: never a skip.
fn tool(name: &str) -> PathBuf {
    let candidates = [
        std::env::var_os("RADD_TEST_PROMETHEUS_DIR").map(|d| PathBuf::from(d).join(name)),
        Some(PathBuf::from("/usr/bin").join(name)),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return found;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} not found (install Debian's `prometheus` package, as .ci/run does, or set RADD_TEST_PROMETHEUS_DIR)"
        )
    })
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(tool("promtool")).args(args).current_dir(dir).output().expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = deploy("prometheus");
    let checked = run_promtool(&["check", "rules", "radd-rules.yml"], &dir);
    assert!(checked.contains("SUCCESS: 12 rules found"), "{checked}");
    let tested = run_promtool(&["test", "rules", "radd-rules.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a test group (a firing and a non-firing case each: see the file).
    let rules = std::fs::read_to_string(dir.join("radd-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("radd-rules.test.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}, exp_alerts: []")), "no non-firing case for {alert}");
        assert!(tests.contains(&format!("alertname: {alert}\n")), "no firing case for {alert}");
    }
}

/// Kills the process on drop (Prometheus, the daemon), so a failing assertion leaves nothing.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A webhook receiver answering 200 to every request, until dropped.
struct Receiver {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                // Read the head, then as much body as Content-Length says.
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { port, stop }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Evaluates `expr` now through /api/v1/query; the result vector (panics on an error answer).
fn query(port: u16, expr: &str) -> Vec<Value> {
    let body = http_get(port, &format!("/api/v1/query?query={}", percent_encode(expr)))
        .unwrap_or_else(|| panic!("Prometheus refused {expr:?}"));
    let answer: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    match &answer["data"]["result"] {
        Value::Array(series) => series.clone(),
        Value::Null => Vec::new(),
        // A scalar (e.g. `time()`) counts as one result.
        other => vec![other.clone()],
    }
}

/// The vector selectors of a PromQL expression (`name{matchers}`), skipping functions,
/// keywords, label lists of `by`/`on`/…, strings and durations.
fn selectors(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 19] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "group_left",
        "group_right",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let skip_ws = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let closing = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        let mut quoted = false;
        while i < chars.len() {
            match chars[i] {
                '\\' if quoted => i += 1,
                '"' => quoted = !quoted,
                c if c == open && !quoted => depth += 1,
                c if c == close && !quoted => {
                    depth -= 1;
                    if depth == 0 {
                        return i;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced {open} in {expr}");
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = closing_quote(&chars, i);
        } else if c == '[' {
            i = closing(i, '[', ']');
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            if LABEL_LISTS.contains(&word.as_str()) && chars.get(next) == Some(&'(') {
                i = closing(next, '(', ')') + 1;
            } else if chars.get(next) == Some(&'(') || KEYWORDS.contains(&word.as_str()) {
                // A function or aggregation; its arguments are scanned in turn.
            } else if chars.get(next) == Some(&'{') {
                let end = closing(next, '{', '}');
                found.push(format!("{word}{}", chars[next..=end].iter().collect::<String>()));
                i = end + 1;
            } else {
                found.push(word);
            }
            continue;
        }
        i += 1;
    }
    found
}

fn closing_quote(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i
}

#[test]
fn selector_extraction_finds_metrics_not_functions_or_labels() {
    let expr = r#"(time() - radd_last_success_timestamp_seconds{task=~"drill[.].+"} > 35 * 86400 or (radd_task_configured unless on(task) x)) and increase(radd_archive_failures_total[10m]) > 0 or sum by (task) (up{job="radd"})"#;
    assert_eq!(
        selectors(expr),
        [
            "radd_last_success_timestamp_seconds{task=~\"drill[.].+\"}",
            "radd_task_configured",
            "x",
            "radd_archive_failures_total",
            "up{job=\"radd\"}"
        ]
    );
}

/// Every `expr` of the dashboard's panels.
fn dashboard_expressions() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/radd-dashboard.json")).expect("read dashboard"))
            .expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("target has an expr").to_owned());
        }
    }
    assert!(exprs.len() >= 15, "dashboard has too few expressions: {exprs:?}");
    exprs
}

/// A source with a backup, a passed pg drill with an RPO objective, a clean `verify
/// --read-data`, a failed `[[fs]]` job and a webhook sink: everything the rules and panels
/// read has a series.
fn prepared_daemon_config(env: &TestEnv, listen: u16, webhook: u16) -> (radd::pg::ScratchCluster, PathBuf) {
    let source = env.source_with_ids(1000);
    assert!(env.radd_push(&["heartbeat"]).status.success());
    let never = "0 0 0 1 1 * 2099";
    let config = std::fs::read_to_string(&env.config).unwrap()
        + &format!(
            "\n[[fs]]\nname = \"broken\"\npaths = [\"{missing}\"]\nschedule = \"{never}\"\n\n[events.webhook]\nurl = \"http://127.0.0.1:{webhook}/events\"\n\n\
             [daemon]\nlisten = \"127.0.0.1:{listen}\"\nbackup_schedule = \"{never}\"\nretention_schedule = \"{never}\"\nverify_schedule = \"{never}\"\n\
             heartbeat_interval = \"1s\"\nwatch_interval = \"1s\"\nshutdown_grace = \"5s\"\n",
            missing = env.path().join("no-such-dir").display()
        );
    let daemon_config = env.path().join("daemon.toml");
    std::fs::write(&daemon_config, config).unwrap();
    let backup = env.radd_with(&daemon_config, &["backup", "pg"]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    switch_and_wait_archived(&source);
    std::fs::write(
        env.path().join("drills/quick.toml"),
        format!(
            "name = \"quick\"\nschedule = \"{never}\"\n[checks]\npage_integrity = false\nrpo = {{ max = \"1h\" }}\n"
        ),
    )
    .unwrap();
    let drill = json(&env.radd_with(&daemon_config, &["--json", "drill", "run", "quick"]));
    assert_eq!(drill["passed"], true, "{drill:#}");
    let verify = env.radd_with(&daemon_config, &["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let broken = env.radd_with(&daemon_config, &["backup", "fs", "--job", "broken"]);
    assert!(!broken.status.success(), "backing up a missing path must fail");
    (source, daemon_config)
}

/// Polls `f` every 200 ms until it returns `Some`, failing with `what` after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_rule_and_dashboard_expression_returns_series_in_a_real_prometheus() {
    let started = Instant::now();
    let env = TestEnv::new(Backend::Local);
    let receiver = Receiver::start();
    let listen = radd::pg::free_port().expect("port");
    let (_source, daemon_config) = prepared_daemon_config(&env, listen, receiver.port);

    let mut daemon = Command::new(radd_binary());
    daemon
        .arg("--config")
        .arg(&daemon_config)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path().join("daemon.log")).unwrap());
    let _daemon = Killed(daemon.spawn().expect("start daemon"));
    wait_for("the daemon's /metrics with source, heartbeat and sink series", Duration::from_secs(30), || {
        http_get(listen, "/metrics").filter(|m| {
            m.contains("radd_source_up 1")
                && m.contains("radd_heartbeat_timestamp_seconds ")
                && m.contains("radd_event_sink_backlog{sink=")
        })
    });

    let prom_dir = env.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom_port = radd::pg::free_port().expect("port");
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: radd\n    static_configs:\n      - targets: ['127.0.0.1:{listen}']\n",
            rules = deploy("prometheus/radd-rules.yml").display()
        ),
    )
    .unwrap();
    let mut prometheus = Command::new(tool("prometheus"));
    prometheus
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", prom_dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(prom_dir.join("prometheus.log")).unwrap());
    let _prometheus = Killed(prometheus.spawn().expect("start prometheus"));
    let log = prom_dir.join("prometheus.log");
    wait_for(&format!("three successful scrapes of radd (see {})", log.display()), Duration::from_secs(40), || {
        http_get(prom_port, "/-/ready")?;
        let scrapes = query(prom_port, "sum_over_time(up{job=\"radd\"}[1m])");
        (scrapes.first()?["value"][1].as_str()?.parse::<f64>().ok()? >= 3.0).then_some(())
    });

    // Prometheus loaded every rule and evaluated each without error.
    let rules = wait_for("every rule evaluated once", Duration::from_secs(20), || {
        let answer: Value = serde_json::from_str(&http_get(prom_port, "/api/v1/rules")?).ok()?;
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001"))).then_some(rules)
    });
    assert_eq!(rules.len(), 12, "{rules:#?}");
    let mut empty = Vec::new();
    for rule in &rules {
        let (name, expr) = (rule["name"].as_str().unwrap(), rule["query"].as_str().unwrap());
        assert_eq!(rule["health"], "ok", "{name}: {rule:#}");
        query(prom_port, expr);
        for selector in selectors(expr) {
            if query(prom_port, &selector).is_empty() {
                empty.push(format!("{name}: {selector}"));
            }
        }
    }
    for expr in dashboard_expressions() {
        if query(prom_port, &expr).is_empty() {
            empty.push(format!("dashboard: {expr}"));
        }
    }
    let metrics = http_get(listen, "/metrics").unwrap_or_default();
    assert!(empty.is_empty(), "expressions that return no series:\n{}\n/metrics:\n{metrics}", empty.join("\n"));

    // Through the real scrape (job and instance added by Prometheus), exactly the alert this
    // setup deserves fires: the [[fs]] job whose last run failed.
    let alerts = query(prom_port, "ALERTS");
    let names: Vec<String> = alerts
        .iter()
        .map(|a| format!("{}{{task={}}} {}", a["metric"]["alertname"], a["metric"]["task"], a["metric"]["alertstate"]))
        .collect();
    assert_eq!(names, ["\"RaddTaskFailing\"{task=\"backup.fs.broken\"} \"firing\""], "{alerts:#?}");
    drop(receiver);
    assert!(started.elapsed() < Duration::from_secs(120), "took {:?}", started.elapsed());
}
