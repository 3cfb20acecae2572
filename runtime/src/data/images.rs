//! PNG and JPEG images as samples: decoded with the `image` crate, converted to the
//! model input's channels (grey for `[h, w]` and `[h, w, 1]`, RGB for `[h, w, 3]`), pixel
//! values 0–255 as numbers (the data's own scale; the recorded preprocessing maps them as
//! in training). A size other than the input's is an error naming both, unless resizing
//! is asked for (a triangle filter). A folder is read as its `.png`/`.jpg`/`.jpeg` files
//! in name order.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::DynamicImage;

use super::{DataError, DataErrorKind, Location};
use crate::tensor::Tensor;

/// Whether `path` names a PNG or JPEG file (by extension).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The entries of folder `dir` that `keep` accepts, sorted by name.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, DataError> {
    let read = std::fs::read_dir(dir).map_err(|e| {
        DataError::new(
            DataErrorKind::Io,
            dir,
            Location::File,
            format!("cannot read the folder: {e}"),
        )
    })?;
    let mut paths: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| keep(p))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The image files of folder `dir`, sorted by name; an error when it has none.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let files = entries(dir, |p| p.is_file() && is_image_file(p))?;
    if files.is_empty() {
        return Err(DataError::new(
            DataErrorKind::Format,
            dir,
            Location::File,
            "the folder has no .png, .jpg or .jpeg files",
        ));
    }
    Ok(files)
}

/// `[height, width, channels]` of an input shape that images can fill: `[h, w]`,
/// `[h, w, 1]` or `[h, w, 3]`.
pub fn image_geometry(input: &[usize]) -> Option<(usize, usize, usize)> {
    match *input {
        [h, w] => Some((h, w, 1)),
        [h, w, c @ (1 | 3)] => Some((h, w, c)),
        _ => None,
    }
}

/// The images at `paths` as `[n, h, w, c]` pixel values (0–255), for an input of that
/// geometry; `resize` scales other sizes instead of refusing them.
pub fn load_images(
    paths: &[PathBuf],
    (h, w, c): (usize, usize, usize),
    resize: bool,
) -> Result<Tensor, DataError> {
    let mut data = Vec::with_capacity(paths.len() * h * w * c);
    for path in paths {
        let img = decode(path)?;
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let img = if (ih, iw) == (h, w) {
            img
        } else if resize {
            img.resize_exact(w as u32, h as u32, FilterType::Triangle)
        } else {
            return Err(DataError::new(
                DataErrorKind::Shape,
                path,
                Location::File,
                format!("the image is {ih}×{iw} pixels, the model input is {h}×{w}"),
            )
            .with_help("pass `--resize` to scale images to the input size"));
        };
        if c == 1 {
            data.extend(img.to_luma8().into_raw().into_iter().map(f32::from));
        } else {
            data.extend(img.to_rgb8().into_raw().into_iter().map(f32::from));
        }
    }
    Tensor::new(vec![paths.len(), h, w, c], data).map_err(|e| {
        DataError::new(
            DataErrorKind::Shape,
            &paths[0],
            Location::File,
            e.to_string(),
        )
    })
}

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let reader = image::ImageReader::open(path).map_err(|e| {
        DataError::new(
            DataErrorKind::Io,
            path,
            Location::File,
            format!("cannot open the image: {e}"),
        )
    })?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| DataError::new(DataErrorKind::Io, path, Location::File, e.to_string()))?;
    reader.decode().map_err(|e| {
        DataError::new(
            DataErrorKind::Format,
            path,
            Location::File,
            format!("cannot decode the image: {e}"),
        )
    })
}

/// Writes `pixels` (`h·w·c` values 0–255, `c` 1 or 3) as a PNG file (tests and tools).
pub fn write_png(path: &Path, pixels: &[f32], h: usize, w: usize, c: usize) -> Result<(), String> {
    let bytes: Vec<u8> = pixels
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let color = if c == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    image::save_buffer(path, &bytes, w as u32, h as u32, color).map_err(|e| e.to_string())
}

/// Subfolders of `dir`, sorted by name.
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    entries(dir, Path::is_dir)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The images of each class folder of `root` (`classes` in index order) as a data set.
fn class_folders(
    root: &Path,
    classes: &[String],
    geometry: (usize, usize, usize),
) -> Result<super::Dataset, DataError> {
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for dir in subfolders(root)? {
        let name = name_of(&dir);
        let Some(class) = classes.iter().position(|c| *c == name) else {
            return Err(DataError::new(
                DataErrorKind::Mismatch,
                &dir,
                Location::File,
                format!(
                    "class folder `{name}` is not one of the training classes ({})",
                    classes.join(", ")
                ),
            ));
        };
        for file in image_files(&dir)? {
            paths.push(file);
            labels.push(class as f32);
        }
    }
    if paths.is_empty() {
        return Err(DataError::new(
            DataErrorKind::Format,
            root,
            Location::File,
            "no class subfolders with images",
        )
        .with_help("put each class's images in a subfolder named after the class"));
    }
    let x = load_images(&paths, geometry, true)?;
    let n = labels.len();
    let y = Tensor::new(vec![n], labels).map_err(|e| {
        DataError::new(DataErrorKind::Mismatch, root, Location::File, e.to_string())
    })?;
    super::Dataset::from_tensors(&root.display().to_string(), x, y)
}

/// An image-folder data set (`images(dir, size, channels)`): one subfolder per class,
/// class indices in sorted name order; `train/` and `test/` subfolders as the splits when
/// both exist, else `test` of the images (chosen with `seed`) held out. Images are
/// resized to `size`, converted to `channels` (1 or 3) and multiplied by `scale`.
pub fn load_image_folder(
    dir: &Path,
    size: [usize; 2],
    channels: usize,
    scale: f32,
    test: f64,
    seed: u64,
) -> Result<super::Splits, DataError> {
    let geometry = (size[0], size[1], channels);
    let (train_root, test_root) = (dir.join("train"), dir.join("test"));
    let split_folders = train_root.is_dir() && test_root.is_dir();
    let class_root = if split_folders { &train_root } else { dir };
    let classes: Vec<String> = subfolders(class_root)?.iter().map(|d| name_of(d)).collect();
    if classes.is_empty() {
        return Err(DataError::new(
            DataErrorKind::Format,
            class_root,
            Location::File,
            "the folder has no class subfolders",
        )
        .with_help("put each class's images in a subfolder named after the class"));
    }
    let (mut train, mut test_set) = if split_folders {
        (
            class_folders(&train_root, &classes, geometry)?,
            class_folders(&test_root, &classes, geometry)?,
        )
    } else {
        let all = class_folders(dir, &classes, geometry)?;
        let n = all.len();
        let mut order: Vec<usize> = (0..n).collect();
        crate::rng::Rng::from_seed(seed ^ 0x1A6E_5EED).shuffle(&mut order);
        let held = ((n as f64 * test).round() as usize).clamp(usize::from(n > 1), n - 1);
        let mut mark = vec![false; n];
        for &i in &order[..held] {
            mark[i] = true;
        }
        super::split_rows(&all, &mark)
    };
    super::scale(&mut train, scale);
    super::scale(&mut test_set, scale);
    Ok(super::Splits {
        train,
        test: test_set,
        preprocess: super::Preprocess {
            scale,
            classes: Some(classes),
            ..super::Preprocess::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_and_rgb_images_load_as_pixels_and_sizes_are_checked() {
        let dir = std::env::temp_dir().join(format!("nnc-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let grey: Vec<f32> = (0..6).map(|v| (v * 40) as f32).collect();
        write_png(&dir.join("b.png"), &grey, 2, 3, 1).unwrap();
        write_png(&dir.join("a.png"), &[255.0; 6], 2, 3, 1).unwrap();
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        let files = image_files(&dir).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("a.png"));
        let t = load_images(&files, (2, 3, 1), false).unwrap();
        assert_eq!(t.shape, vec![2, 2, 3, 1]);
        assert_eq!(&t.data[6..], &grey[..]);
        // Grey to RGB repeats the value in the three channels.
        let rgb = load_images(&files[1..], (2, 3, 3), false).unwrap();
        assert_eq!(&rgb.data[..6], &[0.0, 0.0, 0.0, 40.0, 40.0, 40.0]);
        let e = load_images(&files, (4, 4, 1), false).unwrap_err();
        assert!(
            e.to_string()
                .contains("the image is 2×3 pixels, the model input is 4×4"),
            "{e}"
        );
        assert_eq!(
            load_images(&files, (4, 4, 1), true).unwrap().shape,
            vec![2, 4, 4, 1]
        );
        std::fs::write(dir.join("c.png"), "garbage").unwrap();
        let e = load_images(&[dir.join("c.png")], (2, 3, 1), false).unwrap_err();
        assert!(e.to_string().contains("cannot decode the image"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
