//! The IDX reader (Fashion-MNIST's format): any bytes, gzipped or not, give images or a
//! `DataError`, never a panic, and never an allocation beyond the limit or what the input
//! decompresses to (run with `-rss_limit_mb=2048`).
#![no_main]

use std::path::Path;

use dit_data::idx::images_from_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(images) = images_from_bytes(data, Path::new("fuzz.idx")) {
        assert_eq!(
            images.pixels.len(),
            images.count * images.rows * images.columns
        );
    }
});
