//! Image bytes through the one decoder of the data sets and `predict`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimic_core::data::DecodedImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = DecodedImage::decode(data, "fuzz input") {
        assert!(matches!(img.channels, 1 | 3));
        assert_eq!(img.pixels.len(), img.width * img.height * img.channels);
        if img.width * img.height <= 1 << 20 {
            let rgb = img.to_rgb_f32();
            assert_eq!(rgb.data.len(), img.width * img.height * 3);
        }
    }
});
