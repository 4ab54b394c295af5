//! KV: 404 with an index, base64 values, `?raw`, check-and-set, blocking and deletes.

use std::time::Duration;

use super::super::ConsulDouble;
use super::{get, req};

const PARK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn missing_key_is_404_with_an_index() {
    let c = ConsulDouble::start().await.expect("start");
    let r = get(c.addr(), "/v1/kv/zerodown/web/active").await;
    assert_eq!((r.status, r.body.len()), (404, 0));
    assert!(r.index() >= 1);
    let r = get(c.addr(), "/v1/kv/zerodown/web/active?raw").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn put_get_and_raw() {
    let c = ConsulDouble::start().await.expect("start");
    let put = req(
        c.addr(),
        "PUT",
        "/v1/kv/zerodown/web/active?flags=42",
        b"blue",
    )
    .await;
    assert_eq!((put.status, put.text().as_str()), (200, "true"));
    let r = get(c.addr(), "/v1/kv/zerodown/web/active").await;
    let v = r.json();
    assert_eq!(v[0]["Key"], "zerodown/web/active");
    assert_eq!(v[0]["Value"], "Ymx1ZQ==");
    assert_eq!(v[0]["Flags"], 42);
    assert_eq!(v[0]["LockIndex"], 0);
    assert!(v[0].get("Session").is_none());
    assert_eq!(v[0]["ModifyIndex"].as_u64(), Some(r.index()));
    let raw = get(c.addr(), "/v1/kv/zerodown/web/active?raw").await;
    assert_eq!((raw.text().as_str(), raw.index()), ("blue", r.index()));
    c.kv_put("zerodown/web/empty", "");
    let empty = get(c.addr(), "/v1/kv/zerodown/web/empty").await;
    assert_eq!(empty.json()[0]["Value"], serde_json::json!(null));
    let all = get(c.addr(), "/v1/kv/zerodown/web?recurse").await;
    assert_eq!(all.json().as_array().map(Vec::len), Some(2));
    assert_eq!(
        c.kv_get("zerodown/web/active").map(|e| e.value),
        Some(b"blue".to_vec())
    );
}

#[tokio::test]
async fn check_and_set() {
    let c = ConsulDouble::start().await.expect("start");
    let put = |q: &'static str, body: &'static [u8]| req(c.addr(), "PUT", q, body);
    assert_eq!(
        put("/v1/kv/k?cas=0", b"blue").await.text(),
        "true",
        "cas=0 creates"
    );
    assert_eq!(
        put("/v1/kv/k?cas=0", b"green").await.text(),
        "false",
        "cas=0 on existing"
    );
    let idx = c.kv_get("k").map(|e| e.modify_index).unwrap_or(0);
    let before = c.index();
    assert_eq!(
        put("/v1/kv/k?cas=1", b"green").await.text(),
        "false",
        "mismatch"
    );
    assert_eq!(c.index(), before, "a failed cas is not a write");
    let ok = format!("/v1/kv/k?cas={idx}");
    assert_eq!(req(c.addr(), "PUT", &ok, b"green").await.text(), "true");
    let del = |q: &'static str| req(c.addr(), "DELETE", q, b"");
    assert_eq!(del("/v1/kv/k?cas=1").await.text(), "false");
    let cur = c.kv_get("k").map(|e| e.modify_index).unwrap_or(0);
    assert_eq!(
        req(c.addr(), "DELETE", &format!("/v1/kv/k?cas={cur}"), b"")
            .await
            .text(),
        "true"
    );
    assert_eq!(c.kv_get("k"), None);
    assert_eq!(put("/v1/kv/k?cas=x", b"").await.status, 400);
    assert_eq!(put("/v1/kv/", b"").await.status, 400);
    assert!(c.kv_cas("k", "red", 0));
    assert!(!c.kv_cas("k", "red", 0));
}

#[tokio::test]
async fn delete_wakes_a_blocked_reader_with_404() {
    let c = ConsulDouble::start().await.expect("start");
    let idx = c.kv_put("flag", "blue");
    let addr = c.addr();
    let target = format!("/v1/kv/flag?index={idx}&wait=5s");
    let parked = tokio::spawn(async move { get(addr, &target).await });
    assert!(c.wait_for_parked(1, PARK).await);
    c.kv_put("other", "x"); // another key: a present key's reader stays parked
    assert!(!c.wait_for_parked(2, Duration::from_millis(50)).await);
    assert_eq!(c.parked(), 1);
    assert!(c.kv_delete("flag"));
    let r = parked.await.expect("task");
    assert_eq!((r.status, r.index()), (404, c.index()));
}

#[tokio::test]
async fn missing_key_reader_wakes_on_another_key() {
    let c = ConsulDouble::start().await.expect("start");
    let idx = get(c.addr(), "/v1/kv/flag").await.index();
    let addr = c.addr();
    let target = format!("/v1/kv/flag?index={idx}&wait=5s");
    let parked = tokio::spawn(async move { get(addr, &target).await });
    assert!(c.wait_for_parked(1, PARK).await);
    c.kv_put("unrelated", "x");
    let r = parked.await.expect("task");
    assert_eq!(r.status, 404);
    assert!(r.index() > idx, "spurious wakeup with a new index");
}
