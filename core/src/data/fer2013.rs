//! FER2013 (Goodfellow et al., "Challenges in Representation Learning: A report on three machine
//! learning contests", ICONIP 2013, <https://arxiv.org/abs/1307.0414>) in its Kaggle csv form:
//! one row per 48x48 grey face, the pixels inline.

use std::path::Path;

use super::text::{for_each_line, split_csv};
use super::FER2013_CLASSES;
use super::{
    class_names, one_hot, Collector, DatasetKind, ImageSource, LoadOptions, Sample, Split,
};

/// Side of the square FER2013 faces.
const SIDE: usize = 48;

/// The `Usage` value of each split.
const USAGES: [(&str, &str); 3] = [
    ("train", "Training"),
    ("valid", "PublicTest"),
    ("test", "PrivateTest"),
];

/// Column positions found in the header.
struct Columns {
    n_fields: usize,
    emotion: usize,
    pixels: usize,
    usage: usize,
}

fn parse_header(text: &str) -> Result<Columns, String> {
    let fields = split_csv(text)?;
    let find = |name: &str| {
        fields
            .iter()
            .position(|f| f.trim().eq_ignore_ascii_case(name))
    };
    match (find("emotion"), find("pixels"), find("usage")) {
        (Some(emotion), Some(pixels), Some(usage)) => Ok(Columns {
            n_fields: fields.len(),
            emotion,
            pixels,
            usage,
        }),
        _ => {
            let shown: String = text.chars().take(80).collect();
            Err(format!(
                "expected the header emotion,pixels,Usage, found \"{shown}\""
            ))
        }
    }
}

/// Parses the 2304 space-separated grey values of a `pixels` field.
fn parse_pixels(field: &str) -> Result<Vec<u8>, String> {
    let mut pixels = Vec::with_capacity(SIDE * SIDE);
    for (i, value) in field.split_ascii_whitespace().enumerate() {
        let v = value
            .parse::<u8>()
            .map_err(|_| format!("value {} is \"{value}\", expected 0-255", i + 1))?;
        pixels.push(v);
    }
    if pixels.len() != SIDE * SIDE {
        return Err(format!(
            "expected {} values ({SIDE}x{SIDE}), found {}",
            SIDE * SIDE,
            pixels.len()
        ));
    }
    Ok(pixels)
}

/// Reads the rows of `fer2013.csv` whose `Usage` belongs to `split`. Every row's field count,
/// emotion and usage are checked; pixels only for the rows of `split`.
pub(crate) fn load(root: &Path, split: &str, opts: &LoadOptions) -> crate::Result<Split> {
    let csv_path = root.join("fer2013.csv");
    let wanted = USAGES
        .iter()
        .find(|(s, _)| *s == split)
        .map(|(_, usage)| *usage)
        .expect("load_split checked the split name");
    let n_classes = FER2013_CLASSES.len();

    let mut columns: Option<Columns> = None;
    let mut row_index = 0usize;
    let mut rows = Collector::new(&csv_path, opts);
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
        let id = format!("row{row_index:05}");
        row_index += 1;

        let field = &fields[cols.emotion];
        let class = field
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&c| c < n_classes)
            .ok_or_else(|| {
                let why = format!(
                    "field {} (emotion): expected 0-{}, found \"{field}\"",
                    cols.emotion + 1,
                    n_classes - 1
                );
                rows.error(line, why)
            })?;
        let usage = fields[cols.usage].trim();
        if !USAGES.iter().any(|(_, u)| *u == usage) {
            let why = format!(
                "field {} (Usage): expected Training, PublicTest or PrivateTest, found \"{usage}\"",
                cols.usage + 1
            );
            return Err(rows.error(line, why));
        }
        if usage != wanted {
            return Ok(());
        }

        let pixels = parse_pixels(&fields[cols.pixels])
            .map_err(|e| rows.error(line, format!("field {} (pixels): {e}", cols.pixels + 1)))?;
        let sample = Sample {
            id,
            source: ImageSource::Gray {
                width: SIDE,
                height: SIDE,
                pixels,
            },
            class,
            target: one_hot(class, n_classes),
        };
        rows.keep(line, sample)
    })?;
    if columns.is_none() {
        let why = "the file is empty; expected a header and one row per image";
        return Err(super::text::path_error(&csv_path, why));
    }
    rows.finish(DatasetKind::Fer2013, split, class_names(&FER2013_CLASSES))
}

#[cfg(test)]
mod tests {
    use crate::data::test_util::TempDir;
    use crate::data::*;

    fn pixels(start: usize) -> String {
        let v: Vec<String> = (0..48 * 48)
            .map(|i| ((start + i) % 256).to_string())
            .collect();
        v.join(" ")
    }

    fn load(csv: &str, split: &str) -> crate::Result<Split> {
        let dir = TempDir::new("fer2013");
        dir.write("fer2013.csv", csv);
        load_split(
            DatasetKind::Fer2013,
            dir.path(),
            split,
            &LoadOptions::default(),
        )
    }

    #[test]
    fn usage_picks_the_split_and_pixels_stay_in_memory() {
        let csv = format!(
            "emotion,pixels,Usage\n0,{},Training\n3,{},PublicTest\n6,{},PrivateTest\n\
             5,{},Training\n",
            pixels(0),
            pixels(1),
            pixels(2),
            pixels(3)
        );
        let train = load(&csv, "train").unwrap();
        assert_eq!(train.samples.len(), 2);
        assert_eq!(train.samples[1].id, "row00003");
        assert_eq!(train.classes[train.samples[0].class], "angry");
        assert_eq!(train.classes[train.samples[1].class], "surprise");
        let ImageSource::Gray {
            width,
            height,
            pixels,
        } = &train.samples[1].source
        else {
            panic!("fer2013 samples hold their pixels");
        };
        assert_eq!((*width, *height, pixels.len()), (48, 48, 2304));
        assert_eq!(&pixels[..3], [3, 4, 5]);
        let valid = load(&csv, "valid").unwrap();
        assert_eq!(valid.classes[valid.samples[0].class], "happy");
        let test = load(&csv, "test").unwrap();
        assert_eq!(
            (test.samples[0].id.as_str(), test.samples[0].class),
            ("row00002", 6)
        );
    }

    #[test]
    fn columns_are_found_by_name() {
        // Kaggle's icml_face_data.csv orders the columns differently, with spaces.
        let csv = format!("emotion, Usage, pixels\n4,Training,{}\n", pixels(0));
        let train = load(&csv, "train").unwrap();
        assert_eq!(train.classes[train.samples[0].class], "sad");
    }

    #[test]
    fn bad_rows_name_the_file_and_line() {
        let head = "emotion,pixels,Usage\n";
        let short: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let cases = [
            (
                format!("{head}7,{},Training\n", pixels(0)),
                "fer2013.csv:2: field 1 (emotion)",
            ),
            (
                format!("{head}x,{},Training\n", pixels(0)),
                "expected 0-6, found \"x\"",
            ),
            (
                format!("{head}1,{},Train\n", pixels(0)),
                ":2: field 3 (Usage)",
            ),
            (
                format!("{head}1,{}\n", pixels(0)),
                ":2: expected 3 fields as in the header",
            ),
            (
                format!("{head}1,{},Training\n", short.join(" ")),
                "expected 2304 values",
            ),
            (
                format!("{head}1,{} 256,Training\n", pixels(1)),
                "value 2305 is \"256\"",
            ),
            (
                format!("{head}1,1 -2,Training\n"),
                ":2: field 2 (pixels): value 2 is \"-2\"",
            ),
            (
                "emotion,Usage\n".to_string(),
                "fer2013.csv:1: expected the header",
            ),
            (
                format!("{head}1,{},PublicTest\n", pixels(0)),
                "fer2013 train has no usable",
            ),
            (String::new(), "the file is empty"),
        ];
        for (csv, want) in cases {
            let err = load(&csv, "train").unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
