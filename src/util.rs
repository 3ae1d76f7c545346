//! Small shared helpers.

/// Case-insensitive composite map keys (`aws|s3.amazonaws.com|putbucketacl`):
/// built lower-cased once when a map is filled, and in a stack buffer when it
/// is read, so lookups on the hot path allocate nothing.
pub struct LowerKey;

const KEY_BUFFER: usize = 256;

impl LowerKey {
    /// The owned key, for inserting.
    pub fn owned(parts: &[&str]) -> Box<str> {
        parts.join("|").to_ascii_lowercase().into_boxed_str()
    }

    /// Calls `f` with the key; on the stack when it fits, else on the heap.
    pub fn with<R>(parts: &[&str], f: impl FnOnce(&str) -> R) -> R {
        let mut buf = [0u8; KEY_BUFFER];
        match Self::write(&mut buf, parts) {
            Some(key) => f(key),
            None => f(&Self::owned(parts)),
        }
    }

    fn write<'b>(buf: &'b mut [u8; KEY_BUFFER], parts: &[&str]) -> Option<&'b str> {
        let mut len = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                *buf.get_mut(len)? = b'|';
                len += 1;
            }
            let bytes = part.as_bytes();
            let dest = buf.get_mut(len..len + bytes.len())?;
            // One pass that lowers as it copies: keys are a few dozen
            // bytes, too short for a copy call and a second pass to pay.
            for (d, b) in dest.iter_mut().zip(bytes) {
                *d = b.to_ascii_lowercase();
            }
            len += bytes.len();
        }
        // SAFETY: `buf[..len]` is whole `&str` parts, ASCII-lower-cased
        // (which changes ASCII bytes only, to ASCII bytes), joined by `|`:
        // valid UTF-8. A part that does not fit returned `None` above.
        Some(unsafe { std::str::from_utf8_unchecked(&buf[..len]) })
    }
}

/// A per-thread memo of what a pure function of an event's names (cloud,
/// service, operation, …) yields, keyed by the names as written: a log
/// repeats a few hundred combinations, and one hash of the raw names costs
/// less than lower-casing them and looking several keys up. Each memo is
/// for one owner at a time (a rule index, a matrix: [`memo_owner`]),
/// and starts over at [`MEMO_ENTRIES`], so that input made of ever-new
/// names cannot grow it.
pub struct Memo<V> {
    owner: u64,
    map: hashbrown::HashMap<Box<[u8]>, V>,
}

/// Entries a thread's memo holds before it starts over.
pub const MEMO_ENTRIES: usize = 4096;
/// Longest key, separators included: longer names (real ones are a few
/// dozen bytes) are looked up directly.
pub const MEMO_KEY: usize = 192;

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            owner: 0,
            map: hashbrown::HashMap::new(),
        }
    }
}

/// A [`Memo`] owner number no other owner has; 0 is left to empty defaults.
pub fn memo_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<V> Memo<V> {
    /// Calls `read` with the value for `parts` (made by `make` the first
    /// time), from the thread's memo `memo` for `owner`. `None`, and
    /// neither closure called, when the key is too long or the memo is in
    /// use further up this thread's stack: then the caller works it out
    /// itself.
    pub fn with<R>(
        memo: &'static std::thread::LocalKey<std::cell::RefCell<Memo<V>>>,
        owner: u64,
        parts: &[&[u8]],
        make: impl FnOnce() -> V,
        read: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        let mut buf = [0u8; MEMO_KEY];
        let key = memo_key(&mut buf, parts)?;
        memo.with(|memo| {
            let mut memo = memo.try_borrow_mut().ok()?;
            let memo = &mut *memo;
            if memo.owner != owner {
                memo.map.clear();
                memo.owner = owner;
            }
            if let Some(value) = memo.map.get(key) {
                return Some(read(value));
            }
            if memo.map.len() >= MEMO_ENTRIES {
                memo.map.clear();
            }
            let value = make();
            let out = read(&value);
            memo.map.insert(key.into(), value);
            Some(out)
        })
    }

    /// Entries held (for tests).
    pub fn len(memo: &'static std::thread::LocalKey<std::cell::RefCell<Memo<V>>>) -> usize {
        memo.with(|memo| memo.borrow().map.len())
    }
}

/// `parts` joined by `0xFF` (a byte UTF-8 never holds, so no two lists of
/// names give one key) in `buf`; `None` if they do not fit.
fn memo_key<'b>(buf: &'b mut [u8; MEMO_KEY], parts: &[&[u8]]) -> Option<&'b [u8]> {
    let mut at = 0;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            *buf.get_mut(at)? = 0xFF;
            at += 1;
        }
        buf.get_mut(at..at + part.len())?.copy_from_slice(part);
        at += part.len();
    }
    Some(&buf[..at])
}

/// A UTC time as RFC 3339 text, exactly as chrono's `Serialize` writes it
/// (`2025-03-01T10:00:00Z`, fractional digits only when non-zero, in groups
/// of three), built in a stack buffer: findings carry a time each, and the
/// formatting machinery cost ten times as much as the digits.
pub struct Rfc3339 {
    buf: [u8; 30],
    len: usize,
}

impl Rfc3339 {
    /// `None` for what chrono writes differently: years outside 0–9999 and
    /// leap seconds.
    pub fn of(time: &chrono::DateTime<chrono::Utc>) -> Option<Rfc3339> {
        use chrono::{Datelike, Timelike};
        let (year, nanos) = (time.year(), time.nanosecond());
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        let mut out = Rfc3339 {
            buf: [0; 30],
            len: 0,
        };
        out.digits(year as u32, 4);
        for (separator, value) in [
            (b'-', time.month()),
            (b'-', time.day()),
            (b'T', time.hour()),
            (b':', time.minute()),
            (b':', time.second()),
        ] {
            out.push(separator);
            out.digits(value, 2);
        }
        let fraction = match nanos {
            0 => None,
            n if n % 1_000_000 == 0 => Some((n / 1_000_000, 3)),
            n if n % 1_000 == 0 => Some((n / 1_000, 6)),
            n => Some((n, 9)),
        };
        if let Some((value, width)) = fraction {
            out.push(b'.');
            out.digits(value, width);
        }
        out.push(b'Z');
        Some(out)
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    /// `value` in `width` digits, zero-padded.
    fn digits(&mut self, value: u32, width: u32) {
        for i in (0..width).rev() {
            self.push(b'0' + (value / 10u32.pow(i) % 10) as u8);
        }
    }

    pub fn as_str(&self) -> &str {
        // ASCII digits and separators only.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// `serialize_with` for an optional UTC time: [`Rfc3339`] where it applies,
/// chrono's own writer elsewhere.
pub fn serialize_time<S: serde::Serializer>(
    time: &Option<chrono::DateTime<chrono::Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time.as_ref().map(|t| (t, Rfc3339::of(t))) {
        Some((_, Some(text))) => serializer.serialize_some(text.as_str()),
        Some((t, None)) => serializer.serialize_some(t),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lower_cased_on_the_stack_and_on_the_heap() {
        LowerKey::with(
            &["azure", "Microsoft.Storage", "MICROSOFT.STORAGE/X"],
            |k| assert_eq!(k, "azure|microsoft.storage|microsoft.storage/x"),
        );
        let long = "X".repeat(300);
        LowerKey::with(&["aws", &long], |k| assert_eq!(k.len(), 304));
        assert_eq!(&*LowerKey::owned(&["A", "B"]), "a|b");
        // Only ASCII is lowered; other text passes through whole, on the
        // stack as on the heap.
        let parts = ["GCP", "Ünïcode.Sérvice", "ÉTÉ"];
        LowerKey::with(&parts, |k| assert_eq!(k, "gcp|Ünïcode.sérvice|ÉtÉ"));
        assert_eq!(&*LowerKey::owned(&parts), "gcp|Ünïcode.sérvice|ÉtÉ");
        // A part that would cut the buffer goes to the heap whole.
        let near = format!("{}é", "a".repeat(254));
        LowerKey::with(&["x", &near], |k| assert_eq!(k, format!("x|{near}")));
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::{TimeZone, Utc};
        let mut checked = 0;
        for (secs, nanos) in [
            (0, 0),
            (1_740_823_200, 0),
            (1_740_823_200, 120_000_000),
            (1_740_823_200, 123_456_000),
            (1_740_823_200, 123_456_789),
            (1_740_823_200, 1),
            (1_740_823_200, 999_999_999),
            (253_402_300_799, 0),
            (-62_167_219_200, 5_000),
        ] {
            let time = Utc.timestamp_opt(secs, nanos).unwrap();
            let ours = serde_json::to_string(&Some(Rfc3339::of(&time).unwrap().as_str())).unwrap();
            assert_eq!(
                ours,
                serde_json::to_string(&time).unwrap(),
                "{secs}.{nanos}"
            );
            checked += 1;
        }
        // Where chrono writes a sign or a sixth digit, it writes it.
        let far = Utc.timestamp_opt(253_402_300_800, 0).unwrap();
        assert!(Rfc3339::of(&far).is_none());
        #[derive(serde::Serialize)]
        struct T(#[serde(serialize_with = "serialize_time")] Option<chrono::DateTime<Utc>>);
        assert_eq!(
            serde_json::to_string(&T(Some(far))).unwrap(),
            serde_json::to_string(&far).unwrap()
        );
        assert_eq!(serde_json::to_string(&T(None)).unwrap(), "null");
        assert_eq!(checked, 9);
    }
}
