//! The t-SNE map of the page: the points of `tsne.json` as `train-native embed --web` writes
//! it, their int8 features, and where a new face lands among them.
//!
//! A face is placed at the mean map position of its `k` nearest points by cosine similarity
//! of the pooled features; t-SNE has no out-of-sample mapping, so this is the usual stand-in.

use serde::Deserialize;

/// Neighbours averaged to place a new face on the map.
pub const PLACE_K: usize = 5;

/// What the page reads of `tsne.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct TsneFile {
    /// Class names, indexed by a point's `class`.
    pub classes: Vec<String>,
    /// One map per checkpoint; the page shows the first.
    pub panels: Vec<Panel>,
    /// The page's files, present when the map was written with `--web`.
    pub web: Option<WebFiles>,
}

/// One checkpoint's map.
#[derive(Debug, Clone, Deserialize)]
pub struct Panel {
    /// The points, in the order of the features and thumbnails.
    pub points: Vec<Point>,
}

/// One image on the map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Point {
    /// Map coordinates.
    pub x: f32,
    /// Map coordinates.
    pub y: f32,
    /// Index into the class names.
    pub class: usize,
    /// The image's id in its data set.
    pub id: String,
}

/// Where the features and the thumbnail sprite are, relative to `tsne.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct WebFiles {
    /// The int8 features, `dim` bytes a point.
    pub features: String,
    /// Values a feature row.
    pub dim: usize,
    /// The thumbnail sprite.
    pub sprite: String,
    /// Side of a thumbnail, in pixels.
    pub thumb: u32,
    /// Thumbnails per row of the sprite.
    pub columns: u32,
}

impl TsneFile {
    /// Parses `tsne.json`; it must carry the page's files and at least one map.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: Self =
            serde_json::from_str(text).map_err(|e| format!("tsne.json is not a t-SNE map: {e}"))?;
        if file.panels.is_empty() || file.web.is_none() {
            return Err("tsne.json holds no map with page files (write it with --web)".into());
        }
        Ok(file)
    }
}

/// The map the page shows, with the features to place new faces by.
#[derive(Debug, Clone)]
pub struct TsneMap {
    /// Class names.
    pub classes: Vec<String>,
    /// The points of the first map.
    pub points: Vec<Point>,
    /// Where the sprite is and how it is laid out.
    pub web: WebFiles,
    /// Unit-length features times 127, `web.dim` a point.
    features: Vec<i8>,
}

/// Where a face lands: the mean position of its nearest points.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Map coordinates.
    pub x: f32,
    /// Map coordinates.
    pub y: f32,
    /// The nearest points, nearest first.
    pub neighbours: Vec<usize>,
}

impl TsneMap {
    /// Joins a parsed `tsne.json` with the bytes of its features file.
    pub fn new(file: TsneFile, features: &[u8]) -> Result<Self, String> {
        let web = file.web.ok_or("tsne.json names no features file")?;
        let points = file
            .panels
            .into_iter()
            .next()
            .ok_or("tsne.json has no map")?
            .points;
        if features.len() != points.len() * web.dim {
            return Err(format!(
                "{} holds {} bytes; {} points of {} features need {}",
                web.features,
                features.len(),
                points.len(),
                web.dim,
                points.len() * web.dim
            ));
        }
        if let Some(p) = points.iter().find(|p| p.class >= file.classes.len()) {
            return Err(format!(
                "point {} has class {} of {}",
                p.id,
                p.class,
                file.classes.len()
            ));
        }
        Ok(Self {
            classes: file.classes,
            points,
            web,
            features: features.iter().map(|&b| b as i8).collect(),
        })
    }

    /// The mean position of the `k` points whose features are most similar (cosine) to
    /// `features`; `None` when the length is wrong or the vector is zero or not finite.
    pub fn place(&self, features: &[f32], k: usize) -> Option<Placement> {
        let norm = features.iter().map(|v| v * v).sum::<f32>().sqrt();
        if features.len() != self.web.dim || !(norm.is_finite() && norm > 0.0) || k == 0 {
            return None;
        }
        // Stored rows have one length (127), so the dot product ranks like the cosine.
        let mut scored: Vec<(f32, usize)> = self
            .features
            .chunks(self.web.dim)
            .enumerate()
            .map(|(i, row)| {
                let dot: f32 = row
                    .iter()
                    .zip(features)
                    .map(|(&q, v)| f32::from(q) * v)
                    .sum();
                (dot, i)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let neighbours: Vec<usize> = scored.iter().take(k).map(|&(_, i)| i).collect();
        let n = neighbours.len() as f32;
        let (x, y) = neighbours.iter().fold((0.0, 0.0), |(x, y), &i| {
            (x + self.points[i].x / n, y + self.points[i].y / n)
        });
        Some(Placement { x, y, neighbours })
    }

    /// The smallest and largest coordinates: `([min_x, min_y], [max_x, max_y])`.
    pub fn bounds(&self) -> ([f32; 2], [f32; 2]) {
        self.points.iter().fold(
            ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]),
            |(lo, hi), p| {
                (
                    [lo[0].min(p.x), lo[1].min(p.y)],
                    [hi[0].max(p.x), hi[1].max(p.y)],
                )
            },
        )
    }

    /// Points of each class.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for p in &self.points {
            counts[p.class] += 1;
        }
        counts
    }

    /// The first point of each class that has one, in class order: the mixing explorer's
    /// images.
    pub fn one_per_class(&self) -> Vec<usize> {
        (0..self.classes.len())
            .filter_map(|c| self.points.iter().position(|p| p.class == c))
            .collect()
    }

    /// The thumbnail's top-left corner in the sprite, in pixels.
    pub fn thumb_origin(&self, index: usize) -> (u32, u32) {
        let (i, cols) = (index as u32, self.web.columns.max(1));
        ((i % cols) * self.web.thumb, (i / cols) * self.web.thumb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> TsneMap {
        let json = r#"{"classes": ["a", "b"], "panels": [{"name": "m", "points": [
            {"x": 0, "y": 0, "class": 0, "id": "p0"}, {"x": 1, "y": 0, "class": 0, "id": "p1"},
            {"x": 10, "y": 10, "class": 1, "id": "p2"}]}],
            "web": {"features": "f.bin", "dim": 2, "sprite": "s.png", "thumb": 48,
            "columns": 2}}"#;
        // Directions: p0 and p1 point along x, p2 along y.
        let features = [127u8, 0, 120, 40, 0, 127];
        TsneMap::new(TsneFile::parse(json).unwrap(), &features).unwrap()
    }

    #[test]
    fn a_face_lands_among_its_nearest_points() {
        let map = toy();
        let p = map.place(&[5.0, 0.1], 2).unwrap();
        assert_eq!(p.neighbours, [0, 1]);
        assert!((p.x - 0.5).abs() < 1e-6 && p.y.abs() < 1e-6, "{p:?}");
        // Scale does not matter (cosine); a face along y sits on p2.
        let q = map.place(&[0.0, 0.01], 1).unwrap();
        assert_eq!((q.x, q.y, q.neighbours), (10.0, 10.0, vec![2]));
        assert!(map.place(&[0.0, 0.0], 1).is_none() && map.place(&[1.0], 1).is_none());
    }

    #[test]
    fn layout_helpers_follow_the_file() {
        let map = toy();
        assert_eq!(map.bounds(), ([0.0, 0.0], [10.0, 10.0]));
        assert_eq!(map.counts(), [2, 1]);
        assert_eq!(map.one_per_class(), [0, 2]);
        assert_eq!(map.thumb_origin(2), (0, 48));
    }

    #[test]
    fn mismatched_features_are_refused() {
        let file = toy();
        let json = serde_json::json!({
            "classes": file.classes,
            "panels": [{"name": "m", "points": [{"x": 0, "y": 0, "class": 0, "id": "p0"}]}],
            "web": {"features": "f.bin", "dim": 2, "sprite": "s.png", "thumb": 48, "columns": 2},
        });
        let parsed = TsneFile::parse(&json.to_string()).unwrap();
        let err = TsneMap::new(parsed, &[1, 2, 3]).unwrap_err();
        assert!(err.contains("1 points of 2 features need 2"), "{err}");
        assert!(TsneFile::parse(r#"{"classes": [], "panels": []}"#).is_err());
    }

    #[test]
    fn the_shipped_map_loads() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/web");
        let file =
            TsneFile::parse(&std::fs::read_to_string(format!("{dir}/tsne.json")).unwrap()).unwrap();
        let web = file.web.clone().unwrap();
        let bytes = std::fs::read(format!("{dir}/{}", web.features)).unwrap();
        let map = TsneMap::new(file, &bytes).unwrap();
        assert!(map.points.len() >= 300, "{} points", map.points.len());
        assert_eq!(
            map.one_per_class().len(),
            8,
            "every class has a point to mix"
        );
    }
}
