//! The lanes: each adds only its business step to the engine.

pub mod charge;
pub mod ledger;
pub mod payment;
pub mod reservation;

pub use charge::ChargeLane;
pub use payment::PaymentLane;
pub use reservation::ReservationLane;
