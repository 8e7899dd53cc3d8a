//! Backend selection: `--device auto|cpu|wgpu|cuda`, each backend behind its cargo feature.
//!
//! Commands are written once, generic over an autodiff backend ([`Job::run`]); [`dispatch`]
//! picks the concrete backend at run time. CUDA is probed through the driver library before
//! burn touches it, so a machine without CUDA gets a one-line error instead of a panic from
//! inside the driver loader.

use anyhow::{bail, Result};
use mimic_core::backend::AutodiffBackend;
use mimic_core::model::Precision;

/// The `--device` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// CUDA if a driver and a GPU are present, else a real wgpu GPU adapter, else the CPU.
    Auto,
    /// burn-flex, the pure-Rust CPU backend.
    Cpu,
    /// wgpu (Vulkan / Metal / DX12); needs the `wgpu` feature.
    Wgpu,
    /// CUDA; needs the `cuda` feature and an NVIDIA driver.
    Cuda,
}

/// A command body that runs on any autodiff backend.
pub trait Job {
    /// What the job returns.
    type Output;
    /// Runs the job on `device` of backend `B` (`B::InnerBackend` for inference-only work).
    fn run<B: AutodiffBackend>(self, device: B::Device, backend: &str) -> Result<Self::Output>;
}

/// Runs `job` on the backend `kind` asks for.
pub fn dispatch<J: Job>(kind: DeviceKind, job: J) -> Result<J::Output> {
    let kind = match kind {
        DeviceKind::Auto => auto_pick(),
        other => other,
    };
    match kind {
        DeviceKind::Cpu => run_cpu(job),
        DeviceKind::Wgpu => run_wgpu(job),
        DeviceKind::Cuda => run_cuda(job),
        DeviceKind::Auto => unreachable!("auto was resolved above"),
    }
}

/// Encoder shards per training step (`--shards`): on the CPU one per core, so that the work
/// that burn-flex runs on one thread (element-wise kernels, norms, autodiff bookkeeping) runs
/// on every core; on a GPU one, since a device does not gain from smaller launches.
pub fn resolve_shards(requested: Option<usize>, backend: &str) -> Result<usize> {
    match requested {
        Some(0) => bail!("--shards must be at least 1"),
        Some(n) => Ok(n),
        None if backend.starts_with("cpu") => {
            Ok(std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
        }
        None => Ok(1),
    }
}

/// Says where a run will not use `--batch` or `--shards` as given: a batch larger than the
/// training set takes all of it, and a step splits into at most one shard per image.
pub fn note_effective_sizes(batch: usize, shards: usize, n_train: usize) {
    let images = batch.min(n_train);
    if batch > n_train {
        eprintln!(
            "note: --batch {batch} is more than the {n_train} training images: each step takes \
             all {n_train}"
        );
    }
    if shards > images {
        eprintln!(
            "note: {shards} shards for batches of {images} images: a step splits into at most \
             one shard per image ({images})"
        );
    }
}

/// Checks that the backend can run `--precision`, and says so where it only costs time.
pub fn check_precision(precision: Precision, backend: &str) -> Result<()> {
    match precision {
        Precision::F32 => Ok(()),
        Precision::Bf16 if backend.starts_with("wgpu") => bail!(
            "--precision bf16: the wgpu backend has no bfloat16 (WGSL has no such type); use \
             --device cuda for bf16, or --precision f32"
        ),
        Precision::Bf16 => {
            if backend.starts_with("cpu") {
                eprintln!(
                    "note: --precision bf16 on the CPU rounds the blocks' matrix inputs to bf16 \
                     as a GPU would, but multiplies in f32: same numbers as on CUDA, no speed-up"
                );
            }
            Ok(())
        }
    }
}

fn auto_pick() -> DeviceKind {
    if cfg!(feature = "cuda") && cuda_probe().is_ok() {
        return DeviceKind::Cuda;
    }
    if cfg!(feature = "wgpu") && wgpu_probe().is_ok() {
        return DeviceKind::Wgpu;
    }
    DeviceKind::Cpu
}

#[cfg(feature = "cpu")]
fn run_cpu<J: Job>(job: J) -> Result<J::Output> {
    type B = burn::backend::Autodiff<burn::backend::Flex>;
    job.run::<B>(Default::default(), "cpu (burn-flex)")
}

#[cfg(not(feature = "cpu"))]
fn run_cpu<J: Job>(_job: J) -> Result<J::Output> {
    bail!("--device cpu: this build has no CPU backend; rebuild with `--features cpu`")
}

#[cfg(feature = "wgpu")]
fn run_wgpu<J: Job>(job: J) -> Result<J::Output> {
    let adapter = wgpu_probe()?;
    type B = burn::backend::Autodiff<burn::backend::Wgpu>;
    job.run::<B>(Default::default(), &format!("wgpu ({adapter})"))
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu<J: Job>(_job: J) -> Result<J::Output> {
    bail!("--device wgpu: this build has no wgpu backend; rebuild with `--features wgpu`")
}

#[cfg(feature = "cuda")]
fn run_cuda<J: Job>(job: J) -> Result<J::Output> {
    let n = cuda_probe()?;
    type B = burn::backend::Autodiff<burn::backend::Cuda>;
    job.run::<B>(Default::default(), &format!("cuda (device 0 of {n})"))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: Job>(_job: J) -> Result<J::Output> {
    bail!("--device cuda: this build has no CUDA backend; rebuild with `--features cuda`")
}

/// Loads the CUDA driver library and counts GPUs without going through cudarc, which panics
/// when the library is absent.
#[cfg(feature = "cuda")]
fn cuda_probe() -> Result<i32> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    let name = if cfg!(windows) {
        "nvcuda.dll"
    } else {
        "libcuda.so.1"
    };
    // SAFETY: loading the NVIDIA driver library runs no user code beyond its initialisers,
    // and the two symbols have these C signatures in every CUDA driver API version.
    unsafe {
        let lib = libloading::Library::new(name).map_err(|_| {
            anyhow::anyhow!("--device cuda: no CUDA driver on this machine ({name} not found)")
        })?;
        let init: libloading::Symbol<Init> = lib.get(b"cuInit")?;
        let count: libloading::Symbol<Count> = lib.get(b"cuDeviceGetCount")?;
        let rc = init(0);
        if rc != 0 {
            bail!("--device cuda: the CUDA driver failed to initialise (cuInit error {rc})");
        }
        let mut n = 0;
        if count(&mut n) != 0 || n == 0 {
            bail!("--device cuda: the CUDA driver sees no GPU");
        }
        Ok(n)
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_probe() -> Result<i32> {
    bail!("no CUDA backend in this build")
}

/// Finds a real (non-CPU) GPU adapter and returns its name.
#[cfg(feature = "wgpu")]
fn wgpu_probe() -> Result<String> {
    let instance = wgpu::Instance::default();
    let adapters =
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters
        .into_iter()
        .map(|a| a.get_info())
        .find(|i| i.device_type != wgpu::DeviceType::Cpu)
        .map(|i| format!("{} via {:?}", i.name, i.backend))
        .ok_or_else(|| anyhow::anyhow!("--device wgpu: no GPU adapter found (only CPU or none)"))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_probe() -> Result<String> {
    bail!("no wgpu backend in this build")
}
