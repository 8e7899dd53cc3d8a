//! AffectNet (Mollahosseini et al., "AffectNet: A Database for Facial Expression, Valence, and
//! Arousal Computing in the Wild", IEEE TAC 2017), manually annotated part: `training.csv` and
//! `validation.csv`, images under `Manually_Annotated_Images/`.

use std::path::Path;

use super::text::{for_each_line, relative_path, split_csv};
use super::{
    class_names, one_hot, Collector, DatasetKind, ImageSource, LoadOptions, Sample, Split,
};

/// The largest `expression` value: 8 none, 9 uncertain, 10 non-face follow the 8 emotions.
const MAX_EXPRESSION: i64 = 10;

/// Why an `expression` value outside the kept classes is dropped.
fn drop_reason(expression: i64, n_classes: usize) -> Option<&'static str> {
    match expression {
        7 if n_classes == 7 => Some("expression 7 (contempt, not in affectnet7)"),
        8 => Some("expression 8 (none)"),
        9 => Some("expression 9 (uncertain)"),
        10 => Some("expression 10 (non-face)"),
        _ => None,
    }
}

/// The header and the two columns we read.
struct Columns {
    n_fields: usize,
    path: usize,
    expression: usize,
}

/// Finds the columns in the header line, or says what a header must hold.
fn parse_header(text: &str) -> Result<Columns, String> {
    let fields = split_csv(text)?;
    let find = |name: &str| fields.iter().position(|f| f.trim() == name);
    match (find("subDirectory_filePath"), find("expression")) {
        (Some(path), Some(expression)) => Ok(Columns {
            n_fields: fields.len(),
            path,
            expression,
        }),
        _ => {
            let shown: String = text.chars().take(80).collect();
            Err(format!(
                "expected a header with subDirectory_filePath and expression columns, \
                 found \"{shown}\""
            ))
        }
    }
}

/// Reads `training.csv` (train) or `validation.csv` (valid, test).
pub(crate) fn load(
    kind: DatasetKind,
    root: &Path,
    split: &str,
    opts: &LoadOptions,
    check_images: bool,
) -> crate::Result<Split> {
    let csv_path = root.join(if split == "train" {
        "training.csv"
    } else {
        "validation.csv"
    });
    let image_dir = root.join("Manually_Annotated_Images");
    let classes = kind.classes().expect("affectnet kinds have a label set");
    let n_classes = classes.len();

    let mut columns: Option<Columns> = None;
    let mut rows = Collector::new(&csv_path, opts).checking_images(check_images);
    for_each_line(&csv_path, |line, text| {
        if text.trim().is_empty() {
            return Ok(());
        }
        let Some(cols) = &columns else {
            columns = Some(parse_header(text).map_err(|e| rows.error(line, e))?);
            return Ok(());
        };
        let fields = split_csv(text).map_err(|e| rows.error(line, e))?;
        if fields.len() != cols.n_fields {
            let why = format!(
                "expected {} fields as in the header, found {}",
                cols.n_fields,
                fields.len()
            );
            return Err(rows.error(line, why));
        }

        let id = fields[cols.path].trim();
        let rel = relative_path(id).map_err(|e| rows.error(line, e))?;
        let field = &fields[cols.expression];
        let expression = field
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|e| (0..=MAX_EXPRESSION).contains(e))
            .ok_or_else(|| {
                let why = format!(
                    "field {} (expression): expected 0-{MAX_EXPRESSION}, found \"{field}\"",
                    cols.expression + 1
                );
                rows.error(line, why)
            })?;
        // `1/a.jpg`, `./1/a.jpg` and `1\a.jpg` name the same image: compare the cleaned path.
        let key: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        rows.check_unique(line, &key.join("/"))?;

        if let Some(reason) = drop_reason(expression, n_classes) {
            rows.drop_row(reason, id);
            return Ok(());
        }
        let class = expression as usize;
        let sample = Sample {
            id: id.to_string(),
            source: ImageSource::File(image_dir.join(rel)),
            class,
            target: one_hot(class, n_classes),
        };
        rows.keep(line, sample)
    })?;
    if columns.is_none() {
        let why = "the file is empty; expected a header and one row per image";
        return Err(super::text::path_error(&csv_path, why));
    }
    rows.finish(kind, split, class_names(classes))
}

#[cfg(test)]
mod tests {
    use crate::data::test_util::TempDir;
    use crate::data::*;

    const HEADER: &str = "subDirectory_filePath,face_x,face_y,face_width,face_height,\
                          facial_landmarks,expression,valence,arousal";

    /// A csv line for `path` with `expression`, landmarks quoted as in the real files.
    fn row(path: &str, expression: &str) -> String {
        format!("{path},12,13,200,200,\"1.5;2.5;3.5;4.5\",{expression},0.5,-0.25")
    }

    fn fixture(file: &str, rows: &[String], images: &[&str]) -> TempDir {
        let dir = TempDir::new("affectnet");
        dir.write(file, format!("{HEADER}\n{}\n", rows.join("\n")));
        for path in images {
            dir.write(&format!("Manually_Annotated_Images/{path}"), b"jpg");
        }
        dir
    }

    fn all_expressions() -> TempDir {
        let rows: Vec<String> = (0..=10)
            .map(|e| row(&format!("1/{e}.jpg"), &e.to_string()))
            .collect();
        let images: Vec<String> = (0..=7).map(|e| format!("1/{e}.jpg")).collect();
        let images: Vec<&str> = images.iter().map(String::as_str).collect();
        fixture("training.csv", &rows, &images)
    }

    fn reasons(split: &Split) -> Vec<String> {
        split
            .dropped
            .iter()
            .map(|d| format!("{} {}", d.count, d.reason))
            .collect()
    }

    #[test]
    fn affectnet8_drops_none_uncertain_and_non_face() {
        let dir = all_expressions();
        let opts = LoadOptions::default();
        let split = load_split(DatasetKind::AffectNet8, dir.path(), "train", &opts).unwrap();
        assert_eq!(split.class_counts(), [1; 8]);
        assert_eq!(split.classes[split.samples[7].class], "contempt");
        assert_eq!(
            split.samples[3].source,
            ImageSource::File(dir.path().join("Manually_Annotated_Images/1/3.jpg"))
        );
        assert_eq!(
            reasons(&split),
            [
                "1 expression 8 (none)",
                "1 expression 9 (uncertain)",
                "1 expression 10 (non-face)"
            ]
        );
    }

    #[test]
    fn affectnet7_also_drops_contempt() {
        let dir = all_expressions();
        let opts = LoadOptions::default();
        let split = load_split(DatasetKind::AffectNet7, dir.path(), "train", &opts).unwrap();
        assert_eq!(split.classes, AFFECTNET7_CLASSES);
        assert_eq!(split.class_counts(), [1; 7]);
        assert_eq!(
            reasons(&split)[0],
            "1 expression 7 (contempt, not in affectnet7)"
        );
        assert_eq!(split.dropped_count(), 4);
    }

    #[test]
    fn validation_csv_serves_valid_and_test() {
        let dir = fixture("validation.csv", &[row("2/a.png", "1")], &["2/a.png"]);
        for split in ["valid", "test"] {
            let opts = LoadOptions::default();
            let s = load_split(DatasetKind::AffectNet8, dir.path(), split, &opts).unwrap();
            assert_eq!((s.split.as_str(), s.samples.len()), (split, 1));
        }
    }

    #[test]
    fn bad_rows_name_the_file_and_line() {
        let ok = row("1/a.jpg", "0");
        let cases = [
            (
                vec![ok.clone(), row("1/b.jpg", "11")],
                "training.csv:3: field 7 (expression)",
            ),
            (vec![row("1/b.jpg", "-1")], "expected 0-10, found \"-1\""),
            (vec![row("1/b.jpg", "happy")], "training.csv:2: field 7"),
            (
                vec!["1/b.jpg,1,2".to_string()],
                ":2: expected 9 fields as in the header, found 3",
            ),
            (
                vec!["1/b.jpg,1,2,3,4,\"5;6,0,0,0".to_string()],
                ":2: field 6 opens a quote",
            ),
            (
                vec![ok.clone(), ok.clone()],
                ":3: duplicate image \"1/a.jpg\" (also on line 2)",
            ),
            (
                vec![row("../a.jpg", "0")],
                ":2: image path \"../a.jpg\" leaves the data root",
            ),
            (
                vec![row("/etc/a.jpg", "0")],
                ":2: image path \"/etc/a.jpg\" is absolute",
            ),
            (vec![row("1/missing.jpg", "0")], ":2: image"),
            (
                vec![row("1/x.jpg", "9")],
                "affectnet8 train has no usable samples (dropped: 1 ",
            ),
        ];
        for (rows, want) in cases {
            let dir = fixture("training.csv", &rows, &["1/a.jpg"]);
            let opts = LoadOptions::default();
            let err = load_split(DatasetKind::AffectNet8, dir.path(), "train", &opts)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{rows:?}: {err}");
        }

        let dir = TempDir::new("affectnet-header");
        dir.write("training.csv", format!("{}\n", row("1/a.jpg", "0")));
        let opts = LoadOptions::default();
        let err = load_split(DatasetKind::AffectNet8, dir.path(), "train", &opts).unwrap_err();
        assert!(
            err.to_string()
                .contains("training.csv:1: expected a header"),
            "{err}"
        );
        dir.write("training.csv", "");
        let err = load_split(DatasetKind::AffectNet8, dir.path(), "train", &opts).unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
    }
}
