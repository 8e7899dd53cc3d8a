//! RAF-DB basic emotions (Li et al., "Reliable Crowdsourcing and Deep Locality-Preserving
//! Learning for Expression Recognition in the Wild", CVPR 2017): one label file for both splits,
//! aligned 100x100 colour faces.

use std::path::Path;

use super::text::{for_each_line, plain_name};
use super::RAFDB_CLASSES;
use super::{
    class_names, one_hot, Collector, DatasetKind, ImageSource, LoadOptions, Sample, Split,
};

/// Reads the `split` rows of `EmoLabel/list_patition_label.txt`; the other split's rows are
/// checked too (names are unique across the file) but not counted.
pub(crate) fn load(
    root: &Path,
    split: &str,
    opts: &LoadOptions,
    check_images: bool,
) -> crate::Result<Split> {
    let label_path = root.join("EmoLabel").join("list_patition_label.txt");
    let image_dir = root.join("Image").join("aligned");

    let mut rows = Collector::new(&label_path, opts).checking_images(check_images);
    for_each_line(&label_path, |line, text| {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.is_empty() {
            return Ok(());
        }
        if fields.len() != 2 {
            let why = format!(
                "expected 2 fields (image, label 1-7), found {}",
                fields.len()
            );
            return Err(rows.error(line, why));
        }
        let (name, label) = (fields[0], fields[1]);
        plain_name(name).map_err(|e| rows.error(line, e))?;
        let row_split = if name.starts_with("train_") {
            "train"
        } else if name.starts_with("test_") {
            "test"
        } else {
            let why = format!("image name \"{name}\" starts with neither train_ nor test_");
            return Err(rows.error(line, why));
        };
        let n_classes = RAFDB_CLASSES.len();
        let label: usize = label
            .parse()
            .ok()
            .filter(|l| (1..=n_classes).contains(l))
            .ok_or_else(|| {
                rows.error(
                    line,
                    format!("field 2: expected a label 1-7, found \"{label}\""),
                )
            })?;
        rows.check_unique(line, name)?;
        if row_split != split {
            return Ok(());
        }

        // `train_00001.jpg` -> `Image/aligned/train_00001_aligned.jpg`.
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        let sample = Sample {
            id: name.to_string(),
            source: ImageSource::File(image_dir.join(format!("{stem}_aligned.jpg"))),
            class: label - 1,
            target: one_hot(label - 1, n_classes),
        };
        rows.keep(line, sample)
    })?;
    rows.finish(DatasetKind::RafDb, split, class_names(&RAFDB_CLASSES))
}

#[cfg(test)]
mod tests {
    use crate::data::test_util::TempDir;
    use crate::data::*;

    const LIST: &str = "EmoLabel/list_patition_label.txt";

    fn fixture(list: &str, images: &[&str]) -> TempDir {
        let dir = TempDir::new("rafdb");
        dir.write(LIST, list);
        for name in images {
            dir.write(&format!("Image/aligned/{name}"), b"jpg");
        }
        dir
    }

    fn load(dir: &TempDir, split: &str) -> crate::Result<Split> {
        load_split(
            DatasetKind::RafDb,
            dir.path(),
            split,
            &LoadOptions::default(),
        )
    }

    #[test]
    fn labels_are_one_based_and_images_aligned() {
        let dir = fixture(
            "train_00001.jpg 5\ntrain_00002.jpg 1\ntest_0001.jpg 7\n\n",
            &[
                "train_00001_aligned.jpg",
                "train_00002_aligned.jpg",
                "test_0001_aligned.jpg",
            ],
        );
        let train = load(&dir, "train").unwrap();
        assert_eq!(train.classes, RAFDB_CLASSES);
        assert_eq!(train.samples.len(), 2);
        assert_eq!(train.samples[0].id, "train_00001.jpg");
        assert_eq!(train.classes[train.samples[0].class], "sadness");
        assert_eq!(train.classes[train.samples[1].class], "surprise");
        assert_eq!(train.samples[0].target, [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(
            train.samples[0].source,
            ImageSource::File(dir.path().join("Image/aligned/train_00001_aligned.jpg"))
        );
        assert!(train.dropped.is_empty());
        let test = load(&dir, "test").unwrap();
        assert_eq!(test.samples.len(), 1);
        assert_eq!(test.classes[test.samples[0].class], "neutral");
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let cases = [
            (
                "train_00001.jpg 0\n",
                "list_patition_label.txt:1: field 2: expected a label 1-7",
            ),
            (
                "train_00001.jpg 8\n",
                "field 2: expected a label 1-7, found \"8\"",
            ),
            ("train_00001.jpg\n", ":1: expected 2 fields"),
            ("x\ntrain_00001.jpg 1 2\n", ":1: expected 2 fields"),
            (
                "val_001.jpg 1\n",
                ":1: image name \"val_001.jpg\" starts with neither",
            ),
            (
                "../train_1.jpg 1\n",
                ":1: image name \"../train_1.jpg\" must be a file name",
            ),
            (
                "train_00001.jpg 1\ntrain_00001.jpg 2\n",
                ":2: duplicate image \"train_00001.jpg\"",
            ),
            ("train_00009.jpg 1\n", ":1: image"),
        ];
        for (list, want) in cases {
            let dir = fixture(list, &["train_00001_aligned.jpg"]);
            let err = load(&dir, "train").unwrap_err().to_string();
            assert!(err.contains(want), "{list:?}: {err}");
        }
        let dir = fixture("test_0001.jpg 1\n", &["test_0001_aligned.jpg"]);
        let err = load(&dir, "train").unwrap_err().to_string();
        assert!(
            err.contains("rafdb train has no usable samples (dropped: no rows)"),
            "{err}"
        );
    }
}
