//! Request signing. Every webhook request carries
//!
//! - `Idempotency-Key`: the notice's key (see [`crate::alert::Notice::idempotency_key`]);
//! - `Seamwatch-Timestamp`: Unix seconds when the request was signed;
//! - `Seamwatch-Signature`: `sha256=` and the lower-case hex HMAC-SHA256,
//!   keyed with the destination's secret, of `<timestamp>.<body>`.
//!
//! A receiver recomputes the HMAC over the timestamp header, a dot and the
//! raw body, compares in constant time, and rejects timestamps too far from
//! its clock (replays). [`verify`] does exactly that.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

pub const TIMESTAMP_HEADER: &str = "Seamwatch-Timestamp";
pub const SIGNATURE_HEADER: &str = "Seamwatch-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Seamwatch-Signature` value for a body signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header is not `sha256=<hex>`")]
    Malformed,
    #[error("timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("timestamp is {0} s away from now, beyond the tolerance")]
    Stale(i64),
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a request's signature, with `now` and `tolerance` in Unix seconds.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
    tolerance: i64,
) -> Result<(), VerifyError> {
    let hex_sig = signature
        .strip_prefix("sha256=")
        .ok_or(VerifyError::Malformed)?;
    let expected = hex::decode(hex_sig).map_err(|_| VerifyError::Malformed)?;
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now.saturating_sub(ts);
    if skew.unsigned_abs() > tolerance.unsigned_abs() {
        return Err(VerifyError::Stale(skew));
    }
    mac(secret, timestamp, body)
        .verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let sig = sign(b"s3cret", "1700000000", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(
            verify(b"s3cret", "1700000000", b"{\"a\":1}", &sig, 1700000010, 300),
            Ok(())
        );
        assert_eq!(
            verify(b"wrong", "1700000000", b"{\"a\":1}", &sig, 1700000010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "1700000000", b"{\"a\":2}", &sig, 1700000010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "1700000000", b"{\"a\":1}", &sig, 1700001000, 300),
            Err(VerifyError::Stale(1000))
        );
        assert_eq!(
            verify(b"s3cret", "1700000000", b"{}", "md5=00", 1700000000, 300),
            Err(VerifyError::Malformed)
        );
        // A crafted timestamp must not overflow.
        assert!(matches!(
            verify(
                b"s3cret",
                &i64::MIN.to_string(),
                b"{}",
                &sig,
                1700000000,
                300
            ),
            Err(VerifyError::Stale(_))
        ));
    }

    #[test]
    fn matches_a_known_vector() {
        // RFC 4231 test case 2 (key "Jefe"), with the message split as
        // `<timestamp>.<body>` = "what do ya want" "." "for nothing?" would
        // not reproduce it; so check against the RFC's message directly.
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // And ours is that construction over "<ts>.<body>".
        let ours = sign(b"Jefe", "what do ya want for nothing?", b"");
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?.");
        assert_eq!(
            ours,
            format!("sha256={}", hex::encode(m.finalize().into_bytes()))
        );
    }
}
