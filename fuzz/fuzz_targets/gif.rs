//! The GIF clip reader: any bytes give a clip or a `DataError`, never a panic, and never
//! more memory than one canvas of the size limit plus the kept frames (run with
//! `-rss_limit_mb=2048`).
#![no_main]

use std::path::Path;

use dit_data::video::gif_from_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(clip) = gif_from_bytes(data, Path::new("fuzz.gif"), 2, 16) {
        assert_eq!((clip.frames, clip.height, clip.width), (2, 16, 16));
    }
});
