//! Prompts in words no Moving Shapes caption has: other colour words, other nouns, other
//! motion phrases, each meaning one colour, shape or direction of the spec. A model that
//! reads prompts through a pretrained text encoder can be judged on them as on its own
//! captions; a model with its own vocabulary refuses them.

use crate::shapes::{Colour, Composition, Direction, Shape, vocabulary};

/// Two unseen words for each colour of the palette.
pub fn colour_words(colour: Colour) -> [&'static str; 2] {
    match colour {
        Colour::Red => ["crimson", "scarlet"],
        Colour::Green => ["emerald", "jade"],
        Colour::Blue => ["cobalt", "sapphire"],
        Colour::Yellow => ["golden", "lemon"],
        Colour::Magenta => ["fuchsia", "pink"],
        Colour::Cyan => ["turquoise", "aqua"],
    }
}

/// Two unseen nouns for each shape.
pub fn shape_words(shape: Shape) -> [&'static str; 2] {
    match shape {
        Shape::Circle => ["globe", "orb"],
        Shape::Square => ["tile", "slab"],
        Shape::Triangle => ["wedge", "pyramid"],
    }
}

/// Two unseen motion phrases for each direction.
pub fn motion_phrases(direction: Direction) -> [&'static str; 2] {
    match direction {
        Direction::Left => ["gliding west", "travelling westward"],
        Direction::Right => ["gliding east", "travelling eastward"],
        Direction::Up => ["rising", "climbing north"],
        Direction::Down => ["falling", "sinking south"],
    }
}

/// The sentence templates of unseen-word prompts.
pub const UNSEEN_TEMPLATES: [&str; 2] = [
    "a {colour} {shape} {motion}",
    "there is one {colour} {shape} {motion}",
];

/// Prompts per composition.
pub const UNSEEN_PROMPTS_PER_COMPOSITION: usize = 2;

/// One unseen-word prompt and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnseenPrompt {
    /// The composition the prompt means.
    pub composition: Composition,
    /// The prompt.
    pub prompt: String,
    /// The words it is measured by: `colour: …`, `noun: …`, `motion: …`, `template: …`.
    pub groups: [String; 4],
}

/// The unseen-word prompts of every composition, [`UNSEEN_PROMPTS_PER_COMPOSITION`] each:
/// prompt `k` of composition `i` takes word `(i + k) mod 2` of its colour,
/// `(i / 2 + k) mod 2` of its noun and `(i / 3 + k) mod 2` of its motion, and template
/// `(i / 6 + k) mod 2`, so every word and template is asked for about equally often.
pub fn unseen_prompts() -> Vec<UnseenPrompt> {
    let mut prompts = Vec::new();
    for composition in Composition::all() {
        let i = composition.index();
        for k in 0..UNSEEN_PROMPTS_PER_COMPOSITION {
            let colour = colour_words(composition.colour)[(i + k) % 2];
            let shape = shape_words(composition.shape)[(i / 2 + k) % 2];
            let motion = motion_phrases(composition.direction)[(i / 3 + k) % 2];
            let template = UNSEEN_TEMPLATES[(i / 6 + k) % 2];
            let prompt = template
                .replace("{colour}", colour)
                .replace("{shape}", shape)
                .replace("{motion}", motion);
            prompts.push(UnseenPrompt {
                composition,
                prompt,
                groups: [
                    format!("colour: {colour}"),
                    format!("noun: {shape}"),
                    format!("motion: {motion}"),
                    format!("template: {template}"),
                ],
            });
        }
    }
    prompts
}

/// Every word of the unseen-word prompts that no Moving Shapes caption has.
pub fn unseen_words() -> Vec<&'static str> {
    let known = vocabulary();
    let mut words: Vec<&'static str> = Colour::ALL
        .iter()
        .flat_map(|&c| colour_words(c))
        .chain(Shape::ALL.iter().flat_map(|&s| shape_words(s)))
        .chain(
            Direction::ALL
                .iter()
                .flat_map(|&d| motion_phrases(d))
                .flat_map(str::split_whitespace),
        )
        .chain(UNSEEN_TEMPLATES.iter().flat_map(|t| t.split_whitespace()))
        .filter(|w| !w.starts_with('{') && !known.contains(w))
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meaning_words_are_all_unseen() {
        let known = vocabulary();
        for colour in Colour::ALL {
            for w in colour_words(colour) {
                assert!(!known.contains(&w), "{w}");
            }
        }
        for shape in Shape::ALL {
            for w in shape_words(shape) {
                assert!(!known.contains(&w), "{w}");
            }
        }
        // Every motion phrase has at least one word no caption has, and names no direction
        // the captions use.
        for direction in Direction::ALL {
            for phrase in motion_phrases(direction) {
                assert!(
                    phrase.split_whitespace().all(|w| !known.contains(&w)),
                    "{phrase}"
                );
            }
        }
        assert_eq!(unseen_words().len(), 12 + 6 + 12 + 2);
    }

    #[test]
    fn every_composition_has_its_prompts_and_the_words_are_balanced() {
        let prompts = unseen_prompts();
        assert_eq!(prompts.len(), 72 * UNSEEN_PROMPTS_PER_COMPOSITION);
        assert_eq!(prompts[0].prompt, "a crimson globe gliding west");
        assert_eq!(
            prompts[1].prompt,
            "there is one scarlet orb travelling westward"
        );
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for p in &prompts {
            for g in &p.groups {
                *counts.entry(g.as_str()).or_default() += 1;
            }
        }
        for (group, count) in counts {
            let expected = match group.split(':').next().unwrap() {
                "colour" => 12,
                "noun" => 24,
                "motion" => 18,
                _ => 72,
            };
            assert_eq!(count, expected, "{group}");
        }
    }
}
