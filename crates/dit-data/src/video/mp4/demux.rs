//! The index of an MP4 file's first video track, read from untrusted bytes.
//!
//! An MP4 file (ISO/IEC 14496-12) is a sequence of boxes, each a 32-bit size (or 1 and a
//! 64-bit size after the type, or 0 for "to the end"), a four-letter type and its content;
//! some boxes hold boxes. The coded frames ("samples") lie in `mdat`; `moov` indexes them.
//! Per track (`trak` → `mdia` → `minf` → `stbl`) the index gives the sample description
//! (`stsd`: the codec's four-letter code; for H.264, `avc1` or `avc3`, the coded picture size
//! and the decoder configuration `avcC` with the parameter sets), each sample's size
//! (`stsz`), the file offset of each chunk of samples (`stco`, or `co64` for large files) and
//! how many samples each chunk holds (`stsc`). Samples are listed in decoding order.
//!
//! Everything here reads byte slices through bounds-checked cursors: every box must lie
//! inside its parent, every table's entry count must fit in its box, `moov` is read into
//! memory only once its size is checked against the file and [`MAX_INDEX_BYTES`], and every
//! sample must lie inside the file. Each loop consumes input, so no file makes the reader
//! spin, allocate more than it holds, or panic.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

/// Largest `moov` box read into memory: the index of a clip of [`super::super::MAX_FRAMES`]
/// frames takes well under 1 MiB.
pub(super) const MAX_INDEX_BYTES: u64 = 16 << 20;

/// Most boxes the file's top level may hold (real files have a handful: `ftyp`, `moov`,
/// `mdat`, `free`, …), so that a file of empty boxes cannot keep the reader seeking.
const MAX_TOP_LEVEL_BOXES: usize = 1024;

/// Why a file's index cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DemuxError {
    /// The file is not a well-formed MP4 file, or not one this reader takes.
    Malformed(String),
    /// The video track declares more samples than the readers take.
    TooManyFrames(u64),
}

impl DemuxError {
    fn new(reason: impl Into<String>) -> Self {
        Self::Malformed(reason.into())
    }
}

/// H.264's decoder configuration (`avcC`, ISO/IEC 14496-15 § 5.3.3).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AvcConfig {
    /// `profile_idc` of the sequence parameter set: 66 Baseline, 77 Main, 100 High, ….
    pub(super) profile: u8,
    /// Bytes of the length before each NAL unit in a sample: 1, 2 or 4.
    pub(super) nal_length_size: usize,
    /// The sequence and then the picture parameter sets, as NAL units.
    pub(super) parameter_sets: Vec<Vec<u8>>,
}

/// A video track's (first) sample description: how its samples are coded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SampleDescription {
    /// The four-letter code of the coding (`avc1`, `hvc1`, `av01`, …).
    pub(super) codec: String,
    /// Coded picture width and height in pixels.
    pub(super) size: (u16, u16),
    /// The H.264 decoder configuration, for `avc1` and `avc3` tracks.
    pub(super) avc: Option<AvcConfig>,
}

/// What the reader needs of the first video track.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct VideoTrack {
    /// How the samples are coded.
    pub(super) description: SampleDescription,
    /// Each sample's bytes in the file, in decoding order.
    pub(super) samples: Vec<Range<u64>>,
}

/// Reads the index of the first video track of the MP4 file in `reader` (`file_len` bytes),
/// refusing tracks of more than `max_samples` samples before their table is built.
pub(super) fn read_video_track(
    reader: &mut (impl Read + Seek),
    file_len: u64,
    max_samples: u64,
) -> Result<VideoTrack, DemuxError> {
    let (moov, fragmented) = read_moov(reader, file_len)?;
    let mut track = None;
    for child in Boxes::new(&moov) {
        let child = child?;
        if &child.kind == b"trak"
            && let Some(found) = video_track(child.body)?
        {
            track = Some(found);
            break;
        }
    }
    let track = track.ok_or_else(|| DemuxError::new("the MP4 file has no video track"))?;
    if fragmented && track.sizes.count() == 0 {
        return Err(DemuxError::new(
            "it is a fragmented MP4 file (its frames are indexed in `moof` boxes), which is not \
             read; remux it with `ffmpeg -i IN.mp4 -c copy OUT.mp4`",
        ));
    }
    let samples = track.sample_ranges(file_len, max_samples)?;
    Ok(VideoTrack {
        description: track.description,
        samples,
    })
}

/// The content of the file's `moov` box, after a walk over the top-level boxes that checks
/// each lies inside the file; and whether the file is fragmented (has `moof` boxes).
fn read_moov(
    reader: &mut (impl Read + Seek),
    file_len: u64,
) -> Result<(Vec<u8>, bool), DemuxError> {
    let io = |e: std::io::Error| DemuxError::new(format!("reading it failed: {e}"));
    let (mut offset, mut moov, mut fragmented) = (0u64, None, false);
    for boxes in 0.. {
        if offset >= file_len {
            break;
        }
        if boxes == MAX_TOP_LEVEL_BOXES {
            return Err(DemuxError::new(format!(
                "it has more than {MAX_TOP_LEVEL_BOXES} top-level boxes"
            )));
        }
        let mut head = [0u8; 16];
        let available = (file_len - offset).min(16) as usize;
        reader.seek(SeekFrom::Start(offset)).map_err(io)?;
        reader.read_exact(&mut head[..available]).map_err(io)?;
        let header = BoxHeader::parse(&head[..available], file_len - offset, offset)?;
        match &header.kind {
            b"moov" if moov.is_some() => return Err(DemuxError::new("it has two `moov` boxes")),
            b"moov" => moov = Some((offset + header.header_len, header.body_len())),
            b"moof" => fragmented = true,
            _ => {}
        }
        offset += header.len;
    }
    let Some((start, len)) = moov else {
        return Err(DemuxError::new(
            "it has no `moov` box (the index of its frames): not a complete MP4 file",
        ));
    };
    if len > MAX_INDEX_BYTES {
        return Err(DemuxError::new(format!(
            "its `moov` box of {len} bytes is over the limit of {MAX_INDEX_BYTES} bytes"
        )));
    }
    let mut body = vec![0; len as usize];
    reader.seek(SeekFrom::Start(start)).map_err(io)?;
    reader.read_exact(&mut body).map_err(io)?;
    Ok((body, fragmented))
}

/// A box's header: its type, the length of the header and of the whole box.
struct BoxHeader {
    kind: [u8; 4],
    header_len: u64,
    len: u64,
}

impl BoxHeader {
    /// Parses the header at the start of `head`, in a parent with `room` bytes left from the
    /// box's start (`offset` in the file or the parent, for errors).
    fn parse(head: &[u8], room: u64, offset: u64) -> Result<Self, DemuxError> {
        if head.len() < 8 {
            return Err(DemuxError::new(format!(
                "{} stray bytes at byte {offset}, too few for a box",
                head.len()
            )));
        }
        let mut cursor = Cursor::new(head, "box header");
        let size = cursor.u32()?;
        let kind: [u8; 4] = cursor.bytes(4)?.try_into().expect("4 bytes");
        let (header_len, len) = match size {
            0 => (8, room),
            1 => (16, cursor.u64()?),
            n => (8, u64::from(n)),
        };
        let name = String::from_utf8_lossy(&kind);
        if len < header_len {
            return Err(DemuxError::new(format!(
                "box `{name}` at byte {offset} declares {len} bytes, less than its header"
            )));
        }
        if len > room {
            return Err(DemuxError::new(format!(
                "box `{name}` at byte {offset} declares {len} bytes, but only {room} remain"
            )));
        }
        Ok(Self {
            kind,
            header_len,
            len,
        })
    }

    fn body_len(&self) -> u64 {
        self.len - self.header_len
    }
}

/// One box of an in-memory parent.
struct Mp4Box<'a> {
    kind: [u8; 4],
    body: &'a [u8],
}

/// The boxes that fill `bytes`, each checked to lie inside it.
struct Boxes<'a> {
    rest: &'a [u8],
    /// Where the next box starts in `bytes`, for errors.
    offset: u64,
}

impl<'a> Boxes<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            offset: 0,
        }
    }

    /// The first box of type `kind`, if any.
    fn find(self, kind: &[u8; 4]) -> Result<Option<&'a [u8]>, DemuxError> {
        for child in self {
            let child = child?;
            if &child.kind == kind {
                return Ok(Some(child.body));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Mp4Box<'a>, DemuxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let header = match BoxHeader::parse(self.rest, self.rest.len() as u64, self.offset) {
            Ok(header) => header,
            Err(e) => {
                self.rest = &[];
                return Some(Err(e));
            }
        };
        // Both lengths are at most `rest.len()`, checked by `parse`.
        let (whole, rest) = self.rest.split_at(header.len as usize);
        self.rest = rest;
        self.offset += header.len;
        Some(Ok(Mp4Box {
            kind: header.kind,
            body: &whole[header.header_len as usize..],
        }))
    }
}

/// A bounds-checked reader of big-endian fields; `what` names the box in errors.
struct Cursor<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { rest: bytes, what }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DemuxError> {
        if n > self.rest.len() {
            return Err(DemuxError::new(format!("its `{}` is truncated", self.what)));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DemuxError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DemuxError> {
        Ok(u16::from_be_bytes(
            self.bytes(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, DemuxError> {
        Ok(u32::from_be_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, DemuxError> {
        Ok(u64::from_be_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A table's entry count, checked to fit in the bytes left at `entry_len` bytes each.
    fn count(&mut self, entry_len: usize) -> Result<usize, DemuxError> {
        let count = self.u32()? as usize;
        if count > self.rest.len() / entry_len {
            return Err(DemuxError::new(format!(
                "its `{}` declares {count} entries of {entry_len} bytes in {} bytes",
                self.what,
                self.rest.len()
            )));
        }
        Ok(count)
    }
}

/// A video track's sample description and tables, before its samples are placed.
struct TrackIndex {
    description: SampleDescription,
    /// The samples' sizes.
    sizes: SampleSizes,
    /// Each chunk's offset in the file.
    chunk_offsets: Vec<u64>,
    /// `(first chunk, samples per chunk)` runs, chunks counted from 1.
    chunk_runs: Vec<(u32, u32)>,
}

/// The `stsz` table: one size for every sample, or a size each.
enum SampleSizes {
    Same { size: u32, count: u32 },
    Each(Vec<u32>),
}

impl SampleSizes {
    fn count(&self) -> u64 {
        match self {
            Self::Same { count, .. } => u64::from(*count),
            Self::Each(sizes) => sizes.len() as u64,
        }
    }

    fn get(&self, i: usize) -> u32 {
        match self {
            Self::Same { size, .. } => *size,
            Self::Each(sizes) => sizes[i],
        }
    }
}

/// The index of the track in `trak`'s content if it is a video track (handler `vide`).
fn video_track(trak: &[u8]) -> Result<Option<TrackIndex>, DemuxError> {
    let missing = |what: &str| DemuxError::new(format!("its video track has no `{what}` box"));
    let Some(mdia) = Boxes::new(trak).find(b"mdia")? else {
        return Ok(None);
    };
    let handler = match Boxes::new(mdia).find(b"hdlr")? {
        // Version and flags, pre_defined, then the handler type.
        Some(hdlr) => Cursor::new(hdlr, "hdlr").bytes(12)?[8..].to_vec(),
        None => return Ok(None),
    };
    if handler != b"vide" {
        return Ok(None);
    }
    let minf = Boxes::new(mdia)
        .find(b"minf")?
        .ok_or_else(|| missing("minf"))?;
    let stbl = Boxes::new(minf)
        .find(b"stbl")?
        .ok_or_else(|| missing("stbl"))?;
    let (mut description, mut sizes, mut offsets, mut runs) = (None, None, None, None);
    for child in Boxes::new(stbl) {
        let child = child?;
        match &child.kind {
            b"stsd" => description = Some(sample_description(child.body)?),
            b"stsz" => sizes = Some(sample_sizes(child.body)?),
            b"stco" => offsets = Some(chunk_offsets(child.body, false)?),
            b"co64" => offsets = Some(chunk_offsets(child.body, true)?),
            b"stsc" => runs = Some(chunk_runs(child.body)?),
            _ => {}
        }
    }
    Ok(Some(TrackIndex {
        description: description.ok_or_else(|| missing("stsd"))?,
        sizes: sizes.ok_or_else(|| missing("stsz"))?,
        chunk_offsets: offsets.ok_or_else(|| missing("stco"))?,
        chunk_runs: runs.ok_or_else(|| missing("stsc"))?,
    }))
}

/// The first sample description: its code, picture size and, for H.264, `avcC`.
fn sample_description(stsd: &[u8]) -> Result<SampleDescription, DemuxError> {
    let mut cursor = Cursor::new(stsd, "stsd");
    cursor.bytes(4)?; // version and flags
    cursor.count(8)?;
    let entry = Boxes::new(cursor.rest)
        .next()
        .ok_or_else(|| DemuxError::new("its video track has no sample description"))??;
    let codec = String::from_utf8_lossy(&entry.kind).into_owned();
    // A visual sample entry (ISO/IEC 14496-12 § 12.1.3): 6 reserved bytes, the data reference
    // index, 16 bytes, width, height, then 50 bytes before its own boxes.
    let mut fields = Cursor::new(entry.body, "visual sample entry");
    fields.bytes(24)?;
    let size = (fields.u16()?, fields.u16()?);
    fields.bytes(50)?;
    let avc = match &entry.kind {
        b"avc1" | b"avc3" => match Boxes::new(fields.rest).find(b"avcC")? {
            Some(avcc) => Some(avc_config(avcc)?),
            None => return Err(DemuxError::new("its H.264 track has no `avcC` box")),
        },
        _ => None,
    };
    Ok(SampleDescription { codec, size, avc })
}

/// Parses an `avcC` record.
fn avc_config(avcc: &[u8]) -> Result<AvcConfig, DemuxError> {
    let mut cursor = Cursor::new(avcc, "avcC");
    let version = cursor.u8()?;
    if version != 1 {
        return Err(DemuxError::new(format!(
            "its `avcC` has version {version}, not 1"
        )));
    }
    let profile = cursor.u8()?;
    cursor.bytes(2)?; // profile compatibility, level
    let nal_length_size = usize::from(cursor.u8()? & 0b11) + 1;
    if nal_length_size == 3 {
        return Err(DemuxError::new("its `avcC` declares 3-byte NAL lengths"));
    }
    let mut parameter_sets = Vec::new();
    for count_mask in [0x1F, 0xFF] {
        for _ in 0..cursor.u8()? & count_mask {
            let len = usize::from(cursor.u16()?);
            parameter_sets.push(cursor.bytes(len)?.to_vec());
        }
    }
    Ok(AvcConfig {
        profile,
        nal_length_size,
        parameter_sets,
    })
}

fn sample_sizes(stsz: &[u8]) -> Result<SampleSizes, DemuxError> {
    let mut cursor = Cursor::new(stsz, "stsz");
    cursor.bytes(4)?;
    let size = cursor.u32()?;
    if size != 0 {
        return Ok(SampleSizes::Same {
            size,
            count: cursor.u32()?,
        });
    }
    let count = cursor.count(4)?;
    (0..count)
        .map(|_| cursor.u32())
        .collect::<Result<_, _>>()
        .map(SampleSizes::Each)
}

fn chunk_offsets(table: &[u8], wide: bool) -> Result<Vec<u64>, DemuxError> {
    let mut cursor = Cursor::new(table, if wide { "co64" } else { "stco" });
    cursor.bytes(4)?;
    let count = cursor.count(if wide { 8 } else { 4 })?;
    (0..count)
        .map(|_| {
            if wide {
                cursor.u64()
            } else {
                cursor.u32().map(u64::from)
            }
        })
        .collect()
}

fn chunk_runs(stsc: &[u8]) -> Result<Vec<(u32, u32)>, DemuxError> {
    let mut cursor = Cursor::new(stsc, "stsc");
    cursor.bytes(4)?;
    let count = cursor.count(12)?;
    (0..count)
        .map(|_| {
            let run = (cursor.u32()?, cursor.u32()?);
            cursor.u32()?; // sample description index
            Ok(run)
        })
        .collect()
}

impl TrackIndex {
    /// Each sample's byte range, from the chunk tables, checked to lie inside the file.
    fn sample_ranges(
        &self,
        file_len: u64,
        max_samples: u64,
    ) -> Result<Vec<Range<u64>>, DemuxError> {
        let count = self.sizes.count();
        if count > max_samples {
            return Err(DemuxError::TooManyFrames(count));
        }
        let chunks = self.chunk_offsets.len() as u64;
        let mut samples = Vec::with_capacity(count as usize);
        for (i, &(first, per_chunk)) in self.chunk_runs.iter().enumerate() {
            let previous = i.checked_sub(1).map_or(0, |p| self.chunk_runs[p].0);
            if first <= previous || u64::from(first) > chunks {
                return Err(DemuxError::new(format!(
                    "its `stsc` entry {} starts at chunk {first}, after chunk {previous}, of {chunks}",
                    i + 1
                )));
            }
            let last = self.chunk_runs.get(i + 1).map_or(chunks, |next| {
                u64::from(next.0.saturating_sub(1)).min(chunks)
            });
            for chunk in u64::from(first)..=last {
                let mut offset = self.chunk_offsets[chunk as usize - 1];
                for _ in 0..per_chunk {
                    let sample = samples.len();
                    if sample as u64 == count {
                        return Err(DemuxError::new(format!(
                            "its `stsc` places more samples than the {count} of its `stsz`"
                        )));
                    }
                    let end = offset
                        .checked_add(u64::from(self.sizes.get(sample)))
                        .filter(|&end| end <= file_len)
                        .ok_or_else(|| {
                            DemuxError::new(format!(
                                "frame {} lies past the end of the file",
                                sample + 1
                            ))
                        })?;
                    samples.push(offset..end);
                    offset = end;
                }
            }
        }
        if (samples.len() as u64) < count {
            return Err(DemuxError::new(format!(
                "its `stsc` places {} of the {count} samples of its `stsz`",
                samples.len()
            )));
        }
        Ok(samples)
    }
}
