//! Which burn backend the page computes on: WebGPU when the page is built with the `webgpu`
//! feature and the browser gives a GPU adapter, otherwise the CPU backend (burn-flex) compiled
//! to wasm. `?cpu` in the page's address forces the CPU.
//!
//! burn's WebGPU set-up panics when no adapter exists (and a panic ends a wasm page), so the
//! page asks the browser for an adapter itself first and only then initialises burn's device.

use mimic_core::data::DecodedImage;
use mimic_core::weights::WebManifest;

use crate::engine::{Classifier, Scores};

/// The CPU backend.
pub type Cpu = burn::backend::Flex;
/// The WebGPU backend.
#[cfg(feature = "webgpu")]
pub type Gpu = burn::backend::wgpu::WebGpu;

/// A classifier on one of the page's backends.
pub enum Engine {
    /// On the CPU, in wasm.
    Cpu(Box<Classifier<Cpu>>),
    /// On the GPU through WebGPU, with the adapter's description.
    #[cfg(feature = "webgpu")]
    Gpu(Box<Classifier<Gpu>>, String),
}

impl Engine {
    /// Loads the weights on WebGPU when it can be had, else on the CPU. Also returns why the
    /// CPU was chosen, when it was.
    pub async fn load(
        manifest: WebManifest,
        bytes: &[u8],
        force_cpu: bool,
    ) -> Result<(Self, Option<String>), String> {
        let why_cpu = if force_cpu {
            "the address asks for the CPU (?cpu)".to_string()
        } else {
            match gpu::adapter().await {
                #[cfg(feature = "webgpu")]
                Ok(description) => {
                    let device = gpu::init().await;
                    let classifier = Classifier::<Gpu>::load(manifest, bytes, device)?;
                    return Ok((Self::Gpu(Box::new(classifier), description), None));
                }
                #[cfg(not(feature = "webgpu"))]
                Ok(_) => "this browser offers WebGPU, but this build of the page carries only the \
                     CPU backend (build it with the `webgpu` feature)"
                    .to_string(),
                Err(why) => why,
            }
        };
        let classifier = Classifier::<Cpu>::load(manifest, bytes, Default::default())?;
        Ok((Self::Cpu(Box::new(classifier)), Some(why_cpu)))
    }

    /// The manifest the weights came with.
    pub fn manifest(&self) -> &WebManifest {
        match self {
            Self::Cpu(c) => &c.manifest,
            #[cfg(feature = "webgpu")]
            Self::Gpu(c, _) => &c.manifest,
        }
    }

    /// What the page says it runs on.
    pub fn name(&self) -> String {
        match self {
            Self::Cpu(_) => "CPU (WebAssembly, burn-flex)".to_string(),
            #[cfg(feature = "webgpu")]
            Self::Gpu(_, adapter) => format!("WebGPU (burn-wgpu; adapter: {adapter})"),
        }
    }

    /// Whether inference runs on the GPU.
    pub fn on_gpu(&self) -> bool {
        !matches!(self, Self::Cpu(_))
    }

    /// Class probabilities per face; see [`Classifier::classify`].
    pub async fn classify(&self, faces: &[DecodedImage]) -> Result<Vec<Vec<f32>>, String> {
        match self {
            Self::Cpu(c) => c.classify(faces).await,
            #[cfg(feature = "webgpu")]
            Self::Gpu(c, _) => c.classify(faces).await,
        }
    }

    /// Probabilities and pooled features per face; see [`Classifier::classify_with_features`].
    pub async fn classify_with_features(&self, faces: &[DecodedImage]) -> Result<Scores, String> {
        match self {
            Self::Cpu(c) => c.classify_with_features(faces).await,
            #[cfg(feature = "webgpu")]
            Self::Gpu(c, _) => c.classify_with_features(faces).await,
        }
    }
}

/// The browser's WebGPU, asked directly.
mod gpu {
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;

    fn get(target: &JsValue, key: &str) -> JsValue {
        js_sys::Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    }

    /// A description of the adapter `navigator.gpu.requestAdapter()` gives, or why there is
    /// none, in words for the status line.
    pub async fn adapter() -> Result<String, String> {
        let Some(window) = web_sys::window() else {
            return Err("no browser window".into());
        };
        let gpu = get(&window.navigator(), "gpu");
        if gpu.is_undefined() || gpu.is_null() {
            return Err("this browser offers no WebGPU".into());
        }
        let request = get(&gpu, "requestAdapter")
            .dyn_into::<js_sys::Function>()
            .map_err(|_| "this browser's WebGPU has no requestAdapter".to_string())?;
        let promise = request
            .call0(&gpu)
            .ok()
            .and_then(|p| p.dyn_into::<js_sys::Promise>().ok())
            .ok_or_else(|| "WebGPU's requestAdapter failed".to_string())?;
        let adapter = JsFuture::from(promise)
            .await
            .map_err(|_| "WebGPU's requestAdapter failed".to_string())?;
        if adapter.is_undefined() || adapter.is_null() {
            return Err("this browser offers WebGPU but no GPU adapter".into());
        }
        let info = get(&adapter, "info");
        let parts: Vec<String> = ["vendor", "architecture", "description"]
            .iter()
            .filter_map(|k| get(&info, k).as_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(if parts.is_empty() {
            "unnamed".to_string()
        } else {
            parts.join(" ")
        })
    }

    /// Sets up burn's WebGPU device (asynchronously, as wasm requires).
    #[cfg(feature = "webgpu")]
    pub async fn init() -> burn::backend::wgpu::WgpuDevice {
        use burn::backend::wgpu::{graphics::WebGpu, init_setup_async, WgpuDevice};
        let device = WgpuDevice::default();
        init_setup_async::<WebGpu>(&device, Default::default()).await;
        device
    }
}
