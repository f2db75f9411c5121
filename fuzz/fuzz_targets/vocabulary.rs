//! A checkpoint's `vocab.json`: any bytes give a tokenizer or an error, never a
//! panic, and a tokenizer it gives encodes its own words.
#![no_main]

use dit_model::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tokenizer) = Tokenizer::from_json(text) {
        let words = tokenizer.words().to_vec();
        for word in words.iter().take(8) {
            let _ = tokenizer.encode(word, 4);
        }
    }
});
