//! The expression classifier of the page: the exported weights loaded into the same `core`
//! ViT the trainer uses, and batched inference with an asynchronous read-back.

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use mimic_core::augment::eval_view;
use mimic_core::backend::Backend;
use mimic_core::data::DecodedImage;
use mimic_core::model::Vit;
use mimic_core::weights::{load_vit, LoadPolicy, TensorMap, WebDtype, WebManifest, QUANT_KEY};

/// A loaded classifier and the manifest it came with.
pub struct Classifier<B: Backend> {
    model: Vit<B>,
    device: B::Device,
    pub manifest: WebManifest,
}

impl<B: Backend> Classifier<B> {
    /// Checks `bytes` against the manifest (size and checksum), reads them and loads them
    /// strictly into a model built from the manifest's configuration.
    pub fn load(manifest: WebManifest, bytes: &[u8], device: B::Device) -> Result<Self, String> {
        manifest.verify(bytes).map_err(|e| e.to_string())?;
        let map = TensorMap::from_safetensors_bytes(bytes, &manifest.weights)
            .map_err(|e| e.to_string())?;
        // The page shows the manifest's encoding: it must be the file's.
        let file_dtype = match map.metadata.contains_key(QUANT_KEY) {
            true => WebDtype::Int8,
            false => WebDtype::F16,
        };
        if file_dtype != manifest.dtype {
            return Err(format!(
                "the manifest says {:?} weights, but {} holds {file_dtype:?} ones",
                manifest.dtype, manifest.weights
            ));
        }
        let (model, _) = load_vit::<B>(&manifest.model, map, &LoadPolicy::strict(), &device)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            model,
            device,
            manifest,
        })
    }

    /// Class probabilities for each face (one forward pass for all of them), in the order of
    /// the manifest's labels. The values are read back asynchronously, as WebGPU requires.
    pub async fn classify(&self, faces: &[DecodedImage]) -> Result<Vec<Vec<f32>>, String> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let probs = softmax(self.model.forward(self.input(faces)), 1);
        read_rows(probs).await
    }

    /// [`Self::classify`] plus each face's pooled features (`Vit::forward_features`, the
    /// vectors the t-SNE map's neighbours are found by), from one forward pass.
    pub async fn classify_with_features(&self, faces: &[DecodedImage]) -> Result<Scores, String> {
        if faces.is_empty() {
            return Ok(Scores::default());
        }
        let features = self.model.forward_features(self.input(faces));
        let probs = softmax(self.model.forward_head(features.clone()), 1);
        Ok(Scores {
            probs: read_rows(probs).await?,
            features: read_rows(features).await?,
        })
    }

    /// The faces as the model's input batch, converted as the training images were.
    ///
    /// # Shapes
    /// - output: `[faces, 3, img_size, img_size]`
    fn input(&self, faces: &[DecodedImage]) -> Tensor<B, 4> {
        let size = self.manifest.model.img_size;
        let pixels: Vec<f32> = faces.iter().flat_map(|f| eval_view(f, size)).collect();
        Tensor::from_data(
            TensorData::new(pixels, [faces.len(), 3, size, size]),
            &self.device,
        )
    }
}

/// A tensor's values, read back asynchronously (synchronous read-backs are not allowed on
/// WebGPU in wasm).
pub async fn read_back<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, String> {
    t.into_data_async()
        .await
        .map_err(|e| format!("reading a result back failed: {e:?}"))?
        .to_vec::<f32>()
        .map_err(|e| format!("unexpected result type: {e:?}"))
}

/// The rows of a `[rows, width]` tensor, read back asynchronously.
async fn read_rows<B: Backend>(t: Tensor<B, 2>) -> Result<Vec<Vec<f32>>, String> {
    let width = t.dims()[1];
    let values = read_back(t).await?;
    Ok(values.chunks(width).map(<[f32]>::to_vec).collect())
}

/// Per-face results of [`Classifier::classify_with_features`].
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// Class probabilities, in the order of the manifest's labels.
    pub probs: Vec<Vec<f32>>,
    /// Pooled features, `d_model` values each.
    pub features: Vec<Vec<f32>>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::face::{crop_face, FaceFinder, Grey};

    /// Runs a future that never waits on anything outside itself (the CPU backend's read-back).
    pub(crate) fn ready<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the CPU backend's read-back should be ready"),
        }
    }

    fn shipped() -> (WebManifest, Vec<u8>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/web");
        let json = std::fs::read_to_string(format!("{dir}/model.json")).unwrap();
        let manifest = WebManifest::from_json(&json, "model.json").unwrap();
        let bytes = std::fs::read(format!("{dir}/{}", manifest.weights)).unwrap();
        (manifest, bytes)
    }

    #[test]
    fn the_shipped_weights_load_and_give_probabilities() {
        type B = burn::backend::Flex;
        let (manifest, bytes) = shipped();
        assert!(
            bytes.len() <= 4 << 20,
            "the page's weights must stay under 4 MB"
        );
        let classifier = Classifier::<B>::load(manifest, &bytes, Default::default()).unwrap();
        let frame = Grey {
            width: 64,
            height: 64,
            pixels: (0..64 * 64).map(|i| (i % 251) as u8).collect(),
        };
        let faces = [
            crop_face(
                &frame,
                &crate::face::FaceBox {
                    x: 10.0,
                    y: 10.0,
                    width: 30.0,
                    height: 30.0,
                    score: 3.0,
                },
            ),
            crop_face(
                &frame,
                &crate::face::FaceBox {
                    x: 0.0,
                    y: 20.0,
                    width: 40.0,
                    height: 40.0,
                    score: 3.0,
                },
            ),
        ];
        let probs = ready(classifier.classify(&faces)).unwrap();
        assert_eq!(probs.len(), 2);
        for p in &probs {
            assert_eq!(p.len(), 8);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{p:?}");
        }
        // Batched and one-by-one inference agree.
        let single = ready(classifier.classify(&faces[1..])).unwrap();
        for (a, b) in single[0].iter().zip(&probs[1]) {
            assert!((a - b).abs() < 1e-5);
        }
        let _ = FaceFinder::new().unwrap();

        // One pass with features gives the same probabilities, and d_model features a face.
        let scores = ready(classifier.classify_with_features(&faces)).unwrap();
        assert_eq!(scores.features.len(), 2);
        assert!(scores.features.iter().all(|f| f.len() == 128));
        for (a, b) in scores.probs.iter().flatten().zip(probs.iter().flatten()) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn damaged_or_mismatched_downloads_are_refused() {
        type B = burn::backend::Flex;
        let (manifest, mut bytes) = shipped();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = Classifier::<B>::load(manifest.clone(), &bytes, Default::default())
            .err()
            .unwrap();
        assert!(err.contains("stale or damaged"), "{err}");
        bytes[last] ^= 1;
        // A manifest naming another encoding than the file's.
        let mut int8 = manifest.clone();
        int8.dtype = WebDtype::Int8;
        let err = Classifier::<B>::load(int8, &bytes, Default::default())
            .err()
            .unwrap();
        assert!(err.contains("says Int8 weights"), "{err}");

        // A manifest describing another architecture than the weights: the strict load fails.
        let mut wrong = manifest;
        wrong.model.depth -= 1;
        let err = Classifier::<B>::load(wrong, &bytes, Default::default())
            .err()
            .unwrap();
        assert!(err.contains("blocks.5"), "{err}");
    }
}
