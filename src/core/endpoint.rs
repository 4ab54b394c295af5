//! One instance address as every front-end sees it: passive health, requests in flight, whether it
//! has left every pool, and a few slots where front-ends keep their own per-address state (the
//! HTTP connection pool) without the core knowing its type.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::health::Health;

/// State a front-end keeps per endpoint. `retire` runs once the address has left every pool, so
/// the state can drop what it holds open (idle connections) while in-flight work finishes.
pub trait EndpointState: Any + Send + Sync {
    fn retire(&self);
}

/// Front-ends that may attach state to one endpoint (HTTP today; room for more).
const SLOTS: usize = 4;

/// One address to dial, shared by every snapshot that lists it, so a tag flip keeps its health and
/// warm connections.
pub struct Endpoint {
    pub address: String,
    pub health: Health,
    in_flight: AtomicUsize,
    retired: AtomicBool,
    states: [OnceLock<Arc<dyn EndpointState>>; SLOTS],
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("in_flight", &self.in_flight())
            .field("retired", &self.is_retired())
            .finish()
    }
}

impl Endpoint {
    pub fn new(address: String) -> Endpoint {
        Endpoint {
            address,
            health: Health::default(),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            states: Default::default(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks work in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Called by the publisher when the address leaves every pool.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for s in self.states.iter().filter_map(OnceLock::get) {
            s.retire();
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// The front-end state of type `T`, created on first use. Lock-free once created: the slot
    /// holding `T` is found with one load and one type comparison per slot before it.
    ///
    /// # Panics
    /// When more than `SLOTS` distinct types are attached (a programming error).
    pub fn state<T: EndpointState + Default>(&self) -> &T {
        for slot in &self.states {
            let s = slot.get_or_init(|| Arc::new(T::default()));
            if let Some(t) = (&**s as &dyn Any).downcast_ref::<T>() {
                return t;
            }
        }
        // Only reachable if the product defines more state types than SLOTS: a build-time
        // choice, not something input can cause.
        panic!("Endpoint: more than {SLOTS} front-end state types")
    }
}

/// Counts one unit of work against an endpoint's in-flight gauge while it lives.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Default)]
    struct A(AtomicU32);
    impl EndpointState for A {
        fn retire(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    #[derive(Default)]
    struct B(AtomicU32);
    impl EndpointState for B {
        fn retire(&self) {
            self.0.fetch_add(10, Ordering::Relaxed);
        }
    }

    #[test]
    fn each_type_gets_its_own_slot_and_is_retired_once() {
        let e = Endpoint::new("127.0.0.1:1".into());
        e.state::<A>().0.fetch_add(5, Ordering::Relaxed);
        assert_eq!(e.state::<B>().0.load(Ordering::Relaxed), 0);
        assert_eq!(e.state::<A>().0.load(Ordering::Relaxed), 5);
        assert!(std::ptr::eq(e.state::<B>(), e.state::<B>()));
        e.retire();
        assert!(e.is_retired());
        assert_eq!(e.state::<A>().0.load(Ordering::Relaxed), 6);
        assert_eq!(e.state::<B>().0.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn in_flight_counts_guards() {
        let e = Arc::new(Endpoint::new("127.0.0.1:1".into()));
        let g1 = e.begin();
        let g2 = e.begin();
        assert_eq!(e.in_flight(), 2);
        drop(g1);
        assert_eq!(g2.endpoint().in_flight(), 1);
        drop(g2);
        assert_eq!(e.in_flight(), 0);
    }
}
