//! Safetensors bytes, read in memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimic_core::weights::TensorMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = TensorMap::from_safetensors_bytes(data, "fuzz input") {
        mimic_fuzz::check_map(&map);
    }
});
