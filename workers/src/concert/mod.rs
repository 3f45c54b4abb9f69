//! The concert domain: seat holds and cancellations (the reservation lane),
//! payments for held seats (the payment lane), and the two jobs that move
//! the waiting line and release holds that ran out.

pub mod hold_expiry;
pub mod payment;
pub mod queue_admission;
pub mod reservation;
#[cfg(test)]
mod tests;

pub use payment::PaymentLane;
pub use reservation::ReservationLane;
