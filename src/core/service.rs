//! Services: each has its own publisher (its pools, gates and swaps) and source status, under the
//! name routes, metrics, `/status` and the operator commands use. One service's swap never
//! touches another's snapshot: they are separate `ArcSwap`s.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::discovery::status::SourceStatus;
use super::Publisher;

/// One service's pools and the state of its source.
#[derive(Debug)]
pub struct Service {
    pub publisher: Arc<Publisher>,
    pub status: Arc<SourceStatus>,
}

impl Service {
    pub fn name(&self) -> &str {
        self.publisher.service()
    }
}

/// Every service, the primary first; replaced whole when a reload adds or removes one.
#[derive(Debug)]
pub struct Services(ArcSwap<Vec<Arc<Service>>>);

impl Services {
    pub fn new(all: Vec<Arc<Service>>) -> Services {
        Services(ArcSwap::from_pointee(all))
    }

    pub fn all(&self) -> Arc<Vec<Arc<Service>>> {
        self.0.load_full()
    }

    pub fn store(&self, all: Vec<Arc<Service>>) {
        self.0.store(Arc::new(all));
    }

    /// The service named `name`, or the primary one for `None`.
    pub fn get(&self, name: Option<&str>) -> Option<Arc<Service>> {
        let all = self.0.load();
        match name {
            None => all.first().cloned(),
            Some(n) => all.iter().find(|s| s.name() == n).cloned(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.0.load().iter().map(|s| s.name().to_string()).collect()
    }
}
