//! FERPlus `label.csv` in both vote modes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimic_core::data::{DatasetKind, FerPlusMode, LoadOptions};

fuzz_target!(|data: &[u8]| {
    mimic_fuzz::write_input("FER2013Train/label.csv", data);
    for ferplus_mode in [FerPlusMode::Majority, FerPlusMode::Soft] {
        let opts = LoadOptions {
            ferplus_mode,
            exclude: vec!["fer0000001.png".into()],
        };
        mimic_fuzz::load_labels(DatasetKind::FerPlus, "train", &opts);
    }
});
