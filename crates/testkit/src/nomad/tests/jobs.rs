//! Job reads and registrations: shape, blocking, EnforceIndex, faults, ACLs, recording.

use std::time::Duration;

use serde_json::json;

use super::super::{reference_job, set_active, NomadDouble, NomadFault, ENFORCE_PREFIX};
use super::{call, get, post, reference, LIMIT};
use crate::kit::Times;

#[tokio::test]
async fn job_read_shape_and_404() {
    let nomad = NomadDouble::start(None).await.expect("start");
    let r = get(nomad.addr(), "/v1/job/hello-service").await;
    assert_eq!((r.status, r.text().as_str()), (404, "job not found"));
    assert!(r.index() >= 1);
    assert_eq!(r.header("x-nomad-knownleader"), Some("true"));
    assert_eq!(r.header("x-nomad-lastcontact"), Some("0"));
    nomad
        .put_job(reference_job("hello:v1", "hello:v2", "v1", "v2"))
        .expect("registered");
    let r = get(nomad.addr(), "/v1/job/hello-service").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(r.index(), j["ModifyIndex"].as_u64().expect("ModifyIndex"));
    assert_eq!(
        (j["ID"].as_str(), j["Version"].as_u64()),
        (Some("hello-service"), Some(0))
    );
    assert_eq!(
        j["Stable"], false,
        "stable only once its deployment succeeds"
    );
    let blue = &j["TaskGroups"][0];
    assert_eq!(blue["Count"], 2);
    assert_eq!(blue["Update"]["MaxParallel"], 1);
    assert_eq!(blue["Update"]["MinHealthyTime"], 10_000_000_000u64);
    assert_eq!(blue["Update"]["AutoRevert"], true);
    assert_eq!(blue["Services"][0]["Tags"], json!(["active", "v1"]));
    assert_eq!(
        blue["Services"][0]["Checks"][0]["Name"],
        "service: \"hello-service\" check"
    );
    assert_eq!(blue["Tasks"][0]["Config"]["image"], "hello:v1");
    let other_ns = get(nomad.addr(), "/v1/job/hello-service?namespace=prod").await;
    assert_eq!(other_ns.status, 404);
}

#[tokio::test]
async fn enforce_index_bodies_are_exact() {
    let nomad = NomadDouble::start(None).await.expect("start");
    let job = reference_job("hello:v1", "hello:v2", "v1", "v2");
    let req = |jmi: u64| json!({"Job": job, "EnforceIndex": true, "JobModifyIndex": jmi});
    let created = post(nomad.addr(), "/v1/jobs", &req(0)).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let body = created.json();
    let m = body["JobModifyIndex"].as_u64().expect("JobModifyIndex");
    assert!(body["EvalID"].as_str().is_some_and(|e| e.len() == 36));
    assert_eq!(body["EvalCreateIndex"].as_u64(), Some(m));
    assert_eq!(body["Warnings"], "");
    let again = post(nomad.addr(), "/v1/job/hello-service", &req(0)).await;
    assert_eq!(again.status, 500);
    assert_eq!(
        again.text(),
        format!("{ENFORCE_PREFIX} 0: job already exists")
    );
    let stale = post(nomad.addr(), "/v1/job/hello-service", &req(m - 1)).await;
    assert_eq!(stale.status, 500);
    let want = format!(
        "Enforcing job modify index {}: job exists with conflicting job modify index: {m}",
        m - 1
    );
    assert_eq!(stale.text(), want);
    let mut other = job.clone();
    other["ID"] = json!("other");
    let missing = post(
        nomad.addr(),
        "/v1/jobs",
        &json!({"Job": other, "EnforceIndex": true, "JobModifyIndex": 5}),
    )
    .await;
    assert_eq!(
        (missing.status, missing.text()),
        (
            500,
            "Enforcing job modify index 5: job does not exist".into()
        )
    );
    let wrong_path = post(nomad.addr(), "/v1/job/nope", &req(m)).await;
    assert_eq!(
        (wrong_path.status, wrong_path.text()),
        (400, "Job ID does not match name".into())
    );
    let no_job = post(nomad.addr(), "/v1/jobs", &json!({"EnforceIndex": true})).await;
    assert_eq!(
        (no_job.status, no_job.text()),
        (400, "Job must be specified".into())
    );

    // The same spec read back and re-submitted makes no new version.
    let current = get(nomad.addr(), "/v1/job/hello-service").await.json();
    let same = post(
        nomad.addr(),
        "/v1/job/hello-service",
        &json!({"Job": current, "EnforceIndex": true, "JobModifyIndex": m}),
    )
    .await;
    assert_eq!(same.status, 200, "{}", same.text());
    assert_eq!(same.json()["JobModifyIndex"].as_u64(), Some(m));
    assert_eq!(
        nomad.job("hello-service").map(|j| j["Version"].clone()),
        Some(json!(0))
    );

    let mut flipped = current.clone();
    set_active(&mut flipped, "green");
    let changed = post(
        nomad.addr(),
        "/v1/job/hello-service",
        &json!({"Job": flipped, "EnforceIndex": true, "JobModifyIndex": m}),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    let m2 = changed.json()["JobModifyIndex"].as_u64().expect("index");
    assert!(m2 > m);
    let j = nomad.job("hello-service").expect("job");
    assert_eq!(
        (j["Version"].as_u64(), j["JobModifyIndex"].as_u64()),
        (Some(1), Some(m2))
    );
}

#[tokio::test]
async fn forced_conflict_then_retry_succeeds() {
    let (_consul, nomad) = reference().await;
    let job = get(nomad.addr(), "/v1/job/hello-service").await.json();
    let n = job["JobModifyIndex"].as_u64().expect("index");
    let mut flipped = job.clone();
    set_active(&mut flipped, "green");
    nomad.conflict_next_register();
    let body = |jmi: u64| json!({"Job": flipped, "EnforceIndex": true, "JobModifyIndex": jmi});
    let lost = post(nomad.addr(), "/v1/job/hello-service", &body(n)).await;
    assert_eq!(lost.status, 500);
    let m = nomad
        .job("hello-service")
        .and_then(|j| j["JobModifyIndex"].as_u64())
        .expect("index");
    assert!(m > n);
    let want = format!(
        "Enforcing job modify index {n}: job exists with conflicting job modify index: {m}"
    );
    assert_eq!(lost.text(), want);
    let retry = post(nomad.addr(), "/v1/job/hello-service", &body(m)).await;
    assert_eq!(retry.status, 200, "{}", retry.text());
}

#[tokio::test]
async fn blocking_read_wakes_on_write_and_times_out_unchanged() {
    let (_consul, nomad) = reference().await;
    let first = get(nomad.addr(), "/v1/job/hello-service").await;
    let idx = first.index();
    let timed_out = get(
        nomad.addr(),
        &format!("/v1/job/hello-service?index={idx}&wait=50ms"),
    )
    .await;
    assert_eq!((timed_out.index(), timed_out.json()), (idx, first.json()));
    let addr = nomad.addr();
    let parked = tokio::spawn(async move {
        get(addr, &format!("/v1/job/hello-service?index={idx}&wait=5s")).await
    });
    assert!(nomad.wait_for_parked(1, LIMIT).await);
    let mut flipped = first.json();
    set_active(&mut flipped, "green");
    nomad.put_job(flipped).expect("registered");
    let woke = parked.await.expect("joined");
    assert!(woke.index() > idx);
    assert_eq!(woke.json()["Version"], 1);
    let bad = get(nomad.addr(), "/v1/job/hello-service?index=1&wait=60").await;
    assert_eq!((bad.status, bad.text()), (400, "Invalid wait time".into()));
    let bad = get(nomad.addr(), "/v1/job/hello-service?index=x").await;
    assert_eq!((bad.status, bad.text()), (400, "Invalid index".into()));
}

#[tokio::test]
async fn faults_acl_and_recording() {
    let (_consul, nomad) = reference().await;
    nomad.inject("/v1/job/", NomadFault::NO_LEADER, Times::Next(1));
    let r = get(nomad.addr(), "/v1/job/hello-service").await;
    assert_eq!((r.status, r.text().as_str()), (500, "No cluster leader"));
    assert_eq!(get(nomad.addr(), "/v1/job/hello-service").await.status, 200);

    nomad.set_required_token(Some("secret"));
    nomad.add_token("reader", false);
    let path = "/v1/job/hello-service";
    let anonymous = get(nomad.addr(), path).await;
    assert_eq!(
        (anonymous.status, anonymous.text()),
        (403, "Permission denied".into())
    );
    let unknown = call(nomad.addr(), "GET", path, &[("X-Nomad-Token", "nope")], b"").await;
    assert_eq!(
        (unknown.status, unknown.text()),
        (403, "ACL token not found".into())
    );
    let ok = call(
        nomad.addr(),
        "GET",
        path,
        &[("X-Nomad-Token", "secret")],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200);
    let bearer = call(
        nomad.addr(),
        "GET",
        path,
        &[("Authorization", "Bearer reader")],
        b"",
    )
    .await;
    assert_eq!(bearer.status, 200);
    let body = json!({"Job": bearer.json()}).to_string();
    let write = call(
        nomad.addr(),
        "POST",
        path,
        &[("X-Nomad-Token", "reader")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        (write.status, write.text()),
        (403, "Permission denied".into())
    );

    let last = nomad.requests().pop().expect("recorded");
    assert_eq!((last.method.as_str(), last.path.as_str()), ("POST", path));
    assert_eq!(last.token.as_deref(), Some("reader"));
    assert_eq!(
        last.json().map(|b| b["Job"]["ID"].clone()),
        Some(json!("hello-service"))
    );
    nomad.set_required_token(None);
    nomad.inject(
        "/",
        NomadFault::Delay(Duration::from_millis(30)),
        Times::Next(1),
    );
    let started = tokio::time::Instant::now();
    assert_eq!(get(nomad.addr(), path).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(30));
}
