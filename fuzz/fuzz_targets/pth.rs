//! Weight files read from disk as `train-native` reads them: PyTorch zip archives and pickles
//! (and safetensors, told apart by content).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimic_core::weights::TensorMap;

fuzz_target!(|data: &[u8]| {
    let path = mimic_fuzz::write_input("weights.pth", data).join("weights.pth");
    if let Ok(map) = TensorMap::read(&path) {
        mimic_fuzz::check_map(&map);
    }
});
