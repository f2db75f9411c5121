//! The MP4 reader on files the project did not write: x264's output at each common H.264
//! profile, with and without B-frames (`tests/fixtures/mp4`, made by
//! `scripts/make-mp4-fixtures.sh`), compared with the frames ffmpeg decodes from them; and
//! damaged files of every kind that once hung, aborted or panicked a reader, each a one-line
//! error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dit_data::video::{mp4_from_bytes, read_clip};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mp4")
        .join(name)
}

/// Frames of each fixture (16 at 64×64, 8 a second).
const FRAMES: usize = 16;
const SIDE: usize = 64;

/// PSNR in dB of two equally long byte buffers.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

#[test]
fn x264_output_of_every_common_profile_decodes_as_ffmpeg_decodes_it() {
    for (clip, reference) in [
        ("baseline", "baseline"),
        ("main", "main"),
        ("main-bframes", "main-bframes"),
        ("high", "high"),
        ("high-bframes", "high-bframes"),
        ("high-bframes-faststart", "high-bframes"),
    ] {
        let path = fixture(&format!("{clip}.mp4"));
        let ours = read_clip(&path, FRAMES, SIDE).unwrap_or_else(|e| panic!("{clip}: {e}"));
        // ffmpeg's frames, stacked top to bottom: the same layout as a clip's pixels.
        let theirs = image::open(fixture(&format!("{reference}.frames.png")))
            .unwrap()
            .into_rgb8();
        assert_eq!(theirs.dimensions(), (SIDE as u32, (FRAMES * SIDE) as u32));
        let frame = SIDE * SIDE * 3;
        let mut lowest = f64::INFINITY;
        for (f, (a, b)) in ours
            .pixels
            .chunks_exact(frame)
            .zip(theirs.as_raw().chunks_exact(frame))
            .enumerate()
        {
            let db = psnr(a, b);
            assert!(db >= 40.0, "{clip}: frame {f} is {db:.1} dB from ffmpeg's");
            lowest = lowest.min(db);
        }
        eprintln!("{clip}: every frame ≥ {lowest:.1} dB from ffmpeg's");
        // Every frame, no more: the decoder's held-back frames are flushed once, at the end.
        let err = read_clip(&path, FRAMES + 1, SIDE).unwrap_err().to_string();
        assert!(err.contains("has 16 frames"), "{clip}: {err}");
    }
}

#[test]
fn profiles_openh264_cannot_decode_are_named_with_a_conversion() {
    for (clip, profile) in [("high444", "High 4:4:4 Predictive"), ("high10", "High 10")] {
        let err = read_clip(&fixture(&format!("{clip}.mp4")), FRAMES, SIDE)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{clip}.mp4"))
                && err.contains(&format!("{profile} profile"))
                && err.contains("ffmpeg -i")
                && !err.contains('\n'),
            "{err}"
        );
    }
}

/// The byte offset of the first box of type `kind` in `bytes` (its size field).
fn find_box(bytes: &[u8], kind: &[u8; 4]) -> usize {
    bytes
        .windows(4)
        .position(|w| w == kind)
        .unwrap_or_else(|| panic!("no {} box", String::from_utf8_lossy(kind)))
        - 4
}

fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Reads `bytes` as an MP4 file, within 10 s; the error it must give.
fn read_err(bytes: &[u8]) -> String {
    let start = Instant::now();
    let err = mp4_from_bytes(bytes, Path::new("damaged.mp4"), 4, 16)
        .map(|_| ())
        .expect_err("a damaged file was read")
        .to_string();
    assert!(start.elapsed() < Duration::from_secs(10), "{err}");
    assert!(err.contains("damaged.mp4") && !err.contains('\n'), "{err}");
    err
}

#[test]
fn damaged_indexes_are_one_line_errors() {
    let good = std::fs::read(fixture("high-bframes.mp4")).unwrap();
    assert!(mp4_from_bytes(&good, Path::new("good.mp4"), 4, 16).is_ok());
    let edited = |at: usize, value: u32| {
        let mut bytes = good.clone();
        set_u32(&mut bytes, at, value);
        bytes
    };
    let (stsd, stsz, stsc, stco) = (
        find_box(&good, b"stsd"),
        find_box(&good, b"stsz"),
        find_box(&good, b"stsc"),
        find_box(&good, b"stco"),
    );

    // A child box of size 0 (it runs to its parent's end, swallowing the tables after it).
    let err = read_err(&edited(stsd, 0));
    assert!(err.contains("no `stsz` box"), "{err}");
    // A child box that runs past its parent.
    let err = read_err(&edited(find_box(&good, b"trak"), 1 << 30));
    assert!(err.contains("box `trak`") && err.contains("only"), "{err}");
    // A sample of 4 GB in a 10 KB file (stsz's first entry).
    let err = read_err(&edited(stsz + 20, u32::MAX - 15));
    assert!(
        err.contains("frame 1 lies past the end of the file"),
        "{err}"
    );
    // Every sample 4 GB (stsz's common size).
    let err = read_err(&edited(stsz + 12, u32::MAX));
    assert!(err.contains("lies past the end of the file"), "{err}");
    // 2³²−1 sample sizes claimed by a box of 84 bytes.
    let err = read_err(&edited(stsz + 16, u32::MAX));
    assert!(err.contains("`stsz` declares 4294967295 entries"), "{err}");
    // 20,000 samples of one size, over the readers' frame limit.
    let mut many = edited(stsz + 12, 1);
    set_u32(&mut many, stsz + 16, 20_000);
    let err = read_err(&many);
    assert!(
        err.contains("a clip of 20000 frames is over the limit of 10000 frames"),
        "{err}"
    );
    // A sample-to-chunk table of no entries, and of 2³¹ entries.
    let err = read_err(&edited(stsc + 12, 0));
    assert!(err.contains("places 0 of the 16 samples"), "{err}");
    let err = read_err(&edited(stsc + 12, 1 << 31));
    assert!(err.contains("`stsc` declares 2147483648 entries"), "{err}");
    // A run that starts at chunk 0, and one past the last chunk.
    let err = read_err(&edited(stsc + 16, 0));
    assert!(err.contains("starts at chunk 0"), "{err}");
    let err = read_err(&edited(stsc + 16, 65_536));
    assert!(err.contains("starts at chunk 65536"), "{err}");
    // A chunk offset past the end of the file.
    let err = read_err(&edited(stco + 16, u32::MAX));
    assert!(err.contains("lies past the end of the file"), "{err}");
    // No index at all, and a file cut short.
    let moov = find_box(&good, b"moov");
    let err = read_err(&good[..moov]);
    assert!(err.contains("no `moov` box"), "{err}");
    let err = read_err(&good[..moov + 100]);
    assert!(err.contains("box `moov`") && err.contains("only"), "{err}");
}

#[test]
fn box_sizes_of_every_form_are_read() {
    let good = std::fs::read(fixture("high-bframes.mp4")).unwrap();
    let read = |bytes: &[u8]| mp4_from_bytes(bytes, Path::new("boxes.mp4"), FRAMES, SIDE);
    let reference = read(&good).unwrap();
    // A box with a 64-bit size before the index (sizes of 1 say one follows the type), and a
    // last box of size 0 (it runs to the end of the file).
    let moov = find_box(&good, b"moov");
    let mut bytes = good[..moov].to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 1, b'f', b'r', b'e', b'e']);
    bytes.extend_from_slice(&24u64.to_be_bytes());
    bytes.extend_from_slice(&[7; 8]);
    bytes.extend_from_slice(&good[moov..]);
    bytes.extend_from_slice(&[0, 0, 0, 0, b'f', b'r', b'e', b'e', 1, 2, 3]);
    assert_eq!(read(&bytes).unwrap().pixels, reference.pixels);
    // Bytes after the last box that cannot be a box.
    let mut stray = good.clone();
    stray.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
    let err = read_err(&stray);
    assert!(err.contains("7 stray bytes"), "{err}");
    // A fragmented file: refused with the command that remuxes it.
    let fragmented = std::fs::read(fixture("fragmented.mp4")).unwrap();
    let err = read_err(&fragmented);
    assert!(
        err.contains("fragmented") && err.contains("-c copy"),
        "{err}"
    );
}

#[test]
fn any_32_bit_field_of_the_index_gives_a_clip_or_an_error() {
    // The mutations that once hung, aborted or panicked the reader, at every aligned place
    // of the index (and a few unaligned ones): each returns within the time limit.
    let good = std::fs::read(fixture("high-bframes.mp4")).unwrap();
    let moov = find_box(&good, b"moov");
    let start = Instant::now();
    let mut errors = 0;
    for at in (moov..good.len() - 4)
        .step_by(4)
        .chain((moov + 1..moov + 64).step_by(4))
    {
        for value in [0, u32::MAX, 1 << 31, 65_536] {
            let mut bytes = good.clone();
            set_u32(&mut bytes, at, value);
            match mp4_from_bytes(&bytes, Path::new("damaged.mp4"), 4, 16) {
                Ok(clip) => assert_eq!((clip.frames, clip.height, clip.width), (4, 16, 16)),
                Err(e) => {
                    assert!(!e.to_string().contains('\n'), "{e}");
                    errors += 1;
                }
            }
        }
    }
    assert!(errors > 100, "{errors} errors");
    assert!(start.elapsed() < Duration::from_secs(120));
}

#[test]
fn the_fuzzers_corpus_gives_clips_or_one_line_errors() {
    // Inputs the MP4 fuzz target found new paths with (`scripts/fuzz.sh 660 mp4`), kept as a
    // regression corpus: the small, mutated ones.
    let mut files = 0;
    for entry in std::fs::read_dir(fixture("fuzz")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let start = Instant::now();
        match mp4_from_bytes(&bytes, &path, 2, 16) {
            Ok(clip) => assert_eq!((clip.frames, clip.height, clip.width), (2, 16, 16)),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    !e.contains('\n') && e.contains(&*path.to_string_lossy()),
                    "{e}"
                );
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            path.display()
        );
        files += 1;
    }
    assert!(files >= 50, "{files} files");
}
