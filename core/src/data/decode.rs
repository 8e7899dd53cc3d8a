//! Decoded pixels kept in memory between epochs: parallel decoding of a split, and removal of
//! samples whose pixels duplicate another split's (FER2013 holds many exact copies across its
//! splits).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::{record_drop, Split};
use crate::preprocess::RgbF32;

/// Reason recorded by [`dedup_against`].
pub const DUPLICATE_REASON: &str = "duplicate of a training image";

/// The largest width or height [`DecodedImage::decode`] accepts; larger images are refused
/// from their header, before any pixel buffer is allocated.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// The most memory the decoder may allocate for one image (the image crate's default).
#[cfg(feature = "fs")]
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// An 8-bit image, grey or RGB, as decoded from a [`Sample`](super::Sample)'s source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecodedImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (grey, kept single-channel to save memory) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` values, row-major HWC.
    pub pixels: Vec<u8>,
}

impl DecodedImage {
    /// RGB values in [0, 1]; grey is replicated to the three channels.
    ///
    /// # Panics
    /// If `channels` is not 1 or 3, or `pixels` does not hold `height * width * channels`
    /// values.
    pub fn to_rgb_f32(&self) -> RgbF32 {
        assert!(
            matches!(self.channels, 1 | 3),
            "a decoded image has 1 or 3 channels, not {}",
            self.channels
        );
        assert_eq!(
            self.pixels.len(),
            self.height * self.width * self.channels,
            "pixel buffer does not match {}x{}x{}",
            self.height,
            self.width,
            self.channels
        );
        let scale = |p: &u8| *p as f32 / 255.0;
        let data = if self.channels == 3 {
            self.pixels.iter().map(scale).collect()
        } else {
            self.pixels.iter().flat_map(|p| [scale(p); 3]).collect()
        };
        RgbF32 {
            height: self.height,
            width: self.width,
            data,
        }
    }

    /// Decodes an image file's bytes: grey (with or without alpha, 8 or 16 bit) becomes one
    /// 8-bit channel, everything else (RGBA, 16-bit, palette, CMYK) 8-bit RGB; alpha is dropped.
    /// `source` names the image in errors. Images wider or taller than [`MAX_IMAGE_SIDE`] are
    /// refused from their header, before any pixel buffer is allocated.
    #[cfg(feature = "fs")]
    pub fn decode(bytes: &[u8], source: &str) -> crate::Result<Self> {
        use image::ColorType;

        let fail = |reason: String| crate::Error::Image {
            path: source.to_string(),
            reason,
        };
        if bytes.is_empty() {
            return Err(fail("the file is empty".into()));
        }
        let reader = || {
            image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| fail(format!("cannot decode: {e}")))
        };
        // The header alone gives the size: refuse huge images before anything is allocated.
        let (w, h) = reader()?
            .into_dimensions()
            .map_err(|e| fail(format!("cannot decode: {e}")))?;
        if w == 0 || h == 0 {
            return Err(fail(format!("image has no pixels ({w}x{h})")));
        }
        if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
            return Err(fail(format!(
                "image is {w}x{h} pixels; images over {MAX_IMAGE_SIDE} pixels a side are refused"
            )));
        }
        let mut reader = reader()?;
        match reader.format() {
            Some(image::ImageFormat::Jpeg) => jpeg_complete(bytes).map_err(fail)?,
            Some(image::ImageFormat::Png) => png_palette_whole(bytes).map_err(fail)?,
            _ => {}
        }
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        // The decoders are third-party code run on untrusted bytes: should one of them panic on
        // a file the checks above let through, that file gets an error naming it instead of
        // taking the run (or a decoding thread) down. Fuzzing builds let the panic through so
        // that the fuzzer reports it.
        #[cfg(not(fuzzing))]
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
            .map_err(|_| {
                fail("the image decoder failed on this file (a corrupt or unusual file)".into())
            })?;
        #[cfg(fuzzing)]
        let decoded = reader.decode();
        let img = decoded.map_err(|e| match e {
            image::ImageError::Limits(_) => fail(format!(
                "image is {w}x{h} pixels; decoding it needs more than the {} MiB allowed per image",
                MAX_DECODE_BYTES >> 20
            )),
            e => fail(format!("cannot decode: {e}")),
        })?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        let grey = matches!(
            img.color(),
            ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16
        );
        let (channels, pixels) = if grey {
            (1, img.to_luma8().into_raw())
        } else {
            (3, img.to_rgb8().into_raw())
        };
        Ok(Self {
            width,
            height,
            channels,
            pixels,
        })
    }
}

/// Walks a PNG's chunks and checks that a `PLTE` chunk holds whole RGB entries (a multiple of
/// 3 bytes). The png crate (0.18.1) checks the palette's overall size but indexes past the end
/// of one whose length is not a multiple of 3 and panics, so such files are refused here, by
/// name. Anything else that is wrong with the chunk layout is left to the decoder to report.
#[cfg(feature = "fs")]
fn png_palette_whole(bytes: &[u8]) -> Result<(), String> {
    let mut i: usize = 8; // after the signature
    while let Some(head) = bytes.get(i..i.saturating_add(8)) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        if kind == b"PLTE" && !len.is_multiple_of(3) {
            return Err(format!(
                "the PNG palette (PLTE chunk) is {len} bytes long, not whole RGB entries of 3 \
                 bytes (a corrupt file)"
            ));
        }
        if kind == b"IDAT" || kind == b"IEND" {
            return Ok(()); // the palette comes before the image data
        }
        i = match i.checked_add(12).and_then(|i| i.checked_add(len)) {
            Some(next) => next,
            None => return Ok(()),
        };
    }
    Ok(())
}

/// Checks that JPEG data runs to its end-of-image marker and holds enough coded data for its
/// size. JPEG decoders fill the missing part of a cut-off scan with grey and report success;
/// a truncated file must fail instead. Walks the marker segments (skipped by their lengths)
/// and the entropy-coded data after each start-of-scan; anything else malformed is left to
/// the decoder to report.
///
/// The size check is a lower bound that no valid file breaks: in a Huffman-coded frame the
/// component at full resolution has one 8x8 block per 8x8 pixels, and each block takes at
/// least one bit (its DC code). A few bytes claiming a huge image are refused before the
/// decoder allocates it.
#[cfg(feature = "fs")]
fn jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    const TRUNCATED: &str = "the JPEG data ends before its end-of-image marker (a truncated file)";
    let n = bytes.len();
    let mut i = 2; // after the start-of-image marker
    let mut frame: Option<(u64, u64)> = None; // width, height of a Huffman-coded frame
    let mut coded = 0u64; // bytes of entropy-coded data
    loop {
        if i >= n {
            return Err(TRUNCATED.into());
        }
        if bytes[i] != 0xFF {
            return Ok(()); // not a marker where one belongs: the decoder will say what is wrong
        }
        while i < n && bytes[i] == 0xFF {
            i += 1; // fill bytes
        }
        let Some(&marker) = bytes.get(i) else {
            return Err(TRUNCATED.into());
        };
        i += 1;
        match marker {
            0xD9 => {
                if let Some((w, h)) = frame {
                    if coded * 8 < w.div_ceil(8) * h.div_ceil(8) {
                        return Err(format!(
                            "the JPEG data holds {coded} bytes of image data, too few for \
                             {w}x{h} pixels (a truncated or corrupt file)"
                        ));
                    }
                }
                return Ok(());
            }
            0x01 | 0xD0..=0xD8 => continue, // markers without a length
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return Err(TRUNCATED.into());
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return Ok(());
        }
        if (0xC0..=0xC3).contains(&marker) && len >= 7 {
            if let Some(dims) = bytes.get(i + 3..i + 7) {
                let h = u64::from(u16::from_be_bytes([dims[0], dims[1]]));
                let w = u64::from(u16::from_be_bytes([dims[2], dims[3]]));
                frame = Some((w, h));
            }
        }
        i += len;
        if i > n {
            return Err(TRUNCATED.into());
        }
        if marker == 0xDA {
            // Entropy-coded data: up to the next 0xFF that starts a marker other than a
            // stuffed zero or a restart marker.
            let start = i;
            loop {
                let Some(k) = bytes[i..].iter().position(|&b| b == 0xFF) else {
                    return Err(TRUNCATED.into());
                };
                i += k;
                match bytes.get(i + 1) {
                    None => return Err(TRUNCATED.into()),
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                }
            }
            coded += (i - start) as u64;
        }
    }
}

/// Reads and decodes one sample's pixels (see [`DecodedImage::decode`]).
#[cfg(feature = "fs")]
pub fn decode_source(source: &super::ImageSource) -> crate::Result<DecodedImage> {
    match source {
        super::ImageSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|err| super::text::io_error(path, err))?;
            DecodedImage::decode(&bytes, &path.display().to_string())
        }
        super::ImageSource::Gray {
            width,
            height,
            pixels,
        } => {
            if pixels.len() != width * height || pixels.is_empty() {
                return Err(crate::Error::Image {
                    path: "in-memory grey image".into(),
                    reason: format!("{} pixels for {width}x{height}", pixels.len()),
                });
            }
            Ok(DecodedImage {
                width: *width,
                height: *height,
                channels: 1,
                pixels: pixels.clone(),
            })
        }
    }
}

/// Decodes every sample with `threads` workers (at least 1), keeping the order of `samples`.
/// On failure returns the error of the first failing sample, which names its file.
#[cfg(feature = "fs")]
pub fn decode_all(samples: &[super::Sample], threads: usize) -> crate::Result<Vec<DecodedImage>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let threads = threads.clamp(1, samples.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);

    // Workers claim the next index until none is left or one of them has failed; every index
    // below a failure was claimed before it, so the first failure in order is always seen.
    let worker = || {
        let mut out = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(sample) = samples.get(i) else { break };
            let decoded = decode_source(&sample.source);
            if decoded.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            out.push((i, decoded));
        }
        out
    };
    let parts: Vec<Vec<(usize, crate::Result<DecodedImage>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });

    let mut slots: Vec<Option<DecodedImage>> = vec![None; samples.len()];
    let mut first_error: Option<(usize, crate::Error)> = None;
    for (i, decoded) in parts.into_iter().flatten() {
        match decoded {
            Ok(img) => slots[i] = Some(img),
            Err(e) if first_error.as_ref().is_none_or(|(j, _)| i < *j) => {
                first_error = Some((i, e))
            }
            Err(_) => {}
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    Ok(slots
        .into_iter()
        .map(|s| s.expect("every sample is decoded when none failed"))
        .collect())
}

fn fingerprint(img: &DecodedImage) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    img.hash(&mut h);
    h.finish()
}

/// Drops the samples of `split` whose decoded pixels equal (same size, channel count and bytes)
/// an image of `reference`, e.g. test images that are copies of training images. `images` are
/// the decoded `split.samples` and stay aligned with them. The drops are recorded under
/// [`DUPLICATE_REASON`]; returns how many there were.
///
/// # Panics
/// If `images` and `split.samples` differ in length.
pub fn dedup_against(
    split: &mut Split,
    images: &mut Vec<DecodedImage>,
    reference: &[DecodedImage],
) -> usize {
    assert_eq!(
        images.len(),
        split.samples.len(),
        "images must be the decoded samples of the split, in order"
    );
    let mut by_hash: HashMap<u64, Vec<&DecodedImage>> = HashMap::new();
    for r in reference {
        by_hash.entry(fingerprint(r)).or_default().push(r);
    }
    let is_copy: Vec<bool> = images
        .iter()
        .map(|img| {
            by_hash
                .get(&fingerprint(img))
                .is_some_and(|c| c.contains(&img))
        })
        .collect();

    for (sample, _) in split.samples.iter().zip(&is_copy).filter(|(_, &copy)| copy) {
        record_drop(&mut split.dropped, DUPLICATE_REASON, &sample.id);
    }
    let mut keep = is_copy.iter().map(|copy| !copy);
    split.samples.retain(|_| keep.next().unwrap_or(true));
    let mut keep = is_copy.iter().map(|copy| !copy);
    images.retain(|_| keep.next().unwrap_or(true));
    is_copy.iter().filter(|&&copy| copy).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ImageSource, Sample};

    fn gray(width: usize, pixels: Vec<u8>) -> DecodedImage {
        DecodedImage {
            width,
            height: pixels.len() / width,
            channels: 1,
            pixels,
        }
    }

    fn sample(id: &str, source: ImageSource) -> Sample {
        Sample {
            id: id.into(),
            source,
            class: 0,
            target: vec![1.0],
        }
    }

    fn toy_split(ids: &[&str]) -> Split {
        Split {
            dataset: "toy".into(),
            split: "test".into(),
            classes: vec!["a".into()],
            samples: ids
                .iter()
                .map(|id| sample(id, ImageSource::File(id.into())))
                .collect(),
            dropped: Vec::new(),
        }
    }

    #[test]
    fn grey_is_replicated_to_rgb() {
        let rgb = gray(2, vec![0, 255]).to_rgb_f32();
        assert_eq!((rgb.height, rgb.width), (1, 2));
        assert_eq!(rgb.data, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let colour = DecodedImage {
            width: 1,
            height: 1,
            channels: 3,
            pixels: vec![0, 51, 255],
        };
        assert_eq!(colour.to_rgb_f32().data, [0.0, 0.2, 1.0]);
    }

    #[test]
    fn dedup_drops_copies_and_keeps_images_aligned() {
        let mut split = toy_split(&["a", "b", "c", "d"]);
        let mut images = vec![
            gray(2, vec![1, 2]),
            gray(2, vec![3, 4]),
            gray(1, vec![1, 2]), // same bytes as a reference image, other size
            gray(2, vec![5, 6]),
        ];
        let reference = [gray(2, vec![5, 6]), gray(2, vec![1, 2])];
        assert_eq!(dedup_against(&mut split, &mut images, &reference), 2);
        let ids: Vec<&str> = split.samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(images, [gray(2, vec![3, 4]), gray(1, vec![1, 2])]);
        assert_eq!(split.dropped[0].reason, DUPLICATE_REASON);
        assert_eq!(
            (split.dropped[0].count, split.dropped[0].examples.len()),
            (2, 2)
        );
        assert_eq!(dedup_against(&mut split, &mut images, &reference), 0);
        assert_eq!(split.dropped.len(), 1);
    }

    #[cfg(feature = "fs")]
    mod files {
        use super::*;
        use crate::data::test_util::TempDir;
        use std::path::Path;

        #[test]
        fn decode_all_keeps_order_and_grey_stays_one_channel() {
            let dir = TempDir::new("decode");
            let g = dir.write_gray_png("g.png", 2, vec![10, 20, 30, 40]);
            let rgb = dir.write("rgba.png", []);
            image::RgbaImage::from_raw(1, 1, vec![10, 20, 30, 40])
                .unwrap()
                .save(&rgb)
                .unwrap();
            let deep = dir.write("g16.png", []);
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![0u16, 65535])
                .unwrap()
                .save(&deep)
                .unwrap();
            let la = dir.write("la.png", []);
            image::GrayAlphaImage::from_raw(1, 1, vec![77, 0])
                .unwrap()
                .save(&la)
                .unwrap();

            let want = [
                gray(2, vec![10, 20, 30, 40]),
                DecodedImage {
                    width: 1,
                    height: 1,
                    channels: 3,
                    pixels: vec![10, 20, 30],
                },
                gray(2, vec![0, 255]),
                gray(1, vec![77]),
                gray(3, vec![1, 2, 3]),
            ];
            let sources = [
                ImageSource::File(g),
                ImageSource::File(rgb),
                ImageSource::File(deep),
                ImageSource::File(la),
                ImageSource::Gray {
                    width: 3,
                    height: 1,
                    pixels: vec![1, 2, 3],
                },
            ];
            // Many samples over few workers, in a scrambled order.
            let order: Vec<usize> = (0..40).map(|i| (i * 7) % 5).collect();
            let samples: Vec<Sample> = order
                .iter()
                .map(|&k| sample(&k.to_string(), sources[k].clone()))
                .collect();
            for threads in [0, 1, 3, 64] {
                let got = decode_all(&samples, threads).unwrap();
                let expected: Vec<&DecodedImage> = order.iter().map(|&k| &want[k]).collect();
                assert_eq!(
                    got.iter().collect::<Vec<_>>(),
                    expected,
                    "threads {threads}"
                );
            }
            assert!(decode_all(&[], 4).unwrap().is_empty());
        }

        /// A 3x1 palette PNG whose chunks all carry valid CRCs, with a `PLTE` of
        /// `palette_len` bytes.
        fn palette_png(palette_len: usize) -> Vec<u8> {
            fn crc32(data: &[u8]) -> u32 {
                let mut crc = !0u32;
                for &byte in data {
                    crc ^= u32::from(byte);
                    for _ in 0..8 {
                        crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
                    }
                }
                !crc
            }
            fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
                out.extend((data.len() as u32).to_be_bytes());
                let start = out.len();
                out.extend(kind);
                out.extend(data);
                let crc = crc32(&out[start..]);
                out.extend(crc.to_be_bytes());
            }
            let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
            // 3x1, 8-bit, colour type 3 (palette).
            chunk(&mut png, b"IHDR", &[0, 0, 0, 3, 0, 0, 0, 1, 8, 3, 0, 0, 0]);
            let palette: Vec<u8> = (0..palette_len).map(|i| (i * 37) as u8).collect();
            chunk(&mut png, b"PLTE", &palette);
            // zlib stream of one scanline: filter 0, indices 0, 1, 2 (stored block).
            let raw = [0u8, 0, 1, 2];
            let mut zlib = vec![0x78, 0x01, 0x01, 4, 0, 0xFB, 0xFF];
            zlib.extend(raw);
            let (mut a, mut b) = (1u32, 0u32);
            for &x in &raw {
                a = (a + u32::from(x)) % 65521;
                b = (b + a) % 65521;
            }
            zlib.extend(((b << 16) | a).to_be_bytes());
            chunk(&mut png, b"IDAT", &zlib);
            chunk(&mut png, b"IEND", &[]);
            png
        }

        #[test]
        fn ragged_png_palettes_are_refused_not_a_panic() {
            // Whole entries decode (the fixture itself is valid).
            let img = DecodedImage::decode(&palette_png(9), "ok.png").unwrap();
            assert_eq!((img.width, img.height, img.channels), (3, 1, 3));
            assert_eq!(img.pixels[3..6], [111, 148, 185]);
            // 10 and 11 bytes: the png crate would index past the palette's end.
            for len in [10, 11] {
                let err = DecodedImage::decode(&palette_png(len), "ragged.png")
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains("ragged.png") && err.contains(&format!("{len} bytes long")),
                    "{err}"
                );
            }
            // Too short or too long: the png crate's own check, still an error naming the file.
            for len in [0, 771] {
                let err = DecodedImage::decode(&palette_png(len), "sized.png").unwrap_err();
                assert!(err.to_string().contains("sized.png"), "{err}");
            }
        }

        #[test]
        fn decode_failures_name_the_file() {
            let dir = TempDir::new("decode-bad");
            let good = dir.write_gray_png("good.png", 1, vec![1]);
            let bad = dir.write("bad.png", b"not a png");
            let empty = dir.write("empty.png", []);
            let mut samples = vec![sample("g", ImageSource::File(good.clone())); 30];
            samples.push(sample("b", ImageSource::File(bad)));
            samples.push(sample("e", ImageSource::File(empty)));
            let err = decode_all(&samples, 4).unwrap_err().to_string();
            assert!(err.contains("bad.png: cannot decode"), "{err}");
            samples.swap(30, 31);
            let err = decode_all(&samples, 4).unwrap_err().to_string();
            assert!(err.contains("empty.png: the file is empty"), "{err}");

            let missing = [sample(
                "m",
                ImageSource::File(dir.path().join("missing.png")),
            )];
            let err = decode_all(&missing, 1).unwrap_err();
            assert!(matches!(&err, crate::Error::Io { path, .. } if path.ends_with("missing.png")));
            let short = ImageSource::Gray {
                width: 48,
                height: 48,
                pixels: vec![0; 10],
            };
            assert!(decode_source(&short).is_err());
        }

        #[test]
        fn real_ferplus_duplicates_are_found() {
            let root = Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/data/ferplus"
            ));
            if !root.is_dir() {
                eprintln!(
                    "note: {} is absent; skipping the real-data check",
                    root.display()
                );
                return;
            }
            // Pairs listed in DUPLICATES.txt: Test 32236 = Train 13320, Test 32246 = Train 18629;
            // Test 32235 only has a copy in Valid.
            let file = |p: &str| ImageSource::File(root.join("data").join(p));
            let test: Vec<Sample> = ["fer0032235", "fer0032236", "fer0032246"]
                .iter()
                .map(|id| sample(id, file(&format!("FER2013Test/{id}.png"))))
                .collect();
            let train: Vec<Sample> = ["fer0013320", "fer0018629", "fer0000000"]
                .iter()
                .map(|id| sample(id, file(&format!("FER2013Train/{id}.png"))))
                .collect();
            let mut split = toy_split(&[]);
            split.samples = test;
            let mut images = decode_all(&split.samples, 2).unwrap();
            assert!(images
                .iter()
                .all(|i| (i.width, i.height, i.channels) == (48, 48, 1)));
            let reference = decode_all(&train, 2).unwrap();
            assert_eq!(dedup_against(&mut split, &mut images, &reference), 2);
            assert_eq!(split.samples[0].id, "fer0032235");
            assert_eq!(split.dropped[0].examples, ["fer0032236", "fer0032246"]);
        }
    }
}
