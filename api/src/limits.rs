//! The limits the gateway enforces and the OpenAPI document states. A
//! schema attribute cannot name a constant, so each `#[schema(...)]` that
//! states one of these repeats the number; `gateway/tests/contract.rs`
//! checks that the document and these constants agree.

/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest email address, in bytes.
pub const MAX_EMAIL_BYTES: usize = 255;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Longest concert title, in characters.
pub const MAX_TITLE_CHARS: usize = 255;
/// Most schedules one new concert may have.
pub const MAX_SCHEDULES: usize = 100;
/// Most seats one schedule may have.
pub const MAX_SEATS_PER_SCHEDULE: i32 = 10_000;
/// Highest price of a seat or a product, in won.
pub const MAX_PRICE: i64 = 100_000_000;
/// Longest product name, in characters.
pub const MAX_PRODUCT_NAME_CHARS: usize = 255;
/// Longest product category, in characters.
pub const MAX_CATEGORY_CHARS: usize = 100;
/// Most sizes one product may have.
pub const MAX_SIZES: usize = 50;
/// Longest size label, in characters.
pub const MAX_SIZE_CHARS: usize = 20;
/// Largest stock quantity of one size.
pub const MAX_STOCK_QUANTITY: i32 = 1_000_000;
/// Largest amount one charge may add, in won.
pub const MAX_CHARGE_AMOUNT: i64 = 10_000_000;
/// Most distinct lines one order (or cart) may hold.
pub const MAX_ORDER_ITEMS: usize = 50;
/// Largest quantity of one line.
pub const MAX_ITEM_QUANTITY: i32 = 1_000;
/// Default and largest page of a list.
pub const PAGE_DEFAULT: i64 = 50;
/// Largest page of a list.
pub const PAGE_MAX: i64 = 200;
/// Longest cursor a list takes back, in characters.
pub const MAX_CURSOR_CHARS: usize = 64;
/// Longest `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
