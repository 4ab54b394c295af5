//! The Consul health-answer parser: any bytes give instances or an error, never a panic; every
//! instance it returns has an id, a version, and an address ending in a non-zero `:port`.
//!
//! Needs `zerodown::core::discovery::consul::{health_entries, VersionRule}` to be public
//! (`pub use parse::{health_entries, Parsed, VersionRule};` in src/discovery/consul/mod.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use regex_lite::Regex;
use zerodown::core::discovery::consul::{health_entries, VersionRule};

fuzz_target!(|data: &[u8]| {
    let rule = VersionRule {
        meta_key: "version".into(),
        tag_pattern: Regex::new(r"^v\d+").unwrap(),
    };
    let Ok(parsed) = health_entries(data, &rule) else {
        return;
    };
    for i in &parsed.instances {
        assert!(!i.id.is_empty(), "instance without an id: {i:?}");
        assert!(!i.version.is_empty(), "instance without a version: {i:?}");
        let port = i
            .address
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|p| p.parse::<u16>().ok());
        assert!(
            port.is_some_and(|p| p != 0),
            "instance address without host:port: {i:?}"
        );
    }
});
