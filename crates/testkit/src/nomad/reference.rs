//! The reference blue/green job of `config/nomad/hello-service.nomad.hcl`, as the JSON
//! `nomad job run -output` gives for it, so tests can seed what operators would run.

use serde_json::{json, Value};

/// The reference job's ID.
pub const REFERENCE_JOB_ID: &str = "hello-service";
/// The Consul service both groups register.
pub const REFERENCE_SERVICE: &str = "hello-service";

const SECOND: u64 = 1_000_000_000;

fn group(name: &str, image: &str, version: &str, role: &str) -> Value {
    json!({
        "Name": name,
        "Count": 2,
        "ShutdownDelay": 5 * SECOND,
        "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http", "To": 8080}]}],
        "Services": [{
            "Name": REFERENCE_SERVICE,
            "PortLabel": "http",
            "Provider": "consul",
            "Tags": [role, version],
            "Meta": {"version": version},
            "Checks": [{
                "Type": "http",
                "Path": "/hello",
                "Interval": 5 * SECOND,
                "Timeout": 2 * SECOND,
            }],
        }],
        "Tasks": [{
            "Name": "hello",
            "Driver": "docker",
            "Config": {"image": image, "ports": ["http"]},
            "KillTimeout": 10 * SECOND,
            "Resources": {"CPU": 100, "MemoryMB": 64},
        }],
    })
}

/// The reference job with `blue` active and `green` standby. Each group has 2
/// instances of `hello-service` tagged `[active|standby, <version>]` with
/// `Meta.version = <version>`, and a rolling update (`MaxParallel` 1, auto-revert).
pub fn reference_job(
    image_blue: &str,
    image_green: &str,
    version_blue: &str,
    version_green: &str,
) -> Value {
    json!({
        "ID": REFERENCE_JOB_ID,
        "Name": REFERENCE_JOB_ID,
        "Type": "service",
        "Datacenters": ["dc1"],
        "Update": {
            "MaxParallel": 1,
            "HealthCheck": "checks",
            "MinHealthyTime": 10 * SECOND,
            "HealthyDeadline": 120 * SECOND,
            "ProgressDeadline": 300 * SECOND,
            "AutoRevert": true,
            "AutoPromote": false,
            "Canary": 0,
        },
        "TaskGroups": [
            group("blue", image_blue, version_blue, "active"),
            group("green", image_green, version_green, "standby"),
        ],
    })
}

/// Makes `active_group` the active one: its `hello-service` gets tag `active`, every
/// other group's `standby` (the in-place flip an operator command submits).
pub fn set_active(job: &mut Value, active_group: &str) {
    let Some(groups) = job.get_mut("TaskGroups").and_then(Value::as_array_mut) else {
        return;
    };
    for g in groups {
        let role = match g.get("Name").and_then(Value::as_str) == Some(active_group) {
            true => "active",
            false => "standby",
        };
        let services = g.get_mut("Services").and_then(Value::as_array_mut);
        for s in services.into_iter().flatten() {
            if s.get("Name").and_then(Value::as_str) != Some(REFERENCE_SERVICE) {
                continue;
            }
            if let Some(tags) = s.get_mut("Tags").and_then(Value::as_array_mut) {
                for t in tags
                    .iter_mut()
                    .filter(|t| *t == "active" || *t == "standby")
                {
                    *t = json!(role);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON stays in step with `config/nomad/hello-service.nomad.hcl`.
    #[test]
    fn matches_the_reference_hcl() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/nomad/hello-service.nomad.hcl"
        );
        let hcl = std::fs::read_to_string(path).expect("reference job file");
        let squeezed: String = hcl.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in [
            "job \"hello-service\" {",
            "max_parallel = 1",
            "health_check = \"checks\"",
            "min_healthy_time = \"10s\"",
            "healthy_deadline = \"2m\"",
            "progress_deadline = \"5m\"",
            "auto_revert = true",
            "group \"blue\" { count = 2",
            "group \"green\" { count = 2",
            "shutdown_delay = \"5s\"",
            "port \"http\" { to = 8080 }",
            "name = \"hello-service\" port = \"http\" provider = \"consul\"",
            "tags = [\"active\", \"v1\"] meta { version = \"v1\" }",
            "tags = [\"standby\", \"v2\"] meta { version = \"v2\" }",
            "type = \"http\" path = \"/hello\" interval = \"5s\" timeout = \"2s\"",
            "driver = \"docker\"",
            "kill_timeout = \"10s\"",
            "cpu = 100 memory = 64",
        ] {
            assert!(squeezed.contains(needle), "HCL lacks {needle:?}");
        }
        let j = reference_job("a", "b", "v1", "v2");
        let blue = &j["TaskGroups"][0];
        assert_eq!(j["Update"]["HealthyDeadline"], 120 * SECOND);
        assert_eq!(blue["ShutdownDelay"], 5 * SECOND);
        assert_eq!(blue["Services"][0]["Checks"][0]["Path"], "/hello");
        assert_eq!(blue["Services"][0]["Tags"], json!(["active", "v1"]));
        let mut flipped = j.clone();
        set_active(&mut flipped, "green");
        assert_eq!(
            flipped["TaskGroups"][0]["Services"][0]["Tags"],
            json!(["standby", "v1"])
        );
        assert_eq!(
            flipped["TaskGroups"][1]["Services"][0]["Tags"],
            json!(["active", "v2"])
        );
    }
}
