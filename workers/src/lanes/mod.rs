//! The lanes: each adds only its business step to the engine.

pub mod charge;
pub mod ledger;
pub mod order;
pub mod payment;
pub mod reservation;
pub mod stats;

pub use charge::ChargeLane;
pub use order::OrderLane;
pub use payment::PaymentLane;
pub use reservation::ReservationLane;
pub use stats::StatsLane;
