//! The deployment files stay true to the binary: every feed configuration
//! in `deploy/feeds/` loads as a seamwatch configuration with working Kafka
//! client settings, every file the Kubernetes kustomization names exists
//! (but the matrix the team copies in), and the example rules mounted next
//! to the built-in pack pass their own tests.

use std::path::Path;
use std::process::Command;

use seamwatch::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn feed_configurations_load_and_make_client_settings() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("deploy/feeds")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        seen += 1;
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!config.kafka.topics.is_empty(), "{}", path.display());
        // Secrets come from the environment: a fake one is enough here.
        let client = config
            .kafka
            .client_config(|_| Some("not-a-real-secret".to_owned()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let protocol = client.get("security.protocol").unwrap_or_default();
        if !config.kafka.brokers.contains(".svc:") {
            assert_eq!(
                protocol,
                "sasl_ssl",
                "{}: a cloud feed is encrypted",
                path.display()
            );
        }
        // Never a secret in the file itself: the password comes from the
        // environment or a file it names.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("password =")),
            "{}",
            path.display()
        );
        if protocol.starts_with("sasl") {
            assert!(text.contains("password_env") || text.contains("password_file"));
        }
    }
    assert_eq!(seen, 3, "aws-msk, azure-event-hubs, gcp-pubsub");
}

#[test]
fn the_kustomization_names_files_that_exist() {
    let dir = root().join("deploy/kubernetes");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let doc: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    let mut named = Vec::new();
    for resource in doc["resources"].as_array().unwrap() {
        named.push(resource.as_str().unwrap().to_owned());
    }
    for generator in doc["configMapGenerator"].as_array().unwrap() {
        for file in generator["files"].as_array().unwrap() {
            named.push(file.as_str().unwrap().to_owned());
        }
    }
    assert!(named.iter().any(|f| f == "statefulset.yaml"));
    for file in named {
        // The team's matrix is copied in before applying (deploy/README.md).
        if file == "responsibility.toml" {
            continue;
        }
        assert!(dir.join(&file).is_file(), "{file} is named but missing");
    }
}

#[test]
fn rules_mounted_from_a_config_map_load_once() {
    // The layout kubelet gives a ConfigMap volume: the files in a
    // timestamped folder, `..data` linking to it, and links at the top.
    let dir = tempfile::tempdir().unwrap();
    let stamped = dir.path().join("..2026_11_28_10_00_00.1");
    std::fs::create_dir(&stamped).unwrap();
    std::fs::copy(
        root().join("deploy/kubernetes/rules/local.yaml"),
        stamped.join("local.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_28_10_00_00.1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/local.yaml", dir.path().join("local.yaml")).unwrap();
    let report = seamwatch::detect::loader::load_path(dir.path()).unwrap();
    assert_eq!(report.rules.len(), 1);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
}

#[test]
fn the_example_rules_pass_their_tests() {
    let out = Command::new(env!("CARGO_BIN_EXE_seamwatch"))
        .args(["rules", "test"])
        .arg(root().join("deploy/kubernetes/rules"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 passed, 0 failed"), "{text}");
}
