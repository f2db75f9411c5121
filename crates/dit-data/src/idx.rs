//! The IDX format of MNIST and Fashion-MNIST: labelled greyscale photographs, usually
//! gzipped.
//!
//! An IDX file is a 4-byte magic number — two zero bytes, the element type (`0x08`: unsigned
//! bytes) and the number of dimensions — then each dimension as a big-endian `u32`, then the
//! elements, row-major. Images are 3-dimensional (`count × rows × columns`), labels
//! 1-dimensional. Every header is checked before anything is allocated for what it declares:
//! the element type, the number of dimensions, sides up to [`MAX_SIDE`], and the declared
//! size up to [`MAX_IDX_BYTES`]; the elements are then read as they arrive, so a header
//! claiming 2³² images in a 1 KB file is an error once the file runs out, not an allocation.
//!
//! [`fashion_mnist`] reads the copy Debian's `dataset-fashion-mnist` package installs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::DataError;
use crate::video::MAX_SIDE;

/// Largest payload (elements) an IDX file may declare: 4 times Fashion-MNIST's training images.
pub const MAX_IDX_BYTES: u64 = 4 * 60_000 * 28 * 28;

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Greyscale images, `count × rows × columns` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub columns: usize,
    /// The pixels, 0 (black) to 255, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i`, row-major.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.rows * self.columns;
        &self.pixels[i * len..(i + 1) * len]
    }
}

/// Reads an IDX file of images (gzipped or not).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    images_from_reader(open(path)?, path)
}

/// Reads an IDX file of labels (gzipped or not).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    labels_from_reader(open(path)?, path)
}

/// Reads images and their labels, checked to be as many.
pub fn read_labelled(images: &Path, labels: &Path) -> Result<(IdxImages, Vec<u8>), DataError> {
    let (images_read, labels_read) = (read_images(images)?, read_labels(labels)?);
    if images_read.count != labels_read.len() {
        return Err(DataError::Decode {
            path: labels.to_owned(),
            reason: format!(
                "it holds {} labels for the {} images of {}",
                labels_read.len(),
                images_read.count,
                images.display()
            ),
        });
    }
    Ok((images_read, labels_read))
}

/// Where Fashion-MNIST is read from: `$FASHION_MNIST_DIR` where it is set, else
/// [`FASHION_MNIST_DIR`].
pub fn fashion_mnist_dir() -> PathBuf {
    std::env::var_os("FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR))
}

/// The two splits of Fashion-MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FashionSplit {
    /// 60,000 training photographs.
    Train,
    /// 10,000 test photographs (`t10k`).
    Test,
}

/// The class names of Fashion-MNIST's labels 0 to 9.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// The images and labels of a Fashion-MNIST split, from `dir` (Debian's package installs them
/// in [`FASHION_MNIST_DIR`]); missing files are an error that says how to install them.
pub fn fashion_mnist(dir: &Path, split: FashionSplit) -> Result<(IdxImages, Vec<u8>), DataError> {
    let prefix = match split {
        FashionSplit::Train => "train",
        FashionSplit::Test => "t10k",
    };
    let images = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    for path in [&images, &labels] {
        if !path.is_file() {
            return Err(DataError::MissingDataset {
                path: path.clone(),
                install: "apt-get install dataset-fashion-mnist".into(),
            });
        }
    }
    read_labelled(&images, &labels)
}

/// Reads IDX images held in memory (gzipped or not); `name` stands for the file in errors.
/// (What the fuzz target of the IDX reader calls.)
pub fn images_from_bytes(bytes: &[u8], name: &Path) -> Result<IdxImages, DataError> {
    images_from_reader(decompressed(bytes), name)
}

/// Reads IDX labels held in memory (gzipped or not); `name` stands for the file in errors.
pub fn labels_from_bytes(bytes: &[u8], name: &Path) -> Result<Vec<u8>, DataError> {
    labels_from_reader(decompressed(bytes), name)
}

/// The bytes of a file, decompressed as they are read where it is gzipped.
fn open(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let io = |error| DataError::Io {
        path: path.to_owned(),
        error,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    // The first bytes, looked at without consuming them.
    let gzipped = file.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
    Ok(if gzipped {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// The first two bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

fn decompressed(bytes: &[u8]) -> Box<dyn Read + '_> {
    if bytes.starts_with(&GZIP_MAGIC) {
        Box::new(GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    }
}

fn images_from_reader(reader: impl Read, path: &Path) -> Result<IdxImages, DataError> {
    let (dims, pixels) = read_idx(reader, path, 3)?;
    let [count, rows, columns] = [dims[0], dims[1], dims[2]];
    Ok(IdxImages {
        count,
        rows,
        columns,
        pixels,
    })
}

fn labels_from_reader(reader: impl Read, path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(read_idx(reader, path, 1)?.1)
}

/// Reads an IDX file of unsigned bytes with `ndims` dimensions: the dimensions and the
/// elements.
fn read_idx(
    mut reader: impl Read,
    path: &Path,
    ndims: u8,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bad = |reason: String| DataError::Decode {
        path: path.to_owned(),
        reason,
    };
    let what = if ndims == 3 { "images" } else { "labels" };
    let mut read = |buf: &mut [u8], part: &str| {
        reader.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad(format!("it is truncated in its {part}")),
            _ => bad(format!("its {part} cannot be read: {e}")),
        })
    };
    let mut magic = [0u8; 4];
    read(&mut magic, "header")?;
    if magic != [0, 0, 0x08, ndims] {
        return Err(bad(format!(
            "not an IDX file of {what} (its magic number is {:02x} {:02x} {:02x} {:02x}; \
             {what} start 00 00 08 {ndims:02x})",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    let mut dims = Vec::with_capacity(usize::from(ndims));
    for _ in 0..ndims {
        let mut dim = [0u8; 4];
        read(&mut dim, "header")?;
        dims.push(u32::from_be_bytes(dim) as usize);
    }
    if dims[0] == 0 {
        return Err(bad(format!("it holds no {what}")));
    }
    if let Some(&side) = dims[1..].iter().find(|&&s| s == 0 || s > MAX_SIDE as usize) {
        return Err(bad(format!(
            "its images are {side} pixels a side, outside 1 to {MAX_SIDE}"
        )));
    }
    let declared = dims.iter().map(|&d| d as u64).product::<u64>();
    if declared > MAX_IDX_BYTES {
        return Err(DataError::TooLarge {
            path: path.to_owned(),
            what: format!("a header declaring {declared} bytes of {what}"),
            limit: format!("{MAX_IDX_BYTES} bytes"),
        });
    }
    // Read as the bytes arrive: the buffer grows with what the file really holds.
    let mut elements = Vec::new();
    (&mut reader)
        .take(declared)
        .read_to_end(&mut elements)
        .map_err(|e| bad(format!("its {what} cannot be read: {e}")))?;
    if (elements.len() as u64) < declared {
        return Err(bad(format!(
            "it is truncated: its header declares {declared} bytes of {what}, it holds {}",
            elements.len()
        )));
    }
    // The end of the file, where a gzip stream's checksum is checked.
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => {
            return Err(bad(format!(
                "it holds more than the {declared} bytes of {what} its header declares"
            )));
        }
        Err(e) => return Err(bad(format!("its end cannot be read: {e}"))),
    }
    Ok((dims, elements))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IDX file with this header and elements.
    fn idx(magic: [u8; 4], dims: &[u32], elements: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_vec();
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(elements);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn images_and_labels_read_raw_or_gzipped() {
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8 * 10).collect();
        let file = idx([0, 0, 8, 3], &[2, 3, 4], &pixels);
        for bytes in [file.clone(), gzip(&file)] {
            let images = images_from_bytes(&bytes, Path::new("x")).unwrap();
            assert_eq!((images.count, images.rows, images.columns), (2, 3, 4));
            assert_eq!(images.image(1), &pixels[12..]);
        }
        let labels = idx([0, 0, 8, 1], &[3], &[7, 0, 9]);
        assert_eq!(
            labels_from_bytes(&gzip(&labels), Path::new("y")).unwrap(),
            [7, 0, 9]
        );
    }

    fn err(bytes: &[u8]) -> String {
        let e = images_from_bytes(bytes, Path::new("bad.idx"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.idx") && !e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let pixels = [1u8; 2 * 2 * 2];
        // Labels read as images, a wrong type, a text file.
        assert!(err(&idx([0, 0, 8, 1], &[8], &pixels)).contains("not an IDX file of images"));
        assert!(err(&idx([0, 0, 0x0D, 3], &[2, 2, 2], &pixels)).contains("magic number"));
        assert!(err(b"P5 28 28 255\n").contains("magic number"));
        // Truncated in the header, in the pixels; more than declared.
        assert!(err(&[0, 0, 8, 3, 0, 0]).contains("truncated in its header"));
        let whole = idx([0, 0, 8, 3], &[2, 2, 2], &pixels);
        assert!(err(&whole[..whole.len() - 1]).contains("it holds 7"));
        assert!(err(&gzip(&whole[..whole.len() - 3])).contains("it holds 5"));
        let mut longer = whole.clone();
        longer.push(0);
        assert!(err(&longer).contains("more than the 8 bytes"));
        // No images, a side of 0 or of 2³²−1.
        assert!(err(&idx([0, 0, 8, 3], &[0, 2, 2], &[])).contains("holds no images"));
        assert!(err(&idx([0, 0, 8, 3], &[1, 0, 2], &[])).contains("outside 1 to 4096"));
        assert!(err(&idx([0, 0, 8, 3], &[1, u32::MAX, 2], &[])).contains("outside 1 to 4096"));
        // A gzip stream whose checksum does not match its content.
        let mut corrupt = gzip(&whole);
        let crc = corrupt.len() - 8;
        corrupt[crc] ^= 0xFF;
        let e = err(&corrupt);
        assert!(e.contains("its end cannot be read"), "{e}");
    }

    #[test]
    fn an_absurd_header_is_refused_before_allocating() {
        // 2³² − 1 images of 28×28 claimed by a file of a few bytes: over the limit.
        let e = err(&idx([0, 0, 8, 3], &[u32::MAX, 28, 28], &[0; 100]));
        assert!(e.contains("over the limit"), "{e}");
        // Under the limit, but far more than the file holds: read as it arrives, then refused.
        let e = err(&gzip(&idx([0, 0, 8, 3], &[200_000, 28, 28], &[0; 1000])));
        assert!(
            e.contains("declares 156800000 bytes of images, it holds 1000"),
            "{e}"
        );
    }

    #[test]
    fn images_and_labels_must_be_as_many() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images.gz");
        let labels = dir.path().join("labels");
        std::fs::write(&images, gzip(&idx([0, 0, 8, 3], &[2, 1, 1], &[5, 6]))).unwrap();
        std::fs::write(&labels, idx([0, 0, 8, 1], &[3], &[0, 1, 2])).unwrap();
        let e = read_labelled(&images, &labels).unwrap_err().to_string();
        assert!(e.contains("holds 3 labels for the 2 images"), "{e}");
        std::fs::write(&labels, idx([0, 0, 8, 1], &[2], &[0, 1])).unwrap();
        let (read, labels) = read_labelled(&images, &labels).unwrap();
        assert_eq!((read.pixels, labels), (vec![5, 6], vec![0, 1]));
    }

    #[test]
    fn a_missing_data_set_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = fashion_mnist(dir.path(), FashionSplit::Test)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t10k-images-idx3-ubyte.gz")
                && e.contains("apt-get install dataset-fashion-mnist"),
            "{e}"
        );
    }
}
