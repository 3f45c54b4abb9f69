//! The shop domain: orders that take stock and pay from the balance (the
//! order lane), and daily product statistics counted from paid orders (the
//! stats lane).

pub mod order;
pub mod stats;
#[cfg(test)]
mod tests;

pub use order::OrderLane;
pub use stats::StatsLane;
