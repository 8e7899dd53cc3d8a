//! Shared pieces of the fuzz targets: a scratch folder for the readers that take paths, and
//! the invariants every successful read must keep.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mimic_core::data::{DatasetKind, LoadOptions, Split};
use mimic_core::weights::TensorMap;

/// A folder of this process under the system temp dir, made on first use.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mimic-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        dir
    })
}

/// Writes `data` to `rel` inside [`scratch`], creating folders; returns the folder.
pub fn write_input(rel: &str, data: &[u8]) -> &'static Path {
    let path = scratch().join(rel);
    std::fs::create_dir_all(path.parent().expect("a relative file path"))
        .expect("the temp dir is writable");
    // A fresh file each time: rewriting a truncated file makes ext4 flush it, a thousand
    // times slower than the parse itself.
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, data).expect("the temp dir is writable");
    scratch()
}

/// Reads `split` of `kind` from the scratch folder with the label parser alone, and checks
/// what a successful read promises.
pub fn load_labels(kind: DatasetKind, split: &str, opts: &LoadOptions) {
    if let Ok(s) = mimic_core::data::load_split_labels(kind, scratch(), split, opts) {
        check_split(&s);
    }
}

/// The promises of a [`Split`]: some samples, each with a class in range and a target that is
/// a probability vector over the classes; the report can be written.
pub fn check_split(s: &Split) {
    assert!(
        !s.samples.is_empty(),
        "an empty split is an error, not a result"
    );
    for sample in &s.samples {
        assert!(sample.class < s.classes.len(), "{sample:?}");
        assert_eq!(sample.target.len(), s.classes.len(), "{sample:?}");
        let sum: f32 = sample.target.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sample:?}");
        assert!(sample.target.iter().all(|p| (0.0..=1.0).contains(p)));
    }
    let _ = s.report();
    assert_eq!(s.class_counts().iter().sum::<usize>(), s.samples.len());
}

/// The promise of a [`TensorMap`]: every tensor holds as many values as its shape says.
pub fn check_map(map: &TensorMap) {
    for (name, t) in &map.tensors {
        let n = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(n, Some(t.data.len()), "{name}: shape {:?}", t.shape);
    }
}
