//! Write-ahead log positions and file names: LSNs, segment names, timeline
//! history files. Pure: no I/O.

use std::fmt;
use std::str::FromStr;

/// A WAL position (`pg_lsn`), printed the way PostgreSQL prints it: `16/B374D848`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("{s:?} is not an LSN (like 0/16B3748)");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A segment of one timeline: the unit archive_command is called with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    pub number: u64,
}

impl Segment {
    /// The segment holding `lsn`.
    pub fn of(timeline: u32, lsn: Lsn, segment_size: u64) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / segment_size,
        }
    }

    /// `000000010000000000000003`: timeline, then the segment number split at
    /// 4 GiB of WAL ("xlogid") as PostgreSQL's XLogFileName does.
    pub fn name(&self, segment_size: u64) -> String {
        let per_id = 0x1_0000_0000 / segment_size;
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_id,
            self.number % per_id
        )
    }

    pub fn next(&self) -> Segment {
        Segment {
            timeline: self.timeline,
            number: self.number + 1,
        }
    }

    /// The first LSN of the segment.
    pub fn start(&self, segment_size: u64) -> Lsn {
        Lsn(self.number * segment_size)
    }
}

/// What a file in the WAL archive is, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`; the number needs the segment size.
    Segment { timeline: u32, high: u32, low: u32 },
    /// `TTTTTTTT.history`
    History { timeline: u32 },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`: a backup history file.
    BackupHistory { timeline: u32 },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.partial`: the last, incomplete segment of a
    /// timeline a standby was promoted from.
    Partial { timeline: u32 },
}

fn hex8(s: &str) -> Option<u32> {
    // PostgreSQL writes upper-case hex digits only.
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

impl WalFile {
    /// Parse an archive file name; anything else (a path, `..`, lower case
    /// digits PostgreSQL never writes) is `None`.
    pub fn parse(name: &str) -> Option<WalFile> {
        let segment = |s: &str| -> Option<(u32, u32, u32)> {
            (s.len() == 24).then_some(())?;
            Some((hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?))
        };
        match name.split('.').collect::<Vec<_>>().as_slice() {
            [seg] => {
                let (timeline, high, low) = segment(seg)?;
                Some(WalFile::Segment {
                    timeline,
                    high,
                    low,
                })
            }
            [tli, "history"] => Some(WalFile::History {
                timeline: hex8(tli)?,
            }),
            [seg, off, "backup"] => {
                hex8(off)?;
                Some(WalFile::BackupHistory {
                    timeline: segment(seg)?.0,
                })
            }
            [seg, "partial"] => Some(WalFile::Partial {
                timeline: segment(seg)?.0,
            }),
            _ => None,
        }
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::History { timeline }
            | WalFile::BackupHistory { timeline }
            | WalFile::Partial { timeline } => timeline,
        }
    }

    /// The segment, for a segment's name.
    pub fn segment(&self, segment_size: u64) -> Option<Segment> {
        match *self {
            WalFile::Segment {
                timeline,
                high,
                low,
            } => {
                let per_id = 0x1_0000_0000 / segment_size;
                Some(Segment {
                    timeline,
                    number: u64::from(high) * per_id + u64::from(low),
                })
            }
            _ => None,
        }
    }
}

/// One line of a timeline history file: `parent` ended at `switch` and the
/// child timeline began there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineSwitch {
    pub parent: u32,
    pub switch: Lsn,
}

/// Parse `TTTTTTTT.history`: "parentTLI<TAB>switchpoint<TAB>reason" per line,
/// comments and blank lines ignored.
pub fn parse_history(text: &str) -> Result<Vec<TimelineSwitch>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (fields.next(), fields.next()) else {
            return Err(format!("malformed history line {line:?}"));
        };
        out.push(TimelineSwitch {
            parent: tli
                .parse()
                .map_err(|_| format!("malformed timeline in {line:?}"))?,
            switch: lsn.parse()?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 * 1024 * 1024;

    #[test]
    fn lsn_round_trips() {
        for s in ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "0/3000028"] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names_match_postgresql() {
        let lsn: Lsn = "1/2A000028".parse().unwrap();
        let seg = Segment::of(1, lsn, SEG);
        assert_eq!(seg.name(SEG), "00000001000000010000002A");
        assert_eq!(seg.next().name(SEG), "00000001000000010000002B");
        let last = Segment {
            timeline: 2,
            number: 255,
        };
        assert_eq!(last.name(SEG), "0000000200000000000000FF");
        assert_eq!(last.next().name(SEG), "000000020000000100000000");
        // 64 MiB segments: 64 per xlogid.
        let big = 64 * 1024 * 1024;
        assert_eq!(
            Segment::of(1, Lsn(0x1_0400_0000), big).name(big),
            "000000010000000100000001"
        );
    }

    #[test]
    fn archive_names_parse() {
        let f = WalFile::parse("00000002000000010000002A").unwrap();
        assert_eq!(
            f.segment(SEG),
            Some(Segment {
                timeline: 2,
                number: 256 + 42
            })
        );
        assert_eq!(
            WalFile::parse("00000003.history"),
            Some(WalFile::History { timeline: 3 })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup"),
            Some(WalFile::BackupHistory { timeline: 1 })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000009.partial"),
            Some(WalFile::Partial { timeline: 1 })
        );
        for bad in [
            "",
            "../etc/passwd",
            "00000001000000000000000",
            "00000001000000000000000a",
            "0000000100000000000000GG",
            "00000001.history.tmp",
            "RECOVERYXLOG",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn history_files_parse() {
        let h = parse_history(
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n",
        )
        .unwrap();
        assert_eq!(
            h,
            vec![
                TimelineSwitch {
                    parent: 1,
                    switch: "0/3000158".parse().unwrap()
                },
                TimelineSwitch {
                    parent: 2,
                    switch: "0/5000000".parse().unwrap()
                }
            ]
        );
        assert!(parse_history("1\n").is_err());
    }
}
