//! Word tokenizer over a closed vocabulary.
//!
//! Prompts are lower-cased and stripped of punctuation, then split on white
//! space. Every word must be in the vocabulary: an unknown word is an error that
//! names it and lists the known words, because silently dropping it would
//! generate a video of a different prompt.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Id of the padding token; word ids start at 1.
pub const PAD_ID: usize = 0;

/// Why a prompt could not be tokenized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizeError {
    /// The prompt holds no word once punctuation is removed.
    #[error("the prompt is empty (it has no words once punctuation is removed)")]
    Empty,
    /// The prompt has more words than the text encoder reads.
    #[error("the prompt has {words} words, at most {max} are allowed")]
    TooLong {
        /// Words in the prompt.
        words: usize,
        /// Longest prompt the encoder reads.
        max: usize,
    },
    /// Words outside the vocabulary.
    #[error("unknown word(s) {}; known words: {}", quoted(.unknown), .known.join(", "))]
    UnknownWords {
        /// The unknown words, in prompt order, without repeats.
        unknown: Vec<String>,
        /// The whole vocabulary, sorted.
        known: Vec<String>,
    },
}

fn quoted(words: &[String]) -> String {
    let shown: Vec<String> = words.iter().take(8).map(|w| format!("{w:?}")).collect();
    let more = words.len().saturating_sub(8);
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Maps prompts to word ids (`1..=vocab_size`), padded with [`PAD_ID`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokenizer {
    words: Vec<String>,
    #[serde(skip)]
    ids: BTreeMap<String, usize>,
}

impl Tokenizer {
    /// Builds a tokenizer from a word list; duplicates are removed, order is kept.
    pub fn new<S: AsRef<str>>(words: &[S]) -> Self {
        let mut unique: Vec<String> = Vec::new();
        for word in words {
            let word = word.as_ref().to_lowercase();
            if !word.is_empty() && !unique.contains(&word) {
                unique.push(word);
            }
        }
        let ids = Self::index(&unique);
        Self { words: unique, ids }
    }

    fn index(words: &[String]) -> BTreeMap<String, usize> {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i + 1))
            .collect()
    }

    /// Reads a tokenizer saved by [`Tokenizer::to_json`].
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let mut tokenizer: Tokenizer = serde_json::from_str(json)?;
        tokenizer.ids = Self::index(&tokenizer.words);
        Ok(tokenizer)
    }

    /// The vocabulary as JSON (`{"words": [...]}`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a word list always serializes")
    }

    /// Number of ids the embedding table needs: the words plus padding.
    pub fn num_ids(&self) -> usize {
        self.words.len() + 1
    }

    /// The words, in id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Normalises a prompt into words: lower case, ASCII punctuation removed.
    pub fn split_words(prompt: &str) -> Vec<String> {
        prompt
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_punctuation() { ' ' } else { c })
            .collect::<String>()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Word ids of `prompt`, at most `max_len` of them.
    pub fn encode(&self, prompt: &str, max_len: usize) -> Result<Vec<usize>, TokenizeError> {
        let words = Self::split_words(prompt);
        if words.is_empty() {
            return Err(TokenizeError::Empty);
        }
        let mut unknown: Vec<String> = Vec::new();
        let ids: Vec<usize> = words
            .iter()
            .map(|w| match self.ids.get(w) {
                Some(&id) => id,
                None => {
                    if !unknown.contains(w) {
                        unknown.push(w.clone());
                    }
                    PAD_ID
                }
            })
            .collect();
        if !unknown.is_empty() {
            let mut known = self.words.clone();
            known.sort();
            return Err(TokenizeError::UnknownWords { unknown, known });
        }
        if ids.len() > max_len {
            return Err(TokenizeError::TooLong {
                words: ids.len(),
                max: max_len,
            });
        }
        Ok(ids)
    }

    /// Word ids of `prompt`, right-padded with [`PAD_ID`] to exactly `max_len`.
    pub fn encode_padded(&self, prompt: &str, max_len: usize) -> Result<Vec<usize>, TokenizeError> {
        let mut ids = self.encode(prompt, max_len)?;
        ids.resize(max_len, PAD_ID);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        Tokenizer::new(&["a", "red", "circle", "moving", "to", "the", "left"])
    }

    #[test]
    fn ids_start_after_padding_and_ignore_case_and_punctuation() {
        let t = tokenizer();
        assert_eq!(t.encode("A red, circle!", 8).unwrap(), vec![1, 2, 3]);
        assert_eq!(t.encode_padded("red circle", 4).unwrap(), vec![2, 3, 0, 0]);
        assert_eq!(t.num_ids(), 8);
    }

    #[test]
    fn unknown_words_are_named_with_the_vocabulary() {
        let err = tokenizer().encode("a purple circle 🚀", 8).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"purple\""), "{text}");
        assert!(text.contains("\"🚀\""), "{text}");
        assert!(text.contains("known words: a, circle, left"), "{text}");
    }

    #[test]
    fn empty_and_too_long_prompts_are_errors() {
        let t = tokenizer();
        assert_eq!(t.encode("  ?!. ", 8), Err(TokenizeError::Empty));
        assert_eq!(
            t.encode("a a a a a", 4),
            Err(TokenizeError::TooLong { words: 5, max: 4 })
        );
    }

    #[test]
    fn json_round_trip_keeps_ids() {
        let t = tokenizer();
        let back = Tokenizer::from_json(&t.to_json()).unwrap();
        assert_eq!(
            back.encode("the left", 4).unwrap(),
            t.encode("the left", 4).unwrap()
        );
    }
}
