//! How deeply a JSON text nests, found 64 bytes at a time.
//!
//! The decoder refuses documents nested deeper than its limit before any
//! parser recurses into them. That check reads every byte of every payload,
//! so it works on 64-byte blocks as bit masks (one bit per byte), the way
//! SIMD JSON parsers find their structure: where the quotes are that no
//! backslash escapes, which bytes lie inside strings (a running XOR of the
//! quote bits), and so which brackets count. The masks come from AVX2
//! compares where the build targets it (x86-64-v3, as `.cargo/config.toml`
//! sets), and from a byte loop elsewhere.

/// A 64-byte block's structural bytes, one bit per byte.
#[derive(Debug, PartialEq, Eq)]
struct Masks {
    backslashes: u64,
    quotes: u64,
    /// `{` and `[`.
    opens: u64,
    /// `}` and `]`.
    closes: u64,
}

/// `{`/`[` and `}`/`]` differ only in bit 0x20, so one compare finds both.
const OPEN: u8 = b'{';
const CLOSE: u8 = b'}';

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline(always)]
fn masks(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    // SAFETY: AVX2 is enabled for the whole build (the `cfg` above), and
    // both 32-byte unaligned loads lie inside the 64-byte block.
    unsafe {
        let lo = _mm256_loadu_si256(block.as_ptr().cast::<__m256i>());
        let hi = _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>());
        let bits = |v: __m256i, c: u8| {
            u64::from(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(c as i8))) as u32)
        };
        let case = _mm256_set1_epi8(0x20);
        let (lo_folded, hi_folded) = (_mm256_or_si256(lo, case), _mm256_or_si256(hi, case));
        Masks {
            backslashes: bits(lo, b'\\') | (bits(hi, b'\\') << 32),
            quotes: bits(lo, b'"') | (bits(hi, b'"') << 32),
            opens: bits(lo_folded, OPEN) | (bits(hi_folded, OPEN) << 32),
            closes: bits(lo_folded, CLOSE) | (bits(hi_folded, CLOSE) << 32),
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
#[inline(always)]
fn masks(block: &[u8; 64]) -> Masks {
    masks_bytewise(block)
}

/// The masks without SIMD (builds for other targets, and the tests' check
/// of the AVX2 version).
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "avx2", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn masks_bytewise(block: &[u8; 64]) -> Masks {
    let mut m = Masks {
        backslashes: 0,
        quotes: 0,
        opens: 0,
        closes: 0,
    };
    for (i, &b) in block.iter().enumerate() {
        m.backslashes |= u64::from(b == b'\\') << i;
        m.quotes |= u64::from(b == b'"') << i;
        m.opens |= u64::from(b | 0x20 == OPEN) << i;
        m.closes |= u64::from(b | 0x20 == CLOSE) << i;
    }
    m
}

/// Bits of the characters escaped by a backslash: the byte after each run
/// of backslashes of odd length. `carry` says whether the previous block
/// ended on an unpaired backslash, and is updated for the next block.
#[inline(always)]
fn escaped(backslashes: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    // A backslash escaped by the previous block's last one starts nothing.
    let backslashes = backslashes & !*carry;
    let follows_backslash = (backslashes << 1) | *carry;
    // Runs starting on odd bits: adding the run to its start carries past
    // its end, which tells odd from even run lengths by the end's parity.
    let odd_starts = backslashes & !EVEN & !follows_backslash;
    let (runs_from_odd, overflow) = odd_starts.overflowing_add(backslashes);
    *carry = u64::from(overflow);
    let flip = runs_from_odd << 1;
    (EVEN ^ flip) & follows_backslash
}

/// Each bit is the XOR of all bits up to it: 1 from an opening quote up to
/// (not including) its closing quote.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Whether `bytes` nests objects and arrays more than `limit` deep,
/// brackets inside strings not counted. Malformed text (a string left
/// open, unbalanced brackets) is measured as it stands: the parser reports
/// what is wrong with it.
pub(crate) fn deeper_than(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut escape_carry = 0u64;
    let mut in_string_carry = 0u64;
    let mut blocks = bytes.chunks_exact(64);
    let mut tail = [b' '; 64];
    let rest = blocks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    for block in blocks
        .by_ref()
        .map(|b| <&[u8; 64]>::try_from(b).ok())
        .chain([Some(&tail)])
    {
        let Some(block) = block else { continue };
        let m = masks(block);
        let escapes = if m.backslashes == 0 && escape_carry == 0 {
            0
        } else {
            escaped(m.backslashes, &mut escape_carry)
        };
        let quotes = m.quotes & !escapes;
        let in_string = prefix_xor(quotes) ^ in_string_carry;
        in_string_carry = ((in_string as i64) >> 63) as u64;
        let opens = m.opens & !in_string;
        let closes = m.closes & !in_string;
        let (open_count, close_count) = (opens.count_ones() as usize, closes.count_ones() as usize);
        // The usual block: it can neither pass the limit (even with all
        // its opens first) nor close more than is open (even with all its
        // closes first), so only the counts matter.
        if depth + open_count <= limit && depth >= close_count {
            depth = depth + open_count - close_count;
            continue;
        }
        if opens == 0 {
            depth = depth.saturating_sub(close_count);
            continue;
        }
        let mut brackets = opens | closes;
        while brackets != 0 {
            let bit = brackets & brackets.wrapping_neg();
            if opens & bit != 0 {
                depth += 1;
                if depth > limit {
                    return true;
                }
            } else {
                depth = depth.saturating_sub(1);
            }
            brackets ^= bit;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time reading the block scanner replaces.
    fn deeper_than_bytewise(bytes: &[u8], limit: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in bytes {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    fn max_depth(bytes: &[u8]) -> usize {
        (0..).find(|&d| !deeper_than(bytes, d)).unwrap_or(0)
    }

    #[test]
    fn counts_brackets_outside_strings_only() {
        assert_eq!(max_depth(b""), 0);
        assert_eq!(max_depth(b"{\"a\":[1,{\"b\":[]}]}"), 4);
        assert_eq!(max_depth(b"{\"a\":\"[[[{{{\"}"), 1);
        assert_eq!(max_depth(br#"{"a":"\"[[[","b":[[]]}"#), 3);
        assert_eq!(max_depth(br#"{"a":"\\","b":[[]]}"#), 3);
        assert_eq!(max_depth(br#"{"a":"\\\"[[","b":[]}"#), 2);
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert_eq!(max_depth(deep.as_bytes()), 300);
        // Strings and escapes that straddle the 64-byte blocks.
        for pad in 0..130 {
            let text = format!(
                "{{\"{}\":\"{}\\\\\\\"[[[\\\\\",\"k\":[[{{}}]]}}",
                "x".repeat(pad),
                "\\\\".repeat(pad % 7)
            );
            assert_eq!(max_depth(text.as_bytes()), 4, "{text}");
        }
    }

    /// JSON values nested to random depths, with strings full of brackets,
    /// quotes and backslashes.
    fn json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("1".to_owned()),
            Just("null".to_owned()),
            "[\\[\\]{}a\"\\\\ ]{0,80}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(40, 400, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z\\[\"]{0,6}", inner), 0..6).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn masks_agree_with_bytewise(block in prop::array::uniform32(any::<u8>()), other in prop::array::uniform32(prop::sample::select(b"{}[]\\\"a;{".to_vec()))) {
            let mut whole = [0u8; 64];
            whole[..32].copy_from_slice(&block);
            whole[32..].copy_from_slice(&other);
            prop_assert_eq!(masks(&whole), masks_bytewise(&whole));
        }

        #[test]
        fn agrees_with_bytewise_on_json(text in json(), limit in 0usize..48) {
            prop_assert_eq!(
                deeper_than(text.as_bytes(), limit),
                deeper_than_bytewise(text.as_bytes(), limit)
            );
        }

        /// Arbitrary text without backslashes outside strings (where JSON
        /// has none, and the two readings may differ).
        #[test]
        fn agrees_with_bytewise_on_noise(text in "[\\[\\]{}\"a ]{0,300}", limit in 0usize..20) {
            prop_assert_eq!(
                deeper_than(text.as_bytes(), limit),
                deeper_than_bytewise(text.as_bytes(), limit)
            );
        }
    }
}
