//! RAF-DB `EmoLabel/list_patition_label.txt`, both splits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimic_core::data::{DatasetKind, LoadOptions};

fuzz_target!(|data: &[u8]| {
    mimic_fuzz::write_input("EmoLabel/list_patition_label.txt", data);
    for split in ["train", "test"] {
        mimic_fuzz::load_labels(DatasetKind::RafDb, split, &LoadOptions::default());
    }
});
