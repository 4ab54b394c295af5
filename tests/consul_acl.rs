//! An ACL 403 tells the operator where the token came from and which ACL rules the watch needs.

mod common;

use std::time::Duration;

use common::consul::{register, source};
use common::*;
use zerodown::config::{ActiveSelector, Config, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown_testkit::{ConsulDouble, TokenPolicy};

#[tokio::test]
async fn a_token_without_key_read_is_named_with_the_rule_it_lacks() {
    let consul = ConsulDouble::start().await.unwrap();
    register(&consul, "v1-a", backend("v1").await, "v1", &["blue"]);
    consul.set_required_token(Some("admin"));
    consul.add_token(
        "reader",
        TokenPolicy {
            kv_read: false,
            ..TokenPolicy::ALL
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "reader\n").unwrap();
    let mut src = source(&consul);
    src.token_file = Some(token.clone());
    src.active_selector = ActiveSelector::Kv;
    let mut cfg = Config::default();
    cfg.log.access_log = false;
    cfg.source = SourceConfig::Consul(src);
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let d = Daemon::start(cfg, public, None).unwrap();
    let mut last = String::new();
    let end = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < end {
        last = d.status().state().last_error.unwrap_or_default();
        if last.contains("403") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.contains("403 Permission denied"), "{last}");
    assert!(
        last.contains(&format!(
            "token from the token file {} (source.token_file)",
            token.display()
        )),
        "{last}"
    );
    assert!(
        last.contains("key \"zerodown/hello-service/active\" { policy = \"read\" }"),
        "{last}"
    );
}
