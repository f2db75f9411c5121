//! Moving Fashion on the real photographs, and the shipped judge of its clips
//! (`checkpoints/fashion-classifier`): the classifier's accuracy on the test split, the
//! judge calibrated on real clips, and the training split never showing a test photograph.
//! Skipped where Debian's `dataset-fashion-mnist` is not installed, unless
//! `DIT_REQUIRE_FASHION_MNIST` is set (as `.ci/run` does after installing it).

use std::path::{Path, PathBuf};

use dit_data::fashion::FashionComposition;
use dit_data::fashion_judge::judge_fashion_clips;
use dit_data::idx::{FASHION_MNIST_DIR, FashionSplit, fashion_mnist};
use dit_data::moving_fashion::{MovingFashion, MovingFashionConfig, render_fashion_clip};
use dit_data::{CaptionMode, Split};
use dit_model::Backend;
use dit_model::run::load_classifier;
use dit_train::classifier::evaluate;

fn data_dir() -> Option<&'static Path> {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() && std::env::var_os("DIT_REQUIRE_FASHION_MNIST").is_none() {
        eprintln!("skipped: no {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)");
        return None;
    }
    Some(dir)
}

fn shipped_classifier() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/fashion-classifier")
}

#[test]
fn the_shipped_classifier_classifies_the_test_photographs_as_its_report_says() {
    let Some(dir) = data_dir() else { return };
    let device = Backend::default_compiled().device().unwrap();
    let (classifier, report) = load_classifier(&shipped_classifier(), &device).unwrap();
    let (images, labels) = fashion_mnist(dir, FashionSplit::Test).unwrap();
    let (accuracy, per_class, confusion) = evaluate(&classifier, &images, &labels, 10, &device);
    assert!(
        accuracy >= 0.90,
        "top-1 {accuracy} on the 10,000 test photographs"
    );
    // The same weights on the same photographs: the report's figures, up to a borderline
    // photograph flipping where another CPU rounds a sum differently.
    assert!(
        (accuracy - report.test_accuracy).abs() <= 0.001,
        "{accuracy} vs {}",
        report.test_accuracy
    );
    assert_eq!(confusion.iter().flatten().sum::<usize>(), 10_000);
    assert_eq!(per_class.len(), 10);
}

#[test]
fn the_judge_reads_real_clips_of_unseen_photographs() {
    let Some(dir) = data_dir() else { return };
    let device = Backend::default_compiled().device().unwrap();
    let (classifier, _) = load_classifier(&shipped_classifier(), &device).unwrap();
    let eval = MovingFashion::open(dir, MovingFashionConfig::new(), 5, Split::Eval).unwrap();
    // Five clips of every composition, each of a test photograph.
    let items: Vec<_> = FashionComposition::all()
        .into_iter()
        .flat_map(|c| (0..5).map(move |k| (c, k)))
        .map(|(c, k)| eval.clip_for(c, k, CaptionMode::Canonical))
        .collect();
    let clips: Vec<_> = items.iter().map(|i| i.item.clip.clone()).collect();
    let judged = judge_fashion_clips(&clips, &classifier, &device);
    let n = items.len() as f64;
    let rate = |f: &dyn Fn(usize) -> bool| (0..items.len()).filter(|&i| f(i)).count() as f64 / n;
    let colour = rate(&|i| judged[i].matches(&items[i].composition).colour);
    let direction = rate(&|i| judged[i].matches(&items[i].composition).direction);
    let class = rate(&|i| judged[i].matches(&items[i].composition).garment);
    assert!(colour >= 0.98, "colour {colour}");
    assert!(direction >= 0.98, "direction {direction}");
    // The classifier on the very photographs, unmoved and untinted: the judge's ceiling.
    let (images, labels) = fashion_mnist(dir, FashionSplit::Test).unwrap();
    let photos: Vec<usize> = items.iter().map(|i| i.photo).collect();
    let picked = dit_data::idx::IdxImages {
        count: photos.len(),
        rows: 28,
        columns: 28,
        pixels: photos
            .iter()
            .flat_map(|&p| images.image(p).to_vec())
            .collect(),
    };
    let picked_labels: Vec<u8> = photos.iter().map(|&p| labels[p]).collect();
    let (direct, _, _) = evaluate(&classifier, &picked, &picked_labels, 10, &device);
    eprintln!(
        "judge on 1,200 real clips: colour {colour:.3}, direction {direction:.3}, class {class:.3} (classifier on the photographs {direct:.3})"
    );
    assert!(
        (class - direct).abs() <= 0.03,
        "judge {class} vs classifier {direct}"
    );
}

#[test]
fn training_clips_show_only_training_photographs_and_follow_the_seed() {
    let Some(dir) = data_dir() else { return };
    let config = MovingFashionConfig::new();
    let train = MovingFashion::open(dir, config.clone(), 0, Split::Train).unwrap();
    let eval = MovingFashion::open(dir, config.clone(), 0, Split::Eval).unwrap();
    assert_eq!((train.photo_count(), eval.photo_count()), (60_000, 10_000));
    let (train_images, train_labels) = fashion_mnist(dir, FashionSplit::Train).unwrap();
    let (test_images, test_labels) = fashion_mnist(dir, FashionSplit::Test).unwrap();
    for (set, images, labels) in [
        (&train, &train_images, &train_labels),
        (&eval, &test_images, &test_labels),
    ] {
        for i in 0..300 {
            let item = set.item(i);
            let c = item.composition;
            assert_eq!(labels[item.photo] as usize, c.garment.label());
            // The clip is exactly the indexed photograph of its own split, drawn.
            let drawn =
                render_fashion_clip(images.image(item.photo), c.colour, &item.motion, 8, 64);
            assert_eq!(drawn, item.item.clip, "clip {i}");
            if set.split() == Split::Train {
                assert!(!c.is_held_out());
            }
        }
    }
    let again = MovingFashion::open(dir, config.clone(), 0, Split::Train).unwrap();
    let other = MovingFashion::open(dir, config, 1, Split::Train).unwrap();
    for i in 0..20 {
        assert_eq!(train.item(i), again.item(i));
    }
    assert!((0..20).any(|i| train.item(i).photo != other.item(i).photo));
}
