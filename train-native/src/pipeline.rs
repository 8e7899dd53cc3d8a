//! Data for the training loops: splits loaded, decoded once into memory and reported; batches
//! of two augmented views assembled on worker threads ahead of the optimisation step.
//!
//! Each batch is drawn from its own seeded generator (run seed, epoch, batch index), so the
//! data a run sees does not depend on thread timing or the number of workers.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use mimic_core::augment::{render, sample_crop, sample_jitter, AugmentConfig};
use mimic_core::data::{
    decode_all, dedup_against, load_split, DatasetKind, DecodedImage, LoadOptions, Split,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// A split with its decoded images, aligned with `split.samples`.
pub struct LoadedSplit {
    /// Labels and provenance.
    pub split: Split,
    /// Decoded pixels, one per sample.
    pub images: Vec<DecodedImage>,
}

impl LoadedSplit {
    /// Hard labels.
    pub fn labels(&self) -> Vec<usize> {
        self.split.samples.iter().map(|s| s.class).collect()
    }
}

/// Loads and decodes one split, printing its report.
pub fn load(
    kind: DatasetKind,
    root: &Path,
    name: &str,
    options: &LoadOptions,
    threads: usize,
) -> Result<LoadedSplit> {
    let split = load_split(kind, root, name, options).with_context(|| {
        format!(
            "cannot load the {name} split of {kind} from {}",
            root.display()
        )
    })?;
    let images = decode_all(&split.samples, threads)
        .with_context(|| format!("cannot decode the {name} split"))?;
    Ok(LoadedSplit { split, images })
}

/// Drops held-out images that are pixel-identical to training images; prints what it dropped.
pub fn dedup(held_out: &mut LoadedSplit, train: &LoadedSplit) -> usize {
    dedup_against(&mut held_out.split, &mut held_out.images, &train.images)
}

/// One batch on the host: `2 * n` views, view-major, and their label distributions.
pub struct HostBatch {
    /// Source images in the batch.
    pub n: usize,
    /// `[2n, 3, size, size]` normalised values.
    pub pixels: Vec<f32>,
    /// `2n` rows of class probabilities.
    pub targets: Vec<Vec<f32>>,
}

/// What the workers need to render batches.
pub struct BatchSource {
    /// Decoded training images.
    pub images: Arc<Vec<DecodedImage>>,
    /// Label distributions, one per image.
    pub targets: Arc<Vec<Vec<f32>>>,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Output side in pixels.
    pub size: usize,
    /// Views per image.
    pub views: usize,
}

impl BatchSource {
    fn render(&self, ids: &[usize], seed: u64) -> HostBatch {
        let mut rng = StdRng::seed_from_u64(seed);
        let per = 3 * self.size * self.size;
        let mut pixels = vec![0f32; self.views * ids.len() * per];
        let mut targets = Vec::with_capacity(self.views * ids.len());
        for v in 0..self.views {
            for (k, &i) in ids.iter().enumerate() {
                let img = &self.images[i];
                let crop = sample_crop(&mut rng, &self.augment, img.height, img.width);
                let jitter = sample_jitter(&mut rng, self.augment.jitter);
                let out = &mut pixels[(v * ids.len() + k) * per..][..per];
                out.copy_from_slice(&render(img, &crop, self.size, jitter));
                targets.push(self.targets[i].clone());
            }
        }
        HostBatch {
            n: ids.len(),
            pixels,
            targets,
        }
    }
}

/// Batches of one epoch, rendered by `workers` threads (worker w renders batches w, w + W, ...)
/// and handed out in order, at most two ahead per worker.
pub struct EpochBatches {
    receivers: Vec<Receiver<HostBatch>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
}

impl EpochBatches {
    /// Starts rendering `batches` (image indices per batch) with seeds derived from `seed`.
    pub fn start(
        source: Arc<BatchSource>,
        batches: Vec<Vec<usize>>,
        seed: u64,
        workers: usize,
    ) -> Self {
        let total = batches.len();
        let batches = Arc::new(batches);
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers.max(1) {
            let (tx, rx) = sync_channel(2);
            let (source, batches) = (source.clone(), batches.clone());
            let stride = workers.max(1);
            handles.push(std::thread::spawn(move || {
                for b in (w..batches.len()).step_by(stride) {
                    let batch_seed = seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    if tx.send(source.render(&batches[b], batch_seed)).is_err() {
                        return; // the consumer stopped early
                    }
                }
            }));
            receivers.push(rx);
        }
        Self {
            receivers,
            handles,
            next: 0,
            total,
        }
    }
}

impl EpochBatches {
    /// The batches of one training epoch: every image once, in an order shuffled by the run
    /// seed and the epoch, cut into batches of `batch` (the last may be smaller), rendered with
    /// seeds derived from the same two numbers.
    pub fn epoch(
        source: &Arc<BatchSource>,
        batch: usize,
        seed: u64,
        epoch: usize,
        workers: usize,
    ) -> Self {
        let mut order: Vec<usize> = (0..source.images.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(
            seed ^ ((epoch as u64 + 1) * 0x5851_F42D),
        ));
        let batches = order.chunks(batch).map(|c| c.to_vec()).collect();
        let epoch_seed = seed.wrapping_add(1000 * epoch as u64 + 17);
        Self::start(source.clone(), batches, epoch_seed, workers)
    }
}

impl Iterator for EpochBatches {
    type Item = HostBatch;

    fn next(&mut self) -> Option<HostBatch> {
        if self.next >= self.total {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        self.receivers[w].recv().ok()
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.receivers.clear(); // unblocks workers waiting to send
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
