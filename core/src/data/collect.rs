//! The bookkeeping every label-file reader shares: unique ids, caller exclusions, image
//! existence, drop counts, and the refusal of an empty split.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::EXCLUDED_REASON;
use super::{record_drop, DatasetKind, Dropped, ImageSource, LoadOptions, Sample, Split};

/// Collects the rows of one label file into a [`Split`]: refuses duplicate ids, applies the
/// caller's exclusions, checks that image files exist, and refuses an empty result.
pub(crate) struct Collector<'a> {
    /// The label file (or folder) named in errors.
    file: &'a Path,
    exclude: HashSet<&'a str>,
    /// Id -> the line that first used it.
    seen: HashMap<String, usize>,
    /// Whether [`Collector::keep`] checks that image files exist.
    check_images: bool,
    samples: Vec<Sample>,
    dropped: Vec<Dropped>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(file: &'a Path, opts: &'a LoadOptions) -> Self {
        Self {
            file,
            exclude: opts.exclude.iter().map(String::as_str).collect(),
            seen: Default::default(),
            check_images: true,
            samples: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// Turns the image-existence check of [`Collector::keep`] on (the default) or off.
    pub(crate) fn checking_images(mut self, check: bool) -> Self {
        self.check_images = check;
        self
    }

    /// An error at `line` (1-based) of the label file.
    pub(crate) fn error(&self, line: usize, reason: impl Into<String>) -> crate::Error {
        super::text::line_error(self.file, line, reason)
    }

    /// Refuses an id already used on an earlier line; call it for every row, dropped or not.
    pub(crate) fn check_unique(&mut self, line: usize, id: &str) -> crate::Result<()> {
        if let Some(first) = self.seen.get(id) {
            return Err(self.error(
                line,
                format!("duplicate image \"{id}\" (also on line {first})"),
            ));
        }
        self.seen.insert(id.to_string(), line);
        Ok(())
    }

    /// Drops a row under `reason`.
    pub(crate) fn drop_row(&mut self, reason: &str, id: &str) {
        record_drop(&mut self.dropped, reason, id);
    }

    /// Keeps the sample of a label-file row unless the caller excluded it; a file source must
    /// exist (unless image checks are off).
    pub(crate) fn keep(&mut self, line: usize, sample: Sample) -> crate::Result<()> {
        if self.exclude.contains(sample.id.as_str()) {
            self.drop_row(EXCLUDED_REASON, &sample.id);
            return Ok(());
        }
        if let ImageSource::File(path) = &sample.source {
            if self.check_images && !path.is_file() {
                let what = format!(
                    "image {} of \"{}\" does not exist",
                    path.display(),
                    sample.id
                );
                return Err(self.error(line, what));
            }
        }
        self.samples.push(sample);
        Ok(())
    }

    /// Keeps a sample known to exist (found by listing a folder) unless the caller excluded it.
    pub(crate) fn keep_listed(&mut self, sample: Sample) {
        if self.exclude.contains(sample.id.as_str()) {
            self.drop_row(EXCLUDED_REASON, &sample.id);
        } else {
            self.samples.push(sample);
        }
    }

    /// The split, or an error saying what was dropped when nothing is left.
    pub(crate) fn finish(
        self,
        kind: DatasetKind,
        split: &str,
        classes: Vec<String>,
    ) -> crate::Result<Split> {
        let out = Split {
            dataset: kind.name().to_string(),
            split: split.to_string(),
            classes,
            samples: self.samples,
            dropped: self.dropped,
        };
        if out.samples.is_empty() {
            let what: Vec<String> = out
                .dropped
                .iter()
                .map(|d| format!("{} {}", d.count, d.reason))
                .collect();
            let what = if what.is_empty() {
                "no rows".to_string()
            } else {
                what.join(", ")
            };
            return Err(crate::Error::Dataset {
                location: self.file.display().to_string(),
                reason: format!("{kind} {split} has no usable samples (dropped: {what})"),
            });
        }
        Ok(out)
    }
}
