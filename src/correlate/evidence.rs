//! Compact evidence: what the correlator keeps of each contributing event
//! until a finding cites it. A CloudTrail or Azure event id (a UUID) is kept
//! as 16 bytes, short ids (GCP `insertId`) inline, and the source position as
//! an interned name plus two numbers, so keeping an event costs 56 bytes and
//! no heap allocation on the common path.

use std::fmt::Write as _;
use std::sync::RwLock;

use dashmap::DashMap;

use crate::detect::finding::{Evidence, SourceRef};
use crate::event::EventId;

/// An event id, compacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvId {
    Hash(u64),
    /// A lower-case canonical UUID, as 16 bytes.
    Uuid([u8; 16]),
    /// Up to 22 bytes, inline.
    Short(u8, [u8; 22]),
    Long(Box<str>),
}

impl EvId {
    pub fn of(id: &EventId<'_>) -> EvId {
        match id {
            EventId::Hash(h) => EvId::Hash(*h),
            EventId::Native(text) => {
                if let Some(bytes) = parse_uuid(text) {
                    EvId::Uuid(bytes)
                } else if text.len() <= 22 {
                    let mut buf = [0u8; 22];
                    buf[..text.len()].copy_from_slice(text.as_bytes());
                    EvId::Short(text.len() as u8, buf)
                } else {
                    EvId::Long(text.as_ref().into())
                }
            }
        }
    }

    pub fn render(&self) -> String {
        match self {
            EvId::Hash(h) => format!("h:{h:016x}"),
            EvId::Uuid(bytes) => {
                let mut s = String::with_capacity(36);
                for (i, b) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        s.push('-');
                    }
                    let _ = write!(s, "{b:02x}");
                }
                s
            }
            // Built from a `&str` cut at its length: valid UTF-8.
            EvId::Short(len, buf) => String::from_utf8_lossy(&buf[..*len as usize]).into_owned(),
            EvId::Long(text) => text.to_string(),
        }
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower case, or `None`.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    // Lower-case hex digits only: an upper-case id would not render back
    // as it was written, so it is kept as text.
    const HEX: [u8; 256] = {
        let mut t = [0xff; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    // Where each of the 16 bytes' two digits start.
    const AT: [u8; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [0u8; 16];
    let mut bad = 0u8;
    for (byte, &at) in out.iter_mut().zip(&AT) {
        let (hi, lo) = (
            HEX[b[at as usize] as usize],
            HEX[b[at as usize + 1] as usize],
        );
        bad |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(out)
}

const KIND_SHIFT: u32 = 30;
const KIND_FILE: u32 = 1;
const KIND_KAFKA: u32 = 2;

/// A source position: interned file or topic name (kind in the top bits),
/// and two numbers (line and index, or partition and offset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Src {
    name: u32,
    a: u32,
    b: u64,
}

impl Src {
    /// The same name with the position of `source` (of the same kind).
    pub fn with_position(self, source: SourceRef<'_>) -> Src {
        match source {
            SourceRef::File { line, index, .. } => Src {
                a: index,
                b: line,
                ..self
            },
            SourceRef::Kafka {
                partition, offset, ..
            } => Src {
                a: partition as u32,
                b: offset as u64,
                ..self
            },
            SourceRef::Unknown => self,
        }
    }
}

/// Interned source names (files, topics): few, long-lived.
#[derive(Debug, Default)]
pub struct Names {
    ids: DashMap<Box<str>, u32>,
    names: RwLock<Vec<Box<str>>>,
}

impl Names {
    fn intern(&self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        *self.ids.entry(name.into()).or_insert_with(|| {
            names.push(name.into());
            (names.len() - 1) as u32
        })
    }

    pub fn src(&self, source: SourceRef<'_>) -> Src {
        match source {
            SourceRef::File { path, line, index } => Src {
                name: self.intern(path) | (KIND_FILE << KIND_SHIFT),
                a: index,
                b: line,
            },
            SourceRef::Kafka {
                topic,
                partition,
                offset,
            } => Src {
                name: self.intern(topic) | (KIND_KAFKA << KIND_SHIFT),
                a: partition as u32,
                b: offset as u64,
            },
            SourceRef::Unknown => Src {
                name: 0,
                a: 0,
                b: 0,
            },
        }
    }

    pub fn render(&self, src: Src) -> String {
        let kind = src.name >> KIND_SHIFT;
        let id = (src.name & ((1 << KIND_SHIFT) - 1)) as usize;
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let name = names.get(id).map(|n| &**n).unwrap_or("?");
        let source = match kind {
            KIND_FILE => SourceRef::File {
                path: name,
                line: src.b,
                index: src.a,
            },
            KIND_KAFKA => SourceRef::Kafka {
                topic: name,
                partition: src.a as i32,
                offset: src.b as i64,
            },
            _ => SourceRef::Unknown,
        };
        source.to_string()
    }
}

/// One contributing event.
#[derive(Clone, Debug)]
pub struct Ev {
    /// Event time, ms since the epoch.
    pub time: i64,
    /// Hash of the counted (distinct) or compared (differ) field; 0 if absent.
    pub value: u64,
    pub id: EvId,
    pub src: Src,
}

impl Ev {
    pub fn evidence(&self, names: &Names) -> Evidence {
        Evidence {
            event_id: self.id.render(),
            source: names.render(self.src),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn ids_round_trip_in_every_form() {
        for text in [
            "3038ebd2-c98a-4c65-9b6e-e22506292313",
            "3038EBD2-C98A-4C65-9B6E-E22506292313",
            "1abcd2e3f4g5",
            "a-much-longer-identifier-than-twenty-two-bytes",
            "",
        ] {
            let id = EvId::of(&EventId::Native(Cow::Borrowed(text)));
            assert_eq!(id.render(), text);
        }
        assert!(matches!(
            EvId::of(&EventId::Native(Cow::Borrowed(
                "3038ebd2-c98a-4c65-9b6e-e22506292313"
            ))),
            EvId::Uuid(_)
        ));
        assert_eq!(
            EvId::of(&EventId::Hash(0xab)).render(),
            "h:00000000000000ab"
        );
        assert_eq!(std::mem::size_of::<Ev>(), 56);
    }

    #[test]
    fn an_id_one_character_off_a_uuid_stays_text() {
        let uuid = "3038ebd2-c98a-4c65-9b6e-e22506292313";
        for at in 0..uuid.len() {
            for c in ['g', 'A', 'F', '-', '/', ':', '`', '0'] {
                if uuid.as_bytes()[at] == c as u8 {
                    continue;
                }
                let mut text = uuid.to_owned();
                text.replace_range(at..=at, c.encode_utf8(&mut [0; 4]));
                let id = EvId::of(&EventId::Native(Cow::Borrowed(&text)));
                let valid = c == '0' && uuid.as_bytes()[at] != b'-';
                assert_eq!(matches!(id, EvId::Uuid(_)), valid, "{text}");
                assert_eq!(id.render(), text);
            }
        }
    }

    #[test]
    fn sources_render_as_the_finding_would() {
        let names = Names::default();
        let file = names.src(SourceRef::File {
            path: "a.json",
            line: 7,
            index: 2,
        });
        let kafka = names.src(SourceRef::Kafka {
            topic: "cloudtrail",
            partition: 3,
            offset: 99,
        });
        assert_eq!(names.render(file), "a.json:7#2");
        assert_eq!(names.render(kafka), "kafka:cloudtrail/3@99");
        assert_eq!(names.render(names.src(SourceRef::Unknown)), "unknown");
    }
}
