//! The trace's own pictures: tensors as colour maps, and labelled grids of pictures. Clips
//! and text are drawn by [`dit_data::figure`].

use anyhow::Result;
use dit_data::figure::{Align, Image, Picture, TextStyle, draw_text, text_width};

const WHITE: [u8; 3] = [255, 255, 255];

/// A `rows × cols` map of `values`, each value a `scale×scale` square: blue below zero,
/// white at zero, red above, saturated at `±range`.
pub(super) fn diverging(
    values: &[f32],
    rows: usize,
    cols: usize,
    scale: usize,
    range: f32,
) -> Image {
    let colour = |v: f32| {
        let a = (v / range.max(1e-12)).clamp(-1.0, 1.0);
        let fade = |c: f32| (255.0 * (1.0 - a.abs()) + c * a.abs()).round() as u8;
        if a >= 0.0 {
            [fade(200.0), fade(30.0), fade(30.0)]
        } else {
            [fade(30.0), fade(70.0), fade(200.0)]
        }
    };
    map(values, rows, cols, scale, colour)
}

/// A `rows × cols` map of non-negative `values`, white at 0 to dark violet at `max`.
pub(super) fn sequential(
    values: &[f32],
    rows: usize,
    cols: usize,
    scale: usize,
    max: f32,
) -> Image {
    let colour = |v: f32| {
        let a = (v / max.max(1e-12)).clamp(0.0, 1.0);
        let mix = |lo: f32, hi: f32| (lo + (hi - lo) * a).round() as u8;
        [mix(255.0, 60.0), mix(255.0, 20.0), mix(255.0, 110.0)]
    };
    map(values, rows, cols, scale, colour)
}

/// `values` (row-major, `rows × cols`) as squares of `scale×scale` pixels in `colour`.
fn map(
    values: &[f32],
    rows: usize,
    cols: usize,
    scale: usize,
    colour: impl Fn(f32) -> [u8; 3],
) -> Image {
    let mut image = Image::filled(cols * scale, rows * scale, WHITE);
    for r in 0..rows {
        for c in 0..cols {
            let rgb = colour(values[r * cols + c]);
            image.fill_rect(c * scale..(c + 1) * scale, r * scale..(r + 1) * scale, rgb);
        }
    }
    image
}

/// Draws an orange square outline of `size` pixels with its top left at `(x, y)`.
pub(super) fn outline(image: &mut Image, x: usize, y: usize, size: usize) {
    const ORANGE: [u8; 3] = [230, 160, 0];
    image.fill_rect(x..x + size, y..y + 1, ORANGE);
    image.fill_rect(x..x + size, y + size - 1..y + size, ORANGE);
    image.fill_rect(x..x + 1, y..y + size, ORANGE);
    image.fill_rect(x + size - 1..x + size, y..y + size, ORANGE);
}

/// Cells in rows, each row with a label on its left, and column labels on top.
pub(super) fn grid(rows: &[(String, Vec<Image>)], columns: &[String], gap: usize) -> Result<Image> {
    const SIZE: f32 = 13.0;
    let label_w = rows
        .iter()
        .map(|(l, _)| text_width(l, SIZE))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0)
        + 8;
    let cells = || rows.iter().flat_map(|(_, c)| c);
    let cell_w = cells().map(|i| i.width() as usize).max().unwrap_or(1);
    let cell_h = cells().map(|i| i.height() as usize).max().unwrap_or(1);
    let ncols = rows.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    let header = if columns.is_empty() { 0 } else { 20 };
    let mut image = Image::filled(
        label_w + ncols * (cell_w + gap) + gap,
        header + rows.len() * (cell_h + gap) + gap,
        WHITE,
    );
    for (i, name) in columns.iter().enumerate() {
        let x = label_w + i * (cell_w + gap) + cell_w / 2;
        draw_text(
            &mut image,
            name,
            (x as i64, 2),
            TextStyle::new(SIZE).anchor(Align::Middle, Align::Start),
        )?;
    }
    for (r, (label, cells)) in rows.iter().enumerate() {
        let y = header + r * (cell_h + gap) + gap;
        draw_text(
            &mut image,
            label,
            (label_w as i64 - 6, (y + cell_h / 2) as i64),
            TextStyle::new(SIZE).anchor(Align::End, Align::Middle),
        )?;
        for (c, cell) in cells.iter().enumerate() {
            image.paste(cell, label_w + c * (cell_w + gap), y);
        }
    }
    Ok(image)
}

/// Largest absolute value (at least a tiny positive number).
pub(super) fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(1e-12f32, |m, x| m.max(x.abs()))
}

/// The latent `[C, F, h, w]` (one clip) as a grid: a row per channel, a column per frame.
pub(super) fn latent_grid(latent: &[f32], [c, f, h, w]: [usize; 4], scale: usize) -> Result<Image> {
    let range = max_abs(latent);
    let rows: Vec<(String, Vec<Image>)> = (0..c)
        .map(|ch| {
            let cells = (0..f)
                .map(|fr| {
                    let start = (ch * f + fr) * h * w;
                    diverging(&latent[start..start + h * w], h, w, scale, range)
                })
                .collect();
            (format!("channel {ch}"), cells)
        })
        .collect();
    let columns: Vec<String> = (0..f).map(|fr| format!("frame {fr}")).collect();
    grid(&rows, &columns, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_colour_by_sign_and_size_and_outline_draws_a_frame() {
        let image = diverging(&[-1.0, 0.0, 0.5, 2.0], 2, 2, 3, 1.0);
        assert_eq!(
            ((image.width() as usize), (image.height() as usize)),
            (6, 6)
        );
        assert_eq!(image.pixel(0, 0), [30, 70, 200]); // −range: full blue
        assert_eq!(image.pixel(3, 0), WHITE); // zero: white
        assert_eq!(image.pixel(5, 5), [200, 30, 30]); // past +range: full red
        let half = image.pixel(0, 3);
        assert!(half[0] > 200 && half[1] < 200, "{half:?}");
        let mut cell = sequential(&[0.0; 16], 4, 4, 3, 1.0);
        outline(&mut cell, 3, 3, 3);
        assert_eq!(cell.pixel(3, 3), [230, 160, 0]);
        assert_eq!(cell.pixel(5, 5), [230, 160, 0]);
        assert_eq!(cell.pixel(4, 4), WHITE, "inside the outline");
        assert_eq!(cell.pixel(0, 0), WHITE);
    }

    #[test]
    fn a_grid_places_every_cell_right_of_its_label() {
        let red = Image::filled(4, 5, [255, 0, 0]);
        let rows = vec![
            ("a".to_string(), vec![red.clone(), red.clone()]),
            ("longer label".to_string(), vec![red]),
        ];
        let image = grid(&rows, &[], 2).unwrap();
        let label_w = text_width("longer label", 13.0).unwrap() + 8;
        assert_eq!((image.width() as usize), label_w + 2 * (4 + 2) + 2);
        assert_eq!((image.height() as usize), 2 * (5 + 2) + 2);
        assert_eq!(image.pixel(label_w, 2), [255, 0, 0]);
        assert_eq!(image.pixel(label_w + 6, 2), [255, 0, 0]);
        assert_eq!(image.pixel(label_w + 6, 9), WHITE, "row 2 has one cell");
    }
}
