//! The PNG frame reader: any bytes give a frame or a `DataError`, never a panic, and never
//! more memory than one canvas of the size limit (run with `-rss_limit_mb=2048`).
#![no_main]

use std::path::Path;

use dit_data::video::png_from_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(clip) = png_from_bytes(data, Path::new("fuzz.png"), 16) {
        assert_eq!((clip.frames, clip.height, clip.width), (1, 16, 16));
    }
});
