//! The upstream state the request path reads: one immutable [`Snapshot`] (active and standby pools)
//! published through one `ArcSwap` by the [`Publisher`], which applies the gates in [`gate`]
//! (one version per pool, never an empty pool) once, for every source.

mod gate;
mod publish;
mod snapshot;

pub use gate::{version_order, Hold};
pub use publish::{Candidates, Publisher, SwapRecord};
pub use snapshot::{Instance, Member, Pool, Snapshot, SourceInfo};
