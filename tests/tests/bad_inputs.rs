//! A catalogue of bad inputs. Each case writes one malformed or unusual input into a temporary
//! folder, hands it to the code that reads it, and checks the documented outcome: an error that
//! names the file (and line), the flag or the key at fault, or a documented handling (a
//! conversion, rows dropped with a count). Never a panic, never a silently different result.
//!
//! Images (`DecodedImage::decode`, the one decoder of the data sets and `predict`):
//!  1. a truncated PNG is refused, naming the file;
//!  2. a PNG with corrupt compressed data (bad checksum) is refused;
//!  3. a zero-byte file is refused as empty;
//!  4. a text file renamed `.png` is refused as no known format;
//!  5. a PNG header claiming 0 pixels a side is refused;
//!  6. a PNG header claiming 100000x100000 pixels is refused from the header, with the limit;
//!  7. a truncated JPEG, or one with too little coded data for its size, is refused, not
//!     decoded to a half-grey face;
//!  8. grey PNG: kept as one channel, same values;
//!  9. RGBA PNG: RGB, alpha dropped;
//! 10. 16-bit PNG: 8-bit RGB;
//! 11. palette PNG: the palette's RGB colours;
//! 12. CMYK JPEG (hand-made, the image crate cannot write one): 8-bit RGB;
//! 13. a 1x1 image: decodes, and the evaluation view and random crops render it.
//!
//! Label files (`load_split`):
//! 14. FERPlus: a row with the wrong number of columns, naming file and line;
//! 15. FERPlus: a vote count that is not a whole number, naming the column;
//! 16. FERPlus: the same image on two lines;
//! 17. FERPlus: a row whose image file is missing;
//! 18. FERPlus: image names with folders, `..` or an absolute path;
//! 19. FERPlus: rows without a usable label are dropped with a count per rule, and a split with
//!     nothing left is an error that lists the drops;
//! 20. FERPlus: an empty `label.csv`;
//! 21. FERPlus: a line that is not UTF-8;
//! 22. FER2013: an emotion out of range, a wrong column count, a wrong pixel count, a pixel
//!     over 255, a missing header;
//! 23. RAF-DB: labels 0 and 8, a name with a folder, a name of no split, a missing image, a
//!     duplicate across the splits;
//! 24. AffectNet: an expression out of range, a path leaving the root, absolute paths, an
//!     unclosed quote, a wrong column count; labels 8-10 dropped with a count;
//! 25. AffectNet: one image listed twice under two spellings (`1/a.jpg`, `./1/a.jpg`);
//! 26. Folder: a class with a single sample is kept (and drawn by the balanced sampler);
//! 27. Folder: a split folder without class folders, or whose classes hold no image;
//! 28. Folder: a class folder whose name is not UTF-8;
//! 29. Folder: a missing split names the folders that exist.
//!
//! Checkpoints (`TensorMap::read`, `load_vit`):
//! 30. truncated safetensors and `.pth` files;
//! 31. a safetensors header length larger than the file (up to 2^64 - 1), a file shorter than
//!     the length field, a header that is not JSON, data shorter than the header says;
//! 32. a safetensors file whose header length begins with the bytes of a pickle (0x80) or a
//!     zip (`PK`): read as safetensors (once mistaken for a PyTorch file);
//! 33. a tensor of the wrong shape; a checkpoint of another preset lists every mismatch;
//! 34. a `head.weight` without dimensions (once a panic);
//! 35. a tensor of an unsupported dtype;
//! 36. `.pth` zip without `data.pkl`;
//! 37. `.pth` whose pickle calls `os.system` (zip) or `builtins.eval` (plain pickle): refused,
//!     the global named, nothing run;
//! 38. `.pth` whose tensor claims 10^12 values (once an abort on allocation) or more bytes than
//!     its storage holds (once silently padded with zeros), and a legacy-format `.pth` whose
//!     storage size overflows the pickle reader (once a panic);
//! 39. a checkpoint's model configuration far larger than its tensors: refused unallocated.
//!
//! The command line (`train-native`):
//! 40. `finetune --config`: a TOML file with an unknown key, a wrong type, a syntax error, or
//!     impossible values (batch 0, negative lr);
//! 41. impossible flags: `--batch 0`, `--lr=-1`, unknown preset, device, model, data set;
//! 42. `finetune --batch 1 --max-steps 2` and `--batch 3` train and write a report;
//! 43. `finetune` on a class-folder tree with a single-sample class and a last batch of one;
//! 44. `predict` on truncated, empty, huge-header and non-image files names the file;
//! 45. `predict` on 1x1, palette, 16-bit and CMYK images works;
//! 46. `predict` with a checkpoint that has no head;
//! 47. `eval` with a checkpoint trained for other classes (count and names), before any image
//!     is read.
//!
//! 48. `finetune --max-steps 0` is refused before a run directory is made;
//! 49. `finetune` on a folder tree whose test split has other classes than train is refused
//!     before training.
//! 50. `--shards 0` is refused by `finetune`, `pretrain` and `bench`;
//! 51. `--precision f16` and unknown precisions are refused, from flags and config files;
//! 52. `pretrain --mask-ratio 0` (masks no patch, so the loss stays 0) is refused before a
//!     run directory is made;
//! 53. `finetune --batch` larger than the training set, with more shards than images: trains
//!     on the whole set each step and says so.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use mimic_core::augment::{eval_view, render, sample_crop, AugmentConfig};
use mimic_core::data::{
    load_split, BalancedSampler, DatasetKind, DecodedImage, LoadOptions, Split, MAX_IMAGE_SIDE,
};
use mimic_core::model::VitConfig;
use mimic_core::weights::{
    export_safetensors, fit_head, load_vit, LoadPolicy, TensorMap, CONFIG_KEY, LABELS_KEY,
};
use mimic_tests::{fixture, train_native};
use rand::SeedableRng;

type B = Flex;

// ---------------------------------------------------------------------------------------------
// Helpers: files written by hand (PNG chunks, a CMYK JPEG, zip archives, pickles) and the CLI.

/// Writes `bytes` to `dir/rel`, creating folders, and returns the path.
fn write(dir: &Path, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A grey gradient, as the image crate encodes it (by extension).
fn save_grey(dir: &Path, rel: &str, w: u32, h: u32) -> PathBuf {
    let path = write(dir, rel, []);
    GrayImage::from_fn(w, h, |x, y| Luma([(x * 13 + y * 7) as u8]))
        .save(&path)
        .unwrap();
    path
}

fn decode(path: &Path) -> mimic_core::Result<DecodedImage> {
    DecodedImage::decode(&std::fs::read(path).unwrap(), &path.display().to_string())
}

fn decode_err(path: &Path) -> String {
    let err = decode(path).unwrap_err().to_string();
    assert!(
        err.starts_with(&path.display().to_string()),
        "the file is named first: {err}"
    );
    err
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// One PNG chunk: length, type, data, CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend(&body);
    out.extend(crc32(&body).to_be_bytes());
    out
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(raw: &[u8]) -> Vec<u8> {
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(0xffff).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let n = block.len() as u16;
        z.extend(n.to_le_bytes());
        z.extend((!n).to_le_bytes());
        z.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    z
}

/// A PNG from its header fields, optional palette and filtered scanlines.
fn png(w: u32, h: u32, depth: u8, colour: u8, palette: Option<&[u8]>, raw: &[u8]) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([depth, colour, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    if let Some(p) = palette {
        out.extend(png_chunk(b"PLTE", p));
    }
    out.extend(png_chunk(b"IDAT", &zlib_stored(raw)));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// An 8x8 baseline JPEG with four components (CMYK, Adobe APP14 transform 0), all flat: each
/// block holds only a zero DC difference and an end-of-block, one one-bit code each.
fn cmyk_jpeg() -> Vec<u8> {
    flat_jpeg(8, 8, true)
}

/// A baseline JPEG of `w x h` with four components whose one coded byte holds the codes of
/// one flat 8x8 block each (enough for 8x8 only); `adobe` adds the CMYK marker.
fn flat_jpeg(w: u16, h: u16, adobe: bool) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    if adobe {
        // APP14 "Adobe": version 100, flags 0, 0, transform 0 (CMYK, no colour transform).
        j.extend([0xFF, 0xEE, 0x00, 0x0E]);
        j.extend(b"Adobe");
        j.extend([0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00]);
    }
    // One quantisation table of ones.
    j.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    // Frame: 8 bits, h x w, four components with 1x1 sampling and table 0.
    j.extend([0xFF, 0xC0, 0x00, 0x14, 0x08]);
    j.extend(h.to_be_bytes());
    j.extend(w.to_be_bytes());
    j.push(0x04);
    for id in 1..=4u8 {
        j.extend([id, 0x11, 0x00]);
    }
    // A DC and an AC table, each with a single one-bit code for symbol 0.
    for class in [0x00u8, 0x10] {
        j.extend([0xFF, 0xC4, 0x00, 0x14, class, 1]);
        j.extend([0u8; 15]);
        j.push(0x00);
    }
    j.extend([0xFF, 0xDA, 0x00, 0x0E, 0x04]);
    for id in 1..=4u8 {
        j.extend([id, 0x00]);
    }
    j.extend([0x00, 0x3F, 0x00]);
    // Four blocks of "0" (DC category 0) + "0" (end of block): eight zero bits.
    j.push(0x00);
    j.extend([0xFF, 0xD9]);
    j
}

/// A zip archive of stored entries, as `torch.save` writes them.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let common = |v: &mut Vec<u8>| {
            v.extend(0u16.to_le_bytes()); // flags
            v.extend(0u16.to_le_bytes()); // stored
            v.extend([0u8; 4]); // time, date
            v.extend(crc.to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend(20u16.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(*data);

        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        common(&mut central);
        central.extend([0u8; 8]); // comment, disk, internal and external attributes
        central.extend([0u8; 2]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// Pickle opcodes (protocol 2) for the few objects a state dict needs.
mod pickle {
    pub fn string(s: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend((s.len() as u32).to_le_bytes());
        v.extend(s.as_bytes());
        v
    }

    pub fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    pub fn int(n: i64) -> Vec<u8> {
        if let Ok(small) = i32::try_from(n) {
            let mut v = vec![b'J'];
            v.extend(small.to_le_bytes());
            return v;
        }
        // LONG1: little-endian two's complement, with a zero byte when the top bit is set.
        let mut bytes = n.to_le_bytes().to_vec();
        while bytes.len() > 1 && bytes[bytes.len() - 1] == 0 && bytes[bytes.len() - 2] < 0x80 {
            bytes.pop();
        }
        let mut v = vec![0x8a, bytes.len() as u8];
        v.extend(bytes);
        v
    }

    pub fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![b'('];
        for i in items {
            v.extend(i);
        }
        v.push(b't');
        v
    }

    /// `{name: tensor}` with a float32 tensor of `shape` on storage `key` of `numel` values.
    pub fn state_dict(name: &str, key: &str, numel: i64, shape: &[i64]) -> Vec<u8> {
        let mut stride = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1].saturating_mul(shape[i + 1]);
        }
        let storage = tuple(&[
            string("storage"),
            global("torch", "FloatStorage"),
            string(key),
            string("cpu"),
            int(numel),
        ]);
        let mut persistent = storage;
        persistent.push(b'Q');
        let mut ordered_dict = global("collections", "OrderedDict");
        ordered_dict.extend([b')', b'R']);
        let args = tuple(&[
            persistent,
            int(0),
            tuple(&shape.iter().map(|&d| int(d)).collect::<Vec<_>>()),
            tuple(&stride.iter().map(|&d| int(d)).collect::<Vec<_>>()),
            vec![0x89], // False
            ordered_dict,
        ]);
        let mut v = vec![0x80, 2, b'}'];
        v.extend(string(name));
        v.extend(global("torch._utils", "_rebuild_tensor_v2"));
        v.extend(args);
        v.extend([b'R', b's', b'.']);
        v
    }

    /// A legacy-format file: magic number, protocol version, system info, `{"w": tensor}` on
    /// storage "0" of `numel` float32 values, the storage keys, then the storage (its element
    /// count and `data`).
    pub fn legacy(numel: i64, data: &[u8]) -> Vec<u8> {
        // The magic number 0x1950a86a20f9469cfc6c as a 10-byte LONG1.
        let mut v = vec![0x80, 2, 0x8a, 10];
        v.extend(&0x1950_a86a_20f9_469c_fc6c_u128.to_le_bytes()[..10]);
        v.push(b'.');
        v.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']); // protocol version 1001
        v.extend([0x80, 2, b'}', b'.']); // system info
        let values = (data.len() / 4) as i64;
        v.extend(state_dict("w", "0", numel, &[values]));
        v.extend([0x80, 2, b']']);
        v.extend(string("0"));
        v.extend([b'a', b'.']);
        v.extend(values.to_le_bytes());
        v.extend(data);
        v
    }

    /// A pickle that, unpickled by Python, would call `module.name(arg)`.
    pub fn call(module: &str, name: &str, arg: &str) -> Vec<u8> {
        let mut v = vec![0x80, 2, b'}'];
        v.extend(string("x"));
        v.extend(global(module, name));
        v.extend(tuple(&[string(arg)]));
        v.extend([b'R', b's', b'.']);
        v
    }
}

/// A safetensors file from a header (JSON) and its data bytes.
fn safetensors_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn read_err(path: &Path) -> String {
    let err = TensorMap::read(path).map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()),
        "the file is named: {err}"
    );
    err
}

fn toy() -> VitConfig {
    VitConfig::preset("vit_toy_patch8_32").unwrap()
}

/// A mimic checkpoint (configuration and class names in its metadata) of the toy model.
fn mimic_checkpoint(dir: &Path, labels: &[&str]) -> PathBuf {
    let config = toy().with_n_classes(labels.len());
    let model = config.init::<B>(&Default::default()).unwrap();
    let meta = std::collections::HashMap::from([
        (
            CONFIG_KEY.to_string(),
            serde_json::to_string(&config).unwrap(),
        ),
        (
            LABELS_KEY.to_string(),
            serde_json::to_string(labels).unwrap(),
        ),
    ]);
    write(
        dir,
        "model.safetensors",
        export_safetensors(&model, &meta).unwrap(),
    )
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = train_native()
        .args(args)
        .output()
        .expect("train-native runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Runs a command that must fail cleanly; returns its stderr.
fn fails(args: &[&str], wants: &[&str]) -> String {
    let (ok, stdout, stderr) = run(args);
    assert!(!ok, "{args:?} should fail:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    for want in wants {
        assert!(
            stderr.contains(want),
            "{args:?}: no \"{want}\" in:\n{stderr}"
        );
    }
    stderr
}

/// Runs a command that must succeed; returns its stdout.
fn succeeds(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(args);
    assert!(ok, "{args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Images.

#[test]
fn case_01_truncated_png() {
    let dir = tempfile::tempdir().unwrap();
    let good = save_grey(dir.path(), "good.png", 48, 48);
    let bytes = std::fs::read(&good).unwrap();
    let cut = write(dir.path(), "cut.png", &bytes[..bytes.len() / 2]);
    let err = decode_err(&cut);
    assert!(err.contains("cannot decode"), "{err}");
}

#[test]
fn case_02_corrupt_png_data() {
    let dir = tempfile::tempdir().unwrap();
    let good = save_grey(dir.path(), "good.png", 48, 48);
    let mut bytes = std::fs::read(&good).unwrap();
    let idat = bytes.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut bytes[idat + 8..idat + 24] {
        *b ^= 0xA5;
    }
    let bad = write(dir.path(), "bad.png", &bytes);
    let err = decode_err(&bad);
    assert!(err.contains("cannot decode"), "{err}");
}

#[test]
fn case_03_zero_byte_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.png", []);
    assert!(decode_err(&empty).ends_with("the file is empty"));
}

#[test]
fn case_04_text_renamed_png() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "notes.png", "name,label\nfer0.png,3\n");
    let err = decode_err(&text);
    assert!(
        err.contains("cannot decode") && err.contains("format could not be determined"),
        "{err}"
    );
}

#[test]
fn case_05_png_header_with_no_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let flat = write(dir.path(), "flat.png", png(0, 4, 8, 0, None, &[]));
    let err = decode_err(&flat);
    assert!(
        err.contains("cannot decode") || err.contains("no pixels"),
        "{err}"
    );
}

#[test]
fn case_06_huge_dimensions_are_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    // A valid header for 100000x100000 RGB (30 GB decoded) and a few bytes of data.
    let huge = write(
        dir.path(),
        "huge.png",
        png(100_000, 100_000, 8, 2, None, &[0; 64]),
    );
    let start = std::time::Instant::now();
    let err = decode_err(&huge);
    assert!(
        err.contains("100000x100000") && err.contains(&MAX_IMAGE_SIDE.to_string()),
        "{err}"
    );
    assert!(
        start.elapsed().as_secs_f64() < 1.0,
        "refused without decoding"
    );
    // One side over the limit is enough.
    let tall = write(dir.path(), "tall.png", png(1, 20_000, 8, 0, None, &[0; 8]));
    assert!(decode_err(&tall).contains("1x20000"));
}

#[test]
fn case_07_truncated_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "face.jpg", []);
    RgbImage::from_fn(64, 64, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 128]))
        .save(&path)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Cut in the scan, in the headers, and just before the end-of-image marker.
    for keep in [bytes.len() * 2 / 3, 40, bytes.len() - 2] {
        let cut = write(dir.path(), "cut.jpg", &bytes[..keep]);
        let err = decode_err(&cut);
        assert!(
            err.contains("the JPEG data ends before its end-of-image marker")
                || err.contains("cannot decode"),
            "cut at {keep}: {err}"
        );
    }
    // A complete file whose few coded bytes cannot describe its claimed 16000x16000 pixels
    // (the decoder would fill 1 GB with grey).
    let bomb = write(dir.path(), "bomb.jpg", flat_jpeg(16_000, 16_000, true));
    let err = decode_err(&bomb);
    assert!(
        err.contains("holds 1 bytes of image data, too few for 16000x16000 pixels"),
        "{err}"
    );
    // Bytes after the end-of-image marker (some cameras append data) are accepted.
    let mut trailing = bytes.clone();
    trailing.extend(b"trailer");
    let img = decode(&write(dir.path(), "trailing.jpg", trailing)).unwrap();
    assert_eq!((img.width, img.height, img.channels), (64, 64, 3));
}

#[test]
fn case_08_grey_png_stays_one_channel() {
    let dir = tempfile::tempdir().unwrap();
    let path = save_grey(dir.path(), "g.png", 5, 3);
    let img = decode(&path).unwrap();
    assert_eq!((img.width, img.height, img.channels), (5, 3, 1));
    assert_eq!(img.pixels[5 + 2], (2 * 13 + 7) as u8);
}

#[test]
fn case_09_rgba_png_drops_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rgba.png", []);
    RgbaImage::from_fn(2, 1, |x, _| Rgba([10 + x as u8, 20, 30, 0]))
        .save(&path)
        .unwrap();
    let img = decode(&path).unwrap();
    assert_eq!(img.channels, 3);
    assert_eq!(
        img.pixels,
        [10, 20, 30, 11, 20, 30],
        "alpha 0 is dropped, not applied"
    );
}

#[test]
fn case_10_sixteen_bit_png_becomes_8_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "deep.png", []);
    ImageBuffer::<Rgb<u16>, _>::from_raw(2, 1, vec![0u16, 65535, 25700, 65535, 0, 257])
        .unwrap()
        .save(&path)
        .unwrap();
    let img = decode(&path).unwrap();
    assert_eq!((img.width, img.channels), (2, 3));
    assert_eq!(img.pixels, [0, 255, 100, 255, 0, 1]);
}

fn palette_png() -> Vec<u8> {
    // 3x1, indices 0, 1, 2 into red, green, blue.
    let palette = [255, 0, 0, 0, 255, 0, 0, 0, 255];
    png(3, 1, 8, 3, Some(&palette), &[0, 0, 1, 2])
}

#[test]
fn case_11_palette_png_becomes_its_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "palette.png", palette_png());
    let img = decode(&path).unwrap();
    assert_eq!((img.width, img.height, img.channels), (3, 1, 3));
    assert_eq!(img.pixels, [255, 0, 0, 0, 255, 0, 0, 0, 255]);
}

#[test]
fn case_12_cmyk_jpeg_becomes_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cmyk.jpg", cmyk_jpeg());
    let img = decode(&path).unwrap();
    assert_eq!((img.width, img.height, img.channels), (8, 8, 3));
    // A flat image stays flat through the colour conversion.
    let first = &img.pixels[..3];
    assert!(img.pixels.chunks(3).all(|p| p == first), "{:?}", img.pixels);
}

#[test]
fn case_13_one_pixel_image_renders() {
    let dir = tempfile::tempdir().unwrap();
    let path = save_grey(dir.path(), "dot.png", 1, 1);
    let img = decode(&path).unwrap();
    assert_eq!((img.width, img.height), (1, 1));
    let view = eval_view(&img, 32);
    assert_eq!(view.len(), 3 * 32 * 32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for _ in 0..20 {
        let crop = sample_crop(&mut rng, &AugmentConfig::default(), 1, 1);
        let out = render(&img, &crop, 32, Some([1.2, 0.8, 1.1]));
        assert!(out.iter().all(|v| v.is_finite()));
        assert_eq!(out.len(), view.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Label files.

const BOX: &str = "\"(0, 0, 48, 48)\"";

/// A FERPlus root with `FER2013Train/label.csv` and the named (placeholder) images.
fn ferplus(label_csv: impl AsRef<[u8]>, images: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "FER2013Train/label.csv", label_csv);
    for name in images {
        write(dir.path(), &format!("FER2013Train/{name}"), b"png");
    }
    dir
}

fn load(kind: DatasetKind, root: &Path, split: &str) -> mimic_core::Result<Split> {
    load_split(kind, root, split, &LoadOptions::default())
}

fn ferplus_err(label_csv: impl AsRef<[u8]>, images: &[&str]) -> String {
    let dir = ferplus(label_csv, images);
    let err = load(DatasetKind::FerPlus, dir.path(), "train").unwrap_err();
    err.to_string()
}

fn happy(name: &str) -> String {
    format!("{name},{BOX},0,10,0,0,0,0,0,0,0,0\n")
}

#[test]
fn case_14_ferplus_wrong_column_count() {
    let err = ferplus_err(format!("{}b.png,{BOX},1,2,3\n", happy("a.png")), &["a.png"]);
    assert!(
        err.contains("FER2013Train/label.csv:2: expected 12 fields") && err.contains("found 5"),
        "{err}"
    );
}

#[test]
fn case_15_ferplus_vote_not_a_number() {
    for bad in ["x", "-1", "2.5", ""] {
        let row = format!("b.png,{BOX},0,{bad},0,0,0,0,0,0,0,0\n");
        let err = ferplus_err(format!("{}{row}", happy("a.png")), &["a.png", "b.png"]);
        assert!(
            err.contains("label.csv:2: field 4 (happiness votes): expected a whole number"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn case_16_ferplus_duplicate_name() {
    let err = ferplus_err(happy("a.png").repeat(2), &["a.png"]);
    assert!(
        err.contains("label.csv:2: duplicate image \"a.png\" (also on line 1)"),
        "{err}"
    );
}

#[test]
fn case_17_ferplus_missing_image() {
    let err = ferplus_err(
        format!("{}{}", happy("a.png"), happy("gone.png")),
        &["a.png"],
    );
    assert!(
        err.contains("label.csv:2: image") && err.contains("gone.png\" does not exist"),
        "{err}"
    );
}

#[test]
fn case_18_ferplus_names_leaving_the_folder() {
    for name in ["../a.png", "/etc/a.png", "sub/a.png", "..\\a.png", ".."] {
        let err = ferplus_err(happy(name), &["a.png"]);
        assert!(
            err.contains(&format!(
                "label.csv:1: image name \"{name}\" must be a file name"
            )),
            "{name}: {err}"
        );
    }
}

#[test]
fn case_19_ferplus_unusable_rows_are_counted_then_refused_when_nothing_is_left() {
    let unknown = format!("u.png,{BOX},0,0,0,0,0,0,0,0,10,0\n");
    let tie = format!("t.png,{BOX},5,5,0,0,0,0,0,0,0,0\n");
    let dir = ferplus(
        format!("{}{unknown}{tie}", happy("a.png")),
        &["a.png", "u.png", "t.png"],
    );
    let split = load(DatasetKind::FerPlus, dir.path(), "train").unwrap();
    assert_eq!(split.samples.len(), 1);
    assert_eq!(split.dropped_count(), 2);
    let report = split.report();
    assert!(
        report.contains("most votes for unknown: 1 (e.g. u.png)")
            && report.contains("no majority after removing single votes: 1 (e.g. t.png)"),
        "{report}"
    );

    let err = ferplus_err(format!("{unknown}{tie}"), &["u.png", "t.png"]);
    assert!(
        err.contains(
            "ferplus train has no usable samples (dropped: 1 most votes for unknown, 1 no majority"
        ),
        "{err}"
    );
}

#[test]
fn case_20_ferplus_empty_label_file() {
    for empty in ["", "\n\n", "\u{feff}"] {
        let err = ferplus_err(empty, &[]);
        assert!(
            err.contains("label.csv: ferplus train has no usable samples (dropped: no rows)"),
            "{empty:?}: {err}"
        );
    }
}

#[test]
fn case_21_ferplus_line_that_is_not_utf8() {
    let mut csv = happy("a.png").into_bytes();
    csv.extend(b"b\xe9.png,\"(0, 0, 48, 48)\",0,10,0,0,0,0,0,0,0,0\n");
    let err = ferplus_err(csv, &["a.png"]);
    assert!(
        err.contains("label.csv:2: not utf-8 text (byte 2)"),
        "{err}"
    );
    // A UTF-16 file (as some spreadsheet exports write) fails on its first line.
    let utf16: Vec<u8> = happy("a.png")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut bom = vec![0xFF, 0xFE];
    bom.extend(utf16);
    let err = ferplus_err(bom, &["a.png"]);
    assert!(err.contains("label.csv:1: not utf-8 text"), "{err}");
}

fn fer2013_err(csv: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fer2013.csv", csv);
    load(DatasetKind::Fer2013, dir.path(), "train")
        .unwrap_err()
        .to_string()
}

#[test]
fn case_22_fer2013_bad_rows() {
    let pixels = vec!["7"; 48 * 48].join(" ");
    let head = "emotion,pixels,Usage\n";
    let ok = format!("3,{pixels},Training\n");
    let cases = [
        (
            format!("{head}{ok}7,{pixels},Training\n"),
            "fer2013.csv:3: field 1 (emotion): expected 0-6, found \"7\"",
        ),
        (
            format!("{head}{ok}3,{pixels}\n"),
            "fer2013.csv:3: expected 3 fields as in the header, found 2",
        ),
        (
            format!("{head}{ok}3,{},Training\n", vec!["7"; 47 * 48].join(" ")),
            "fer2013.csv:3: field 2 (pixels): expected 2304 values (48x48), found 2256",
        ),
        (
            format!("{head}3,{pixels} 256,Training\n"),
            "fer2013.csv:2: field 2 (pixels): value 2305 is \"256\"",
        ),
        (
            format!("{ok}{ok}"),
            "fer2013.csv:1: expected the header emotion,pixels,Usage",
        ),
        (
            format!("{head}3,{pixels},Validation\n"),
            "fer2013.csv:2: field 3 (Usage): expected Training, PublicTest or PrivateTest",
        ),
    ];
    for (csv, want) in cases {
        let err = fer2013_err(&csv);
        assert!(err.contains(want), "{want}: {err}");
    }
}

fn rafdb(list: &str, images: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "EmoLabel/list_patition_label.txt", list);
    for name in images {
        write(dir.path(), &format!("Image/aligned/{name}"), b"jpg");
    }
    dir
}

#[test]
fn case_23_rafdb_bad_lines() {
    let ok = "train_00001.jpg 4\n";
    let image = ["train_00001_aligned.jpg"];
    let cases = [
        (
            "train_00002.jpg 0\n",
            ":2: field 2: expected a label 1-7, found \"0\"",
        ),
        (
            "train_00002.jpg 8\n",
            ":2: field 2: expected a label 1-7, found \"8\"",
        ),
        (
            "train_00002.jpg happy\n",
            ":2: field 2: expected a label 1-7",
        ),
        (
            "sub/train_00002.jpg 1\n",
            ":2: image name \"sub/train_00002.jpg\" must be a file name",
        ),
        (
            "val_0001.jpg 1\n",
            ":2: image name \"val_0001.jpg\" starts with neither train_ nor test_",
        ),
        ("train_00002.jpg 1\n", ":2: image"),
        (
            "test_0001.jpg 1\ntest_0001.jpg 2\n",
            ":3: duplicate image \"test_0001.jpg\" (also on line 2)",
        ),
        (
            "train_00002.jpg 1 extra\n",
            ":2: expected 2 fields (image, label 1-7), found 3",
        ),
    ];
    for (line, want) in cases {
        let dir = rafdb(&format!("{ok}{line}"), &image);
        let err = load(DatasetKind::RafDb, dir.path(), "train")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("list_patition_label.txt{want}")),
            "{line:?}: {err}"
        );
    }
    // The missing image is named by its aligned file.
    let dir = rafdb(&format!("{ok}train_00002.jpg 1\n"), &image);
    let err = load(DatasetKind::RafDb, dir.path(), "train").unwrap_err();
    assert!(
        err.to_string()
            .contains("train_00002_aligned.jpg of \"train_00002.jpg\" does not exist"),
        "{err}"
    );
}

const AFFECTNET_HEADER: &str = "subDirectory_filePath,face_x,face_y,face_width,face_height,\
                                facial_landmarks,expression,valence,arousal\n";

fn affectnet_row(path: &str, expression: &str) -> String {
    format!("{path},1,2,100,100,\"1.0;2.0\",{expression},0.1,-0.2\n")
}

fn affectnet(rows: &[String], images: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "training.csv",
        format!("{AFFECTNET_HEADER}{}", rows.concat()),
    );
    for path in images {
        write(
            dir.path(),
            &format!("Manually_Annotated_Images/{path}"),
            b"jpg",
        );
    }
    dir
}

fn affectnet_err(rows: &[String]) -> String {
    let dir = affectnet(rows, &["1/a.jpg"]);
    load(DatasetKind::AffectNet8, dir.path(), "train")
        .unwrap_err()
        .to_string()
}

#[test]
fn case_24_affectnet_bad_rows_and_dropped_labels() {
    let ok = affectnet_row("1/a.jpg", "1");
    let cases = [
        (
            affectnet_row("1/b.jpg", "11"),
            ":3: field 7 (expression): expected 0-10, found \"11\"",
        ),
        (
            affectnet_row("1/b.jpg", "-1"),
            ":3: field 7 (expression): expected 0-10",
        ),
        (
            affectnet_row("../b.jpg", "1"),
            ":3: image path \"../b.jpg\" leaves the data root",
        ),
        (
            affectnet_row("1/../../b.jpg", "1"),
            ":3: image path \"1/../../b.jpg\" leaves the data root",
        ),
        (
            affectnet_row("/tmp/b.jpg", "1"),
            ":3: image path \"/tmp/b.jpg\" is absolute",
        ),
        (
            affectnet_row("C:\\b.jpg", "1"),
            ":3: image path \"C:\\b.jpg\" is absolute",
        ),
        (
            "1/b.jpg,1,2,3,4,\"5;6,1,0,0\n".to_string(),
            ":3: field 6 opens a quote that is not closed",
        ),
        (
            "1/b.jpg,1,2\n".to_string(),
            ":3: expected 9 fields as in the header, found 3",
        ),
    ];
    for (row, want) in cases {
        let err = affectnet_err(&[ok.clone(), row.clone()]);
        assert!(
            err.contains(&format!("training.csv{want}")),
            "{row:?}: {err}"
        );
    }

    // Expressions 8-10 are not emotions: dropped, each rule counted.
    let rows = [
        ok,
        affectnet_row("1/n.jpg", "8"),
        affectnet_row("1/u.jpg", "9"),
        affectnet_row("1/u2.jpg", "9"),
        affectnet_row("1/f.jpg", "10"),
    ];
    let dir = affectnet(&rows, &["1/a.jpg"]);
    let split = load(DatasetKind::AffectNet8, dir.path(), "train").unwrap();
    assert_eq!(split.samples.len(), 1);
    let counts: Vec<(&str, usize)> = split
        .dropped
        .iter()
        .map(|d| (d.reason.as_str(), d.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("expression 8 (none)", 1),
            ("expression 9 (uncertain)", 2),
            ("expression 10 (non-face)", 1)
        ]
    );
}

#[test]
fn case_25_affectnet_same_image_under_two_spellings() {
    for other in ["./1/a.jpg", "1//a.jpg", "1\\a.jpg"] {
        let rows = [affectnet_row("1/a.jpg", "1"), affectnet_row(other, "2")];
        let err = affectnet_err(&rows);
        assert!(
            err.contains("training.csv:3: duplicate image \"1/a.jpg\" (also on line 2)"),
            "{other}: {err}"
        );
    }
}

#[test]
fn case_26_folder_class_with_a_single_sample() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "train/many/1.png",
        "train/many/2.png",
        "train/many/3.png",
        "train/one/1.png",
    ] {
        write(dir.path(), f, b"png");
    }
    let split = load(DatasetKind::Folder, dir.path(), "train").unwrap();
    assert_eq!(split.classes, ["many", "one"]);
    assert_eq!(split.class_counts(), [3, 1]);
    let sampler = BalancedSampler::new(&split.labels(), 2);
    let drawn = sampler.epoch(&mut rand::rngs::StdRng::seed_from_u64(1), 400);
    let ones = drawn
        .iter()
        .filter(|&&i| split.samples[i].class == 1)
        .count();
    assert!(
        (150..250).contains(&ones),
        "the single sample is drawn half the time: {ones}"
    );
}

#[test]
fn case_27_folder_split_without_images() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train/readme.txt", "no class folders here");
    let err = load(DatasetKind::Folder, dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no class folders; expected <class>/<image> inside"),
        "{err}"
    );

    write(dir.path(), "valid/cat/notes.txt", "x");
    write(dir.path(), "valid/cat/.hidden.png", "x");
    let err = load(DatasetKind::Folder, dir.path(), "valid")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("folder valid has no usable samples")
            && err.contains("1 not an image file (by extension)")
            && err.contains("1 hidden file or folder"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn case_28_folder_class_name_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let class = dir
        .path()
        .join("train")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir_all(&class).unwrap();
    std::fs::write(class.join("1.png"), b"png").unwrap();
    let err = load(DatasetKind::Folder, dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("caf") && err.contains("the name is not utf-8"),
        "{err}"
    );
}

#[test]
fn case_29_folder_missing_split() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train/cat/1.png", b"png");
    write(dir.path(), "Test/cat/1.png", b"png");
    let err = load(DatasetKind::Folder, dir.path(), "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no such folder") && err.contains("[Test, train]"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

#[test]
fn case_30_truncated_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["vit_toy.safetensors", "vit_ti3.pth"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for keep in [7, 100, bytes.len() - 1] {
            let path = write(dir.path(), &format!("{keep}-{name}"), &bytes[..keep]);
            let err = read_err(&path);
            assert!(
                err.contains("cannot read weights"),
                "{name} cut at {keep}: {err}"
            );
        }
    }
}

#[test]
fn case_31_safetensors_header_longer_than_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = safetensors_raw(header, &[0; 8]);
    bytes[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let path = write(dir.path(), "long.safetensors", &bytes);
    let err = read_err(&path);
    let follow = format!("says 1000000 bytes but only {} follow it", header.len() + 8);
    assert!(err.contains(&follow), "{err}");
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let path = write(dir.path(), "max.safetensors", &bytes);
    assert!(read_err(&path).contains(&format!("says {} bytes", u64::MAX)));
    let path = write(dir.path(), "tiny.safetensors", [1, 0, 0]);
    assert!(read_err(&path).contains("the file is 3 bytes, too short"));
    // A header that fits but is not JSON, and one whose data is short.
    let path = write(dir.path(), "junk.safetensors", safetensors_raw("{{{{", &[]));
    assert!(read_err(&path).contains("cannot read weights"));
    let short = safetensors_raw(header, &[0; 4]);
    let path = write(dir.path(), "short.safetensors", short);
    assert!(read_err(&path).contains("cannot read weights"));
}

#[test]
fn case_32_safetensors_that_begin_like_a_pickle_or_a_zip() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let data = [1.5f32, -2.0].map(f32::to_le_bytes).concat();
    // Header lengths 0x180 and 0x4B50: the file starts with 0x80, or with "PK".
    for (name, len) in [("pickle-like", 0x180), ("zip-like", 0x4B50)] {
        let padded = format!("{header:<len$}");
        let bytes = safetensors_raw(&padded, &data);
        assert!(bytes[0] == 0x80 || bytes.starts_with(b"PK"), "{name}");
        let path = write(dir.path(), &format!("{name}.safetensors"), bytes);
        let map = TensorMap::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(map.tensors["x"].data, [1.5, -2.0], "{name}");
    }
}

fn strict_load(config: &VitConfig, map: TensorMap) -> String {
    let config = fit_head(config.clone(), &map);
    load_vit::<B>(&config, map, &LoadPolicy::strict(), &Default::default())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn case_33_wrong_shapes_and_another_preset() {
    let mut map = TensorMap::read(&fixture("vit_toy.safetensors")).unwrap();
    map.tensors
        .get_mut("blocks.0.attn.proj.weight")
        .unwrap()
        .shape = vec![32, 128];
    let err = strict_load(&toy(), map);
    assert!(
        err.contains("vit_toy.safetensors: weights do not match the model")
            && err
                .contains("wrong shape: blocks.0.attn.proj.weight: model [64, 64], file [32, 128]"),
        "{err}"
    );

    // The toy checkpoint loaded as the CPU preset: every difference is listed.
    let map = TensorMap::read(&fixture("vit_toy.safetensors")).unwrap();
    let err = strict_load(&VitConfig::preset("vit_cpu_patch6_48").unwrap(), map);
    for want in [
        "missing from the file: blocks.2.norm1.weight [128]",
        "wrong shape: patch_embed.proj.weight: model [128, 3, 6, 6], file [64, 3, 8, 8]",
        "wrong shape: pos_embed: model [1, 65, 128], file [1, 17, 64]",
        "more like it",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn case_34_head_weight_without_dimensions() {
    let mut map = TensorMap::read(&fixture("vit_toy.safetensors")).unwrap();
    let head = map.tensors.get_mut("head.weight").unwrap();
    head.shape = vec![];
    head.data.truncate(1);
    let err = strict_load(&toy(), map);
    assert!(
        err.contains("wrong shape: head.weight: model [1, 64], file []"),
        "{err}"
    );
}

#[test]
fn case_35_unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"mask":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}"#;
    let path = write(
        dir.path(),
        "bool.safetensors",
        safetensors_raw(header, &[1, 0, 1, 0]),
    );
    assert!(read_err(&path).contains("tensor 'mask' has unsupported dtype BOOL"));
}

#[test]
fn case_36_pth_zip_without_data_pkl() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = zip(&[("archive/data/0", &[0; 16]), ("archive/version", b"3\n")]);
    let path = write(dir.path(), "nopickle.pth", bytes);
    let err = read_err(&path);
    assert!(err.contains("No data.pkl file found"), "{err}");
}

#[test]
fn case_37_pth_pickles_that_call_code_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let command = format!("touch {}", marker.display());
    let in_zip = zip(&[("archive/data.pkl", &pickle::call("os", "system", &command))]);
    let path = write(dir.path(), "zip.pth", in_zip);
    let err = read_err(&path);
    assert!(
        err.contains("refused") && err.contains("os.system"),
        "{err}"
    );

    let code = format!("__import__('os').system('{command}')");
    let plain = pickle::call("builtins", "eval", &code);
    let path = write(dir.path(), "plain.pth", plain);
    let err = read_err(&path);
    assert!(
        err.contains("refused") && err.contains("builtins.eval"),
        "{err}"
    );
    assert!(!marker.exists(), "nothing in the files may run");
}

#[test]
fn case_38_pth_tensors_larger_than_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let four = [1f32, 2.0, 3.0, 4.0].map(f32::to_le_bytes).concat();
    let pth = |name: &str, numel: i64, shape: &[i64], data: &[u8]| {
        let pkl = pickle::state_dict("w", "0", numel, shape);
        let bytes = zip(&[
            ("archive/data.pkl", &pkl),
            ("archive/data/0", data),
            ("archive/version", b"3\n"),
        ]);
        write(dir.path(), name, bytes)
    };
    // The hand-made writer is right: a consistent file reads back its values.
    let ok = TensorMap::read(&pth("ok.pth", 4, &[2, 2], &four)).unwrap();
    assert_eq!(ok.tensors["w"].data, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(ok.tensors["w"].shape, [2, 2]);

    // 10^12 values claimed: refused before anything is allocated.
    let err = read_err(&pth(
        "huge.pth",
        1_000_000_000_000,
        &[1_000_000, 1_000_000],
        &four,
    ));
    assert!(
        err.contains("tensor 'w' of shape [1000000, 1000000]")
            && err.contains("needs 4000000000000 bytes but the file holds only 16 bytes"),
        "{err}"
    );
    // More values than the storage holds: refused instead of padded with zeros.
    let err = read_err(&pth("short.pth", 8, &[2, 4], &four));
    assert!(
        err.contains("needs 32 bytes but the file holds only 16"),
        "{err}"
    );
    // A shape whose size overflows.
    let err = read_err(&pth("overflow.pth", 4, &[1 << 40, 1 << 40], &four));
    assert!(err.contains("needs more than 2^64 bytes"), "{err}");

    // The legacy format (before PyTorch 1.6) with a storage of 2^62 values: the pickle reader
    // overflows while parsing; the file is refused, and nothing is printed about a panic.
    let legacy = write(dir.path(), "legacy.pth", pickle::legacy(1 << 62, &four));
    let err = read_err(&legacy);
    assert!(err.contains("cannot read weights"), "{err}");
    let (ok, _, stderr) = run(&["inspect", s(&legacy)]);
    assert!(!ok && !stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("legacy.pth: cannot read weights"),
        "{stderr}"
    );
    // The same file with a true storage size reads back.
    let good = write(dir.path(), "legacy-ok.pth", pickle::legacy(4, &four));
    assert_eq!(
        TensorMap::read(&good).unwrap().tensors["w"].data,
        [1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn case_39_model_configuration_far_larger_than_the_file() {
    let map = TensorMap::read(&fixture("vit_toy.safetensors")).unwrap();
    // As a checkpoint's metadata could claim: 10^6 px images in 1 px patches.
    let config = VitConfig::new(1_000_000, 1, 64, 2, 2).with_n_classes(5);
    let err = load_vit::<B>(&config, map, &LoadPolicy::strict(), &Default::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vit_toy.safetensors: weights do not match the model")
            && err.contains("but the file holds only")
            && err.contains("img_size 1000000, patch_size 1"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[test]
fn case_40_bad_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.toml",
            "epochs = 2\nlearning_rate = 0.1\n",
            &["unknown.toml", "learning_rate"][..],
        ),
        (
            "type.toml",
            "epochs = \"ten\"\n",
            &["type.toml", "epochs", "line 1"][..],
        ),
        (
            "syntax.toml",
            "epochs = 2\nbatch = [\n",
            &["syntax.toml", "line 2"][..],
        ),
        (
            "negative.toml",
            "batch = -4\n",
            &["negative.toml", "batch"][..],
        ),
        ("zero.toml", "batch = 0\n", &["--batch", "at least 1"][..]),
        (
            "lr.toml",
            "lr = -0.5\n",
            &["--lr must be positive", "-0.5"][..],
        ),
        (
            "nested.toml",
            "[optimizer]\nlr = 1\n",
            &["nested.toml", "optimizer"][..],
        ),
    ];
    for (name, text, wants) in cases {
        let cfg = write(dir.path(), name, text);
        let out = dir.path().join(format!("run-{name}"));
        fails(&["finetune", "--config", s(&cfg), "--out", s(&out)], wants);
        assert!(
            !out.exists(),
            "{name}: no run directory for a refused config"
        );
    }
    let missing = dir.path().join("missing.toml");
    fails(
        &["finetune", "--config", s(&missing)],
        &["cannot read config file", "missing.toml"],
    );
    let binary = write(dir.path(), "binary.toml", b"epochs = \xff\xfe\n");
    fails(&["finetune", "--config", s(&binary)], &["binary.toml"]);
}

#[test]
fn case_41_impossible_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = s(&out);
    let cases: [(&[&str], &[&str]); 9] = [
        (&["--batch", "0"], &["--batch", "at least 1"]),
        (&["--lr=-1"], &["--lr must be positive", "-1"]),
        (&["--lr", "-1"], &["unexpected argument '-1'"]),
        (
            &["--batch=-3"],
            &["invalid value '-3' for '--batch <BATCH>'"],
        ),
        (
            &["--preset", "gpu-huge"],
            &["--preset: unknown recipe 'gpu-huge'"],
        ),
        (
            &["--device", "tpu"],
            &["invalid value 'tpu' for '--device <DEVICE>'"],
        ),
        (
            &["--model", "vit_giant"],
            &["unknown model preset 'vit_giant'"],
        ),
        (&["--dataset", "ckplus"], &["unknown data set \"ckplus\""]),
        (&["--epochs", "0"], &["--epochs", "at least 1"]),
    ];
    for (flags, wants) in cases {
        let mut args = vec!["finetune", "--out", out];
        args.extend(flags);
        fails(&args, wants);
    }
    assert!(
        !Path::new(out).exists(),
        "no run directory for refused flags"
    );
}

/// `finetune` of the toy model on the shipped sample with `flags`; returns the report.
fn toy_finetune(dir: &Path, name: &str, flags: &[&str]) -> serde_json::Value {
    let out = dir.join(name);
    let mut args = vec![
        "finetune",
        "--model",
        "vit_toy_patch8_32",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ];
    args.extend(flags);
    succeeds(&args);
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn case_42_batch_of_one_and_odd_batches_train() {
    let dir = tempfile::tempdir().unwrap();
    for batch in ["1", "3"] {
        let report = toy_finetune(
            dir.path(),
            &format!("b{batch}"),
            &["--batch", batch, "--max-steps", "2", "--log-every", "1"],
        );
        assert_eq!(report["steps"], 2, "batch {batch}");
        let acc = report["validation"]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "batch {batch}: {acc}");
        let metrics =
            std::fs::read_to_string(dir.path().join(format!("b{batch}/metrics.jsonl"))).unwrap();
        for line in metrics.lines().filter(|l| l.contains("\"lr\"")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                v["loss"].as_f64().unwrap().is_finite(),
                "batch {batch}: {line}"
            );
        }
    }
}

/// A class-folder tree of real PNGs: `<split>/<class>/<i>.png`, `counts` images per class.
fn folder_tree(root: &Path, split: &str, counts: &[(&str, usize)]) {
    // Every image differs, across splits too, so that de-duplication keeps them all.
    let salt: usize = split.bytes().map(usize::from).sum();
    for (class, n) in counts {
        for i in 0..*n {
            let path = write(root, &format!("{split}/{class}/{i}.png"), []);
            let seed = (salt + class.len() * 31 + i * 7) as u8;
            RgbImage::from_fn(12, 10, |x, y| Rgb([seed, (x * 20) as u8, (y * 25) as u8]))
                .save(&path)
                .unwrap();
        }
    }
}

#[test]
fn case_43_single_sample_class_and_a_last_batch_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    folder_tree(&data, "train", &[("calm", 3), ("rare", 1)]);
    folder_tree(&data, "valid", &[("calm", 1), ("rare", 1)]);
    folder_tree(&data, "test", &[("calm", 2), ("rare", 1)]);
    // Four images in batches of 3: the second batch holds one image, mixed with itself.
    let report = toy_finetune(
        dir.path(),
        "run",
        &[
            "--dataset",
            "folder",
            "--data",
            s(&data),
            "--batch",
            "3",
            "--workers",
            "1",
        ],
    );
    assert_eq!(report["steps"], 2);
    assert_eq!(report["train_images"], 4);
    assert_eq!(report["test"]["images"], 3);
    assert_eq!(
        report["validation"]["labels"],
        serde_json::json!(["calm", "rare"])
    );
}

fn predict(weights: &Path, image: &Path) -> Vec<String> {
    let args = [
        "predict",
        "--model",
        "vit_toy_patch8_32",
        "--device",
        "cpu",
        "--json",
        "--weights",
        s(weights),
        "--image",
        s(image),
    ];
    args.iter().map(|a| a.to_string()).collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn case_44_predict_on_bad_images_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("vit_toy.safetensors");
    let good = save_grey(dir.path(), "good.png", 32, 32);
    let bytes = std::fs::read(&good).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "cut.png",
            bytes[..bytes.len() / 3].to_vec(),
            "cannot decode",
        ),
        ("empty.jpg", Vec::new(), "the file is empty"),
        (
            "huge.png",
            png(100_000, 100_000, 8, 0, None, &[0; 8]),
            "image is 100000x100000",
        ),
        ("labels.png", b"fer0.png,3\n".to_vec(), "cannot decode"),
    ];
    for (name, content, want) in cases {
        let path = write(dir.path(), name, content);
        let msg = format!("{}: {want}", path.display());
        fails(&args(&predict(&weights, &path)), &[&msg]);
    }
    let missing = dir.path().join("missing.png");
    fails(
        &args(&predict(&weights, &missing)),
        &["missing.png", "No such file"],
    );
}

#[test]
fn case_45_predict_on_unusual_images() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("vit_toy.safetensors");
    let dot = save_grey(dir.path(), "dot.png", 1, 1);
    let palette = write(dir.path(), "palette.png", palette_png());
    let cmyk = write(dir.path(), "cmyk.jpg", cmyk_jpeg());
    let deep = write(dir.path(), "deep.png", []);
    ImageBuffer::<Luma<u16>, _>::from_raw(3, 2, vec![0u16, 9000, 18000, 27000, 36000, 65535])
        .unwrap()
        .save(&deep)
        .unwrap();
    for image in [dot, palette, cmyk, deep] {
        let out = succeeds(&args(&predict(&weights, &image)));
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let probs: Vec<f64> = v["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(probs.len(), 5, "{}", image.display());
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{probs:?}");
    }
}

#[test]
fn case_46_predict_with_a_checkpoint_without_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut map = TensorMap::read(&fixture("vit_toy.safetensors")).unwrap();
    map.tensors.retain(|k, _| !k.starts_with("head."));
    let views: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .tensors
        .iter()
        .map(|(k, t)| {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), t.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = views
        .iter()
        .map(|(k, shape, b)| {
            let dtype = safetensors::tensor::Dtype::F32;
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), b).unwrap();
            (k.clone(), view)
        })
        .collect();
    let encoder = write(
        dir.path(),
        "encoder.safetensors",
        safetensors::serialize(views, None).unwrap(),
    );
    let image = fixture("face32.png");
    fails(
        &args(&predict(&encoder, &image)),
        &["encoder.safetensors: the checkpoint has no classification head"],
    );
}

#[test]
fn case_47_eval_with_a_checkpoint_for_other_classes() {
    let dir = tempfile::tempdir().unwrap();
    let weights = mimic_checkpoint(dir.path(), &["calm", "odd", "rare"]);
    let eval = |dataset: &str, data: &Path| {
        let out = dir.path().join("eval");
        vec![
            "eval".to_string(),
            "--weights".into(),
            s(&weights).into(),
            "--dataset".into(),
            dataset.into(),
            "--data".into(),
            s(data).into(),
            "--out".into(),
            s(&out).into(),
            "--device".into(),
            "cpu".into(),
        ]
    };
    // FERPlus has fixed classes: refused before the (here absent) images are looked at.
    let nowhere = dir.path().join("no-ferplus-here");
    fails(
        &args(&eval("ferplus", &nowhere)),
        &[
            "model.safetensors: the checkpoint has 3 classes [calm, odd, rare]",
            "but ferplus has 8 [neutral, happiness",
        ],
    );
    // A folder tree with two of the three classes.
    let data = dir.path().join("data");
    folder_tree(&data, "test", &[("calm", 1), ("rare", 1)]);
    fails(
        &args(&eval("folder", &data)),
        &["has 3 classes [calm, odd, rare] but folder has 2 [calm, rare]"],
    );
    // The same classes in the same order evaluate.
    folder_tree(&data, "test", &[("odd", 1)]);
    let mut ok = eval("folder", &data);
    ok.push("--json".into());
    let out = succeeds(&args(&ok));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["images"], 3);
}

// ---------------------------------------------------------------------------------------------
// Refused up front rather than after training.

#[test]
fn case_48_max_steps_zero_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    fails(
        &[
            "finetune",
            "--max-steps",
            "0",
            "--out",
            s(&out),
            "--device",
            "cpu",
        ],
        &["--max-steps", "at least 1"],
    );
    assert!(!out.exists());
}

#[test]
fn case_49_folder_test_split_with_other_classes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    folder_tree(&data, "train", &[("a", 2), ("b", 2)]);
    folder_tree(&data, "valid", &[("a", 1), ("b", 1)]);
    folder_tree(&data, "test", &[("a", 1), ("b", 1), ("c", 1)]);
    let out = dir.path().join("run");
    let mut args = vec!["finetune", "--dataset", "folder", "--data", s(&data)];
    args.extend([
        "--model",
        "vit_toy_patch8_32",
        "--max-steps",
        "1",
        "--out",
        s(&out),
    ]);
    args.extend(["--device", "cpu"]);
    fails(
        &args,
        &["folder train has classes [a, b] but folder test has [a, b, c]"],
    );
    assert!(!out.join("config.json").exists(), "refused before training");
}

#[test]
fn case_50_zero_shards_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for command in ["finetune", "pretrain", "bench"] {
        let mut args = vec![
            command,
            "--shards",
            "0",
            "--out",
            s(&out),
            "--device",
            "cpu",
        ];
        if command == "pretrain" {
            args.extend(["--data", s(dir.path())]);
        }
        if command == "bench" {
            args.truncate(3);
            args.extend(["--only", "mimic", "--device", "cpu"]);
        }
        fails(&args, &["--shards", "at least 1"]);
        assert!(!out.exists(), "{command}: nothing is written");
    }
}

#[test]
fn case_51_unsupported_precisions_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (precision, want) in [("f16", "loss scaling"), ("int8", "f32 or bf16")] {
        for command in ["finetune", "pretrain", "bench"] {
            let mut args = vec![command, "--precision", precision, "--device", "cpu"];
            match command {
                "pretrain" => args.extend(["--data", s(dir.path()), "--out", s(&out)]),
                "finetune" => args.extend(["--out", s(&out)]),
                _ => args.extend(["--only", "mimic"]),
            }
            fails(&args, &["--precision", want]);
            assert!(!out.exists(), "{command} {precision}: nothing is written");
        }
    }
    // A config file goes through the same check.
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "precision = \"fp16\"\n").unwrap();
    fails(
        &["finetune", "--config", s(&config), "--out", s(&out)],
        &["--precision", "loss scaling"],
    );
    assert!(!out.exists(), "config file: nothing is written");
}

#[test]
fn case_52_a_mask_ratio_that_masks_nothing_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Any positive ratio masks at least one patch (MAE keeps int(n * (1 - ratio))); 0 none.
    for ratio in ["0", "0.0"] {
        fails(
            &[
                "pretrain",
                "--data",
                s(dir.path()),
                "--model",
                "vit_toy_patch8_32",
                "--mask-ratio",
                ratio,
                "--out",
                s(&out),
                "--device",
                "cpu",
            ],
            &["--mask-ratio", "masks none of the 16 patches"],
        );
        assert!(!out.exists(), "mask ratio {ratio}: nothing is written");
    }
}

#[test]
fn case_53_a_batch_larger_than_the_data_trains_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    folder_tree(&data, "train", &[("calm", 3), ("rare", 2)]);
    folder_tree(&data, "valid", &[("calm", 1), ("rare", 1)]);
    folder_tree(&data, "test", &[("calm", 1), ("rare", 1)]);
    let out = dir.path().join("run");
    let (ok, stdout, stderr) = run(&[
        "finetune",
        "--model",
        "vit_toy_patch8_32",
        "--dataset",
        "folder",
        "--data",
        s(&data),
        "--batch",
        "1000",
        "--shards",
        "64",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    for want in [
        "--batch 1000 is more than the 5 training images: each step takes all 5",
        "64 shards for batches of 5 images",
    ] {
        assert!(stderr.contains(want), "no \"{want}\" in:\n{stderr}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["steps"], 1);
    assert_eq!(report["train_images"], 5);
}
