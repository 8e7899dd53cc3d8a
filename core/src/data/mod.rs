//! Facial-expression data sets: label files to [`Split`]s of samples with canonical class names,
//! decoding into an in-memory cache, de-duplication across splits and class-balanced sampling.
//!
//! Every loader reads the label file of one split, checks each row, and either keeps the row as
//! a [`Sample`] or drops it under a documented rule, counted in [`Split::dropped`]. Anything
//! else that is wrong (a malformed row, a label out of range, a duplicate or missing image, a
//! path that leaves the data root, a split with nothing left) is an [`Error`](crate::Error)
//! naming the file and its 1-based line. Call [`Split::report`] to print what was kept.
//!
//! # Layouts
//!
//! Paths are relative to the `root` given to [`load_split`]; a sample's [`Sample::id`] is the
//! image name as the label file writes it.
//!
//! - **FERPlus** ([`DatasetKind::FerPlus`], splits `train`, `valid`, `test`):
//!   `FER2013Train/label.csv`, `FER2013Valid/label.csv`, `FER2013Test/label.csv`, images beside
//!   them (`fer0000000.png`, 48x48 grey). A root holding `data/FER2013Train/` (the layout of the
//!   microsoft/FERPlus repository) is accepted too. Rows, no header:
//!   `fer0000000.png,"(0, 0, 48, 48)",n0,...,n9`, the face box (ignored: always the whole image)
//!   then 10 vote counts for neutral, happiness, surprise, sadness, anger, disgust, fear,
//!   contempt, unknown, not-a-face. See [`ferplus_label`] for the vote rules of each
//!   [`FerPlusMode`]. [`FERPLUS_MISLABELLED`] lists a known bad frame to pass as an exclusion.
//! - **RAF-DB basic** ([`DatasetKind::RafDb`], splits `train`, `test`):
//!   `EmoLabel/list_patition_label.txt` (sic), lines `train_00001.jpg 5` or `test_0001.jpg 7`,
//!   1-based labels (1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral);
//!   the split is the name's prefix. Images `Image/aligned/train_00001_aligned.jpg`.
//! - **AffectNet** ([`DatasetKind::AffectNet8`], [`DatasetKind::AffectNet7`], splits `train`,
//!   `valid`, and `test` as another name for `valid`, since the test set is not public):
//!   `training.csv` and `validation.csv` with the header
//!   `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,`
//!   `valence,arousal` (the landmarks field is quoted, `;`-separated), images
//!   `Manually_Annotated_Images/<subDirectory_filePath>`. Expression 0 neutral, 1 happy, 2 sad,
//!   3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt; 8 none, 9 uncertain and 10 non-face are
//!   dropped, and AffectNet-7 also drops contempt.
//! - **FER2013** ([`DatasetKind::Fer2013`], splits `train`, `valid`, `test`): `fer2013.csv` with
//!   the header `emotion,pixels,Usage` (columns found by name); `Usage` Training, PublicTest and
//!   PrivateTest are train, valid and test; emotion 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad,
//!   5 surprise, 6 neutral; `pixels` holds 2304 grey values (48x48), kept in memory as
//!   [`ImageSource::Gray`]. Ids are the 0-based data row, `row00000`.
//! - **Folder** ([`DatasetKind::Folder`], splits `train`, `valid`, `test`):
//!   `<split>/<class>/<image>` with the extensions png, jpg, jpeg, bmp, gif, tif, tiff, webp.
//!   The classes are the sorted names of the sub-folders of `<split>/`. Each split is read on its
//!   own, so callers must check that the splits they combine agree
//!   ([`Split::ensure_same_classes`]). Ids are `<class>/<file>`.

use std::path::PathBuf;

mod decode;
mod ferplus;
mod sampler;

#[cfg(feature = "fs")]
mod affectnet;
#[cfg(feature = "fs")]
mod collect;
#[cfg(feature = "fs")]
mod fer2013;
#[cfg(feature = "fs")]
mod folder;
#[cfg(feature = "fs")]
mod rafdb;
#[cfg(feature = "fs")]
mod text;

#[cfg(feature = "fs")]
pub(crate) use collect::Collector;
#[cfg(all(test, feature = "fs"))]
pub(crate) mod test_util;

#[cfg(feature = "fs")]
pub use decode::{decode_all, decode_source};
pub use decode::{dedup_against, DecodedImage, DUPLICATE_REASON, MAX_IMAGE_SIDE};
pub use ferplus::{ferplus_label, FERPLUS_MISLABELLED};
#[cfg(feature = "fs")]
pub use folder::unlabelled_images;
pub use sampler::BalancedSampler;

/// FERPlus classes, in the order of the vote columns of `label.csv`.
pub const FERPLUS_CLASSES: [&str; 8] = [
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
];
/// RAF-DB basic classes; label `k` of `list_patition_label.txt` is index `k - 1`.
pub const RAFDB_CLASSES: [&str; 7] = [
    "surprise",
    "fear",
    "disgust",
    "happiness",
    "sadness",
    "anger",
    "neutral",
];
/// AffectNet-8 classes, indexed by the `expression` column.
pub const AFFECTNET8_CLASSES: [&str; 8] = [
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
];
/// AffectNet-7 classes: AffectNet-8 without contempt.
pub const AFFECTNET7_CLASSES: [&str; 7] = [
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger",
];
/// FER2013 classes, indexed by the `emotion` column.
pub const FER2013_CLASSES: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

/// Reason recorded for samples removed by [`LoadOptions::exclude`].
pub const EXCLUDED_REASON: &str = "excluded by the caller";

/// How many ids each [`Dropped`] entry keeps as examples.
const MAX_EXAMPLES: usize = 5;

/// The data sets mimic can read (layouts in the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// FER2013 images with the FER+ crowd-sourced votes, 8 classes.
    FerPlus,
    /// RAF-DB basic emotions, 7 classes.
    RafDb,
    /// AffectNet without contempt, 7 classes.
    AffectNet7,
    /// AffectNet, 8 classes.
    AffectNet8,
    /// FER2013 in its Kaggle csv form, 7 classes.
    Fer2013,
    /// A `<split>/<class>/<image>` folder tree; classes are the folder names.
    Folder,
}

impl DatasetKind {
    /// Every kind, in the order of [`DatasetKind::parse`]'s error message.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::FerPlus,
        DatasetKind::RafDb,
        DatasetKind::AffectNet7,
        DatasetKind::AffectNet8,
        DatasetKind::Fer2013,
        DatasetKind::Folder,
    ];

    /// From a name as [`DatasetKind::name`] writes it (case-insensitive).
    pub fn parse(s: &str) -> crate::Result<Self> {
        let wanted = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == wanted)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                crate::Error::Config(format!(
                    "unknown data set \"{s}\"; known: {}",
                    known.join(", ")
                ))
            })
    }

    /// The short lowercase name: `ferplus`, `rafdb`, `affectnet7`, `affectnet8`, `fer2013`,
    /// `folder`.
    pub fn name(&self) -> &'static str {
        match self {
            DatasetKind::FerPlus => "ferplus",
            DatasetKind::RafDb => "rafdb",
            DatasetKind::AffectNet7 => "affectnet7",
            DatasetKind::AffectNet8 => "affectnet8",
            DatasetKind::Fer2013 => "fer2013",
            DatasetKind::Folder => "folder",
        }
    }

    /// The canonical class names, in label-index order; `None` for [`DatasetKind::Folder`],
    /// whose classes come from the folder names.
    pub fn classes(&self) -> Option<&'static [&'static str]> {
        match self {
            DatasetKind::FerPlus => Some(&FERPLUS_CLASSES),
            DatasetKind::RafDb => Some(&RAFDB_CLASSES),
            DatasetKind::AffectNet7 => Some(&AFFECTNET7_CLASSES),
            DatasetKind::AffectNet8 => Some(&AFFECTNET8_CLASSES),
            DatasetKind::Fer2013 => Some(&FER2013_CLASSES),
            DatasetKind::Folder => None,
        }
    }

    /// The split names [`load_split`] accepts for this data set.
    pub fn splits(&self) -> &'static [&'static str] {
        match self {
            DatasetKind::RafDb => &["train", "test"],
            _ => &["train", "valid", "test"],
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How FERPlus votes become labels (see [`ferplus_label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FerPlusMode {
    /// One-hot targets for images where one emotion holds a strict majority of the votes.
    #[default]
    Majority,
    /// Vote distributions over the emotions, as the "probability" mode of microsoft/FERPlus.
    Soft,
}

/// Where a sample's pixels come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// An image file.
    File(PathBuf),
    /// Grey pixels held in the label file itself (FER2013 csv rows).
    Gray {
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
        /// `width * height` values, row-major.
        pixels: Vec<u8>,
    },
}

/// One labelled image of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The image name as the label file writes it (see the [module docs](self) per data set).
    pub id: String,
    /// Where the pixels are.
    pub source: ImageSource,
    /// The hard label: an index into [`Split::classes`] (the majority class in soft modes).
    pub class: usize,
    /// A probability vector over [`Split::classes`], summing to 1: one-hot in hard modes, the
    /// FERPlus vote distribution in [`FerPlusMode::Soft`].
    pub target: Vec<f32>,
}

/// Samples dropped by one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The rule, e.g. "no majority after removing single votes".
    pub reason: String,
    /// How many samples it dropped.
    pub count: usize,
    /// The ids of the first few.
    pub examples: Vec<String>,
}

/// Adds one dropped sample under `reason`, keeping the reasons in first-seen order.
pub(crate) fn record_drop(dropped: &mut Vec<Dropped>, reason: &str, id: &str) {
    let entry = match dropped.iter().position(|d| d.reason == reason) {
        Some(i) => &mut dropped[i],
        None => {
            dropped.push(Dropped {
                reason: reason.to_string(),
                count: 0,
                examples: Vec::new(),
            });
            dropped.last_mut().expect("an entry was just pushed")
        }
    };
    entry.count += 1;
    if entry.examples.len() < MAX_EXAMPLES {
        entry.examples.push(id.to_string());
    }
}

/// The samples of one split of a data set, with what was dropped on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The data set's [`DatasetKind::name`].
    pub dataset: String,
    /// The split's name: `train`, `valid` or `test`.
    pub split: String,
    /// Class names; [`Sample::class`] indexes them.
    pub classes: Vec<String>,
    /// The kept samples, in label-file order.
    pub samples: Vec<Sample>,
    /// What was dropped, one entry per rule, in first-seen order.
    pub dropped: Vec<Dropped>,
}

impl Split {
    /// Kept samples per class, indexed like [`Split::classes`].
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.class] += 1;
        }
        counts
    }

    /// The hard labels of the samples, e.g. for [`BalancedSampler::new`].
    pub fn labels(&self) -> Vec<usize> {
        self.samples.iter().map(|s| s.class).collect()
    }

    /// How many samples were dropped, all rules together.
    pub fn dropped_count(&self) -> usize {
        self.dropped.iter().map(|d| d.count).sum()
    }

    /// A multi-line summary: kept images, counts per class, and each drop rule with its count
    /// and first ids.
    pub fn report(&self) -> String {
        let counts = self.class_counts();
        let per_class: Vec<String> = self
            .classes
            .iter()
            .zip(&counts)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let mut out = format!(
            "{} {}: {} images\n  classes: {}\n  dropped: ",
            self.dataset,
            self.split,
            self.samples.len(),
            per_class.join(", ")
        );
        if self.dropped.is_empty() {
            out.push_str("none");
        } else {
            out.push_str(&self.dropped_count().to_string());
        }
        for d in &self.dropped {
            let more = if d.count > d.examples.len() {
                ", ..."
            } else {
                ""
            };
            out.push_str(&format!(
                "\n    {}: {} (e.g. {}{more})",
                d.reason,
                d.count,
                d.examples.join(", ")
            ));
        }
        out
    }

    /// Checks that `other` has the same classes in the same order, as splits of a
    /// [`DatasetKind::Folder`] tree must before they are used together.
    pub fn ensure_same_classes(&self, other: &Split) -> crate::Result<()> {
        if self.classes == other.classes {
            return Ok(());
        }
        Err(crate::Error::Config(format!(
            "{} {} has classes [{}] but {} {} has [{}]",
            self.dataset,
            self.split,
            self.classes.join(", "),
            other.dataset,
            other.split,
            other.classes.join(", ")
        )))
    }
}

/// Options of [`load_split`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// FERPlus labelling. Default: [`FerPlusMode::Majority`].
    pub ferplus_mode: FerPlusMode,
    /// Sample ids to leave out (e.g. [`FERPLUS_MISLABELLED`]); they are counted under
    /// [`EXCLUDED_REASON`]. Ids that the split does not hold are ignored, so one list can serve
    /// every split. Default: empty.
    pub exclude: Vec<String>,
}

/// Reads the labels of one split and checks that every kept image exists (images are not
/// decoded: see [`decode_all`]). `split` is one of [`DatasetKind::splits`].
#[cfg(feature = "fs")]
pub fn load_split(
    kind: DatasetKind,
    root: &std::path::Path,
    split: &str,
    opts: &LoadOptions,
) -> crate::Result<Split> {
    load_split_checked(kind, root, split, opts, true)
}

/// [`load_split`] without the check that image files exist: the label-file parsers alone, as
/// the fuzz targets drive them (the images a fuzzed file names cannot all be made). Not part
/// of the supported API.
#[doc(hidden)]
#[cfg(feature = "fs")]
pub fn load_split_labels(
    kind: DatasetKind,
    root: &std::path::Path,
    split: &str,
    opts: &LoadOptions,
) -> crate::Result<Split> {
    load_split_checked(kind, root, split, opts, false)
}

#[cfg(feature = "fs")]
fn load_split_checked(
    kind: DatasetKind,
    root: &std::path::Path,
    split: &str,
    opts: &LoadOptions,
    check_images: bool,
) -> crate::Result<Split> {
    if !kind.splits().contains(&split) {
        return Err(crate::Error::Config(format!(
            "{kind} has no split \"{split}\"; it has {}",
            kind.splits().join(", ")
        )));
    }
    match kind {
        DatasetKind::FerPlus => ferplus::load(root, split, opts, check_images),
        DatasetKind::RafDb => rafdb::load(root, split, opts, check_images),
        DatasetKind::AffectNet7 | DatasetKind::AffectNet8 => {
            affectnet::load(kind, root, split, opts, check_images)
        }
        DatasetKind::Fer2013 => fer2013::load(root, split, opts),
        DatasetKind::Folder => folder::load(root, split, opts),
    }
}

/// A one-hot probability vector.
#[cfg(any(feature = "fs", test))]
pub(crate) fn one_hot(class: usize, n_classes: usize) -> Vec<f32> {
    let mut t = vec![0.0; n_classes];
    t[class] = 1.0;
    t
}

/// Static class names as owned strings.
#[cfg(feature = "fs")]
pub(crate) fn class_names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_knows_every_name_and_lists_them_on_error() {
        for kind in DatasetKind::ALL {
            assert_eq!(DatasetKind::parse(kind.name()).unwrap(), kind);
        }
        assert_eq!(
            DatasetKind::parse(" FERPlus ").unwrap(),
            DatasetKind::FerPlus
        );
        let err = DatasetKind::parse("affectnet").unwrap_err().to_string();
        assert!(err.contains("\"affectnet\""), "{err}");
        assert!(
            err.contains("ferplus, rafdb, affectnet7, affectnet8, fer2013, folder"),
            "{err}"
        );
    }

    #[test]
    fn label_sets_match_the_data_sets() {
        assert_eq!(DatasetKind::FerPlus.classes().unwrap()[7], "contempt");
        assert_eq!(DatasetKind::RafDb.classes().unwrap()[0], "surprise");
        assert_eq!(DatasetKind::AffectNet8.classes().unwrap().len(), 8);
        assert_eq!(
            DatasetKind::AffectNet7.classes().unwrap(),
            &AFFECTNET8_CLASSES[..7]
        );
        assert_eq!(DatasetKind::Fer2013.classes().unwrap()[6], "neutral");
        assert!(DatasetKind::Folder.classes().is_none());
    }

    fn toy_split() -> Split {
        let sample = |id: &str, class| Sample {
            id: id.into(),
            source: ImageSource::File(id.into()),
            class,
            target: one_hot(class, 2),
        };
        let mut dropped = Vec::new();
        for i in 0..7 {
            record_drop(&mut dropped, "no majority", &format!("x{i}"));
        }
        record_drop(&mut dropped, "unknown wins", "y");
        Split {
            dataset: "toy".into(),
            split: "train".into(),
            classes: vec!["cat".into(), "dog".into()],
            samples: vec![sample("a", 1), sample("b", 1), sample("c", 0)],
            dropped,
        }
    }

    #[test]
    fn drops_are_counted_per_reason_with_few_examples() {
        let split = toy_split();
        assert_eq!(split.dropped.len(), 2);
        assert_eq!(split.dropped[0].count, 7);
        assert_eq!(split.dropped[0].examples.len(), MAX_EXAMPLES);
        assert_eq!(split.dropped_count(), 8);
    }

    #[test]
    fn report_lists_classes_and_drops() {
        let split = toy_split();
        assert_eq!(split.class_counts(), vec![1, 2]);
        assert_eq!(
            split.report(),
            "toy train: 3 images\n  classes: cat 1, dog 2\n  dropped: 8\n    \
             no majority: 7 (e.g. x0, x1, x2, x3, x4, ...)\n    unknown wins: 1 (e.g. y)"
        );
        let clean = Split {
            dropped: Vec::new(),
            ..split
        };
        assert!(clean.report().ends_with("dropped: none"));
    }

    #[test]
    fn differing_class_lists_are_refused() {
        let a = toy_split();
        let mut b = toy_split();
        assert!(a.ensure_same_classes(&b).is_ok());
        b.classes.reverse();
        b.split = "test".into();
        let err = a.ensure_same_classes(&b).unwrap_err().to_string();
        assert!(err.contains("toy train has classes [cat, dog] but toy test has [dog, cat]"));
    }

    #[cfg(feature = "fs")]
    #[test]
    fn unknown_split_names_what_exists() {
        let err = load_split(
            DatasetKind::RafDb,
            std::path::Path::new("/nonexistent"),
            "valid",
            &LoadOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rafdb has no split \"valid\"; it has train, test"),
            "{err}"
        );
    }
}
