//! Plain class-folder trees, `<root>/<split>/<class>/<image>`: the classes are the sorted folder
//! names, so any labelled set can be used without a loader of its own.

use std::path::{Path, PathBuf};

use super::text::{io_error, path_error};
use super::{one_hot, Collector, DatasetKind, ImageSource, LoadOptions, Sample, Split};

/// File extensions read as images (compared case-insensitively).
pub(crate) const IMAGE_EXTENSIONS: [&str; 8] =
    ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"];

const HIDDEN: &str = "hidden file or folder";
const NOT_AN_IMAGE: &str = "not an image file (by extension)";
const NESTED_FOLDER: &str = "folder inside a class folder (not searched)";
const LOOSE_FILE: &str = "file outside a class folder";

/// The entries of `dir` as (utf-8 name, path, is a folder), sorted by name.
fn list(dir: &Path) -> crate::Result<Vec<(String, PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|err| io_error(dir, err))? {
        let path = entry.map_err(|err| io_error(dir, err))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| path_error(&path, "the name is not utf-8"))?
            .to_string();
        // `is_dir` follows links, so a linked class folder counts as one.
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_image(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

/// Lists `<root>/<split>/<class>/*`; entries that are not images are counted as dropped.
pub(crate) fn load(root: &Path, split: &str, opts: &LoadOptions) -> crate::Result<Split> {
    let dir = root.join(split);
    if !dir.is_dir() {
        let found: Vec<String> = match list(root) {
            Ok(entries) => entries.into_iter().filter(|e| e.2).map(|e| e.0).collect(),
            Err(_) => Vec::new(),
        };
        let why = format!(
            "no such folder: a folder data set holds <split>/<class>/<image>; folders in {}: [{}]",
            root.display(),
            found.join(", ")
        );
        return Err(path_error(&dir, why));
    }

    let mut rows = Collector::new(&dir, opts);
    let mut class_dirs = Vec::new();
    for (name, path, is_dir) in list(&dir)? {
        if name.starts_with('.') {
            rows.drop_row(HIDDEN, &name);
        } else if is_dir {
            class_dirs.push((name, path));
        } else {
            rows.drop_row(LOOSE_FILE, &name);
        }
    }
    if class_dirs.is_empty() {
        return Err(path_error(
            &dir,
            "no class folders; expected <class>/<image> inside",
        ));
    }

    let n_classes = class_dirs.len();
    for (class, (class_name, class_dir)) in class_dirs.iter().enumerate() {
        for (name, path, is_dir) in list(class_dir)? {
            let id = format!("{class_name}/{name}");
            if name.starts_with('.') {
                rows.drop_row(HIDDEN, &id);
            } else if is_dir {
                rows.drop_row(NESTED_FOLDER, &id);
            } else if !is_image(&name) {
                rows.drop_row(NOT_AN_IMAGE, &id);
            } else {
                rows.keep_listed(Sample {
                    id,
                    source: ImageSource::File(path),
                    class,
                    target: one_hot(class, n_classes),
                });
            }
        }
    }
    let classes = class_dirs.into_iter().map(|(name, _)| name).collect();
    rows.finish(DatasetKind::Folder, split, classes)
}

/// Folders below the root searched by [`unlabelled_images`] (guards against link cycles).
const MAX_DEPTH: usize = 16;

/// Every image file below `root`, recursively, in sorted path order, as one split with the
/// single class `image`: the input of MAE pre-training, which needs no labels. Hidden entries
/// and files that are not images (by extension) are counted as dropped, not read.
pub fn unlabelled_images(root: &Path, opts: &LoadOptions) -> crate::Result<Split> {
    if !root.is_dir() {
        return Err(path_error(
            root,
            "no such folder (pre-training reads a folder of images)",
        ));
    }
    let mut rows = Collector::new(root, opts);
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    let mut found = Vec::new();
    while let Some((dir, prefix, depth)) = stack.pop() {
        for (name, path, is_dir) in list(&dir)? {
            let id = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if name.starts_with('.') {
                rows.drop_row(HIDDEN, &id);
            } else if is_dir {
                if depth + 1 > MAX_DEPTH {
                    rows.drop_row("folder nested too deep (over 16 levels)", &id);
                } else {
                    stack.push((path, id, depth + 1));
                }
            } else if !is_image(&name) {
                rows.drop_row(NOT_AN_IMAGE, &id);
            } else {
                found.push((id, path));
            }
        }
    }
    found.sort();
    for (id, path) in found {
        rows.keep_listed(Sample {
            id,
            source: ImageSource::File(path),
            class: 0,
            target: vec![1.0],
        });
    }
    rows.finish(DatasetKind::Folder, "images", vec!["image".into()])
}

#[cfg(test)]
mod tests {
    use crate::data::test_util::TempDir;
    use crate::data::*;

    fn load(dir: &TempDir, split: &str) -> crate::Result<Split> {
        load_split(
            DatasetKind::Folder,
            dir.path(),
            split,
            &LoadOptions::default(),
        )
    }

    #[test]
    fn unlabelled_images_are_found_recursively_in_sorted_order() {
        let dir = TempDir::new("unlabelled");
        for f in ["b/2.png", "a/x/1.JPEG", "top.webp", "b/1.jpg"] {
            dir.write(f, b"img");
        }
        dir.write("b/notes.txt", b"x");
        dir.write(".hidden/3.png", b"x");
        let split = super::unlabelled_images(dir.path(), &LoadOptions::default()).unwrap();
        let ids: Vec<&str> = split.samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a/x/1.JPEG", "b/1.jpg", "b/2.png", "top.webp"]);
        assert_eq!(split.dropped_count(), 2);

        let empty = TempDir::new("unlabelled-empty");
        empty.write("readme.txt", b"x");
        let err = super::unlabelled_images(empty.path(), &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no usable samples"), "{err}");
        let missing = super::unlabelled_images(&empty.path().join("nope"), &LoadOptions::default());
        assert!(missing.unwrap_err().to_string().contains("no such folder"));
    }

    #[test]
    fn classes_are_sorted_folder_names() {
        let dir = TempDir::new("folder");
        for f in [
            "train/sad/2.PNG",
            "train/sad/1.jpg",
            "train/happy/a.webp",
            "train/angry/x.tif",
        ] {
            dir.write(f, b"img");
        }
        for f in [
            "train/sad/notes.txt",
            "train/sad/.DS_Store",
            "train/README",
            "test/happy/b.png",
        ] {
            dir.write(f, b"x");
        }
        std::fs::create_dir_all(dir.path().join("train/sad/more")).unwrap();
        std::fs::create_dir_all(dir.path().join("train/.cache")).unwrap();

        let train = load(&dir, "train").unwrap();
        assert_eq!(train.classes, ["angry", "happy", "sad"]);
        let ids: Vec<&str> = train.samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["angry/x.tif", "happy/a.webp", "sad/1.jpg", "sad/2.PNG"]
        );
        assert_eq!(train.class_counts(), [1, 1, 2]);
        assert_eq!(train.samples[3].target, [0.0, 0.0, 1.0]);
        let reasons: Vec<(&str, usize)> = train
            .dropped
            .iter()
            .map(|d| (d.reason.as_str(), d.count))
            .collect();
        assert_eq!(
            reasons,
            [
                (super::HIDDEN, 2),
                (super::LOOSE_FILE, 1),
                (super::NESTED_FOLDER, 1),
                (super::NOT_AN_IMAGE, 1)
            ]
        );

        // Each split reads only its own folder; combining them needs the same classes.
        let test = load(&dir, "test").unwrap();
        assert_eq!(test.classes, ["happy"]);
        assert!(train.ensure_same_classes(&test).is_err());
    }

    #[test]
    fn missing_split_empty_split_and_exclusions() {
        let dir = TempDir::new("folder-bad");
        dir.write("train/cat/a.png", b"img");
        let err = load(&dir, "valid").unwrap_err().to_string();
        assert!(
            err.contains("no such folder") && err.contains("[train]"),
            "{err}"
        );

        dir.write("test/readme.txt", b"x");
        let err = load(&dir, "test").unwrap_err().to_string();
        assert!(err.contains("no class folders"), "{err}");

        dir.write("test/cat/notes.txt", b"x");
        let err = load(&dir, "test").unwrap_err().to_string();
        assert!(err.contains("folder test has no usable samples"), "{err}");
        assert!(err.contains("1 not an image file"), "{err}");

        let opts = LoadOptions {
            exclude: vec!["cat/a.png".into()],
            ..Default::default()
        };
        let err = load_split(DatasetKind::Folder, dir.path(), "train", &opts).unwrap_err();
        assert!(
            err.to_string().contains("1 excluded by the caller"),
            "{err}"
        );
    }
}
