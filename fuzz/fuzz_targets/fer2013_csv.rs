//! FER2013 `fer2013.csv` (header found by name, pixels inline), every split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimic_core::data::{DatasetKind, LoadOptions};

fuzz_target!(|data: &[u8]| {
    mimic_fuzz::write_input("fer2013.csv", data);
    for split in ["train", "valid", "test"] {
        mimic_fuzz::load_labels(DatasetKind::Fer2013, split, &LoadOptions::default());
    }
});
