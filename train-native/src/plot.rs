//! Small PNG figures drawn directly with the `image` crate and a built-in 5x7 bitmap font, so
//! no system fonts are needed: the confusion matrix of `eval`.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use mimic_core::train::ConfusionMatrix;

/// 5x7 glyphs, one byte per row, the low 5 bits left to right.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
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
}
