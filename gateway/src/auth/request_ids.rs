//! Request ids the gateway can check by itself. A call without an
//! `Idempotency-Key` is answered with an id that says who it was issued
//! to: a UUIDv7 whose 74 random bits hold the request's type (4 bits), 38
//! random bits and a 32-bit tag, an HMAC-SHA-256 over the time, the type,
//! the random bits and the caller's user id under `AUTH_SECRET`. So a poll
//! of an undecided request needs no row: when there is none yet, an id that
//! verifies for the caller is PENDING (the record is in Kafka: the 202
//! came after the broker's acknowledgement), and any other id is unknown.
//!
//! Uniqueness: two ids collide only if the same millisecond, type and 38
//! random bits meet, and then their tags differ unless the caller is the
//! same too; one caller accepting thousands of requests a millisecond has
//! odds of a collision near 2^-38 per pair.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::Rng;
use schemas::Request;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

type Key = Hmac<Sha256>;

const TYPE_BITS: u32 = 4;
const RANDOM_BITS: u32 = 38;
const TAG_BITS: u32 = 32;
const _: () = assert!(TYPE_BITS + RANDOM_BITS + TAG_BITS == 74);
const _: () = assert!(Request::TYPES.len() < 1 << TYPE_BITS);

/// Issues request ids and checks them; cheap to clone.
#[derive(Clone)]
pub struct RequestIds {
    /// The key ids are issued with first, then those of earlier secrets.
    keys: Vec<Key>,
}

/// What a verified id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedId {
    /// The request type (one of [`Request::TYPES`]).
    pub request_type: &'static str,
    /// When the gateway issued it (to the millisecond).
    pub at: SystemTime,
}

impl RequestIds {
    /// Issues with `secret`; also verifies ids issued with any of
    /// `previous`.
    pub fn new<'a>(secret: &'a str, previous: impl IntoIterator<Item = &'a str>) -> Self {
        let keys = std::iter::once(secret)
            .chain(previous)
            .map(|secret| {
                Key::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
            })
            .collect();
        Self { keys }
    }

    /// A fresh id for `request`, made by `user_id`.
    pub fn issue(&self, user_id: i64, request: &Request) -> Uuid {
        self.issue_at(SystemTime::now(), user_id, request)
    }

    /// An id for `request` by `user_id` as if issued at `at` (tests issue
    /// ids older than the retention horizon).
    pub fn issue_at(&self, at: SystemTime, user_id: i64, request: &Request) -> Uuid {
        let millis = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let random = rand::thread_rng().gen::<u64>() & mask(RANDOM_BITS);
        self.compose(millis, request.type_index() as u64, random, user_id)
    }

    fn compose(&self, millis: u64, type_index: u64, random: u64, user_id: i64) -> Uuid {
        let body = (type_index << RANDOM_BITS) | random;
        let tag = tag(&self.keys[0], millis, body, user_id);
        let bits = (u128::from(body) << TAG_BITS) | u128::from(tag);
        uuid::Builder::from_unix_timestamp_millis(millis, &spread(bits)).into_uuid()
    }

    /// The type and time of `id` if this gateway (or one sharing its
    /// secrets) issued it to `user_id`; None for any other id.
    pub fn verify(&self, id: Uuid, user_id: i64) -> Option<IssuedId> {
        if id.get_version_num() != 7 || id.get_variant() != uuid::Variant::RFC4122 {
            return None;
        }
        let bytes = id.as_bytes();
        let millis = bytes[..6]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let bits = gather(bytes);
        let body = (bits >> TAG_BITS) as u64;
        let claimed = (bits as u32).to_be_bytes();
        let genuine = self.keys.iter().any(|key| {
            let tag = tag(key, millis, body, user_id).to_be_bytes();
            bool::from(tag.ct_eq(&claimed))
        });
        let request_type = *Request::TYPES.get((body >> RANDOM_BITS) as usize)?;
        genuine.then(|| IssuedId {
            request_type,
            at: UNIX_EPOCH + Duration::from_millis(millis),
        })
    }
}

fn mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

/// The 32-bit tag of an id's time, type and random bits, for `user_id`.
fn tag(key: &Key, millis: u64, body: u64, user_id: i64) -> u32 {
    let mut mac = key.clone();
    mac.update(b"booking request id\0");
    mac.update(&millis.to_be_bytes());
    mac.update(&body.to_be_bytes());
    mac.update(&user_id.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The 74 bits laid out over the 10 bytes a UUIDv7 takes after its time:
/// 12 bits in `rand_a` (after the version nibble), 62 in `rand_b` (after
/// the variant bits), which [`uuid::Builder`] then sets.
fn spread(bits: u128) -> [u8; 10] {
    let rand_a = (bits >> 62) as u16 & 0x0fff;
    let rand_b = bits as u64 & mask(62);
    let mut out = [0u8; 10];
    out[..2].copy_from_slice(&rand_a.to_be_bytes());
    out[2..].copy_from_slice(&rand_b.to_be_bytes());
    out
}

/// The 74 bits [`spread`] laid out, read back from a UUID's bytes.
fn gather(bytes: &[u8; 16]) -> u128 {
    let rand_a = u16::from_be_bytes([bytes[6], bytes[7]]) & 0x0fff;
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[8..]);
    let rand_b = u64::from_be_bytes(b) & mask(62);
    (u128::from(rand_a) << 62) | u128::from(rand_b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::requests::ChargeBalance;

    const SECRET: &str = "request-id-secret-0123456789abcdef";
    const OLD: &str = "old-request-id-secret-0123456789abc";

    fn charge(user_id: i64) -> Request {
        Request::ChargeBalance(ChargeBalance { user_id, amount: 1 })
    }

    #[test]
    fn an_id_verifies_for_the_caller_it_was_issued_to_only() {
        let ids = RequestIds::new(SECRET, []);
        let id = ids.issue(7, &charge(7));
        assert_eq!(id.get_version_num(), 7);
        let issued = ids.verify(id, 7).expect("genuine");
        assert_eq!(issued.request_type, "balance.charge");
        let age = issued.at.elapsed().expect("issued before now");
        assert!(age < Duration::from_secs(5), "{age:?}");
        assert_eq!(ids.verify(id, 8), None);
    }

    #[test]
    fn every_type_and_every_bit_round_trips() {
        let ids = RequestIds::new(SECRET, []);
        for (index, name) in Request::TYPES.iter().enumerate() {
            for random in [0, 1, mask(RANDOM_BITS), 0x2a_5555_5555 & mask(RANDOM_BITS)] {
                let id = ids.compose(1_800_000_000_000, index as u64, random, -3);
                let issued = ids.verify(id, -3).expect("genuine");
                assert_eq!(issued.request_type, *name);
                assert_eq!(
                    issued.at,
                    UNIX_EPOCH + Duration::from_millis(1_800_000_000_000)
                );
                let body = (gather(id.as_bytes()) >> TAG_BITS) as u64;
                assert_eq!(body & mask(RANDOM_BITS), random);
            }
        }
    }

    #[test]
    fn a_changed_bit_or_another_kind_of_uuid_does_not_verify() {
        let ids = RequestIds::new(SECRET, []);
        let id = ids.issue(7, &charge(7));
        let bytes = *id.as_bytes();
        for bit in 0..128 {
            let mut forged = bytes;
            forged[bit / 8] ^= 0x80 >> (bit % 8);
            assert_eq!(ids.verify(Uuid::from_bytes(forged), 7), None, "bit {bit}");
        }
        assert_eq!(ids.verify(Uuid::now_v7(), 7), None);
        assert_eq!(ids.verify(Uuid::new_v4(), 7), None);
        assert_eq!(ids.verify(Uuid::nil(), 7), None);
    }

    #[test]
    fn ids_of_a_previous_secret_verify_and_those_of_another_do_not() {
        let old = RequestIds::new(OLD, []);
        let id = old.issue(7, &charge(7));
        assert!(RequestIds::new(SECRET, [OLD]).verify(id, 7).is_some());
        assert_eq!(RequestIds::new(SECRET, []).verify(id, 7), None);
    }
}
