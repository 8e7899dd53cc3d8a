//! Small PNG figures drawn directly with the `image` crate and a built-in 5x7 bitmap font, so
//! no system fonts are needed: the confusion matrix of `eval`, and the drawing pieces of the
//! other figures (lines, points, axes with ticks, legends).
//!
//! NOTE: a plotting crate such as plotters was the obvious alternative, but its text needs
//! system fonts (fontconfig / FreeType), which headless machines and CI often lack; this
//! renderer has no such dependency and draws the same on every machine.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use mimic_core::train::ConfusionMatrix;

/// 5x7 glyphs, one byte per row, the low 5 bits left to right. Lower-case letters have no
/// descenders (there is no row below the baseline).
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'b' => [16, 16, 22, 25, 17, 17, 30],
        'c' => [0, 0, 14, 16, 16, 17, 14],
        'd' => [1, 1, 13, 19, 17, 17, 15],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'f' => [6, 9, 8, 28, 8, 8, 8],
        'g' => [0, 15, 17, 17, 15, 1, 14],
        'h' => [16, 16, 22, 25, 17, 17, 17],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'j' => [2, 0, 6, 2, 2, 18, 12],
        'k' => [16, 16, 18, 20, 24, 20, 18],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'm' => [0, 0, 26, 21, 21, 17, 17],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'q' => [0, 0, 13, 19, 15, 1, 1],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 14, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'u' => [0, 0, 17, 17, 17, 19, 13],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        'w' => [0, 0, 17, 17, 21, 21, 10],
        'x' => [0, 0, 17, 10, 4, 10, 17],
        'y' => [0, 0, 17, 17, 15, 1, 14],
        'z' => [0, 0, 31, 2, 4, 8, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '<' => [2, 4, 8, 16, 8, 4, 2],
        '>' => [8, 4, 2, 1, 2, 4, 8],
        '[' => [14, 8, 8, 8, 8, 8, 14],
        ']' => [14, 2, 2, 2, 2, 2, 14],
        '|' => [4, 4, 4, 4, 4, 4, 4],
        '\'' => [4, 4, 8, 0, 0, 0, 0],
        '!' => [4, 4, 4, 4, 4, 0, 4],
        '?' => [14, 17, 1, 2, 4, 0, 4],
        '#' => [10, 10, 31, 10, 31, 10, 10],
        '*' => [0, 4, 21, 14, 21, 4, 0],
        '~' => [0, 0, 8, 21, 2, 0, 0],
        '\u{3bb}' => [24, 4, 4, 10, 10, 17, 17], // λ
        '\u{b1}' => [4, 4, 31, 4, 4, 0, 31],     // ±
        _ => [0; 7],
    }
}

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale` wide.
pub fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, color: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (1 << (4 - col)) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as u32 * 6 + col) * scale + dx;
                        let py = y + row as u32 * scale + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, color);
                        }
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 6 * scale
}

/// Draws `text` rotated a quarter turn anticlockwise (reading bottom to top), with the
/// bottom-left corner of its first glyph at (x, y): for y-axis labels.
pub fn draw_text_up(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, color: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5u32 {
                if bits & (1 << (4 - col)) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        // Glyph row r goes right, glyph column goes up.
                        let px = x + row as u32 * scale + dx;
                        let up = (i as u32 * 6 + col) * scale + dy;
                        if up <= y && px < img.width() && y - up < img.height() {
                            img.put_pixel(px, y - up, color);
                        }
                    }
                }
            }
        }
    }
}

/// Ten distinct colours (the "tab10" palette) for classes and series.
pub const PALETTE: [Rgb<u8>; 10] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
];

/// Ink for text and frames.
pub const INK: Rgb<u8> = Rgb([20, 20, 20]);
/// Light grey for grid lines.
pub const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// Fills the rectangle `[x, x + w) x [y, y + h)`, clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: Rgb<u8>) {
    for py in y..(y + h).min(img.height()) {
        for px in x..(x + w).min(img.width()) {
            img.put_pixel(px, py, color);
        }
    }
}

/// Draws the outline of the rectangle `[x, x + w) x [y, y + h)`, `thickness` pixels wide.
pub fn stroke_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, thickness: u32, c: Rgb<u8>) {
    let t = thickness.min(w / 2).min(h / 2).max(1);
    fill_rect(img, x, y, w, t, c);
    fill_rect(img, x, y + h - t, w, t, c);
    fill_rect(img, x, y, t, h, c);
    fill_rect(img, x + w - t, y, t, h, c);
}

/// Fills a disc of radius `r` centred at (cx, cy), clipped to the image.
pub fn fill_disc(img: &mut RgbImage, cx: f64, cy: f64, r: f64, color: Rgb<u8>) {
    let (x0, x1) = ((cx - r).floor().max(0.0), (cx + r).ceil());
    let (y0, y1) = ((cy - r).floor().max(0.0), (cy + r).ceil());
    for py in y0 as u32..=(y1 as u32).min(img.height().saturating_sub(1)) {
        for px in x0 as u32..=(x1 as u32).min(img.width().saturating_sub(1)) {
            let (dx, dy) = (px as f64 + 0.5 - cx, py as f64 + 0.5 - cy);
            if dx * dx + dy * dy <= r * r {
                img.put_pixel(px, py, color);
            }
        }
    }
}

/// Draws a line from (x0, y0) to (x1, y1) as overlapping discs of diameter `width`.
pub fn draw_line(img: &mut RgbImage, from: (f64, f64), to: (f64, f64), width: f64, c: Rgb<u8>) {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let steps = (dx.abs().max(dy.abs()) * 2.0).ceil().max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        fill_disc(img, from.0 + t * dx, from.1 + t * dy, width / 2.0, c);
    }
}

/// Round tick values covering `[lo, hi]`, about `target` of them (1, 2 or 5 times a power of
/// ten apart), and their spacing.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, step)
}

/// Tick labels for `ticks` spaced `step` apart: as many decimals as the spacing needs, or,
/// on an axis whose values all lie below 0.01 (learning rates), scientific notation with one
/// mantissa precision for the whole axis.
pub fn tick_labels(ticks: &[f64], step: f64) -> Vec<String> {
    let top = ticks.iter().fold(0f64, |m, v| m.max(v.abs()));
    let zero = |v: f64| v == 0.0 || v.abs() < step * 1e-6;
    if top > 0.0 && !(1e-2..1e6).contains(&top) {
        let digits = (top.log10().floor() - step.log10().floor()).clamp(0.0, 3.0) as usize;
        return ticks
            .iter()
            .map(|&v| {
                if zero(v) {
                    "0".into()
                } else {
                    format!("{v:.digits$e}")
                }
            })
            .collect();
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    ticks
        .iter()
        .map(|&v| {
            if zero(v) {
                "0".into()
            } else {
                format!("{v:.decimals$}")
            }
        })
        .collect()
}

/// A data range padded so that a flat series still gets a visible, labelled axis.
pub fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A plotting area: a pixel rectangle and the data ranges it shows.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Left edge in pixels.
    pub x: u32,
    /// Top edge in pixels.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
    /// Data range shown left to right.
    pub x_range: (f64, f64),
    /// Data range shown bottom to top.
    pub y_range: (f64, f64),
}

impl Frame {
    /// The pixel position of a data point (y grows downwards in the image).
    pub fn pixel(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = (x - self.x_range.0) / (self.x_range.1 - self.x_range.0);
        let fy = (y - self.y_range.0) / (self.y_range.1 - self.y_range.0);
        (
            self.x as f64 + fx * self.w as f64,
            self.y as f64 + (1.0 - fy) * self.h as f64,
        )
    }

    /// Draws grid lines, the frame, tick marks with their labels (text scale 1) and the two
    /// axis labels (text scale 2).
    pub fn draw_axes(&self, img: &mut RgbImage, x_label: &str, y_label: &str) {
        let (xt, xs) = nice_ticks(self.x_range.0, self.x_range.1, 6);
        let (yt, ys) = nice_ticks(self.y_range.0, self.y_range.1, 5);
        let mut widest = 0;
        for (&v, label) in xt.iter().zip(tick_labels(&xt, xs)) {
            let (px, _) = self.pixel(v, self.y_range.0);
            let px = px.round() as u32;
            fill_rect(img, px, self.y, 1, self.h, GRID);
            fill_rect(img, px, self.y + self.h, 1, 4, INK);
            let tx = px.saturating_sub(text_width(&label, 1) / 2);
            draw_text(img, &label, tx, self.y + self.h + 7, 1, INK);
        }
        for (&v, label) in yt.iter().zip(tick_labels(&yt, ys)) {
            let (_, py) = self.pixel(self.x_range.0, v);
            let py = py.round() as u32;
            fill_rect(img, self.x, py, self.w, 1, GRID);
            fill_rect(img, self.x.saturating_sub(4), py, 4, 1, INK);
            let tw = text_width(&label, 1);
            widest = widest.max(tw);
            draw_text(
                img,
                &label,
                self.x.saturating_sub(tw + 6),
                py.saturating_sub(3),
                1,
                INK,
            );
        }
        stroke_rect(img, self.x, self.y, self.w + 1, self.h + 1, 1, INK);

        let lx = self.x + (self.w.saturating_sub(text_width(x_label, 2))) / 2;
        draw_text(img, x_label, lx, self.y + self.h + 20, 2, INK);
        let ly = self.y + self.h / 2 + text_width(y_label, 2) / 2;
        draw_text_up(img, y_label, self.x.saturating_sub(widest + 26), ly, 2, INK);
    }
}

/// Draws a legend box at (x, y): a colour swatch and a name per entry, one per line (text
/// scale 2). Returns the box's width and height.
pub fn draw_legend(
    img: &mut RgbImage,
    entries: &[(String, Rgb<u8>)],
    x: u32,
    y: u32,
) -> (u32, u32) {
    let line = 20;
    let w = entries
        .iter()
        .map(|(name, _)| text_width(name, 2))
        .max()
        .unwrap_or(0)
        + 36;
    let h = entries.len() as u32 * line + 8;
    fill_rect(img, x, y, w, h, Rgb([255, 255, 255]));
    stroke_rect(img, x, y, w, h, 1, Rgb([170, 170, 170]));
    for (i, (name, color)) in entries.iter().enumerate() {
        let ly = y + 6 + i as u32 * line;
        fill_rect(img, x + 6, ly + 1, 14, 12, *color);
        draw_text(img, name, x + 26, ly, 2, INK);
    }
    (w, h)
}

/// A confusion-matrix heat map: rows are true classes, columns predictions, cells shaded by the
/// row-normalised share and labelled with counts; the title gives the accuracies.
pub fn confusion_png(
    cm: &ConfusionMatrix,
    labels: &[String],
    title: &str,
    path: &Path,
) -> Result<()> {
    let n = labels.len() as u32;
    let cell = 44u32;
    let label_w = labels.iter().map(|l| text_width(l, 2)).max().unwrap_or(0) + 16;
    let (top, left) = (40 + label_w, label_w);
    let w = (left + n * cell + 20).max(text_width(title, 2) + 16);
    let h = top + n * cell + 20;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let black = Rgb([20, 20, 20]);
    draw_text(&mut img, title, 8, 8, 2, black);

    for (i, label) in labels.iter().enumerate() {
        let i = i as u32;
        // Row labels on the left, column labels written top-down above the matrix.
        draw_text(&mut img, label, 8, top + i * cell + cell / 2 - 7, 2, black);
        for (k, c) in label
            .chars()
            .take(((label_w - 16) / 16) as usize)
            .enumerate()
        {
            let x = left + i * cell + cell / 2 - 5;
            draw_text(&mut img, &c.to_string(), x, 40 + k as u32 * 16, 2, black);
        }
    }
    for (t, row) in cm.counts.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let shade = |full: u8| (255.0 - share * (255.0 - full as f64)) as u8;
            let color = Rgb([shade(30), shade(90), shade(180)]);
            let (x0, y0) = (left + p as u32 * cell, top + t as u32 * cell);
            for y in y0..y0 + cell - 1 {
                for x in x0..x0 + cell - 1 {
                    img.put_pixel(x, y, color);
                }
            }
            let text = count.to_string();
            let ink = if share > 0.5 {
                Rgb([255, 255, 255])
            } else {
                black
            };
            let tx = x0 + (cell - text_width(&text, 1)) / 2;
            draw_text(&mut img, &text, tx, y0 + cell / 2 - 4, 1, ink);
        }
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_png_has_the_expected_size_and_shading() {
        let mut cm = ConfusionMatrix::new(2);
        for _ in 0..9 {
            cm.add(0, 0);
        }
        cm.add(1, 0);
        let labels = vec!["happy".to_string(), "sad".to_string()];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        confusion_png(&cm, &labels, "acc 90.00 %", &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let label_w = text_width("happy", 2) + 16;
        assert_eq!(
            img.width(),
            (label_w + 2 * 44 + 20).max(text_width("acc 90.00 %", 2) + 16)
        );
        // The (happy, happy) cell is dark, the (happy, sad) cell white.
        let (top, left) = (40 + label_w, label_w);
        assert!(img.get_pixel(left + 2, top + 2)[0] < 100);
        assert_eq!(img.get_pixel(left + 44 + 2, top + 2), &Rgb([255, 255, 255]));
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (t, step) = nice_ticks(0.0, 1.0, 5);
        assert_eq!(step, 0.2);
        assert_eq!(t.len(), 6);
        let (t, step) = nice_ticks(3.0, 117.0, 6);
        assert_eq!((step, t[0], *t.last().unwrap()), (20.0, 20.0, 100.0));
        assert_eq!(tick_labels(&[0.0, 0.2, 0.4], 0.2), ["0", "0.2", "0.4"]);
        assert_eq!(tick_labels(&[100.0, 120.0], 20.0), ["100", "120"]);
        // A learning-rate axis: one notation and precision for all its ticks.
        assert_eq!(
            tick_labels(&[0.0, 5e-4, 1e-3], 5e-4),
            ["0", "5.0e-4", "1.0e-3"]
        );
        assert_eq!(tick_labels(&[1e-5, 1.5e-5], 5e-6), ["1.0e-5", "1.5e-5"]);
        assert_eq!(padded_range([2.0, 2.0].into_iter()), (1.8, 2.2));
    }

    #[test]
    fn every_glyph_used_in_figure_text_is_drawn() {
        for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;%-_/()=+<>[]|'!?#*~\u{3bb}\u{b1}"
            .chars()
            .filter(|c| *c != ';')
        {
            assert!(glyph(c).iter().any(|&r| r != 0), "no glyph for {c:?}");
        }
    }
}
