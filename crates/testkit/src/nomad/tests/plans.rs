//! Plans: `DesiredTGUpdates` for tag flips, image changes, meta changes and counts.

use serde_json::{json, Value};

use super::super::{reference_job, set_active, NomadDouble};
use super::{get, post, reference};

/// Plans `job` and returns the answer with its `DesiredTGUpdates`.
async fn plan(nomad: &NomadDouble, job: &Value) -> (Value, Value) {
    let r = post(
        nomad.addr(),
        "/v1/job/hello-service/plan",
        &json!({"Job": job, "Diff": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let updates = body["Annotations"]["DesiredTGUpdates"].clone();
    (body, updates)
}

fn counts(u: &Value) -> (u64, u64, u64, u64, u64) {
    let n = |k: &str| u[k].as_u64().unwrap_or(u64::MAX);
    (
        n("Ignore"),
        n("Place"),
        n("Stop"),
        n("InPlaceUpdate"),
        n("DestructiveUpdate"),
    )
}

#[tokio::test]
async fn tag_flip_is_in_place_everywhere() {
    let (_consul, nomad) = reference().await;
    let mut job = get(nomad.addr(), "/v1/job/hello-service").await.json();
    let jmi = job["JobModifyIndex"].clone();
    set_active(&mut job, "green");
    let (body, tg) = plan(&nomad, &job).await;
    assert_eq!(body["JobModifyIndex"], jmi, "feeds EnforceIndex");
    for g in ["blue", "green"] {
        assert_eq!(counts(&tg[g]), (0, 0, 0, 2, 0), "{g}: {}", tg[g]);
        assert_eq!(tg[g]["Canary"], 0);
    }
    let diff = &body["Diff"];
    assert_eq!(diff["Type"], "Edited");
    let blue = &diff["TaskGroups"][0];
    assert_eq!(blue["Name"], "blue");
    assert_eq!(blue["Updates"], json!({"in-place update": 2}));
    let fields: Vec<(&str, &str, &str)> = blue["Fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["Type"].as_str().unwrap_or(""),
                f["Old"].as_str().unwrap_or(""),
                f["New"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        fields,
        vec![("Deleted", "active", ""), ("Added", "", "standby")]
    );
    assert_eq!(
        nomad.job("hello-service").map(|j| j["Version"].clone()),
        Some(json!(0)),
        "plan writes nothing"
    );
}

#[tokio::test]
async fn image_change_is_destructive_in_that_group_only() {
    let (_consul, nomad) = reference().await;
    let job = reference_job("hello:v1", "hello:v3", "v1", "v3");
    let (body, tg) = plan(&nomad, &job).await;
    assert_eq!(
        counts(&tg["green"]),
        (1, 0, 0, 0, 1),
        "MaxParallel 1: one now, one later"
    );
    assert_eq!(
        counts(&tg["blue"]),
        (0, 0, 0, 2, 0),
        "a new version updates the rest in place"
    );
    let green = &body["Diff"]["TaskGroups"][1];
    assert_eq!(
        green["Tasks"][0]["Annotations"],
        json!(["forces create/destroy update"])
    );
    assert_eq!(green["Tasks"][0]["Fields"][0]["Name"], "Config[image]");
}

#[tokio::test]
async fn job_meta_change_is_destructive_everywhere() {
    let (_consul, nomad) = reference().await;
    let mut job = reference_job("hello:v1", "hello:v2", "v1", "v2");
    job["Meta"] = json!({"active": "green"});
    let (_, tg) = plan(&nomad, &job).await;
    for g in ["blue", "green"] {
        assert_eq!(tg[g]["DestructiveUpdate"], 1, "{g}: {}", tg[g]);
    }
    let mut group_meta = reference_job("hello:v1", "hello:v2", "v1", "v2");
    group_meta["TaskGroups"][0]["Meta"] = json!({"role": "active"});
    let (_, tg) = plan(&nomad, &group_meta).await;
    assert_eq!(
        (
            tg["blue"]["DestructiveUpdate"].as_u64(),
            tg["green"]["DestructiveUpdate"].as_u64()
        ),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn unchanged_counts_and_new_jobs() {
    let (_consul, nomad) = reference().await;
    let same = get(nomad.addr(), "/v1/job/hello-service").await.json();
    let (body, tg) = plan(&nomad, &same).await;
    assert_eq!(counts(&tg["blue"]), (2, 0, 0, 0, 0));
    assert_eq!(body["Diff"]["Type"], "None");
    let mut scaled = same.clone();
    scaled["TaskGroups"][0]["Count"] = json!(3);
    scaled["TaskGroups"][1]["Count"] = json!(1);
    let (_, tg) = plan(&nomad, &scaled).await;
    assert_eq!(counts(&tg["blue"]), (0, 1, 0, 2, 0));
    assert_eq!(counts(&tg["green"]), (0, 0, 1, 1, 0));

    let empty = NomadDouble::start(None).await.expect("start");
    let (body, tg) = plan(&empty, &reference_job("a", "b", "v1", "v2")).await;
    assert_eq!(
        (
            body["JobModifyIndex"].as_u64(),
            body["Diff"]["Type"].as_str()
        ),
        (Some(0), Some("Added"))
    );
    assert_eq!(counts(&tg["green"]), (0, 2, 0, 0, 0));
    let mismatch = post(
        empty.addr(),
        "/v1/job/other/plan",
        &json!({"Job": reference_job("a", "b", "1", "2")}),
    )
    .await;
    assert_eq!(
        (mismatch.status, mismatch.text()),
        (400, "Job ID does not match".into())
    );
}
