//! Kinds of clothing, compositions and captions of the Moving Fashion data set
//! (docs/moving-fashion.md): what a clip shows, in words.
//!
//! A composition is a Fashion-MNIST class (what), a colour of the Moving Shapes palette (how
//! it looks) and a direction (how it moves): 10 × 6 × 4 = 240. Two colour × direction pairs
//! of each class never appear in training ([`FashionComposition::is_held_out`]), so that
//! unseen combinations of known words can be measured, as Sync-DRAW does on Moving MNIST.

use dit_model::tokenizer::Tokenizer;
use rand::Rng;

use crate::shapes::{Colour, Direction, VERBS_ING, VERBS_S};

/// The ten kinds of clothing of Fashion-MNIST, in label order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Garment {
    /// Label 0, "T-shirt/top".
    Top,
    /// Label 1, "Trouser".
    Trousers,
    /// Label 2, "Pullover".
    Pullover,
    /// Label 3, "Dress".
    Dress,
    /// Label 4, "Coat".
    Coat,
    /// Label 5, "Sandal".
    Sandal,
    /// Label 6, "Shirt".
    Shirt,
    /// Label 7, "Sneaker".
    Sneaker,
    /// Label 8, "Bag".
    Bag,
    /// Label 9, "Ankle boot".
    AnkleBoot,
}

impl Garment {
    /// Every class, in label order.
    pub const ALL: [Garment; 10] = [
        Garment::Top,
        Garment::Trousers,
        Garment::Pullover,
        Garment::Dress,
        Garment::Coat,
        Garment::Sandal,
        Garment::Shirt,
        Garment::Sneaker,
        Garment::Bag,
        Garment::AnkleBoot,
    ];

    /// The class of Fashion-MNIST label `label` (`None` past 9).
    pub fn from_label(label: u8) -> Option<Garment> {
        Self::ALL.get(label as usize).copied()
    }

    /// The Fashion-MNIST label.
    pub fn label(self) -> usize {
        self as usize
    }

    /// The canonical noun phrase of captions.
    pub fn name(self) -> &'static str {
        self.nouns()[0]
    }

    /// Noun phrases a caption may use; the canonical one comes first. Trousers are a
    /// "pair of" so that every template stays singular.
    pub fn nouns(self) -> &'static [&'static str] {
        match self {
            Garment::Top => &["top", "tee"],
            Garment::Trousers => &["pair of trousers", "pair of pants", "pair of jeans"],
            Garment::Pullover => &["pullover", "sweater", "jumper"],
            Garment::Dress => &["dress", "frock"],
            Garment::Coat => &["coat", "jacket"],
            Garment::Sandal => &["sandal"],
            Garment::Shirt => &["shirt", "blouse"],
            Garment::Sneaker => &["sneaker", "trainer"],
            Garment::Bag => &["bag", "handbag", "purse"],
            Garment::AnkleBoot => &["ankle boot", "boot"],
        }
    }

    /// Words that, found in a caption, name this class.
    fn keywords(self) -> &'static [&'static str] {
        match self {
            Garment::Top => &["top", "tee"],
            Garment::Trousers => &["trousers", "pants", "jeans"],
            Garment::Pullover => &["pullover", "sweater", "jumper"],
            Garment::Dress => &["dress", "frock"],
            Garment::Coat => &["coat", "jacket"],
            Garment::Sandal => &["sandal"],
            Garment::Shirt => &["shirt", "blouse"],
            Garment::Sneaker => &["sneaker", "trainer"],
            Garment::Bag => &["bag", "handbag", "purse"],
            Garment::AnkleBoot => &["boot"],
        }
    }
}

/// Phrases a Moving Fashion caption may use for a direction; the canonical word comes
/// first. (Moving Shapes' "towards the top" is not among them: "top" names a garment.)
pub fn direction_phrases(direction: Direction) -> &'static [&'static str] {
    match direction {
        Direction::Left => &["left", "to the left", "leftward"],
        Direction::Right => &["right", "to the right", "rightward"],
        Direction::Up => &["up", "upward", "upwards"],
        Direction::Down => &["down", "downward", "downwards"],
    }
}

/// Single words that, found in a caption, mean `direction`.
fn direction_keywords(direction: Direction) -> &'static [&'static str] {
    match direction {
        Direction::Left => &["left", "leftward"],
        Direction::Right => &["right", "rightward"],
        Direction::Up => &["up", "upward", "upwards"],
        Direction::Down => &["down", "downward", "downwards"],
    }
}

/// Function words of the templates.
const FUNCTION_WORDS: [&str; 8] = ["a", "an", "the", "is", "and", "that", "in", "colour"];

/// The sentence templates, in the order [`FashionPhrasing::template`] counts them; the
/// first, with the first word of each part, is the canonical caption. `a` becomes `an`
/// before a vowel.
pub const FASHION_TEMPLATES: [&str; 6] = [
    "a {colour} {noun} {verb-ing} {direction}",
    "the {noun} is {colour} and {verb-s} {direction}",
    "a {colour} {noun} that {verb-s} {direction}",
    "the {colour} {noun} {verb-s} {direction}",
    "a {noun} in {colour} {verb-ing} {direction}",
    "a {noun} {verb-ing} {direction} and the colour is {colour}",
];

/// Longest caption, in words, a Moving Fashion template makes, with headroom.
pub const MAX_FASHION_CAPTION_WORDS: usize = 14;

/// How a caption words its composition: indices into [`FASHION_TEMPLATES`],
/// [`Garment::nouns`], the verbs and [`direction_phrases`] (taken modulo their lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FashionPhrasing {
    /// Index into [`FASHION_TEMPLATES`].
    pub template: usize,
    /// Index into the class's [`Garment::nouns`].
    pub noun: usize,
    /// Index into the verbs (`moving`, `going`, `sliding`, `drifting`, `heading`).
    pub verb: usize,
    /// Index into the direction's [`direction_phrases`].
    pub direction_phrase: usize,
}

impl FashionPhrasing {
    /// The canonical caption's phrasing.
    pub const CANONICAL: FashionPhrasing = FashionPhrasing {
        template: 0,
        noun: 0,
        verb: 0,
        direction_phrase: 0,
    };

    /// A phrasing drawn uniformly: noun, verb, direction phrase, then template.
    pub fn random<R: Rng + ?Sized>(composition: FashionComposition, rng: &mut R) -> Self {
        let mut draw = |n: usize| rng.random_range(0..n as u32) as usize;
        let noun = draw(composition.garment.nouns().len());
        let verb = draw(VERBS_ING.len());
        let direction_phrase = draw(direction_phrases(composition.direction).len());
        let template = draw(FASHION_TEMPLATES.len());
        Self {
            template,
            noun,
            verb,
            direction_phrase,
        }
    }

    /// The `k`-th designed paraphrase of the composition with index `i`
    /// ([`FashionComposition::index`]), for evaluation: over `k = 0, 1, 2` one composition
    /// gets three different templates, verbs and direction phrases (and nouns, where its
    /// class has three), and over all 240 compositions every template, noun, verb and
    /// direction phrase appears about equally often.
    pub fn designed(i: usize, k: usize) -> Self {
        Self {
            template: i + 2 * k,
            noun: k + i / 24,
            verb: i + k,
            direction_phrase: k + i / 4,
        }
    }
}

/// One of the 240 (class, colour, direction) combinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FashionComposition {
    /// What the photograph shows.
    pub garment: Garment,
    /// The tint of the photograph.
    pub colour: Colour,
    /// Direction of motion.
    pub direction: Direction,
}

impl FashionComposition {
    /// Number of compositions: 10 classes × 6 colours × 4 directions.
    pub const COUNT: usize = 240;

    /// A composition from its three parts.
    pub const fn new(garment: Garment, colour: Colour, direction: Direction) -> Self {
        Self {
            garment,
            colour,
            direction,
        }
    }

    /// All 240, class-major, then colour, then direction (each in `ALL` order), so that
    /// `all()[c.index()] == c`.
    pub fn all() -> Vec<FashionComposition> {
        let mut all = Vec::with_capacity(Self::COUNT);
        for garment in Garment::ALL {
            for colour in Colour::ALL {
                for direction in Direction::ALL {
                    all.push(Self::new(garment, colour, direction));
                }
            }
        }
        all
    }

    /// Position in [`FashionComposition::all`].
    pub fn index(&self) -> usize {
        let colour = Colour::ALL.iter().position(|&c| c == self.colour);
        let direction = Direction::ALL.iter().position(|&d| d == self.direction);
        (self.garment.label() * Colour::ALL.len() + colour.unwrap_or(0)) * Direction::ALL.len()
            + direction.unwrap_or(0)
    }

    /// The two colour × direction pairs of `garment` that training never shows:
    /// colour `k mod 6` moving `k mod 4`, and colour `(k + 3) mod 6` moving `(k + 2) mod 4`,
    /// for the class with label `k`. Every colour and every direction is held out for
    /// three or four classes and every direction for five, and every held-out pair is seen in training with other classes.
    pub fn held_out_pairs(garment: Garment) -> [(Colour, Direction); 2] {
        let k = garment.label();
        [
            (Colour::ALL[k % 6], Direction::ALL[k % 4]),
            (Colour::ALL[(k + 3) % 6], Direction::ALL[(k + 2) % 4]),
        ]
    }

    /// Whether training never shows this composition.
    pub fn is_held_out(&self) -> bool {
        Self::held_out_pairs(self.garment).contains(&(self.colour, self.direction))
    }

    /// The 220 compositions of the training split, in [`FashionComposition::all`] order.
    pub fn training() -> Vec<FashionComposition> {
        Self::all()
            .into_iter()
            .filter(|c| !c.is_held_out())
            .collect()
    }

    /// The canonical caption, `a {colour} {noun} moving {direction}`.
    pub fn canonical_caption(&self) -> String {
        self.caption(FashionPhrasing::CANONICAL)
    }

    /// A random paraphrase ([`FashionPhrasing::random`]).
    pub fn paraphrase<R: Rng + ?Sized>(&self, rng: &mut R) -> String {
        self.caption(FashionPhrasing::random(*self, rng))
    }

    /// The caption of this composition in `phrasing`.
    pub fn caption(&self, phrasing: FashionPhrasing) -> String {
        let colour = self.colour.name();
        let nouns = self.garment.nouns();
        let noun = nouns[phrasing.noun % nouns.len()];
        let verb = phrasing.verb % VERBS_ING.len();
        let (ing, third) = (VERBS_ING[verb], VERBS_S[verb]);
        let phrases = direction_phrases(self.direction);
        let dir = phrases[phrasing.direction_phrase % phrases.len()];
        let a = article(noun);
        match phrasing.template % FASHION_TEMPLATES.len() {
            0 => format!("a {colour} {noun} {ing} {dir}"),
            1 => format!("the {noun} is {colour} and {third} {dir}"),
            2 => format!("a {colour} {noun} that {third} {dir}"),
            3 => format!("the {colour} {noun} {third} {dir}"),
            4 => format!("{a} {noun} in {colour} {ing} {dir}"),
            _ => format!("{a} {noun} {ing} {dir} and the colour is {colour}"),
        }
    }

    /// The phrasing groups of this composition's caption in `phrasing`, for per-group
    /// accuracies: its template, noun, verb and direction phrase, e.g.
    /// `["template: a {noun} in {colour} {verb-ing} {direction}", "noun: handbag",
    /// "verb: sliding", "direction: to the left"]`.
    pub fn phrasing_groups(&self, phrasing: FashionPhrasing) -> [String; 4] {
        let nouns = self.garment.nouns();
        let phrases = direction_phrases(self.direction);
        [
            format!(
                "template: {}",
                FASHION_TEMPLATES[phrasing.template % FASHION_TEMPLATES.len()]
            ),
            format!("noun: {}", nouns[phrasing.noun % nouns.len()]),
            format!("verb: {}", VERBS_ING[phrasing.verb % VERBS_ING.len()]),
            format!(
                "direction: {}",
                phrases[phrasing.direction_phrase % phrases.len()]
            ),
        ]
    }

    /// Reads the composition a caption asks for from its class, colour and direction words
    /// (any template, any case or punctuation); `None` when a part is missing or two
    /// different values of a part are named.
    pub fn parse_caption(text: &str) -> Option<FashionComposition> {
        let words = Tokenizer::split_words(text);
        fn find<T: Copy + PartialEq>(
            words: &[String],
            values: &[T],
            names: impl Fn(T) -> Vec<&'static str>,
        ) -> Option<T> {
            let mut found: Option<T> = None;
            for word in words {
                for &value in values {
                    if names(value).contains(&word.as_str()) {
                        match found {
                            Some(f) if f != value => return None,
                            _ => found = Some(value),
                        }
                    }
                }
            }
            found
        }
        let garment = find(&words, &Garment::ALL, |g| g.keywords().to_vec())?;
        let colour = find(&words, &Colour::ALL, |c| vec![c.name()])?;
        let direction = find(&words, &Direction::ALL, |d| direction_keywords(d).to_vec())?;
        Some(Self::new(garment, colour, direction))
    }
}

/// `an` before a word starting with a vowel, `a` otherwise.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Every word a Moving Fashion caption can contain, in a fixed order (token ids of a
/// tokenizer built from it are stable): function words, colours, nouns, verbs, directions.
pub fn fashion_vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = Vec::new();
    let mut push = |w: &'static str| {
        if !words.contains(&w) {
            words.push(w);
        }
    };
    FUNCTION_WORDS.into_iter().for_each(&mut push);
    Colour::ALL.iter().for_each(|c| push(c.name()));
    Garment::ALL
        .iter()
        .flat_map(|g| g.nouns().iter().flat_map(|n| n.split_whitespace()))
        .for_each(&mut push);
    VERBS_ING.into_iter().chain(VERBS_S).for_each(&mut push);
    Direction::ALL
        .iter()
        .flat_map(|&d| {
            direction_phrases(d)
                .iter()
                .flat_map(|p| p.split_whitespace())
        })
        .for_each(&mut push);
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeSet;

    #[test]
    fn two_hundred_and_forty_compositions_twenty_held_out() {
        let all = FashionComposition::all();
        assert_eq!(all.len(), 240);
        for (i, c) in all.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let held: Vec<_> = all.iter().filter(|c| c.is_held_out()).collect();
        assert_eq!(held.len(), 20);
        assert_eq!(FashionComposition::training().len(), 220);
        // Two per class; each colour held out 3 or 4 times, each direction 5 times; every
        // held-out (colour, direction) pair is shown in training with another class.
        for g in Garment::ALL {
            assert_eq!(held.iter().filter(|c| c.garment == g).count(), 2);
        }
        for colour in Colour::ALL {
            let n = held.iter().filter(|c| c.colour == colour).count();
            assert!((3..=4).contains(&n), "{colour:?} held out {n} times");
        }
        for direction in Direction::ALL {
            assert_eq!(held.iter().filter(|c| c.direction == direction).count(), 5);
        }
        let training: BTreeSet<_> = FashionComposition::training()
            .iter()
            .map(|c| (c.colour, c.direction))
            .collect();
        assert!(
            held.iter()
                .all(|c| training.contains(&(c.colour, c.direction)))
        );
        assert_eq!(
            FashionComposition::held_out_pairs(Garment::AnkleBoot),
            [
                (Colour::Yellow, Direction::Right),
                (Colour::Red, Direction::Down)
            ]
        );
    }

    #[test]
    fn captions_read_as_english_and_parse_back() {
        let boot = FashionComposition::new(Garment::AnkleBoot, Colour::Red, Direction::Left);
        assert_eq!(boot.canonical_caption(), "a red ankle boot moving left");
        let phrasing = |template, noun| FashionPhrasing {
            template,
            noun,
            verb: 2,
            direction_phrase: 1,
        };
        assert_eq!(
            boot.caption(phrasing(4, 0)),
            "an ankle boot in red sliding to the left"
        );
        let trousers = FashionComposition::new(Garment::Trousers, Colour::Green, Direction::Up);
        assert_eq!(
            trousers.caption(phrasing(1, 1)),
            "the pair of pants is green and slides upward"
        );
        let bag = FashionComposition::new(Garment::Bag, Colour::Cyan, Direction::Down);
        assert_eq!(
            bag.caption(phrasing(5, 1)),
            "a handbag sliding downward and the colour is cyan"
        );
        let vocabulary = fashion_vocabulary();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for c in FashionComposition::all() {
            for _ in 0..20 {
                let caption = c.paraphrase(&mut rng);
                assert_eq!(
                    FashionComposition::parse_caption(&caption),
                    Some(c),
                    "{caption}"
                );
                let words = Tokenizer::split_words(&caption);
                assert!(words.len() <= MAX_FASHION_CAPTION_WORDS, "{caption}");
                assert!(
                    words.iter().all(|w| vocabulary.contains(&w.as_str())),
                    "{caption}"
                );
            }
        }
        assert_eq!(
            FashionComposition::parse_caption("A Blue SNEAKER, heading right!"),
            Some(FashionComposition::new(
                Garment::Sneaker,
                Colour::Blue,
                Direction::Right
            ))
        );
        assert_eq!(
            FashionComposition::parse_caption("a red bag and a coat moving up"),
            None
        );
        assert_eq!(FashionComposition::parse_caption("a red bag"), None);
        assert_eq!(fashion_vocabulary().len(), 59);
    }

    #[test]
    fn designed_phrasings_cover_every_template_noun_verb_and_direction_phrase() {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for c in FashionComposition::all() {
            let groups: Vec<[String; 4]> = (0..3)
                .map(|k| c.phrasing_groups(FashionPhrasing::designed(c.index(), k)))
                .collect();
            for part in [0, 2, 3] {
                let distinct: BTreeSet<_> = groups.iter().map(|g| &g[part]).collect();
                assert_eq!(distinct.len(), 3, "{c:?}: {groups:?}");
            }
            for g in groups.iter().flatten() {
                *counts.entry(g.clone()).or_default() += 1;
            }
        }
        // 6 templates, 22 nouns, 5 verbs, 12 direction phrases.
        assert_eq!(
            counts.keys().filter(|k| k.starts_with("template")).count(),
            6
        );
        assert_eq!(counts.keys().filter(|k| k.starts_with("noun")).count(), 22);
        assert_eq!(counts.keys().filter(|k| k.starts_with("verb")).count(), 5);
        assert_eq!(
            counts.keys().filter(|k| k.starts_with("direction")).count(),
            12
        );
        for (group, n) in &counts {
            if group.starts_with("template") || group.starts_with("verb") {
                assert!((110..=154).contains(n), "{group}: {n}");
            }
        }
    }
}
