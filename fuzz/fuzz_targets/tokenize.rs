//! Prompt tokenisation: any text gives word ids or an error, never a panic, and
//! the ids it gives are in the vocabulary and exactly `MAX_CAPTION_WORDS` long.
#![no_main]

use std::sync::LazyLock;

use dit_data::shapes::{MAX_CAPTION_WORDS, vocabulary};
use dit_model::tokenizer::{PAD_ID, Tokenizer};
use libfuzzer_sys::fuzz_target;

static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(|| Tokenizer::new(&vocabulary()));

fuzz_target!(|data: &[u8]| {
    let prompt = String::from_utf8_lossy(data);
    let tokenizer = &*TOKENIZER;
    if let Ok(ids) = tokenizer.encode_padded(&prompt, MAX_CAPTION_WORDS) {
        assert_eq!(ids.len(), MAX_CAPTION_WORDS);
        assert!(ids.iter().all(|&id| id < tokenizer.num_ids()));
        assert_ne!(ids[0], PAD_ID, "an accepted prompt has at least one word");
    }
    // Caption parsing (used to judge and to split the data) must not panic either.
    let _ = dit_data::Composition::parse_caption(&prompt);
});
