//! The shipped deployment files (issue 14 item 7): the systemd unit is hardened
//! (`systemd-analyze security` below 3.0) and valid (`systemd-analyze verify`); the compose demo
//! (docker-compose.yml, Dockerfile, config/compose.toml, deploy/) is checked by reading, since no
//! container engine runs here: the Compose specification's schema, mounts and build files that
//! exist, pinned images, `promtool check config` in the container layout, Grafana provisioning
//! against the compose mounts, and radd loading the demo's configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/radd.service")
}

#[test]
fn the_systemd_unit_is_hardened() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit())
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for radd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(level < 3.0, "exposure {level} must stay below 3.0:\n{text}");
}

#[test]
fn the_systemd_unit_verifies() {
    // verify checks that ExecStart= exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit()).unwrap().replace("/usr/local/bin/radd", env!("CARGO_BIN_EXE_radd"));
    let copy = dir.path().join("radd.service");
    std::fs::write(&copy, text).unwrap();
    let out =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("radd.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify: {stderr}");
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A YAML file as JSON, with `<<` merge keys applied (Compose applies them too).
fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    doc.apply_merge().unwrap_or_else(|e| panic!("{path}: merge keys: {e}"));
    serde_json::to_value(doc).unwrap_or_else(|e| panic!("{path} as JSON: {e}"))
}

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"].get(name).unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

/// Every error of `doc` against the vendored Compose specification schema, as "path: message".
fn compose_schema_errors(doc: &Value) -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("tests/fixtures/compose-spec.json"))
        .expect("tests/fixtures/compose-spec.json");
    let schema: Value = serde_json::from_str(&text).expect("compose-spec.json is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the Compose schema compiles");
    validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[test]
fn the_compose_file_follows_the_compose_specification() {
    let errors = compose_schema_errors(&compose());
    assert!(errors.is_empty(), "docker-compose.yml against the Compose schema:\n{}", errors.join("\n"));
}

#[test]
fn the_compose_schema_check_catches_a_broken_file() {
    let mut doc = compose();
    doc["services"]["postgres"]["imagee"] = Value::from("postgres:15");
    doc["services"]["radd"]["ports"] = Value::from(9187);
    doc["services"]["radd"]["depends_on"]["postgres"]["condition"] = Value::from("service_ready");
    let errors = compose_schema_errors(&doc);
    for (path, what) in
        [("/services/postgres", "imagee"), ("/services/radd/ports", ""), ("/services/radd/depends_on", "service_ready")]
    {
        assert!(
            errors.iter().any(|e| e.starts_with(path) && e.contains(what)),
            "no error at {path} ({what}) in:\n{}",
            errors.join("\n")
        );
    }
}

/// One entry of a service's `volumes`: a bind mount (source is a path) or a named volume.
#[derive(Debug)]
struct Mount {
    source: String,
    target: String,
    bind: bool,
}

fn mounts(service: &Value) -> Vec<Mount> {
    let Some(list) = service["volumes"].as_array() else { return Vec::new() };
    list.iter()
        .map(|v| match v {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                assert!((2..=3).contains(&parts.len()), "volume {short:?}: expected SOURCE:TARGET[:MODE]");
                let source = parts[0].to_owned();
                let bind = source.starts_with('.') || source.starts_with('/') || source.starts_with('~');
                Mount { source, target: parts[1].to_owned(), bind }
            }
            long => Mount {
                source: long["source"].as_str().unwrap_or_default().to_owned(),
                target: long["target"].as_str().unwrap_or_default().to_owned(),
                bind: long["type"] == "bind",
            },
        })
        .collect()
}

/// The host file a service sees at container path `path` through one of its bind mounts.
fn host_path(service: &Value, path: &str) -> Option<PathBuf> {
    mounts(service)
        .into_iter()
        .filter(|m| m.bind && (path == m.target || path.starts_with(&format!("{}/", m.target))))
        .max_by_key(|m| m.target.len())
        .map(|m| {
            let rest = path[m.target.len()..].trim_start_matches('/');
            if rest.is_empty() { repo_file(&m.source) } else { repo_file(&m.source).join(rest) }
        })
}

/// Whether `path` (a container path) lies in one of the service's mounts, bind or named.
fn mounted(service: &Value, path: &str) -> bool {
    mounts(service).iter().any(|m| path == m.target || path.starts_with(&format!("{}/", m.target)))
}

fn stages(dockerfile: &str) -> Vec<(String, Option<String>)> {
    dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FROM "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|i| words.get(i + 1))
                .map(|s| (*s).to_owned());
            (words[0].to_owned(), name)
        })
        .collect()
}

#[test]
fn the_compose_file_mounts_and_builds_files_that_exist() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let declared = compose["volumes"].as_object().cloned().unwrap_or_default();
    let mut binds = 0;
    for (name, service) in services {
        for m in mounts(service) {
            if m.bind {
                assert!(
                    !m.source.starts_with('/') && !m.source.starts_with('~'),
                    "{name}: bind mount {} is outside the repository",
                    m.source
                );
                assert!(repo_file(&m.source).exists(), "{name}: bind-mounted {} does not exist", m.source);
                binds += 1;
            } else {
                assert!(declared.contains_key(&m.source), "{name}: volume {} is not declared under volumes:", m.source);
            }
        }
        if let Some(build) = service.get("build") {
            let context = repo_file(build["context"].as_str().unwrap_or("."));
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            let text = std::fs::read_to_string(&dockerfile)
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", dockerfile.display()));
            if let Some(target) = build["target"].as_str() {
                assert!(
                    stages(&text).iter().any(|(_, stage)| stage.as_deref() == Some(target)),
                    "{name}: build target {target} is no stage of {}",
                    dockerfile.display()
                );
            }
        }
    }
    assert!(binds >= 6, "expected the config, prometheus (2), grafana (2) and drills bind mounts, found {binds}");
    for file in [".dockerignore", "Dockerfile"] {
        assert!(repo_file(file).is_file(), "{file} missing");
    }
    let ignore = std::fs::read_to_string(repo_file(".dockerignore")).unwrap();
    for entry in ["target", ".ci", ".git"] {
        assert!(ignore.lines().any(|l| l.trim_end_matches('/') == entry), ".dockerignore must leave out {entry}");
    }
}

/// `name[:tag][@digest]` with a tag other than `latest`, or a digest.
fn pinned(image: &str) -> bool {
    let (name, digest) = image.split_once('@').map_or((image, None), |(n, d)| (n, Some(d)));
    let tag = name.rsplit('/').next().and_then(|last| last.split_once(':')).map(|(_, t)| t);
    digest.is_some_and(|d| d.starts_with("sha256:"))
        || tag.is_some_and(|t| !t.is_empty() && t != "latest" && !t.contains('$'))
}

#[test]
fn every_image_is_pinned() {
    for bad in ["postgres", "postgres:latest", "prom/prometheus", "localhost:5000/radd", "x:${TAG}"] {
        assert!(!pinned(bad), "{bad} counted as pinned");
    }
    assert!(pinned("localhost:5000/radd:1.2") && pinned("debian@sha256:abc"));
    let compose = compose();
    let mut images = 0;
    for (name, service) in compose["services"].as_object().unwrap() {
        let image = service["image"].as_str();
        assert!(image.is_some() || service.get("build").is_some(), "{name}: neither image nor build");
        if let Some(image) = image {
            assert!(pinned(image), "{name}: image {image} is not pinned to a version");
            images += 1;
        }
    }
    assert!(images >= 4);
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).unwrap();
    let stages = stages(&dockerfile);
    assert!(stages.len() >= 3, "build, postgres and radd stages: {stages:?}");
    for (i, (base, _)) in stages.iter().enumerate() {
        let earlier_stage = stages[..i].iter().any(|(_, n)| n.as_deref() == Some(base.as_str()));
        assert!(earlier_stage || pinned(base), "Dockerfile: FROM {base} is not pinned");
    }
    // The default (last) stage: radd as a non-root user, ENTRYPOINT radd, CMD daemon.
    let last = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last.lines().any(|l| l.starts_with("USER ") && !l.contains("root") && !l.ends_with(" 0")),
        "the default image must run as a non-root user"
    );
    assert!(
        last.contains("ENTRYPOINT [\"radd\"]") && last.contains("CMD [\"daemon\"]"),
        "default image: ENTRYPOINT radd, CMD daemon"
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
}

fn promtool() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("promtool")).find(|p| p.is_file()));
    on_path.unwrap_or_else(|| panic!("promtool not found (install Debian's `prometheus` package, as .ci/run does)"))
}

#[test]
fn prometheus_config_passes_promtool_in_the_compose_layout() {
    let compose = compose();
    let prometheus = service(&compose, "prometheus");
    // Stage every file the prometheus service bind-mounts at its container path, then check the
    // config there: rule_files must resolve to the rules file the service mounts.
    let root = tempfile::tempdir().unwrap();
    for m in mounts(prometheus).into_iter().filter(|m| m.bind) {
        let staged = root.path().join(m.target.trim_start_matches('/'));
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::copy(repo_file(&m.source), &staged).unwrap_or_else(|e| panic!("stage {}: {e}", m.source));
    }
    let config = "/etc/prometheus/prometheus.yml";
    assert_eq!(host_path(prometheus, config), Some(repo_file("./deploy/prometheus/prometheus.yml")));
    let out = Command::new(promtool())
        .args(["check", "config"])
        .arg(root.path().join(config.trim_start_matches('/')))
        .output()
        .expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("radd-rules.yml") && text.contains("rules found"),
        "promtool check config:\n{text}"
    );

    let parsed = yaml("deploy/prometheus/prometheus.yml");
    let rule_files: Vec<&str> =
        parsed["rule_files"].as_array().expect("rule_files").iter().filter_map(Value::as_str).collect();
    assert!(!rule_files.is_empty());
    for rules in rule_files {
        let in_container = if rules.starts_with('/') { rules.to_owned() } else { format!("/etc/prometheus/{rules}") };
        assert_eq!(
            host_path(prometheus, &in_container),
            Some(repo_file("./deploy/prometheus/radd-rules.yml")),
            "rule file {rules}"
        );
    }
    // The radd job (the rules match up{job="radd"}) scrapes the daemon's service on its listen port.
    let job = parsed["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "radd")
        .expect("a scrape job named radd");
    let target = job["static_configs"][0]["targets"][0].as_str().unwrap();
    let (host, port) = target.split_once(':').unwrap();
    let daemon = service(&compose, host);
    assert!(daemon["command"].as_array().unwrap().iter().any(|a| a == "daemon"), "{host} is not the radd daemon");
    let listen = compose_config()["daemon"]["listen"].as_str().unwrap().to_owned();
    assert!(listen.ends_with(&format!(":{port}")), "scraped port {port}, daemon listens on {listen}");
    assert!(
        daemon["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.ends_with(&format!(":{port}")))),
        "/metrics port is published"
    );
}

#[test]
fn grafana_provisions_the_dashboard_the_compose_file_mounts() {
    let compose = compose();
    let grafana = service(&compose, "grafana");
    assert_eq!(host_path(grafana, "/etc/grafana/provisioning"), Some(repo_file("./deploy/grafana/provisioning")));
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let source = &datasources["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    let url = source["url"].as_str().unwrap();
    let host = url.trim_start_matches("http://").split(':').next().unwrap();
    assert!(
        compose["services"]
            .get(host)
            .is_some_and(|s| s["image"].as_str().is_some_and(|i| i.starts_with("prom/prometheus:"))),
        "datasource {url} is not the prometheus service"
    );

    let providers = yaml("deploy/grafana/provisioning/dashboards/radd.yml");
    let dir = providers["providers"][0]["options"]["path"].as_str().expect("providers[0].options.path");
    let dashboard = host_path(grafana, &format!("{dir}/radd-dashboard.json"))
        .expect("the dashboard is mounted under the provider's path");
    assert_eq!(dashboard, repo_file("./deploy/grafana/radd-dashboard.json"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).expect("dashboard JSON");
    assert_eq!(json["uid"], "radd");
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str().unwrap();
    assert_eq!(host_path(grafana, home).as_deref(), Some(dashboard.as_path()));
}

fn compose_config() -> toml::Table {
    std::fs::read_to_string(repo_file("config/compose.toml")).unwrap().parse().expect("config/compose.toml is TOML")
}

/// config/compose.toml as the keys service turns it into /etc/radd/radd.toml (recipients line
/// replaced), loaded by radd itself: `radd drill list` loads and validates the whole
/// configuration (every unknown key and bad value) and reads the drills directory, connecting to
/// nothing. The drills directory is the daemon's bind mount of it, seen from the host.
#[test]
fn the_compose_config_loads_in_radd_with_a_generated_recipient() {
    let compose = compose();
    // As Compose runs it: `$$` is its escape for a literal `$`.
    let keys_script = service(&compose, "keys")["command"][0].as_str().unwrap().replace("$$", "$");
    assert!(keys_script.contains(r#"sed "s|^recipients = .*|recipients = [\"$recipient\"]|" /usr/share/radd/compose.toml > /etc/radd/radd.toml.new"#), "keys service script changed: update this test:\n{keys_script}");
    assert_eq!(
        host_path(service(&compose, "keys"), "/usr/share/radd/compose.toml"),
        Some(repo_file("./config/compose.toml"))
    );

    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.key");
    let out = Command::new(env!("CARGO_BIN_EXE_radd")).args(["keygen", "--identity"]).arg(&identity).output().unwrap();
    assert!(out.status.success());
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let config = compose_config();
    let drills = config["drills"]["dir"].as_str().unwrap();
    let daemon = service(&compose, "radd");
    let host_drills = host_path(daemon, drills).expect("the daemon bind-mounts drills.dir");
    let original = std::fs::read_to_string(repo_file("config/compose.toml")).unwrap();
    assert_eq!(
        original.lines().filter(|l| l.starts_with("recipients = ")).count(),
        1,
        "exactly one line for the keys service to replace"
    );
    let generated: String = original
        .lines()
        .map(|l| {
            if l.starts_with("recipients = ") { format!("recipients = [\"{recipient}\"]\n") } else { format!("{l}\n") }
        })
        .collect::<String>()
        .replace(&format!("\"{drills}\""), &format!("{:?}", host_drills.display().to_string()));
    let path = dir.path().join("radd.toml");
    std::fs::write(&path, generated).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_radd"))
        .arg("--config")
        .arg(&path)
        .args(["--json", "drill", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "radd did not load the compose configuration: {stderr}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    assert!(names.contains(&"monthly-rad"), "drills listed: {names:?}");
}

/// Every path the configuration names is in a volume of the service that uses it, and the
/// archiving PostgreSQL holds no identity (it archives with the recipient and the id key only).
#[test]
fn the_compose_config_paths_are_mounted_where_they_are_used() {
    let compose = compose();
    let config = compose_config();
    let daemon = service(&compose, "radd");
    let archiver = service(&compose, "postgres");
    let s = |table: &str, key: &str| {
        config[table][key].as_str().unwrap_or_else(|| panic!("{table}.{key} not set")).to_owned()
    };
    for path in [
        s("keys", "id_key_file"),
        s("keys", "identity_file"),
        s("backup", "state_dir"),
        s("events", "dir"),
        s("postgres", "data_dir"),
        s("drills", "dir"),
    ] {
        assert!(mounted(daemon, &path), "daemon: {path} is in no volume");
    }
    assert!(mounted(archiver, &s("keys", "id_key_file")), "archiver: the id key is not mounted");
    assert!(!mounted(archiver, &s("keys", "identity_file")), "archiver must not see the identity");
    let command: Vec<&str> = archiver["command"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let archive = command.iter().find_map(|a| a.strip_prefix("archive_command=")).expect("archive_command");
    assert!(
        archive.contains("wal-push %p")
            && archive.contains("--config /etc/radd/radd.toml")
            && mounted(archiver, "/etc/radd/radd.toml"),
        "{archive}"
    );
    assert!(command.contains(&"archive_mode=on") && command.contains(&"wal_level=replica"));
    assert_eq!(
        config["postgres"]["host"].as_str(),
        Some("postgres"),
        "the daemon reaches the archiver by its service name"
    );
    // Keys are written by the uid that reads them: the postgres image's postgres user.
    for name in ["keys", "repo-init", "radd"] {
        assert_eq!(service(&compose, name)["user"], "999:999", "{name}");
    }
}
