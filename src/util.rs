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
    /// (hash, parts joined by `0xFF`, value). Looked up by hashing the
    /// parts one after the other and comparing them in place: building the
    /// joined key for each lookup cost more than the lookup.
    table: hashbrown::HashTable<(u64, Box<[u8]>, V)>,
    hasher: hashbrown::DefaultHashBuilder,
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
            table: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
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
    /// time), from the thread's memo `memo` for `owner`. Parts hold no
    /// `0xFF` byte (UTF-8 text never does), so no two lists of parts are
    /// one key. When the key is too long, or the memo is in use further up
    /// this thread's stack, the value is made and read without the memo.
    pub fn with<R>(
        memo: &'static std::thread::LocalKey<std::cell::RefCell<Memo<V>>>,
        owner: u64,
        parts: &[&[u8]],
        make: impl FnOnce() -> V,
        read: impl FnOnce(&V) -> R,
    ) -> R {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + parts.len().saturating_sub(1);
        if len > MEMO_KEY {
            return read(&make());
        }
        let memoized = memo.with(|memo| {
            use std::hash::{BuildHasher, Hasher};
            let Ok(mut memo) = memo.try_borrow_mut() else {
                return Err((make, read));
            };
            let memo = &mut *memo;
            if memo.owner != owner {
                memo.table.clear();
                memo.owner = owner;
            }
            let mut hasher = memo.hasher.build_hasher();
            // No separators: parts split differently may collide, and
            // the comparison tells them apart.
            for part in parts {
                hasher.write(part);
            }
            let hash = hasher.finish();
            let found = memo
                .table
                .find(hash, |(h, key, _)| *h == hash && joined_is(key, parts));
            if let Some((_, _, value)) = found {
                return Ok(read(value));
            }
            if memo.table.len() >= MEMO_ENTRIES {
                memo.table.clear();
            }
            let value = make();
            let out = read(&value);
            let key = parts.join(&0xFF).into_boxed_slice();
            memo.table
                .insert_unique(hash, (hash, key, value), |(h, _, _)| *h);
            Ok(out)
        });
        memoized.unwrap_or_else(|(make, read)| read(&make()))
    }

    /// Entries held.
    #[cfg(test)]
    fn len(memo: &'static std::thread::LocalKey<std::cell::RefCell<Memo<V>>>) -> usize {
        memo.with(|memo| memo.borrow().table.len())
    }
}

/// Whether `key` is `parts` joined by `0xFF`.
fn joined_is(key: &[u8], parts: &[&[u8]]) -> bool {
    let mut rest = key;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            match rest.split_first() {
                Some((0xFF, tail)) => rest = tail,
                _ => return false,
            }
        }
        match rest.split_at_checked(part.len()) {
            Some((head, tail)) if head == *part => rest = tail,
            _ => return false,
        }
    }
    rest.is_empty()
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

    thread_local! {
        static TEST_MEMO: std::cell::RefCell<Memo<String>> = std::cell::RefCell::default();
    }

    /// The value for `parts`, and whether it was made just now.
    fn memo_get(owner: u64, parts: &[&str]) -> (String, bool) {
        let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        let mut made = false;
        let value = Memo::with(
            &TEST_MEMO,
            owner,
            &bytes,
            || {
                made = true;
                parts.join("/")
            },
            String::clone,
        );
        (value, made)
    }

    #[test]
    fn memo_makes_each_value_once_per_owner_and_stays_bounded() {
        let owner = memo_owner();
        assert_eq!(
            memo_get(owner, &["s3", "GetObject"]),
            ("s3/GetObject".into(), true)
        );
        assert_eq!(
            memo_get(owner, &["s3", "GetObject"]),
            ("s3/GetObject".into(), false)
        );
        // The same bytes split differently, or one part more, are other keys.
        assert_eq!(
            memo_get(owner, &["s3G", "etObject"]),
            ("s3G/etObject".into(), true)
        );
        assert_eq!(
            memo_get(owner, &["s3", "GetObject", ""]),
            ("s3/GetObject/".into(), true)
        );
        assert_eq!(
            memo_get(owner, &["s3", "getobject"]),
            ("s3/getobject".into(), true)
        );
        // Another owner starts afresh.
        let other = memo_owner();
        assert_ne!(owner, other);
        assert_eq!(
            memo_get(other, &["s3", "GetObject"]),
            ("s3/GetObject".into(), true)
        );
        // Too long for a key: made every time, not kept.
        let long = "x".repeat(MEMO_KEY + 1);
        assert!(memo_get(other, &[&long]).1);
        assert!(memo_get(other, &[&long]).1);
        assert_eq!(Memo::len(&TEST_MEMO), 1);
        // Ever-new names: it starts over instead of growing.
        for n in 0..MEMO_ENTRIES + 10 {
            assert!(memo_get(other, &["op", &n.to_string()]).1);
            assert!(Memo::len(&TEST_MEMO) <= MEMO_ENTRIES);
        }
        assert!(!memo_get(other, &["op", &(MEMO_ENTRIES + 9).to_string()]).1);
    }

    #[test]
    fn a_memo_used_further_up_the_stack_is_bypassed() {
        let owner = memo_owner();
        let inner = Memo::with(
            &TEST_MEMO,
            owner,
            &[b"outer"],
            || {
                let (value, made) = memo_get(owner, &["inner"]);
                format!("{value} made: {made}")
            },
            String::clone,
        );
        assert_eq!(inner, "inner made: true");
        // The inner value was made outside the memo, so it is made again.
        assert_eq!(memo_get(owner, &["inner"]), ("inner".into(), true));
        assert_eq!(memo_get(owner, &["inner"]), ("inner".into(), false));
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
