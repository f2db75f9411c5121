//! Shapes, colours, directions and the captions that name them (the Moving Shapes spec).
//!
//! The palette, the 72 compositions, the six held-out ones and the caption vocabulary are
//! fixed here; evaluation and outside judges rely on them being exactly these.

use dit_model::tokenizer::Tokenizer;
use rand::Rng;

/// Longest caption (in words) that [`Composition::paraphrase`] can produce, with headroom;
/// the text encoder of a Moving Shapes model reads this many tokens.
pub const MAX_CAPTION_WORDS: usize = 12;

/// The shape of the moving object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// A disc of diameter `s` centred in the `s × s` box.
    Circle,
    /// The whole `s × s` box.
    Square,
    /// Isosceles, apex at the top centre of the box, base along its bottom edge.
    Triangle,
}

impl Shape {
    /// Every shape, in spec order.
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    /// The canonical caption word.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    /// Words a caption may use for this shape; the canonical name comes first.
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Shape::Circle => &["circle", "ball", "disc"],
            Shape::Square => &["square", "box", "block"],
            Shape::Triangle => &["triangle"],
        }
    }
}

/// The colour of the moving object (the spec's palette).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    /// RGB (230, 50, 50).
    Red,
    /// RGB (50, 200, 80).
    Green,
    /// RGB (60, 110, 240).
    Blue,
    /// RGB (240, 220, 60).
    Yellow,
    /// RGB (220, 70, 220).
    Magenta,
    /// RGB (60, 220, 230).
    Cyan,
}

impl Colour {
    /// Every colour, in spec order.
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Magenta,
        Colour::Cyan,
    ];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Magenta => "magenta",
            Colour::Cyan => "cyan",
        }
    }

    /// The exact 8-bit RGB value the renderer paints.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [230, 50, 50],
            Colour::Green => [50, 200, 80],
            Colour::Blue => [60, 110, 240],
            Colour::Yellow => [240, 220, 60],
            Colour::Magenta => [220, 70, 220],
            Colour::Cyan => [60, 220, 230],
        }
    }
}

/// The direction of the object's constant-speed motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// x decreases.
    Left,
    /// x increases.
    Right,
    /// y decreases (towards the top row).
    Up,
    /// y increases.
    Down,
}

impl Direction {
    /// Every direction, in spec order.
    pub const ALL: [Direction; 4] = [
        Direction::Left,
        Direction::Right,
        Direction::Up,
        Direction::Down,
    ];

    /// The canonical caption word.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Left => "left",
            Direction::Right => "right",
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// Unit step `(dx, dy)` in image coordinates (y grows downwards).
    pub fn step(self) -> (f32, f32) {
        match self {
            Direction::Left => (-1.0, 0.0),
            Direction::Right => (1.0, 0.0),
            Direction::Up => (0.0, -1.0),
            Direction::Down => (0.0, 1.0),
        }
    }

    /// Phrases a caption may use for this direction; the canonical word comes first.
    pub fn phrases(self) -> &'static [&'static str] {
        match self {
            Direction::Left => &["left", "to the left", "leftward"],
            Direction::Right => &["right", "to the right", "rightward"],
            Direction::Up => &["up", "upward", "towards the top"],
            Direction::Down => &["down", "downward", "towards the bottom"],
        }
    }

    /// Single words that, found in a caption, mean this direction.
    fn keywords(self) -> &'static [&'static str] {
        match self {
            Direction::Left => &["left", "leftward"],
            Direction::Right => &["right", "rightward"],
            Direction::Up => &["up", "upward", "top"],
            Direction::Down => &["down", "downward", "bottom"],
        }
    }
}

/// Verbs in the "-ing" form used by paraphrases; "moving" is the canonical one.
pub(crate) const VERBS_ING: [&str; 5] = ["moving", "going", "sliding", "drifting", "heading"];
/// The same verbs in the third person singular.
pub(crate) const VERBS_S: [&str; 5] = ["moves", "goes", "slides", "drifts", "heads"];
/// Function words of the paraphrase templates.
const FUNCTION_WORDS: [&str; 7] = ["a", "the", "is", "and", "that", "in", "colour"];

/// The sentence templates of captions, in the order [`Phrasing::template`] counts them;
/// the first, with the first word of each part, is the canonical caption.
pub const TEMPLATES: [&str; 6] = [
    "a {colour} {shape} {verb-ing} {direction}",
    "the {shape} is {colour} and {verb-s} {direction}",
    "a {colour} {shape} that {verb-s} {direction}",
    "the {colour} {shape} {verb-s} {direction}",
    "a {shape} in {colour} {verb-ing} {direction}",
    "a {shape} {verb-ing} {direction} and the colour is {colour}",
];

/// `options[index % options.len()]`.
fn pick(options: &[&'static str], index: usize) -> &'static str {
    options[index % options.len()]
}

/// How a caption words its composition: a sentence template and the word chosen for
/// the shape, the verb and the direction (indices into [`TEMPLATES`], [`Shape::words`],
/// the verbs and [`Direction::phrases`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Phrasing {
    /// Index into [`TEMPLATES`].
    pub template: usize,
    /// Index into the shape's [`Shape::words`].
    pub shape_word: usize,
    /// Index into the verbs (`moving`, `going`, `sliding`, `drifting`, `heading`).
    pub verb: usize,
    /// Index into the direction's [`Direction::phrases`].
    pub direction_phrase: usize,
}

impl Phrasing {
    /// The canonical caption's phrasing: `a {colour} {shape} moving {direction}`.
    pub const CANONICAL: Phrasing = Phrasing {
        template: 0,
        shape_word: 0,
        verb: 0,
        direction_phrase: 0,
    };

    /// A phrasing drawn uniformly for `composition`: the shape word, the verb, the
    /// direction phrase, then the template (the order the training captions draw them).
    pub fn random<R: Rng + ?Sized>(composition: Composition, rng: &mut R) -> Phrasing {
        let mut draw = |n: usize| rng.random_range(0..n as u32) as usize;
        let shape_word = draw(composition.shape.words().len());
        let verb = draw(VERBS_ING.len());
        let direction_phrase = draw(composition.direction.phrases().len());
        let template = draw(TEMPLATES.len());
        Phrasing {
            template,
            shape_word,
            verb,
            direction_phrase,
        }
    }

    /// The `k`-th of the evaluation's designed paraphrases of the composition with
    /// index `i` ([`Composition::index`]): over `k = 0, 1, 2` one composition gets three
    /// different templates, verbs, nouns (where its shape has three) and direction
    /// phrases, and over all 72 compositions every template, verb, noun and direction
    /// phrase of the spec appears about equally often.
    pub fn designed(i: usize, k: usize) -> Phrasing {
        Phrasing {
            template: i + 2 * k,
            shape_word: k + i / 24,
            verb: i + k,
            direction_phrase: k + i / 4,
        }
    }
}

/// One of the 72 (colour, shape, direction) combinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Composition {
    /// Colour of the object.
    pub colour: Colour,
    /// Shape of the object.
    pub shape: Shape,
    /// Direction of motion.
    pub direction: Direction,
}

/// The six compositions that never appear in training data (spec table order).
pub const HELD_OUT: [Composition; 6] = [
    Composition::new(Colour::Red, Shape::Triangle, Direction::Up),
    Composition::new(Colour::Green, Shape::Square, Direction::Left),
    Composition::new(Colour::Blue, Shape::Circle, Direction::Down),
    Composition::new(Colour::Yellow, Shape::Triangle, Direction::Right),
    Composition::new(Colour::Magenta, Shape::Square, Direction::Up),
    Composition::new(Colour::Cyan, Shape::Circle, Direction::Left),
];

impl Composition {
    /// Number of compositions: 6 colours × 3 shapes × 4 directions.
    pub const COUNT: usize = 72;

    /// A composition from its three parts.
    pub const fn new(colour: Colour, shape: Shape, direction: Direction) -> Self {
        Self {
            colour,
            shape,
            direction,
        }
    }

    /// All 72 compositions, colour-major, then shape, then direction (each in `ALL` order),
    /// so that `all()[c.index()] == c`.
    pub fn all() -> Vec<Composition> {
        let mut all = Vec::with_capacity(Self::COUNT);
        for colour in Colour::ALL {
            for shape in Shape::ALL {
                for direction in Direction::ALL {
                    all.push(Composition::new(colour, shape, direction));
                }
            }
        }
        all
    }

    /// The 66 compositions of the training split, in [`Composition::all`] order.
    pub fn training() -> Vec<Composition> {
        Self::all()
            .into_iter()
            .filter(|c| !c.is_held_out())
            .collect()
    }

    /// Position of this composition in [`Composition::all`].
    pub fn index(&self) -> usize {
        let colour = Colour::ALL
            .iter()
            .position(|&c| c == self.colour)
            .unwrap_or(0);
        let shape = Shape::ALL
            .iter()
            .position(|&s| s == self.shape)
            .unwrap_or(0);
        let direction = Direction::ALL
            .iter()
            .position(|&d| d == self.direction)
            .unwrap_or(0);
        (colour * Shape::ALL.len() + shape) * Direction::ALL.len() + direction
    }

    /// Whether this composition is one of the six [`HELD_OUT`] ones.
    pub fn is_held_out(&self) -> bool {
        HELD_OUT.contains(self)
    }

    /// The canonical caption, `a {colour} {shape} moving {direction}`.
    pub fn canonical_caption(&self) -> String {
        format!(
            "a {} {} moving {}",
            self.colour.name(),
            self.shape.name(),
            self.direction.name()
        )
    }

    /// A random paraphrase: shape synonym, verb, direction phrase and sentence order drawn
    /// uniformly ([`Phrasing::random`]); every word is in [`vocabulary`].
    pub fn paraphrase<R: Rng + ?Sized>(&self, rng: &mut R) -> String {
        self.caption(Phrasing::random(*self, rng))
    }

    /// The caption of this composition in the given phrasing (indices taken modulo the
    /// number of choices, so any phrasing words any composition).
    pub fn caption(&self, phrasing: Phrasing) -> String {
        let colour = self.colour.name();
        let shape = pick(self.shape.words(), phrasing.shape_word);
        let verb = phrasing.verb % VERBS_ING.len();
        let (ing, third) = (VERBS_ING[verb], VERBS_S[verb]);
        let dir = pick(self.direction.phrases(), phrasing.direction_phrase);
        match phrasing.template % TEMPLATES.len() {
            0 => format!("a {colour} {shape} {ing} {dir}"),
            1 => format!("the {shape} is {colour} and {third} {dir}"),
            2 => format!("a {colour} {shape} that {third} {dir}"),
            3 => format!("the {colour} {shape} {third} {dir}"),
            4 => format!("a {shape} in {colour} {ing} {dir}"),
            _ => format!("a {shape} {ing} {dir} and the colour is {colour}"),
        }
    }

    /// The phrasing groups a caption of this composition in `phrasing` belongs to, for
    /// per-group accuracies: its template, its noun, its verb and its direction phrase,
    /// e.g. `["template: the {shape} is {colour} and {verb-s} {direction}", "noun: box",
    /// "verb: sliding", "direction: to the left"]`.
    pub fn phrasing_groups(&self, phrasing: Phrasing) -> [String; 4] {
        let verb = phrasing.verb % VERBS_ING.len();
        [
            format!(
                "template: {}",
                TEMPLATES[phrasing.template % TEMPLATES.len()]
            ),
            format!("noun: {}", pick(self.shape.words(), phrasing.shape_word)),
            format!("verb: {}", VERBS_ING[verb]),
            format!(
                "direction: {}",
                pick(self.direction.phrases(), phrasing.direction_phrase)
            ),
        ]
    }

    /// Reads the composition a caption asks for from its colour, shape and direction words
    /// (canonical or paraphrase, any case or punctuation); `None` when a part is missing or
    /// two different values of a part are named.
    pub fn parse_caption(text: &str) -> Option<Composition> {
        let words = Tokenizer::split_words(text);
        let find =
            |names: &dyn Fn(usize) -> &'static [&'static str], count: usize| -> Option<usize> {
                let mut found = None;
                for word in &words {
                    for i in 0..count {
                        if names(i).contains(&word.as_str()) {
                            match found {
                                Some(j) if j != i => return None,
                                _ => found = Some(i),
                            }
                        }
                    }
                }
                found
            };
        let colour = find(
            &|i| std::slice::from_ref(&COLOUR_NAMES[i]),
            Colour::ALL.len(),
        )?;
        let shape = find(&|i| Shape::ALL[i].words(), Shape::ALL.len())?;
        let direction = find(&|i| Direction::ALL[i].keywords(), Direction::ALL.len())?;
        Some(Composition::new(
            Colour::ALL[colour],
            Shape::ALL[shape],
            Direction::ALL[direction],
        ))
    }
}

/// Colour names in `Colour::ALL` order (a static table for [`Composition::parse_caption`]).
const COLOUR_NAMES: [&str; 6] = ["red", "green", "blue", "yellow", "magenta", "cyan"];

/// Every word any Moving Shapes caption can contain, in a fixed order (token ids of a
/// tokenizer built from it are stable): function words, colours, shapes, verbs, directions.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = Vec::new();
    let mut push = |w: &'static str| {
        if !words.contains(&w) {
            words.push(w);
        }
    };
    FUNCTION_WORDS.into_iter().for_each(&mut push);
    Colour::ALL.iter().for_each(|c| push(c.name()));
    Shape::ALL
        .iter()
        .flat_map(|s| s.words().iter().copied())
        .for_each(&mut push);
    VERBS_ING.into_iter().chain(VERBS_S).for_each(&mut push);
    Direction::ALL
        .iter()
        .flat_map(|d| d.phrases().iter().flat_map(|p| p.split_whitespace()))
        .for_each(&mut push);
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn seventy_two_compositions_in_documented_order() {
        let all = Composition::all();
        assert_eq!(all.len(), 72);
        assert_eq!(
            all[0],
            Composition::new(Colour::Red, Shape::Circle, Direction::Left)
        );
        assert_eq!(
            all[5],
            Composition::new(Colour::Red, Shape::Square, Direction::Right)
        );
        assert_eq!(
            all[71],
            Composition::new(Colour::Cyan, Shape::Triangle, Direction::Down)
        );
        for (i, c) in all.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(Composition::training().len(), 66);
        assert_eq!(all.iter().filter(|c| c.is_held_out()).count(), 6);
    }

    #[test]
    fn palette_matches_spec() {
        assert_eq!(Colour::Red.rgb(), [230, 50, 50]);
        assert_eq!(Colour::Green.rgb(), [50, 200, 80]);
        assert_eq!(Colour::Blue.rgb(), [60, 110, 240]);
        assert_eq!(Colour::Yellow.rgb(), [240, 220, 60]);
        assert_eq!(Colour::Magenta.rgb(), [220, 70, 220]);
        assert_eq!(Colour::Cyan.rgb(), [60, 220, 230]);
        for (i, c) in Colour::ALL.iter().enumerate() {
            assert_eq!(COLOUR_NAMES[i], c.name());
        }
    }

    #[test]
    fn canonical_caption_form() {
        let c = Composition::new(Colour::Red, Shape::Circle, Direction::Right);
        assert_eq!(c.canonical_caption(), "a red circle moving right");
        assert_eq!(c.caption(Phrasing::CANONICAL), c.canonical_caption());
    }

    #[test]
    fn every_paraphrase_tokenizes_and_parses_back() {
        let tokenizer = Tokenizer::new(&vocabulary());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut distinct = std::collections::BTreeSet::new();
        let mut longest = 0;
        for composition in Composition::all() {
            let canonical = composition.canonical_caption();
            assert_eq!(Composition::parse_caption(&canonical), Some(composition));
            tokenizer
                .encode_padded(&canonical, MAX_CAPTION_WORDS)
                .unwrap();
            for _ in 0..100 {
                let caption = composition.paraphrase(&mut rng);
                let ids = tokenizer
                    .encode(&caption, MAX_CAPTION_WORDS)
                    .unwrap_or_else(|e| panic!("{caption}: {e}"));
                longest = longest.max(ids.len());
                assert_eq!(
                    Composition::parse_caption(&caption),
                    Some(composition),
                    "{caption}"
                );
                distinct.insert(caption);
            }
        }
        // "a triangle heading towards the bottom and the colour is magenta".
        assert_eq!(longest, 11, "longest paraphrase");
        // 72 compositions, many templates: far more than one caption per composition.
        assert!(
            distinct.len() > 72 * 30,
            "only {} distinct captions",
            distinct.len()
        );
        let green_triangle_up = Composition::new(Colour::Green, Shape::Triangle, Direction::Up);
        let wanted = "the triangle is green and drifts upward";
        assert!(
            (0..10_000)
                .any(|s| green_triangle_up.paraphrase(&mut ChaCha8Rng::seed_from_u64(s)) == wanted)
        );
    }

    #[test]
    fn parse_caption_handles_case_punctuation_and_conflicts() {
        assert_eq!(
            Composition::parse_caption("A BLUE box, sliding to the left!"),
            Some(Composition::new(
                Colour::Blue,
                Shape::Square,
                Direction::Left
            ))
        );
        assert_eq!(
            Composition::parse_caption("a red blue circle moving up"),
            None
        );
        assert_eq!(Composition::parse_caption("a red circle"), None);
        assert_eq!(
            Composition::parse_caption("a red circle moving up towards the bottom"),
            None
        );
    }

    #[test]
    fn vocabulary_has_no_duplicates_and_is_stable() {
        let v = vocabulary();
        let set: std::collections::BTreeSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len());
        assert_eq!(&v[..3], &["a", "the", "is"]);
        assert!(v.contains(&"towards") && v.contains(&"bottom") && v.contains(&"drifts"));
    }

    #[test]
    fn designed_phrasings_cover_every_group_evenly() {
        use std::collections::BTreeMap;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for c in Composition::all() {
            let phrasings: Vec<Phrasing> =
                (0..3).map(|k| Phrasing::designed(c.index(), k)).collect();
            let groups: Vec<[String; 4]> =
                phrasings.iter().map(|&p| c.phrasing_groups(p)).collect();
            for part in 0..4 {
                // A composition's three paraphrases differ in template and verb, and in
                // noun and direction phrase wherever there is more than one.
                let distinct: std::collections::BTreeSet<&String> =
                    groups.iter().map(|g| &g[part]).collect();
                let choices = [6, c.shape.words().len(), 5, 3][part];
                assert_eq!(
                    distinct.len(),
                    choices.min(3),
                    "{c:?} part {part}: {groups:?}"
                );
            }
            for (p, g) in phrasings.iter().zip(&groups) {
                let caption = c.caption(*p);
                assert_eq!(Composition::parse_caption(&caption), Some(c), "{caption}");
                for label in g {
                    *counts.entry(label.clone()).or_default() += 1;
                }
            }
        }
        // 6 templates, 7 nouns, 5 verbs, 12 direction phrases.
        assert_eq!(counts.len(), 6 + 7 + 5 + 12, "{counts:?}");
        for (label, &n) in &counts {
            let expected = match label.split(':').next().unwrap() {
                "template" => 216 / 6,
                "verb" => 216 / 5,
                "direction" => 216 / 12,
                _ if label == "noun: triangle" => 72,
                _ => 72 / 3,
            };
            assert!(
                n.abs_diff(expected) <= expected / 4 + 1,
                "{label}: {n} captions, expected ≈ {expected}"
            );
        }
    }
}
