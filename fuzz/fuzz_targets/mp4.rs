//! The MP4 clip reader: any bytes give a clip or a `DataError` within the time limit (run
//! with `-timeout=10`), never a panic or an abort, and never an allocation beyond what the
//! file holds (run with `-rss_limit_mb=2048`, which also caps any single allocation).
#![no_main]

use std::path::Path;

use dit_data::video::mp4_from_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(clip) = mp4_from_bytes(data, Path::new("fuzz.mp4"), 2, 16) {
        assert_eq!((clip.frames, clip.height, clip.width), (2, 16, 16));
    }
});
