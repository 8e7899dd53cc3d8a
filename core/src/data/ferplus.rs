//! FERPlus: FER2013 images relabelled by 10 crowd votes each (Barsoum et al., "Training Deep
//! Networks for Facial Expression Recognition with Crowd-Sourced Label Distribution", ICMI 2016,
//! <https://arxiv.org/abs/1608.01041>). The vote rules follow `src/ferplus.py` of
//! <https://github.com/microsoft/FERPlus>.

use super::FerPlusMode;

/// Ids of FERPlus images whose votes do not describe the file, to pass as
/// [`LoadOptions::exclude`](super::LoadOptions::exclude): `FER2013Test/fer0033120.png` holds a
/// not-a-face frame (FER2013 reuses the name for two rows) but `label.csv` gives it face votes.
pub const FERPLUS_MISLABELLED: [&str; 1] = ["fer0033120.png"];

/// Index of the `unknown` column; `not-a-face` follows it.
const UNKNOWN: usize = 8;
/// The emotions, the classes FERPlus keeps.
const N_EMOTIONS: usize = 8;

const NO_VOTES: &str = "no votes left after removing single votes";
const NO_MAJORITY: &str = "no majority after removing single votes";
const UNKNOWN_WINS: &str = "most votes for unknown";
const NOT_A_FACE_WINS: &str = "most votes for not-a-face";
const TOO_MANY_TIED: &str = "more than 3 top classes";
const WEAK_TOP: &str = "top emotions hold half the votes or less";

/// Turns the 10 vote counts of a `label.csv` row into `(class, target)` over the 8 emotions,
/// or the reason the image is dropped.
///
/// Both modes first zero every count of 1 (one annotator's outlier vote).
/// - [`FerPlusMode::Majority`]: the image is kept when one column holds strictly more than half
///   of the remaining votes and is an emotion; the target is one-hot.
/// - [`FerPlusMode::Soft`]: the columns are taken greedily by vote count (ties together) until
///   they hold at least 75% of the votes or 3 columns are taken. Reaching unknown or not-a-face
///   stops the walk; that column is left out unless it came first, alone. The image is dropped
///   when more than 3 columns were taken, when they hold half the votes or less, or when the
///   leading column is unknown or not-a-face. The target is the taken emotions' votes,
///   normalised; the class is the first most-voted emotion.
///
/// NOTE: ferplus.py's "probability" mode trains on a one-hot label drawn from this target on
/// every visit (its "crossentropy" mode uses the target as is). We return the distribution;
/// drawing from it is left to the training loop.
pub fn ferplus_label(
    votes: &[u32; 10],
    mode: FerPlusMode,
) -> Result<(usize, Vec<f32>), &'static str> {
    let votes = votes.map(|v| if v <= 1 { 0 } else { u64::from(v) });
    let total: u64 = votes.iter().sum();
    if total == 0 {
        return Err(NO_VOTES);
    }

    let chosen = match mode {
        FerPlusMode::Majority => {
            let (top, &max) = first_max(&votes);
            if 2 * max <= total {
                return Err(NO_MAJORITY);
            }
            let mut chosen = [0; 10];
            chosen[top] = max;
            chosen
        }
        FerPlusMode::Soft => soft_columns(votes, total)?,
    };

    // Same as ferplus.py: an image whose leading column is unknown or not-a-face is skipped.
    let (class, _) = first_max(&chosen);
    match class {
        UNKNOWN => return Err(UNKNOWN_WINS),
        c if c > UNKNOWN => return Err(NOT_A_FACE_WINS),
        _ => {}
    }
    let kept: u64 = chosen[..N_EMOTIONS].iter().sum();
    let target = chosen[..N_EMOTIONS]
        .iter()
        .map(|&v| v as f32 / kept as f32)
        .collect();
    Ok((class, target))
}

/// The columns ferplus.py's probability mode keeps, or why it keeps none.
fn soft_columns(votes: [u64; 10], total: u64) -> Result<[u64; 10], &'static str> {
    let mut rest = votes;
    let mut chosen = [0u64; 10];
    let (mut covered, mut count) = (0u64, 0usize);
    let mut valid = true;

    // Take the top count (all columns tied at it) until 75% of the votes are covered.
    while 4 * covered < 3 * total && count < 3 && valid {
        let (_, &max) = first_max(&rest);
        if max == 0 {
            break;
        }
        for i in 0..rest.len() {
            if rest[i] != max {
                continue;
            }
            chosen[i] = max;
            rest[i] = 0;
            covered += max;
            count += 1;
            if i >= UNKNOWN {
                valid = false;
                // Unknown / not-a-face only stays when nothing was taken before it.
                if chosen.iter().sum::<u64>() > max {
                    chosen[i] = 0;
                    count -= 1;
                }
                break;
            }
        }
    }

    if count > 3 {
        return Err(TOO_MANY_TIED);
    }
    if 2 * chosen.iter().sum::<u64>() <= total {
        return Err(WEAK_TOP);
    }
    Ok(chosen)
}

/// Index and value of the first largest entry.
fn first_max(v: &[u64; 10]) -> (usize, &u64) {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    (best, &v[best])
}

#[cfg(feature = "fs")]
pub(crate) use loader::load;

#[cfg(feature = "fs")]
mod loader {
    use std::path::Path;

    use super::ferplus_label;
    use crate::data::text::{for_each_line, path_error, plain_name, split_csv};
    use crate::data::{
        class_names, Collector, DatasetKind, ImageSource, LoadOptions, Sample, Split,
        FERPLUS_CLASSES,
    };

    /// Vote columns of `label.csv` after the face box: the 8 emotions, then these two.
    const VOTE_NAMES: [&str; 10] = [
        "neutral",
        "happiness",
        "surprise",
        "sadness",
        "anger",
        "disgust",
        "fear",
        "contempt",
        "unknown",
        "not-a-face",
    ];

    /// Reads `FER2013{Train,Valid,Test}/label.csv` under `root` or `root/data`.
    pub(crate) fn load(
        root: &Path,
        split: &str,
        opts: &LoadOptions,
        check_images: bool,
    ) -> crate::Result<Split> {
        let folder_name = match split {
            "train" => "FER2013Train",
            "valid" => "FER2013Valid",
            _ => "FER2013Test",
        };
        let folder = [root.join(folder_name), root.join("data").join(folder_name)]
            .into_iter()
            .find(|f| f.is_dir())
            .ok_or_else(|| {
                let why = format!("no {folder_name} folder here or in data/ (ferplus {split})");
                path_error(root, why)
            })?;
        let label_path = folder.join("label.csv");

        let mut rows = Collector::new(&label_path, opts).checking_images(check_images);
        for_each_line(&label_path, |line, text| {
            if text.trim().is_empty() {
                return Ok(());
            }
            let fields = split_csv(text).map_err(|e| rows.error(line, e))?;
            if fields.len() != 12 {
                let why = format!(
                    "expected 12 fields (image, face box, 10 vote counts), found {}",
                    fields.len()
                );
                return Err(rows.error(line, why));
            }
            let name = fields[0].trim();
            plain_name(name).map_err(|e| rows.error(line, e))?;

            let mut votes = [0u32; 10];
            for (k, field) in fields[2..].iter().enumerate() {
                votes[k] = field.trim().parse().map_err(|_| {
                    let why = format!(
                        "field {} ({} votes): expected a whole number, found \"{field}\"",
                        k + 3,
                        VOTE_NAMES[k]
                    );
                    rows.error(line, why)
                })?;
            }

            rows.check_unique(line, name)?;
            match ferplus_label(&votes, opts.ferplus_mode) {
                Ok((class, target)) => {
                    let sample = Sample {
                        id: name.to_string(),
                        source: ImageSource::File(folder.join(name)),
                        class,
                        target,
                    };
                    rows.keep(line, sample)
                }
                Err(reason) => {
                    rows.drop_row(reason, name);
                    Ok(())
                }
            }
        })?;
        rows.finish(DatasetKind::FerPlus, split, class_names(&FERPLUS_CLASSES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f32 = 1e-6;

    fn majority(votes: [u32; 10]) -> Result<usize, &'static str> {
        ferplus_label(&votes, FerPlusMode::Majority).map(|(class, target)| {
            assert_eq!(target, crate::data::one_hot(class, 8));
            class
        })
    }

    fn soft(votes: [u32; 10]) -> Result<(usize, Vec<f32>), &'static str> {
        let out = ferplus_label(&votes, FerPlusMode::Soft);
        if let Ok((_, t)) = &out {
            assert_eq!(t.len(), 8);
            assert!((t.iter().sum::<f32>() - 1.0).abs() < TOL, "{t:?}");
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < TOL)
    }

    #[test]
    fn majority_zeroes_single_votes_first() {
        // 5 of 10 is no majority, but 5 of the 5 votes left after zeroing the singles is.
        assert_eq!(majority([5, 1, 1, 1, 1, 1, 0, 0, 0, 0]), Ok(0));
        assert_eq!(majority([0, 0, 0, 0, 0, 0, 0, 6, 1, 1]), Ok(7));
        assert_eq!(majority([1; 10]), Err(NO_VOTES));
        // A 9-vote row (there is one in FERPlus train): 5 of 9 is a majority.
        assert_eq!(majority([0, 5, 4, 0, 0, 0, 0, 0, 0, 0]), Ok(1));
    }

    #[test]
    fn majority_needs_strictly_more_than_half() {
        assert_eq!(majority([6, 4, 0, 0, 0, 0, 0, 0, 0, 0]), Ok(0));
        assert_eq!(majority([5, 3, 2, 0, 0, 0, 0, 0, 0, 0]), Err(NO_MAJORITY));
        // A tie at the top is never a majority.
        assert_eq!(majority([0, 0, 5, 5, 0, 0, 0, 0, 0, 0]), Err(NO_MAJORITY));
        assert_eq!(majority([4, 4, 2, 0, 0, 0, 0, 0, 0, 0]), Err(NO_MAJORITY));
    }

    #[test]
    fn majority_drops_unknown_and_not_a_face_winners() {
        assert_eq!(majority([2, 0, 0, 0, 0, 0, 0, 0, 8, 0]), Err(UNKNOWN_WINS));
        assert_eq!(
            majority([0, 0, 0, 0, 0, 0, 0, 0, 3, 7]),
            Err(NOT_A_FACE_WINS)
        );
    }

    #[test]
    fn soft_takes_top_columns_until_three_quarters() {
        let (class, t) = soft([6, 2, 2, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(class, 0);
        assert!(
            close(&t, &[0.6, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0]),
            "{t:?}"
        );
        // After zeroing singles 6 of 8 votes is already 75%: sadness is not taken.
        let (_, t) = soft([6, 1, 1, 2, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(close(&t, &crate::data::one_hot(0, 8)), "{t:?}");
        // Ties are taken together; the class is the first of them.
        let (class, t) = soft([0, 4, 4, 2, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(class, 1);
        assert!(
            close(&t, &[0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]),
            "{t:?}"
        );
    }

    #[test]
    fn soft_leaves_out_unknown_after_emotions() {
        let (class, t) = soft([6, 0, 0, 0, 0, 0, 0, 0, 2, 2]).unwrap();
        assert_eq!(class, 0);
        assert!(close(&t, &crate::data::one_hot(0, 8)), "{t:?}");
        // Unknown reached after 4 of 10 votes stops the walk below half.
        assert_eq!(soft([4, 0, 0, 0, 0, 0, 0, 0, 3, 3]), Err(WEAK_TOP));
    }

    #[test]
    fn soft_drops_unknown_winners_ties_and_weak_tops() {
        assert_eq!(soft([3, 0, 0, 0, 0, 0, 0, 0, 7, 0]), Err(UNKNOWN_WINS));
        assert_eq!(soft([0, 0, 0, 0, 0, 0, 0, 0, 0, 9]), Err(NOT_A_FACE_WINS));
        assert_eq!(soft([3, 3, 0, 0, 0, 0, 0, 0, 0, 4]), Err(WEAK_TOP));
        assert_eq!(soft([2, 2, 2, 2, 2, 0, 0, 0, 0, 0]), Err(TOO_MANY_TIED));
        assert_eq!(soft([1; 10]), Err(NO_VOTES));
    }

    #[cfg(feature = "fs")]
    mod files {
        use crate::data::test_util::TempDir;
        use crate::data::*;
        use std::path::Path;

        fn load(root: &Path, split: &str, mode: FerPlusMode) -> crate::Result<Split> {
            let opts = LoadOptions {
                ferplus_mode: mode,
                ..Default::default()
            };
            load_split(DatasetKind::FerPlus, root, split, &opts)
        }

        const BOX: &str = "\"(0, 0, 48, 48)\"";

        fn fixture(rows: &[(&str, &str)]) -> TempDir {
            let dir = TempDir::new("ferplus");
            let mut csv = String::new();
            for (name, votes) in rows {
                csv.push_str(&format!("{name},{BOX},{votes}\n"));
                dir.write(&format!("FER2013Train/{name}"), b"png");
            }
            dir.write("FER2013Train/label.csv", csv);
            dir
        }

        #[test]
        fn label_csv_rows_become_samples_and_drops() {
            let dir = fixture(&[
                ("a.png", "4,0,0,1,3,2,0,0,0,0"),
                ("b.png", "0,10,0,0,0,0,0,0,0,0"),
                ("c.png", "0,0,0,0,0,0,0,0,10,0"),
                ("d.png", "5,5,0,0,0,0,0,0,0,0"),
                ("e.png", "1,1,1,1,1,1,1,1,1,1"),
                ("f.png", "6,0,0,0,0,0,0,0,2,2"),
            ]);
            let split = load(dir.path(), "train", FerPlusMode::Majority).unwrap();
            let ids: Vec<&str> = split.samples.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids, ["b.png", "f.png"]);
            assert_eq!(split.class_counts(), [1, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(
                split.samples[0].source,
                ImageSource::File(dir.path().join("FER2013Train/b.png"))
            );
            let reasons: Vec<(&str, usize)> = split
                .dropped
                .iter()
                .map(|d| (d.reason.as_str(), d.count))
                .collect();
            assert_eq!(
                reasons,
                [
                    (super::NO_MAJORITY, 2),
                    (super::UNKNOWN_WINS, 1),
                    (super::NO_VOTES, 1)
                ]
            );
            assert_eq!(split.dropped[0].examples, ["a.png", "d.png"]);

            let soft = load(dir.path(), "train", FerPlusMode::Soft).unwrap();
            let ids: Vec<&str> = soft.samples.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids, ["a.png", "b.png", "d.png", "f.png"]);
            let a = [4.0 / 7.0, 0.0, 0.0, 0.0, 3.0 / 7.0, 0.0, 0.0, 0.0];
            assert!(super::close(&soft.samples[0].target, &a));
            assert!(super::close(&soft.samples[2].target[..2], &[0.5, 0.5]));
        }

        #[test]
        fn data_subfolder_and_exclusions_are_accepted() {
            let dir = TempDir::new("ferplus-data");
            dir.write(
                "data/FER2013Valid/label.csv",
                format!("x.png,{BOX},0,9,0,0,0,0,0,0,1,0\ny.png,{BOX},0,9,0,0,0,0,0,0,1,0\n"),
            );
            dir.write("data/FER2013Valid/x.png", b"png");
            dir.write("data/FER2013Valid/y.png", b"png");
            let opts = LoadOptions {
                exclude: vec!["y.png".into(), "elsewhere.png".into()],
                ..Default::default()
            };
            let split = load_split(DatasetKind::FerPlus, dir.path(), "valid", &opts).unwrap();
            assert_eq!(split.samples.len(), 1);
            assert_eq!(split.dropped[0].reason, EXCLUDED_REASON);
            assert_eq!(split.dropped[0].examples, ["y.png"]);
        }

        fn error_of(label_csv: &str, image: Option<&str>) -> String {
            let dir = TempDir::new("ferplus-bad");
            dir.write("FER2013Test/label.csv", label_csv);
            if let Some(name) = image {
                dir.write(&format!("FER2013Test/{name}"), b"png");
            }
            let err = load(dir.path(), "test", FerPlusMode::Majority).unwrap_err();
            err.to_string()
        }

        #[test]
        fn bad_rows_name_the_file_and_line() {
            let ok = format!("a.png,{BOX},0,10,0,0,0,0,0,0,0,0\n");
            let err = error_of(&format!("{ok}b.png,{BOX},1,2,3\n"), Some("a.png"));
            assert!(err.contains("label.csv:2: expected 12 fields"), "{err}");
            let err = error_of(
                &format!("{ok}b.png,{BOX},0,x,0,0,0,0,0,0,0,0\n"),
                Some("a.png"),
            );
            assert!(
                err.contains("label.csv:2: field 4 (happiness votes)"),
                "{err}"
            );
            let err = error_of(
                &format!("{ok}b.png,{BOX},0,-1,0,0,0,0,0,0,0,0\n"),
                Some("a.png"),
            );
            assert!(err.contains("label.csv:2: field 4"), "{err}");
            let err = error_of(&format!("{ok}{ok}"), Some("a.png"));
            assert!(err.contains("label.csv:2: duplicate image \"a.png\" (also on line 1)"));
            let err = error_of(&ok, None);
            assert!(
                err.contains("label.csv:1: image") && err.contains("does not exist"),
                "{err}"
            );
            let err = error_of(&format!("../a.png,{BOX},0,10,0,0,0,0,0,0,0,0\n"), None);
            assert!(
                err.contains("label.csv:1: image name \"../a.png\""),
                "{err}"
            );
        }

        #[test]
        fn empty_split_and_missing_folder_are_errors() {
            let err = error_of(
                &format!("a.png,{BOX},0,0,0,0,0,0,0,0,10,0\n"),
                Some("a.png"),
            );
            assert!(err.contains("ferplus test has no usable samples"), "{err}");
            assert!(err.contains("1 most votes for unknown"), "{err}");
            let dir = TempDir::new("ferplus-none");
            let err = load(dir.path(), "train", FerPlusMode::Majority).unwrap_err();
            assert!(err.to_string().contains("no FER2013Train folder"), "{err}");
        }

        /// The shared FER+ copy; `None` (with a note) where it is absent.
        fn real_root() -> Option<std::path::PathBuf> {
            let root = Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/data/ferplus"
            ));
            if root.is_dir() {
                Some(root.to_path_buf())
            } else {
                eprintln!(
                    "note: {} is absent; skipping the real-data check",
                    root.display()
                );
                None
            }
        }

        #[test]
        fn real_ferplus_majority_counts_match_its_readme() {
            let Some(root) = real_root() else { return };
            // README.txt of the shared copy: kept images per class, in FERPLUS_CLASSES order.
            let expected = [
                (
                    "train",
                    28558,
                    [8733, 7284, 3136, 3022, 2098, 116, 536, 120],
                ),
                ("valid", 3579, [1180, 862, 411, 348, 289, 25, 60, 16]),
                ("test", 3573, [1083, 892, 394, 382, 269, 16, 86, 15]),
            ];
            for (name, rows, counts) in expected {
                let split = load(&root, name, FerPlusMode::Majority).unwrap();
                eprintln!("{}", split.report());
                assert_eq!(split.class_counts(), counts, "{name}");
                let kept: usize = counts.iter().sum();
                assert_eq!(split.samples.len(), kept, "{name}");
                assert_eq!(split.samples.len() + split.dropped_count(), rows, "{name}");
            }
        }

        #[test]
        fn real_ferplus_soft_counts_match_the_reference_rule() {
            let Some(root) = real_root() else { return };
            // Kept images per first-ranked class, from ferplus.py's probability-mode rule run
            // (in Python) over the same label.csv files.
            let expected = [
                (
                    "train",
                    28558,
                    [10107, 7501, 3517, 3445, 2401, 170, 643, 163],
                ),
                ("valid", 3579, [1311, 897, 452, 406, 319, 29, 69, 25]),
                ("test", 3573, [1250, 925, 438, 437, 315, 20, 96, 26]),
            ];
            for (name, rows, counts) in expected {
                let split = load(&root, name, FerPlusMode::Soft).unwrap();
                assert_eq!(split.class_counts(), counts, "{name}");
                assert_eq!(split.samples.len() + split.dropped_count(), rows, "{name}");
                for s in &split.samples {
                    assert!(
                        (s.target.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                        "{}",
                        s.id
                    );
                    let top = s.target.iter().cloned().fold(0.0, f32::max);
                    assert_eq!(s.target[s.class], top, "{}", s.id);
                }
            }
        }
    }
}
