//! Test fixtures: a temporary folder removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh folder under the system temp dir, removed with its contents on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mimic-data-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the temp dir should be writable");
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `rel`, creating parent folders.
    pub(crate) fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the temp dir should be writable");
        }
        std::fs::write(&path, contents).expect("the temp dir should be writable");
        path
    }

    /// Writes a grey PNG of `width x height` with the given pixels.
    pub(crate) fn write_gray_png(&self, rel: &str, width: u32, pixels: Vec<u8>) -> PathBuf {
        let height = pixels.len() as u32 / width;
        let img = image::GrayImage::from_raw(width, height, pixels).expect("pixels fit");
        let path = self.write(rel, []);
        img.save(&path).expect("png should encode");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
