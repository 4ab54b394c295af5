//! The protocol-independent switching core: sources report whole instance sets ([`discovery`]),
//! the [`Publisher`] applies the gates in [`gate`] (one version per pool, never an empty pool) and
//! publishes one immutable [`Snapshot`] (active and standby pools) through one `ArcSwap`; a
//! front-end picks a member with [`balance`] and reports outcomes to its [`Endpoint`]'s health.
//! Nothing here knows a wire protocol: front-ends keep their own per-endpoint state.

pub mod balance;
pub mod discovery;
mod endpoint;
mod gate;
pub mod health;
mod instance;
mod publish;
mod service;
mod snapshot;

pub use endpoint::{Endpoint, EndpointState, InFlight};
pub use gate::{version_order, Hold};
pub use health::Health;
pub use instance::{Instance, SourceInfo};
pub use publish::{Candidates, Publisher, SwapRecord};
pub use service::{Service, Services};
pub use snapshot::{Member, Pool, Snapshot};
