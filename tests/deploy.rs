//! The deployment files stay true to the code: the example configuration loads, the image
//! builds every workspace member, and the compose file names what exists.

use std::process::Command;

use tenant_master::Config;
use tenant_master_tests::repo_root;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_example_configuration_is_valid() {
    let config = Config::from_file(&repo_root().join("deploy/tenant-master.toml.example")).expect("the example config parses");
    config.validate().expect("and validates");
    assert_eq!(config.backups.keep_for("enterprise"), 30);
    assert_eq!(config.worker.timeouts.get("BackupTenant"), Some(&21600));
    let env = read("deploy/tenant-master.env.example");
    for name in ["DATABASE_URL=", "SMTP_URL=", "LOG_FORMAT=json", "TENANT_MASTER_SECRET_KEY_FILE="] {
        assert!(env.contains(name), "the env example sets {name}");
    }
}

#[test]
fn the_dockerfile_copies_every_workspace_member_and_runs_as_a_user() {
    let dockerfile = read("deploy/Dockerfile");
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    for member in members.iter().map(|m| m.as_str().unwrap()) {
        assert!(dockerfile.contains(&format!("COPY {member} {member}")), "the Dockerfile copies {member}");
    }
    assert!(dockerfile.contains("USER tenant-master"), "the image does not run as root");
    assert!(dockerfile.contains("postgresql-client-${PG_MAJOR}"), "the image has the PostgreSQL client tools");
    for bin in ["tenant-worker", "tenant-scheduler", "tenantctl"] {
        assert!(dockerfile.contains(&format!("release/{bin}")), "the image ships {bin}");
    }
}

#[test]
fn the_compose_file_runs_the_whole_system() {
    let compose = read("deploy/docker-compose.yml");
    for piece in [
        "postgres:",
        "keygen:",
        "keys:/var/lib/tenant-master/keys",
        "migrate:",
        "worker:",
        "scheduler:",
        "smtp:",
        "tenantctl\", \"migrate",
        "tenant-worker",
        "tenant-scheduler",
    ] {
        assert!(compose.contains(piece), "compose has {piece}");
    }
    assert!(repo_root().join("deploy/tenant-master.env.example").is_file());
    for unit in ["tenant-worker", "tenant-scheduler"] {
        let text = read(&format!("deploy/systemd/{unit}.service"));
        assert!(text.contains(&format!("ExecStart=/usr/local/bin/{unit} ")) && text.contains("KillSignal=SIGTERM"), "{unit}.service");
    }
    let panel = read("deploy/systemd/tenant-admin-panel.service");
    assert!(panel.contains("ExecStart=/usr/local/bin/tenantctl ") && panel.contains(" admin serve --listen 127.0.0.1:8001 --behind-proxy"));
    // Where the Compose CLI exists, it must accept the file.
    let has_compose = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if has_compose {
        let out = Command::new("docker")
            .args(["compose", "-f", "deploy/docker-compose.yml", "config", "--quiet"])
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(out.status.success(), "docker compose config: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("docker compose is not installed here: its own check of the file is skipped");
    }
}
