//! Helpers shared by the label-file readers: lines with 1-based numbers, a small CSV field
//! splitter, and guards for image paths that must stay inside the data root.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// An error at `line` (1-based) of `file`.
pub(crate) fn line_error(file: &Path, line: usize, reason: impl Into<String>) -> Error {
    Error::Dataset {
        location: format!("{}:{line}", file.display()),
        reason: reason.into(),
    }
}

/// An error about a whole file or folder.
pub(crate) fn path_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        location: path.display().to_string(),
        reason: reason.into(),
    }
}

/// An IO error on `path`.
pub(crate) fn io_error(path: &Path, err: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Calls `f` with each line of `path`: its 1-based number and its text without the line ending
/// (and without a UTF-8 byte-order mark on line 1). Stops at the first error.
pub(crate) fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|err| io_error(path, err))?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|err| io_error(path, err))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let text = std::str::from_utf8(&buf).map_err(|e| {
            line_error(
                path,
                line,
                format!("not utf-8 text (byte {})", e.valid_up_to() + 1),
            )
        })?;
        let text = if line == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        f(line, text)?;
    }
}

/// Splits one CSV line into fields: commas separate them, double quotes group commas into one
/// field, and `""` inside quotes is a quote. The error names the unterminated field (1-based).
pub(crate) fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => in_quotes = false,
                _ => field.push(c),
            }
        } else {
            match c {
                ',' => fields.push(std::mem::take(&mut field)),
                '"' if field.is_empty() => in_quotes = true,
                _ => field.push(c),
            }
        }
    }
    if in_quotes {
        return Err(format!(
            "field {} opens a quote that is not closed",
            fields.len() + 1
        ));
    }
    fields.push(field);
    Ok(fields)
}

/// Checks an image path read from a label file: it must be relative and must not climb out of
/// the data root (`..`, a leading `/` or `\`, a drive letter). `/` and `\` both separate.
pub(crate) fn relative_path(s: &str) -> std::result::Result<PathBuf, String> {
    let bytes = s.as_bytes();
    let absolute = s.starts_with(['/', '\\']) || (bytes.len() >= 2 && bytes[1] == b':');
    if absolute {
        return Err(format!(
            "image path \"{s}\" is absolute; it must be relative to the data root"
        ));
    }
    let mut out = PathBuf::new();
    for part in s.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(format!("image path \"{s}\" leaves the data root")),
            _ => out.push(part),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("image path \"{s}\" names no file"));
    }
    Ok(out)
}

/// Checks that `s` is a bare file name, with no folder part.
pub(crate) fn plain_name(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("the image name is empty".into());
    }
    if s.contains(['/', '\\']) || s == "." || s == ".." {
        return Err(format!(
            "image name \"{s}\" must be a file name without folders"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;

    #[test]
    fn csv_fields_respect_quotes() {
        let f = split_csv(r#"fer0.png,"(0, 0, 48, 48)",4,0"#).unwrap();
        assert_eq!(f, ["fer0.png", "(0, 0, 48, 48)", "4", "0"]);
        assert_eq!(
            split_csv(r#"a,"say ""hi""",,b"#).unwrap(),
            ["a", "say \"hi\"", "", "b"]
        );
        assert_eq!(split_csv("").unwrap(), [""]);
        let err = split_csv(r#"a,"open"#).unwrap_err();
        assert!(err.contains("field 2"), "{err}");
    }

    #[test]
    fn paths_must_stay_inside_the_root() {
        assert_eq!(
            relative_path("689/x.jpg").unwrap(),
            Path::new("689").join("x.jpg")
        );
        assert_eq!(
            relative_path("./a\\b.png").unwrap(),
            Path::new("a").join("b.png")
        );
        for bad in [
            "../x.jpg",
            "a/../../x.jpg",
            "/etc/passwd",
            "\\x",
            "C:x.jpg",
            "",
            "./",
        ] {
            assert!(relative_path(bad).is_err(), "{bad} should be refused");
        }
        assert!(plain_name("fer0000000.png").is_ok());
        for bad in ["", "..", "a/b.png", "a\\b.png"] {
            assert!(plain_name(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn lines_are_numbered_and_stripped() {
        let dir = TempDir::new("lines");
        let path = dir.write("a.txt", "\u{feff}one\r\ntwo\n\nfour");
        let mut seen = Vec::new();
        for_each_line(&path, |n, l| {
            seen.push((n, l.to_string()));
            Ok(())
        })
        .unwrap();
        let want = [(1, "one"), (2, "two"), (3, ""), (4, "four")];
        assert_eq!(seen, want.map(|(n, l)| (n, l.to_string())));

        let bad = dir.write("b.txt", b"ok\n\xff\xfe\n");
        let err = for_each_line(&bad, |_, _| Ok(())).unwrap_err().to_string();
        assert!(err.contains("b.txt:2: not utf-8"), "{err}");
        let missing = for_each_line(&dir.path().join("none.txt"), |_, _| Ok(())).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
    }
}
