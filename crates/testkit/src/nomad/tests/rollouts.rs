//! What registrations do in Consul, and the deployments they create.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::super::{reference_job, set_active, NomadDouble, Timing};
use super::{fast, get, instances, port_of, reference, LIMIT};

fn ids(list: &[(String, Vec<String>, u64, Vec<String>)]) -> BTreeSet<String> {
    list.iter().map(|i| i.0.clone()).collect()
}

#[tokio::test]
async fn seeded_job_registers_like_nomad_clients() {
    let (consul, nomad) = reference().await;
    let list = instances(&consul).await;
    assert_eq!(list.len(), 4);
    for (id, tags, port, checks) in &list {
        let blue = id.contains("-group-blue-");
        assert!(
            id.starts_with("_nomad-task-") && id.ends_with("-hello-service-http"),
            "{id}"
        );
        let want = if blue {
            ["active", "v1"]
        } else {
            ["standby", "v2"]
        };
        assert_eq!(tags, &want);
        assert_eq!(checks, &["passing"]);
        assert!([10_000, 10_001, 20_000, 20_001].contains(port), "{port}");
    }
    let r = get(consul.addr(), "/v1/health/service/hello-service")
        .await
        .json();
    assert_eq!(r[0]["Service"]["Meta"]["external-source"], "nomad");
    assert_eq!(r[0]["Service"]["Address"], "127.0.0.1");
    assert!(r[0]["Checks"][1]["CheckID"]
        .as_str()
        .is_some_and(|c| c.starts_with("_nomad-check-")));
    let d = nomad
        .latest_deployment("hello-service")
        .expect("deployment");
    assert_eq!(
        (d["Status"].as_str(), d["JobVersion"].as_u64()),
        (Some("successful"), Some(0))
    );
    assert_eq!(
        nomad.job("hello-service").map(|j| j["Stable"].clone()),
        Some(json!(true))
    );
}

#[tokio::test]
async fn tag_flip_goes_in_place_one_instance_at_a_time() {
    let (consul, nomad) = reference().await;
    nomad.set_timing(Timing {
        sync_gap: Duration::from_millis(40),
        ..fast()
    });
    let before = instances(&consul).await;
    let start = consul.index();
    let mut job = nomad.job("hello-service").expect("job");
    set_active(&mut job, "green");
    nomad.put_job(job).expect("registered");
    let mut seen = BTreeSet::from([before
        .iter()
        .map(|i| i.1[0] == "active")
        .collect::<Vec<_>>()]);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let now = instances(&consul).await;
        assert_eq!(ids(&now), ids(&before), "same IDs, never absent");
        let active: Vec<bool> = now.iter().map(|i| i.1[0] == "active").collect();
        let flipped = now
            .iter()
            .all(|i| (i.1[0] == "active") == i.0.contains("-green-"));
        seen.insert(active);
        if flipped {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flip did not finish within {LIMIT:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(seen.len() >= 3, "intermediate mixes were visible: {seen:?}");
    let entries = get(consul.addr(), "/v1/health/service/hello-service")
        .await
        .json();
    let writes: BTreeSet<u64> = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["Service"]["ModifyIndex"].as_u64())
        .collect();
    assert_eq!(
        writes.len(),
        4,
        "one write per instance, each its own: {writes:?}"
    );
    assert!(writes.iter().all(|w| *w > start));
    let d = nomad
        .wait_for_deployment("hello-service", "successful", LIMIT)
        .await
        .expect("successful");
    assert_eq!(d["JobVersion"], 1);
    let tg = &d["TaskGroups"]["green"];
    assert_eq!(
        (tg["DesiredTotal"].as_u64(), tg["HealthyAllocs"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(instances(&consul).await.iter().all(|i| i.3 == ["passing"]));
}

#[tokio::test]
async fn image_deploy_replaces_green_one_at_a_time() {
    let (consul, nomad) = reference().await;
    nomad.set_timing(Timing {
        health_delay: Duration::from_millis(60),
        ..fast()
    });
    let before = instances(&consul).await;
    let blue_ids: BTreeSet<String> = before
        .iter()
        .filter(|i| i.0.contains("-blue-"))
        .map(|i| i.0.clone())
        .collect();
    nomad
        .put_job(reference_job("hello:v1", "hello:v3", "v1", "v3"))
        .expect("registered");
    let running = nomad
        .latest_deployment("hello-service")
        .expect("deployment");
    assert_eq!(
        (
            running["Status"].as_str(),
            running["StatusDescription"].as_str()
        ),
        (Some("running"), Some("Deployment is running"))
    );
    let mut saw_critical = false;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let now = instances(&consul).await;
        let green: Vec<_> = now.iter().filter(|i| i.0.contains("-green-")).collect();
        let new = green
            .iter()
            .filter(|i| i.1.contains(&"v3".to_string()))
            .count();
        let fresh_critical = green.iter().filter(|i| i.3 == ["critical"]).count();
        assert!(fresh_critical <= 1, "MaxParallel 1");
        saw_critical |= fresh_critical == 1;
        assert!(!green.is_empty(), "one green instance stays up");
        if new == 2 && fresh_critical == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "green was not replaced by two passing v3 instances within {LIMIT:?}: {green:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(saw_critical, "new instances start critical");
    let d = nomad
        .wait_for_deployment("hello-service", "successful", LIMIT)
        .await
        .expect("successful");
    assert_eq!(d["StatusDescription"], "Deployment completed successfully");
    let after = instances(&consul).await;
    let green: Vec<_> = after.iter().filter(|i| i.0.contains("-green-")).collect();
    assert_eq!(green.len(), 2);
    assert!(
        green.iter().all(|i| [20_010, 20_011].contains(&i.2)),
        "ports of version 1: {green:?}"
    );
    assert!(
        after
            .iter()
            .filter(|i| i.0.contains("-blue-"))
            .all(|i| blue_ids.contains(&i.0)),
        "blue untouched"
    );
    assert_eq!(
        nomad.job("hello-service").map(|j| j["Stable"].clone()),
        Some(json!(true))
    );
}

#[tokio::test]
async fn failed_deployment_reverts_to_the_last_stable_version() {
    let (consul, nomad) = reference().await;
    nomad.fail_next_deployment();
    nomad
        .put_job(reference_job("hello:v1", "hello:broken", "v1", "v9"))
        .expect("registered");
    assert!(
        nomad.wait_for_version("hello-service", 2, LIMIT).await,
        "reverted as a new version"
    );
    let all = nomad.deployments("hello-service");
    let v1 = all
        .iter()
        .find(|d| d["JobVersion"] == 1)
        .expect("deployment of version 1");
    assert_eq!(v1["Status"], "failed");
    assert_eq!(
        v1["StatusDescription"],
        "Failed due to unhealthy allocations - rolling back to job version 0"
    );
    assert_eq!(v1["TaskGroups"]["green"]["UnhealthyAllocs"], 1);
    let d = nomad
        .wait_for_deployment("hello-service", "successful", LIMIT)
        .await
        .expect("revert deployed");
    assert_eq!(d["JobVersion"], 2);
    let job = nomad.job("hello-service").expect("job");
    assert_eq!(
        job["TaskGroups"][1]["Tasks"][0]["Config"]["image"],
        "hello:v2"
    );
    assert!(nomad.wait_settled("hello-service", LIMIT).await);
    let green: Vec<_> = instances(&consul)
        .await
        .into_iter()
        .filter(|i| i.0.contains("-green-"))
        .collect();
    assert_eq!(green.len(), 2);
    assert!(
        green
            .iter()
            .all(|i| i.1 == ["standby", "v2"] && i.3 == ["passing"]),
        "{green:?}"
    );
    let versions = nomad.job_versions("hello-service");
    assert_eq!(
        versions
            .iter()
            .map(|v| v["Stable"] == true)
            .collect::<Vec<_>>(),
        [true, false, true]
    );
}

#[tokio::test]
async fn newer_version_cancels_the_running_deployment() {
    let (consul, nomad) = reference().await;
    nomad.set_timing(Timing {
        health_delay: Duration::from_millis(300),
        ..fast()
    });
    nomad
        .put_job(reference_job("hello:v1", "hello:v3", "v1", "v3"))
        .expect("v1");
    nomad
        .put_job(reference_job("hello:v1", "hello:v4", "v1", "v4"))
        .expect("v2");
    let all = nomad.deployments("hello-service");
    let first = all
        .iter()
        .find(|d| d["JobVersion"] == 1)
        .expect("deployment of version 1");
    assert_eq!(
        (
            first["Status"].as_str(),
            first["StatusDescription"].as_str()
        ),
        (
            Some("cancelled"),
            Some("Cancelled due to newer version of job")
        )
    );
    nomad.set_timing(fast());
    let d = nomad
        .wait_for_deployment("hello-service", "successful", LIMIT)
        .await
        .expect("v2 deployed");
    assert_eq!(d["JobVersion"], 2);
    assert!(nomad.wait_settled("hello-service", LIMIT).await);
    let green: Vec<_> = instances(&consul)
        .await
        .into_iter()
        .filter(|i| i.0.contains("-green-"))
        .collect();
    assert!(green.iter().all(|i| i.1 == ["standby", "v4"]), "{green:?}");
    assert_eq!(green.len(), 2);
}

#[tokio::test]
async fn deployment_is_null_without_one() {
    let nomad = NomadDouble::start(None).await.expect("start");
    let r = get(nomad.addr(), "/v1/job/hello-service/deployment").await;
    assert_eq!((r.status, r.text().as_str()), (200, "null"));
    let mut job = reference_job("a", "b", "v1", "v2");
    job["Update"]["MaxParallel"] = json!(0);
    nomad.put_job(job).expect("registered");
    let r = get(nomad.addr(), "/v1/job/hello-service/deployment").await;
    assert_eq!(r.json(), Value::Null);
    assert_eq!(
        get(nomad.addr(), "/v1/job/hello-service/deployments")
            .await
            .json(),
        json!([])
    );
    assert_eq!(
        nomad.job("hello-service").map(|j| j["Stable"].clone()),
        Some(json!(true))
    );
    let missing = get(nomad.addr(), "/v1/deployment/0000").await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "deployment not found")
    );
}

#[tokio::test]
async fn canaries_carry_canary_tags_until_promoted() {
    let (consul, nomad) = reference().await;
    let mut job = reference_job("hello:v1", "hello:v3", "v1", "v3");
    job["TaskGroups"][1]["Update"] = json!({"Canary": 1});
    job["TaskGroups"][1]["Services"][0]["CanaryTags"] = json!(["canary", "v3"]);
    nomad.put_job(job).expect("registered");
    let wait = nomad.wait_for(LIMIT, || {
        let d = nomad.latest_deployment("hello-service")?;
        (d["StatusDescription"] == "Deployment is running but requires manual promotion")
            .then_some(d)
    });
    let d = wait.await.expect("awaits promotion");
    assert_eq!(d["TaskGroups"]["green"]["DesiredCanaries"], 1);
    let green: Vec<_> = instances(&consul)
        .await
        .into_iter()
        .filter(|i| i.0.contains("-green-"))
        .collect();
    assert_eq!(green.len(), 3, "two old instances and the canary");
    assert_eq!(green.iter().filter(|i| i.1 == ["canary", "v3"]).count(), 1);
    let id = d["ID"].as_str().expect("id").to_string();
    nomad.promote_deployment(&id).expect("promoted");
    let done = nomad
        .wait_for_deployment("hello-service", "successful", LIMIT)
        .await
        .expect("successful");
    assert_eq!(done["TaskGroups"]["green"]["Promoted"], true);
    assert!(nomad.wait_settled("hello-service", LIMIT).await);
    let green: Vec<_> = instances(&consul)
        .await
        .into_iter()
        .filter(|i| i.0.contains("-green-"))
        .collect();
    assert!(
        green.len() == 2 && green.iter().all(|i| i.1 == ["standby", "v3"]),
        "{green:?}"
    );
    assert!(port_of("green", 1, 0) == 20_010);
}

#[tokio::test]
async fn failed_tag_flip_reverts_the_tags_in_consul() {
    let (consul, nomad) = reference().await;
    nomad.fail_next_deployment();
    let mut job = nomad.job("hello-service").expect("job");
    set_active(&mut job, "green");
    nomad.put_job(job).expect("registered");
    assert!(
        nomad.wait_for_version("hello-service", 2, LIMIT).await,
        "reverted"
    );
    let all = nomad.deployments("hello-service");
    let flip = all
        .iter()
        .find(|d| d["JobVersion"] == 1)
        .expect("flip deployment");
    assert_eq!(
        flip["StatusDescription"],
        "Failed due to unhealthy allocations - rolling back to job version 0"
    );
    assert_eq!(flip["TaskGroups"]["blue"]["UnhealthyAllocs"], 2);
    assert!(nomad
        .wait_for_deployment("hello-service", "successful", LIMIT)
        .await
        .is_some());
    assert!(nomad.wait_settled("hello-service", LIMIT).await);
    for (id, tags, _, checks) in instances(&consul).await {
        let want = if id.contains("-blue-") {
            "active"
        } else {
            "standby"
        };
        assert_eq!(
            (tags[0].as_str(), checks),
            (want, vec!["passing".to_string()]),
            "{id}"
        );
    }
}

#[tokio::test]
async fn manual_fail_through_the_api_rolls_back() {
    let (_consul, nomad) = reference().await;
    nomad.set_timing(Timing {
        health_delay: Duration::from_millis(200),
        ..fast()
    });
    nomad
        .put_job(reference_job("hello:v1", "hello:v3", "v1", "v3"))
        .expect("registered");
    let d = nomad
        .latest_deployment("hello-service")
        .expect("deployment");
    let id = d["ID"].as_str().expect("id");
    let r = super::post(
        nomad.addr(),
        &format!("/v1/deployment/fail/{id}"),
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let failed = get(nomad.addr(), &format!("/v1/deployment/{id}"))
        .await
        .json();
    assert_eq!(failed["Status"], "failed");
    assert_eq!(
        failed["StatusDescription"],
        "Deployment marked as failed - rolling back to job version 0"
    );
    let again = super::post(
        nomad.addr(),
        &format!("/v1/deployment/fail/{id}"),
        &json!({}),
    )
    .await;
    assert_eq!(again.status, 500);
    assert!(nomad.wait_for_version("hello-service", 2, LIMIT).await);
}
