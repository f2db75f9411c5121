//! Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it, read by the IDX reader and
//! checked against values computed by an independent reader (Python's `gzip` and `struct`):
//! counts, sizes, the first labels, pixel sums and the classes' balance. Skipped where the
//! package is not installed, unless `DIT_REQUIRE_FASHION_MNIST` is set (as `.ci/run` does
//! after installing it).

use std::path::Path;

use dit_data::idx::{FASHION_MNIST_DIR, FashionSplit, fashion_mnist};

#[test]
fn both_splits_read_as_an_independent_reader_reads_them() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() && std::env::var_os("DIT_REQUIRE_FASHION_MNIST").is_none() {
        eprintln!("skipped: no {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)");
        return;
    }
    for (split, count, first_labels, first_sum, total) in [
        (
            FashionSplit::Test,
            10_000,
            [9, 2, 1, 1, 6, 1, 4, 6, 5, 7],
            33_456u64,
            573_469_082u64,
        ),
        (
            FashionSplit::Train,
            60_000,
            [9, 0, 0, 3, 0, 2, 7, 2, 5, 5],
            76_247,
            3_431_114_169,
        ),
    ] {
        let (images, labels) = fashion_mnist(dir, split).unwrap();
        assert_eq!((images.count, images.rows, images.columns), (count, 28, 28));
        assert_eq!(labels[..10], first_labels);
        let sum = |pixels: &[u8]| pixels.iter().map(|&p| u64::from(p)).sum::<u64>();
        assert_eq!(sum(images.image(0)), first_sum);
        assert_eq!(sum(&images.pixels), total);
        for class in 0..10u8 {
            let n = labels.iter().filter(|&&l| l == class).count();
            assert_eq!(n, count / 10, "{split:?}: class {class}");
        }
    }
}
