//! AffectNet `training.csv`, as AffectNet-8 and AffectNet-7.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimic_core::data::{DatasetKind, LoadOptions};

fuzz_target!(|data: &[u8]| {
    mimic_fuzz::write_input("training.csv", data);
    for kind in [DatasetKind::AffectNet8, DatasetKind::AffectNet7] {
        mimic_fuzz::load_labels(kind, "train", &LoadOptions::default());
    }
});
