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
            dest.copy_from_slice(bytes);
            dest.make_ascii_lowercase();
            len += bytes.len();
        }
        // Lower-casing ASCII bytes keeps UTF-8 valid.
        std::str::from_utf8(&buf[..len]).ok()
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
    }
}
