//! Pictures a person reads: line charts with their axes, and contact sheets of clips with
//! their text.
//!
//! - [`LineChart`]: one or more series against a shared x axis, with a title, labelled axes
//!   with tick values, a linear or log-scale y axis (the axis label says which), each series
//!   raw and as a running mean with a legend, and vertical [`Mark`]s where a stage or a
//!   resumption begins. Non-finite points are left out with a note on the chart; a chart with
//!   nothing to draw says so instead of failing.
//! - [`ContactSheet`]: one row per clip, its frames side by side, the row's text (the prompt;
//!   what was asked and what was judged) beside it, a header line (seed, steps, sampler,
//!   guidance) and frame numbers over the columns.
//!
//! `plotters` draws the charts' grid, axes and curves into an RGB buffer; all text, on charts
//! and sheets alike, is rasterised by [`draw_text`] from DejaVu Sans, embedded in the binary
//! (its licence is beside the font in `assets/fonts/`), so no picture depends on the fonts a
//! machine has.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;

use crate::clip::Clip;
use crate::video::{OutputError, encode_png, frame_rgb, write_png};

/// DejaVu Sans (see `assets/fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Largest width or height of a picture drawn here, in pixels.
pub const MAX_SIDE: usize = 16_384;
/// Smallest chart that leaves room for its title, axes and legend.
pub const MIN_CHART: (usize, usize) = (240, 160);

/// An RGB colour.
pub type Rgb = [u8; 3];

const TEXT: Rgb = [25, 25, 25];
const GREY_TEXT: Rgb = [100, 100, 100];
const GRID: Rgb = [222, 222, 222];
const MARK: Rgb = [200, 80, 40];
const BACKGROUND: Rgb = [255, 255, 255];
/// Series colours, in order (blue, orange, green, red, purple).
const PALETTE: [Rgb; 5] = [
    [31, 90, 180],
    [230, 120, 0],
    [30, 140, 50],
    [200, 30, 40],
    [130, 70, 170],
];

fn colour(c: Rgb) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Why a picture could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// The requested or resulting size is unusable.
    #[error("cannot draw a {what} of {width}x{height} pixels: {reason}")]
    Size {
        /// What was drawn ("chart", "contact sheet").
        what: &'static str,
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// The limit it breaks.
        reason: String,
    },
    /// The input cannot be drawn (no clips, clips of different sizes, …).
    #[error("cannot draw a {what}: {reason}")]
    Input {
        /// What was drawn.
        what: &'static str,
        /// What is wrong with the input.
        reason: String,
    },
    /// The embedded font could not be read, or `plotters` failed.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// The PNG could not be written.
    #[error(transparent)]
    Write(#[from] OutputError),
}

fn draw_error(e: impl std::fmt::Display) -> FigureError {
    FigureError::Draw(e.to_string())
}

fn check_size(
    what: &'static str,
    width: usize,
    height: usize,
    min: (usize, usize),
) -> Result<(), FigureError> {
    let reason = if width < min.0 || height < min.1 {
        format!("the smallest is {}x{}", min.0, min.1)
    } else if width > MAX_SIDE || height > MAX_SIDE {
        format!("the largest side is {MAX_SIDE}")
    } else {
        return Ok(());
    };
    Err(FigureError::Size {
        what,
        width,
        height,
        reason,
    })
}

// ---------------------------------------------------------------------------------------------
// Pictures and text
// ---------------------------------------------------------------------------------------------

/// A picture: the `image` crate's RGB buffer. [`Picture`] adds what the figures do to one.
pub type Image = image::RgbImage;

/// What the figures do to a picture beyond the `image` crate's calls (sizes in `usize`, as
/// the layouts count them).
pub trait Picture: Sized {
    /// A picture filled with `background`.
    fn filled(width: usize, height: usize, background: Rgb) -> Self;
    /// The frames of `clip` side by side on the background (white), each pixel
    /// `scale×scale`, `gap` pixels apart.
    fn frames(clip: &Clip, scale: usize, gap: usize) -> Self;
    /// `images` one above the other, left-aligned on the background (white).
    fn stacked(images: &[Self]) -> Self;
    /// Copies `src` into this picture with its top left at `(x, y)`, clipped to it.
    fn paste(&mut self, src: &Self, x: usize, y: usize);
    /// The colour of pixel `(x, y)`.
    fn pixel(&self, x: usize, y: usize) -> Rgb;
    /// Mixes `c` into pixel `(x, y)` with weight `alpha` (0 to 1); outside the picture,
    /// nothing.
    fn blend(&mut self, x: i64, y: i64, c: Rgb, alpha: f32);
    /// Fills columns `xs` of rows `ys` (clipped to the picture) with `c`.
    fn fill_rect(&mut self, xs: Range<usize>, ys: Range<usize>, c: Rgb);
    /// The picture as the bytes of a PNG file.
    fn png(&self) -> Result<Vec<u8>, String>;
    /// Writes the picture as a PNG (atomically).
    fn write_png(&self, path: &Path) -> Result<(), OutputError>;
}

impl Picture for Image {
    fn filled(width: usize, height: usize, background: Rgb) -> Self {
        Image::from_pixel(width as u32, height as u32, image::Rgb(background))
    }

    fn frames(clip: &Clip, scale: usize, gap: usize) -> Self {
        let (w, h) = (clip.width * scale, clip.height * scale);
        let mut strip = Self::filled((clip.frames * (w + gap)).saturating_sub(gap), h, BACKGROUND);
        for f in 0..clip.frames {
            let frame = Image::from_raw(w as u32, h as u32, frame_rgb(clip, f, scale))
                .expect("3 bytes a pixel");
            strip.paste(&frame, f * (w + gap), 0);
        }
        strip
    }

    fn stacked(images: &[Self]) -> Self {
        let width = images.iter().map(|i| i.width() as usize).max().unwrap_or(1);
        let height = images.iter().map(|i| i.height() as usize).sum::<usize>();
        let mut out = Self::filled(width, height.max(1), BACKGROUND);
        let mut y = 0;
        for image in images {
            out.paste(image, 0, y);
            y += image.height() as usize;
        }
        out
    }

    fn paste(&mut self, src: &Self, x: usize, y: usize) {
        image::imageops::replace(self, src, x as i64, y as i64);
    }

    fn pixel(&self, x: usize, y: usize) -> Rgb {
        self.get_pixel(x as u32, y as u32).0
    }

    fn blend(&mut self, x: i64, y: i64, c: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x >= i64::from(self.width()) || y >= i64::from(self.height()) {
            return;
        }
        let a = alpha.clamp(0.0, 1.0);
        let pixel = self.get_pixel_mut(x as u32, y as u32);
        for (p, c) in pixel.0.iter_mut().zip(c) {
            *p = (*p as f32 * (1.0 - a) + c as f32 * a).round() as u8;
        }
    }

    fn fill_rect(&mut self, xs: Range<usize>, ys: Range<usize>, c: Rgb) {
        let (w, h) = (self.width() as usize, self.height() as usize);
        for y in ys.start..ys.end.min(h) {
            for x in xs.start..xs.end.min(w) {
                self.put_pixel(x as u32, y as u32, image::Rgb(c));
            }
        }
    }

    fn png(&self) -> Result<Vec<u8>, String> {
        encode_png(self.width() as usize, self.height() as usize, self.as_raw())
    }

    fn write_png(&self, path: &Path) -> Result<(), OutputError> {
        write_png(
            path,
            self.width() as usize,
            self.height() as usize,
            self.as_raw(),
        )
    }
}

/// The embedded font, read once per process.
fn face() -> Result<&'static FontRef<'static>, FigureError> {
    static FACE: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| FontRef::try_from_slice(FONT).ok())
        .as_ref()
        .ok_or_else(|| FigureError::Draw("the embedded font cannot be read".into()))
}

/// Where a text's anchor point is, along the text and across it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// At the start (left of a line; top of the line's height).
    Start,
    /// In the middle.
    Middle,
    /// At the end (right of a line; bottom of the line's height).
    End,
}

impl Align {
    fn offset(self, length: f32) -> f32 {
        match self {
            Align::Start => 0.0,
            Align::Middle => -length / 2.0,
            Align::End => -length,
        }
    }
}

/// How a text is set: size (the font's ascent to descent, in pixels), colour, anchor, and
/// whether it reads upwards (turned a quarter to the left, as a y-axis label).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextStyle {
    /// Height of a line, ascent to descent, in pixels.
    pub size: f32,
    /// Colour.
    pub colour: Rgb,
    /// Anchor along the text.
    pub along: Align,
    /// Anchor across the text.
    pub across: Align,
    /// Reads bottom to top instead of left to right.
    pub upwards: bool,
}

impl TextStyle {
    /// Dark text of `size` pixels, anchored at its top left.
    pub fn new(size: f32) -> Self {
        Self {
            size,
            colour: TEXT,
            along: Align::Start,
            across: Align::Start,
            upwards: false,
        }
    }

    /// With another colour.
    pub fn colour(self, colour: Rgb) -> Self {
        Self { colour, ..self }
    }

    /// Anchored elsewhere.
    pub fn anchor(self, along: Align, across: Align) -> Self {
        Self {
            along,
            across,
            ..self
        }
    }

    /// Reading bottom to top.
    pub fn upwards(self) -> Self {
        Self {
            upwards: true,
            ..self
        }
    }
}

/// The glyphs of `text` set on one line from x = 0, and the line's advance width.
fn set_line(font: &FontRef<'static>, text: &str, size: f32) -> (Vec<(GlyphId, f32)>, f32) {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut x = 0.0;
    let mut previous: Option<GlyphId> = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            x += scaled.kern(p, id);
        }
        glyphs.push((id, x));
        x += scaled.h_advance(id);
        previous = Some(id);
    }
    (glyphs, x)
}

/// Width of `text` in pixels at `size`.
pub fn text_width(text: &str, size: f32) -> Result<usize, FigureError> {
    Ok(set_line(face()?, text, size).1.ceil() as usize)
}

/// Draws one line of `text` at `at` in `style` (anchored as the style says), anti-aliased;
/// what falls outside the picture is clipped.
pub fn draw_text(
    image: &mut Image,
    text: &str,
    at: (i64, i64),
    style: TextStyle,
) -> Result<(), FigureError> {
    let font = face()?;
    let scaled = font.as_scaled(PxScale::from(style.size));
    let (glyphs, width) = set_line(font, text, style.size);
    let height = scaled.ascent() - scaled.descent();
    let dx = style.along.offset(width);
    // Top of the line box → baseline.
    let dy = style.across.offset(height) + scaled.ascent();
    for (id, x) in glyphs {
        let glyph = id.with_scale_and_position(style.size, point(dx + x, dy));
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            // (u, v): along the text and down across it, from the anchor.
            let u = (bounds.min.x + gx as f32) as i64;
            let v = (bounds.min.y + gy as f32) as i64;
            let (x, y) = if style.upwards {
                (at.0 + v, at.1 - u)
            } else {
                (at.0 + u, at.1 + v)
            };
            image.blend(x, y, style.colour, coverage);
        });
    }
    Ok(())
}

/// Runs `draw` on a `plotters` drawing area over `image`.
fn plot_on<T>(
    image: &mut Image,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<T, FigureError>,
) -> Result<T, FigureError> {
    let (w, h) = image.dimensions();
    let root = BitMapBackend::with_buffer(image, (w, h)).into_drawing_area();
    let out = draw(&root)?;
    root.present().map_err(draw_error)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------------------------

/// How the y axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YScale {
    /// Evenly spaced values.
    Linear,
    /// Evenly spaced powers of ten; points ≤ 0 are left out.
    Log,
    /// Log when all values are positive and the largest is at least ten times the smallest.
    Auto,
}

/// A named series of `(x, y)` points, drawn in the order given.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    /// Name in the legend.
    name: String,
    /// The points.
    points: Vec<(f64, f64)>,
}

/// A vertical line at `x` with a label: where a stage or a resumption begins.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Where, in x units.
    pub x: f64,
    /// What begins there.
    pub label: String,
}

/// A line chart: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    title: String,
    x_label: String,
    y_label: String,
    y_scale: YScale,
    smooth: bool,
    series: Vec<Series>,
    marks: Vec<Mark>,
}

/// Where a drawn chart put things, for callers and tests to check.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartLayout {
    /// The plot area in pixels: columns `x.start..x.end`, rows `y.start..y.end`.
    pub plot_area: (Range<i32>, Range<i32>),
    /// Whether the y axis is logarithmic.
    pub log_y: bool,
    /// The values labelled on the y axis, bottom to top.
    pub y_ticks: Vec<f64>,
    /// The labels written for them.
    pub y_labels: Vec<String>,
    /// The pixel row of each y tick (and of its grid line).
    pub y_tick_rows: Vec<i32>,
    /// The values labelled on the x axis, left to right.
    pub x_ticks: Vec<f64>,
    /// Points per running mean (1 when the chart is not smoothed).
    pub smoothing_window: usize,
    /// The note written on the chart (points left out, or nothing to draw), if any.
    pub note: Option<String>,
}

/// A chart and its layout.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnChart {
    /// The picture.
    pub image: Image,
    /// Where things are in it.
    pub layout: ChartLayout,
}

const TITLE_SIZE: f32 = 21.0;
const AXIS_SIZE: f32 = 16.0;
const TICK_SIZE: f32 = 15.0;
const LEGEND_SIZE: f32 = 15.0;
const MARK_SIZE: f32 = 14.0;
/// Height of a row of mark labels.
const MARK_ROW: i64 = 19;
const CHART_PAD: i64 = 10;

impl LineChart {
    /// The names of its series, in the order they were added (the legend's order).
    pub fn series_names(&self) -> Vec<&str> {
        self.series.iter().map(|s| s.name.as_str()).collect()
    }

    /// An empty chart with a title and axis labels; the y axis chooses its scale
    /// ([`YScale::Auto`]) and each series is drawn raw and smoothed.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            y_scale: YScale::Auto,
            smooth: true,
            series: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// Sets the y scale.
    pub fn y_scale(mut self, scale: YScale) -> Self {
        self.y_scale = scale;
        self
    }

    /// Whether each series is also drawn as a running mean (default: yes).
    pub fn smooth(mut self, smooth: bool) -> Self {
        self.smooth = smooth;
        self
    }

    /// Adds a series.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
        });
        self
    }

    /// Adds vertical marks.
    pub fn marks(mut self, marks: impl IntoIterator<Item = Mark>) -> Self {
        self.marks.extend(marks);
        self
    }

    /// Draws the chart at `width × height` pixels (at least [`MIN_CHART`]).
    pub fn render(&self, width: usize, height: usize) -> Result<DrawnChart, FigureError> {
        check_size("chart", width, height, MIN_CHART)?;
        let plan = Plan::of(self);
        let y_labels: Vec<String> = plan.y_ticks.iter().map(|&v| plan.y_tick_label(v)).collect();
        let x_step = tick_step(&plan.x_ticks);
        let x_labels: Vec<String> = plan
            .x_ticks
            .iter()
            .map(|&v| linear_label(v, x_step))
            .collect();

        // Room for the text around the plot area.
        let line = |size: f32| size.ceil() as i64;
        let mut widest_y = 0;
        for label in &y_labels {
            widest_y = widest_y.max(text_width(label, TICK_SIZE)? as i64);
        }
        let left = CHART_PAD + line(AXIS_SIZE) + 10 + widest_y + 8;
        let bottom = 8 + line(TICK_SIZE) + 8 + line(AXIS_SIZE) + CHART_PAD;
        let last_x = x_labels
            .last()
            .map_or(Ok(0), |l| text_width(l, TICK_SIZE))? as i64;
        let right = (last_x / 2 + 4).max(20);
        let mark_labels = place_mark_labels(&plan, (left, width as i64 - right), width as i64)?;
        let rows = mark_labels.iter().map(|m| m.row + 1).max().unwrap_or(0) as i64;
        let band = if rows > 0 { rows * MARK_ROW + 6 } else { 0 };
        let top = CHART_PAD + line(TITLE_SIZE) + 12 + band;
        let area = (left, top, width as i64 - right, height as i64 - bottom);
        if area.2 - area.0 < 40 || area.3 - area.1 < 40 {
            return Err(FigureError::Size {
                what: "chart",
                width,
                height,
                reason: "its labels leave no room for the plot".into(),
            });
        }

        let mut image = Image::filled(width, height, BACKGROUND);
        let geometry = plot_on(&mut image, |root| self.plot(root, &plan, area))?;
        self.label(&mut image, &plan, &geometry, &x_labels, &y_labels)?;
        for label in &mark_labels {
            label.draw(&mut image, top - 6, top)?;
        }
        let (xs, ys) = geometry.plot_area.clone();
        Ok(DrawnChart {
            image,
            layout: ChartLayout {
                plot_area: (xs, ys),
                log_y: plan.log_y,
                y_ticks: plan.y_ticks.clone(),
                y_labels,
                y_tick_rows: geometry.y_tick_rows,
                x_ticks: plan.x_ticks.clone(),
                smoothing_window: plan.smoothing_window,
                note: plan.note.clone(),
            },
        })
    }

    /// Draws the chart at `width × height` pixels and writes it as a PNG.
    pub fn write(&self, path: &Path, width: usize, height: usize) -> Result<(), FigureError> {
        Ok(self.render(width, height)?.image.write_png(path)?)
    }

    /// The grid, axes, marks and curves, within `area` (left, top, right, bottom).
    fn plot(
        &self,
        root: &DrawingArea<BitMapBackend<'_>, Shift>,
        plan: &Plan,
        area: (i64, i64, i64, i64),
    ) -> Result<Geometry, FigureError> {
        let (w, h) = root.dim_in_pixel();
        let (x0, x1) = plan.x_range;
        let (y0, y1) = plan.y_range;
        let mut chart = ChartBuilder::on(root)
            .margin_left(area.0 as u32)
            .margin_top(area.1 as u32)
            .margin_right((w as i64 - area.2) as u32)
            .margin_bottom((h as i64 - area.3) as u32)
            .build_cartesian_2d(
                Axis {
                    range: x0..x1,
                    ticks: plan.x_ticks.clone(),
                },
                Axis {
                    range: y0..y1,
                    ticks: plan.y_ticks.iter().map(|&v| plan.to_y(v)).collect(),
                },
            )
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_labels(plan.x_ticks.len())
            .y_labels(plan.y_ticks.len())
            .bold_line_style(colour(GRID))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_error)?;
        for mark in &plan.marks {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(mark.x, y0), (mark.x, y1)],
                    colour(MARK).stroke_width(1),
                )))
                .map_err(draw_error)?;
        }
        for (i, series) in plan.series.iter().enumerate() {
            let (raw_colour, smooth_colour) = plan.colours(i);
            let raw = series.points.iter().map(|&(x, y)| (x, plan.to_y(y)));
            chart
                .draw_series(LineSeries::new(raw, colour(raw_colour).stroke_width(1)))
                .map_err(draw_error)?;
            if plan.smoothing_window > 1 {
                let smooth = running_mean(&series.points, &plan.marks, plan.smoothing_window);
                let smooth = smooth.into_iter().map(|(x, y)| (x, plan.to_y(y)));
                chart
                    .draw_series(LineSeries::new(
                        smooth,
                        colour(smooth_colour).stroke_width(2),
                    ))
                    .map_err(draw_error)?;
            }
        }
        let points = plan
            .series
            .iter()
            .flat_map(|s| &s.points)
            .map(|&(x, y)| chart.backend_coord(&(x, plan.to_y(y))))
            .collect();
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        // The axes: left and bottom edges of the plot area, with a tick at each value.
        let axis = colour(TEXT).stroke_width(1);
        let (l, r, t, b) = (xs.start - 1, xs.end, ys.start, ys.end);
        root.draw(&PathElement::new(vec![(l, t), (l, b), (r, b)], axis))
            .map_err(draw_error)?;
        let x_tick_columns: Vec<i32> = plan
            .x_ticks
            .iter()
            .map(|&v| chart.backend_coord(&(v, y0)).0)
            .collect();
        let y_tick_rows: Vec<i32> = plan
            .y_ticks
            .iter()
            .map(|&v| chart.backend_coord(&(x0, plan.to_y(v))).1)
            .collect();
        for &x in &x_tick_columns {
            root.draw(&PathElement::new(vec![(x, b), (x, b + 5)], axis))
                .map_err(draw_error)?;
        }
        for &y in &y_tick_rows {
            root.draw(&PathElement::new(vec![(l - 5, y), (l, y)], axis))
                .map_err(draw_error)?;
        }
        Ok(Geometry {
            plot_area: (xs, ys),
            points,
            x_tick_columns,
            y_tick_rows,
        })
    }

    /// The title, tick labels, axis names, mark labels, legend and note.
    fn label(
        &self,
        image: &mut Image,
        plan: &Plan,
        geometry: &Geometry,
        x_labels: &[String],
        y_labels: &[String],
    ) -> Result<(), FigureError> {
        let (xs, ys) = &geometry.plot_area;
        let (l, r, t, b) = (
            xs.start as i64,
            xs.end as i64,
            ys.start as i64,
            ys.end as i64,
        );
        let (w, h) = (i64::from(image.width()), i64::from(image.height()));
        let centred = TextStyle::new(TITLE_SIZE).anchor(Align::Middle, Align::Start);
        draw_text(image, &self.title, (w / 2, CHART_PAD), centred)?;

        let below = TextStyle::new(TICK_SIZE).anchor(Align::Middle, Align::Start);
        for (label, &x) in x_labels.iter().zip(&geometry.x_tick_columns) {
            draw_text(image, label, (x as i64, b + 8), below)?;
        }
        let beside = TextStyle::new(TICK_SIZE).anchor(Align::End, Align::Middle);
        for (label, &y) in y_labels.iter().zip(&geometry.y_tick_rows) {
            draw_text(image, label, (l - 9, y as i64), beside)?;
        }
        let name = TextStyle::new(AXIS_SIZE).anchor(Align::Middle, Align::End);
        draw_text(image, &self.x_label, ((l + r) / 2, h - CHART_PAD), name)?;
        let y_desc = if plan.log_y {
            format!("{} (log scale)", self.y_label)
        } else {
            self.y_label.clone()
        };
        let upwards = TextStyle::new(AXIS_SIZE)
            .anchor(Align::Middle, Align::Start)
            .upwards();
        draw_text(image, &y_desc, (CHART_PAD, (t + b) / 2), upwards)?;

        self.legend(image, plan, geometry)?;
        if let Some(note) = &plan.note {
            let (at, style) = if plan.series.iter().all(|s| s.points.is_empty()) {
                let style = TextStyle::new(AXIS_SIZE).anchor(Align::Middle, Align::Middle);
                (((l + r) / 2, (t + b) / 2), style)
            } else {
                let style = TextStyle::new(TICK_SIZE).anchor(Align::Start, Align::End);
                ((l + 8, b - 8), style)
            };
            draw_text(image, note, at, style)?;
        }
        Ok(())
    }

    /// A box naming each drawn line, in the corner of the plot area that hides the fewest
    /// points (the top right when there is a tie).
    fn legend(
        &self,
        image: &mut Image,
        plan: &Plan,
        geometry: &Geometry,
    ) -> Result<(), FigureError> {
        let mut entries: Vec<(String, Rgb, usize)> = Vec::new();
        for (i, series) in plan.series.iter().enumerate() {
            let (raw, smooth) = plan.colours(i);
            if series.points.is_empty() {
                continue;
            }
            if plan.smoothing_window > 1 {
                entries.push((series.name.clone(), raw, 1));
                let mean = format!("{}, running mean of {}", series.name, plan.smoothing_window);
                entries.push((mean, smooth, 2));
            } else {
                entries.push((series.name.clone(), raw, 1));
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        let line_height = LEGEND_SIZE.ceil() as i64 + 5;
        let mut widest = 0;
        for (text, ..) in &entries {
            widest = widest.max(text_width(text, LEGEND_SIZE)? as i64);
        }
        let (sample, pad) = (26, 8);
        let width = pad + sample + 8 + widest + pad;
        let height = pad + entries.len() as i64 * line_height + pad - 5;
        let (xs, ys) = &geometry.plot_area;
        let (l, r, t, b) = (
            xs.start as i64,
            xs.end as i64,
            ys.start as i64,
            ys.end as i64,
        );
        let corners = [
            (r - 10 - width, t + 10),
            (l + 10, t + 10),
            (r - 10 - width, b - 10 - height),
            (l + 10, b - 10 - height),
        ];
        let hidden = |&(x0, y0): &(i64, i64)| {
            let inside = |&&(x, y): &&(i32, i32)| {
                (x0..x0 + width).contains(&(x as i64)) && (y0..y0 + height).contains(&(y as i64))
            };
            geometry.points.iter().filter(inside).count()
        };
        let (x0, y0) = corners
            .iter()
            .copied()
            .min_by_key(hidden)
            .expect("four corners");
        let to = |v: i64| v.max(0) as usize;
        image.fill_rect(to(x0)..to(x0 + width), to(y0)..to(y0 + height), BACKGROUND);
        for x in x0..x0 + width {
            image.blend(x, y0, GRID, 1.0);
            image.blend(x, y0 + height - 1, GRID, 1.0);
        }
        for y in y0..y0 + height {
            image.blend(x0, y, GRID, 1.0);
            image.blend(x0 + width - 1, y, GRID, 1.0);
        }
        for (i, (text, c, thickness)) in entries.iter().enumerate() {
            let y = y0 + pad + i as i64 * line_height + line_height / 2 - 2;
            for x in x0 + pad..x0 + pad + sample {
                for dy in 0..*thickness as i64 {
                    image.blend(x, y + dy, *c, 1.0);
                }
            }
            let style = TextStyle::new(LEGEND_SIZE).anchor(Align::Start, Align::Middle);
            draw_text(image, text, (x0 + pad + sample + 8, y), style)?;
        }
        Ok(())
    }
}

/// A mark's label in the band above the plot area: a short bar at the mark's column, the
/// text beside it (to its left near the right edge), in one of the band's rows.
struct MarkLabel {
    text: String,
    /// The mark's pixel column.
    column: i64,
    /// Whether the text ends at the bar instead of starting there.
    before: bool,
    /// Row, counted up from the plot area.
    row: usize,
    /// Text columns `start..end` (bar included).
    span: Range<i64>,
    /// Whether no label in a lower row covers the bar's column, so that the bar runs down
    /// to its line.
    joined: bool,
}

impl MarkLabel {
    /// Draws the label above `bottom`, the band's lowest pixel row, whose line starts at
    /// row `plot_top`.
    fn draw(&self, image: &mut Image, bottom: i64, plot_top: i64) -> Result<(), FigureError> {
        let top = bottom - (self.row as i64 + 1) * MARK_ROW + 2;
        let bar_end = if self.joined {
            plot_top
        } else {
            top + MARK_ROW - 2
        };
        for y in top..bar_end {
            image.blend(self.column, y, MARK, 1.0);
        }
        let (x, along) = if self.before {
            (self.column - 4, Align::End)
        } else {
            (self.column + 4, Align::Start)
        };
        let style = TextStyle::new(MARK_SIZE)
            .colour(MARK)
            .anchor(along, Align::Middle);
        draw_text(image, &self.text, (x, top + (MARK_ROW - 2) / 2), style)
    }
}

/// Places the labels of the plan's marks in rows above the plot area spanning pixel columns
/// `columns` (the picture being `width` wide): left to right, each in the lowest row where
/// it fits. A label equal to the one before it is not repeated (its line is still drawn).
fn place_mark_labels(
    plan: &Plan,
    columns: (i64, i64),
    width: i64,
) -> Result<Vec<MarkLabel>, FigureError> {
    let (x0, x1) = plan.x_range;
    let mut marks: Vec<&Mark> = plan.marks.iter().collect();
    marks.sort_by(|a, b| a.x.total_cmp(&b.x));
    let mut labels = Vec::new();
    let mut row_ends: Vec<i64> = Vec::new();
    let mut previous: Option<&str> = None;
    for mark in marks {
        if mark.label.is_empty() || previous == Some(mark.label.as_str()) {
            continue;
        }
        previous = Some(&mark.label);
        // As `Axis::map` over the plot area's columns.
        let t = ((mark.x - x0) / (x1 - x0)).clamp(0.0, 1.0);
        let column = columns.0 + ((columns.1 - 1 - columns.0) as f64 * t).round() as i64;
        let w = text_width(&mark.label, MARK_SIZE)? as i64;
        let before = column + 4 + w > width - CHART_PAD;
        let (start, end) = if before {
            (column - 4 - w, column)
        } else {
            (column, column + 4 + w)
        };
        let row = match row_ends.iter().position(|&e| e + 10 <= start) {
            Some(row) => row,
            None => {
                row_ends.push(i64::MIN);
                row_ends.len() - 1
            }
        };
        row_ends[row] = end;
        labels.push(MarkLabel {
            text: mark.label.clone(),
            column,
            before,
            row,
            span: start..end + 1,
            joined: true,
        });
    }
    let spans: Vec<(usize, Range<i64>)> = labels.iter().map(|l| (l.row, l.span.clone())).collect();
    for label in &mut labels {
        label.joined = !spans
            .iter()
            .any(|(row, span)| *row < label.row && span.contains(&label.column));
    }
    Ok(labels)
}

/// Pixel positions of a plotted chart.
struct Geometry {
    plot_area: (Range<i32>, Range<i32>),
    /// Every drawn point of every series.
    points: Vec<(i32, i32)>,
    x_tick_columns: Vec<i32>,
    y_tick_rows: Vec<i32>,
}

/// A linear axis over `range` with grid lines at `ticks`, the values this module chose
/// (`plotters`' own axes choose theirs).
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.range.start) / (self.range.end - self.range.start);
        let pixels = (limit.1 - limit.0) as f64 * t.clamp(-1.0, 2.0);
        limit.0 + pixels.round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// A colour mixed 60 % towards white: the raw series under its running mean.
fn pale(c: Rgb) -> Rgb {
    c.map(|v| (v as f64 + (255.0 - v as f64) * 0.6).round() as u8)
}
/// What a chart will draw: the kept points, the ranges, the ticks.
struct Plan {
    log_y: bool,
    series: Vec<Series>,
    marks: Vec<Mark>,
    x_range: (f64, f64),
    /// In axis units (log10 of the value on a log axis).
    y_range: (f64, f64),
    x_ticks: Vec<f64>,
    /// In values.
    y_ticks: Vec<f64>,
    smoothing_window: usize,
    note: Option<String>,
}

impl Plan {
    fn of(chart: &LineChart) -> Self {
        let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let log_y = match chart.y_scale {
            YScale::Linear => false,
            YScale::Log => true,
            YScale::Auto => {
                let ys = chart
                    .series
                    .iter()
                    .flat_map(|s| &s.points)
                    .filter(|p| finite(p));
                let (lo, hi) = ys.fold((f64::INFINITY, 0f64), |(lo, hi), p| {
                    (lo.min(p.1), hi.max(p.1))
                });
                lo > 0.0 && hi >= 10.0 * lo
            }
        };
        let mut left_out = 0;
        let series: Vec<Series> = chart
            .series
            .iter()
            .map(|s| {
                let points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| finite(p) && (!log_y || p.1 > 0.0))
                    .collect();
                left_out += s.points.len() - points.len();
                Series {
                    name: s.name.clone(),
                    points,
                }
            })
            .collect();
        let marks: Vec<Mark> = chart
            .marks
            .iter()
            .filter(|m| m.x.is_finite())
            .cloned()
            .collect();
        let to_y = |v: f64| if log_y { v.log10() } else { v };
        let points = || series.iter().flat_map(|s| &s.points);
        let total: usize = series.iter().map(|s| s.points.len()).sum();
        let plural = if left_out == 1 { "" } else { "s" };
        let why = if log_y {
            "NaN, infinite or ≤ 0"
        } else {
            "NaN or infinite"
        };
        let note = match (total, left_out) {
            (0, 0) => Some("nothing to draw: no points".to_string()),
            (0, _) => Some(format!("nothing to draw: {left_out} point{plural}, {why}")),
            (_, 0) => None,
            _ => Some(format!("{left_out} point{plural} left out ({why})")),
        };
        let span = |values: &mut dyn Iterator<Item = f64>| {
            values.fold(None, |r: Option<(f64, f64)>, v| {
                Some(r.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            })
        };
        let x_span = span(&mut points().map(|p| p.0).chain(marks.iter().map(|m| m.x)));
        let x_range = match x_span {
            None => (0.0, 1.0),
            Some((lo, hi)) if lo == hi => (lo - 1.0, hi + 1.0),
            // Counting steps: start at 0 when the data starts near it.
            Some((lo, hi)) if lo > 0.0 && lo <= 0.1 * hi => (0.0, hi),
            Some(r) => r,
        };
        let y_range = match span(&mut points().map(|p| to_y(p.1))) {
            None => (0.0, 1.0),
            Some((lo, hi)) if lo == hi => {
                let pad = if log_y {
                    0.5
                } else {
                    (lo.abs() * 0.1).max(0.5)
                };
                (lo - pad, hi + pad)
            }
            Some((lo, hi)) => {
                let pad = (hi - lo) * 0.05;
                (lo - pad, hi + pad)
            }
        };
        let y_ticks = if log_y {
            log_ticks(y_range.0, y_range.1)
        } else {
            nice_ticks(y_range.0, y_range.1, 6)
        };
        let longest = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
        let smoothing_window = if chart.smooth && longest >= 8 {
            (longest / 20).max(3) | 1
        } else {
            1
        };
        let x_ticks = nice_ticks(x_range.0, x_range.1, 7);
        // An empty chart has no scale to show.
        let (x_ticks, y_ticks) = if total == 0 {
            (Vec::new(), Vec::new())
        } else {
            (x_ticks, y_ticks)
        };
        Plan {
            log_y,
            series,
            marks,
            x_range,
            y_range,
            x_ticks,
            y_ticks,
            smoothing_window,
            note,
        }
    }

    /// A value in axis units.
    fn to_y(&self, v: f64) -> f64 {
        if self.log_y { v.log10() } else { v }
    }

    /// The raw and the running-mean colour of series `i`.
    fn colours(&self, i: usize) -> (Rgb, Rgb) {
        let c = PALETTE[i % PALETTE.len()];
        if self.smoothing_window > 1 {
            (pale(c), c)
        } else {
            (c, c)
        }
    }

    fn y_tick_label(&self, v: f64) -> String {
        if self.log_y {
            log_label(v)
        } else {
            linear_label(v, tick_step(&self.y_ticks))
        }
    }
}

/// Centred running mean of the y values over `window` points (fewer near the ends, so that it
/// stays centred), restarted at each mark (a resumption or a new stage is not averaged with
/// what came before it).
fn running_mean(points: &[(f64, f64)], marks: &[Mark], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut start = 0;
    while start < points.len() {
        // The segment ends after the last point at or before the next mark.
        let end = (start + 1..points.len())
            .find(|&i| {
                marks
                    .iter()
                    .any(|m| points[i - 1].0 <= m.x && m.x < points[i].0)
            })
            .unwrap_or(points.len());
        let segment = &points[start..end];
        for i in 0..segment.len() {
            // Centred: near the ends of a segment the window shrinks on both sides.
            let half = (window / 2).min(i).min(segment.len() - 1 - i);
            let (lo, hi) = (i - half, i + half + 1);
            let mean = segment[lo..hi].iter().map(|p| p.1).sum::<f64>() / (hi - lo) as f64;
            out.push((segment[i].0, mean));
        }
        start = end;
    }
    out
}

/// About `target` round values (1, 2 or 5 times a power of ten apart) within `[lo, hi]`.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let raw = (hi - lo) / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return vec![lo];
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// The values of a log axis spanning `10^lo ..= 10^hi`: the powers of ten when there are at
/// least three, else also 2 and 5 times them, else every 1…9 times them.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = (lo - 1e-9, hi + 1e-9);
    let within = |multiples: &[f64]| -> Vec<f64> {
        let mut ticks = Vec::new();
        for k in lo.floor() as i32 - 1..=hi.ceil() as i32 {
            for m in multiples {
                let v = m * 10f64.powi(k);
                if (lo..=hi).contains(&v.log10()) {
                    ticks.push(v);
                }
            }
        }
        ticks
    };
    let mut ticks = within(&[1.0]);
    if ticks.len() < 3 {
        ticks = within(&[1.0, 2.0, 5.0]);
    }
    if ticks.len() < 3 {
        ticks = within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }
    ticks
}

/// The distance between neighbouring ticks (1 when there is one).
fn tick_step(ticks: &[f64]) -> f64 {
    match ticks {
        [a, b, ..] => (b - a).abs(),
        _ => 1.0,
    }
}

/// A tick value with as many decimals as its step needs (`me±k` beyond a million or below
/// 0.0001).
fn linear_label(v: f64, step: f64) -> String {
    let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
    if v != 0.0 && !(1e-4..1e6).contains(&v.abs()) {
        return format!("{v:e}");
    }
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).clamp(0.0, 12.0) as usize
    } else {
        0
    };
    format!("{v:.decimals$}")
}

/// A log-axis value `m·10^k`: plain decimals between 0.0001 and 100,000, else `me-k`.
fn log_label(v: f64) -> String {
    let k = (v.log10() + 1e-9).floor() as i32;
    let m = (v / 10f64.powi(k)).round();
    if (-4..=5).contains(&k) {
        format!("{:.*}", (-k).max(0) as usize, m * 10f64.powi(k))
    } else {
        format!("{m}e{k}")
    }
}

// ---------------------------------------------------------------------------------------------
// Contact sheets
// ---------------------------------------------------------------------------------------------

const SHEET_TEXT: f32 = 17.0;
const SHEET_LINE: usize = 20;
const SHEET_HEADER: f32 = 18.0;
const SHEET_HEADER_LINE: usize = 24;
const SHEET_PAD: usize = 10;
const SHEET_GAP: usize = 2;
/// Widest text column; longer lines are cut with "…".
const SHEET_MAX_TEXT: usize = 640;
const ZEBRA: Rgb = [238, 238, 238];

/// One row of a contact sheet: a clip and the lines of text beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetRow<'a> {
    /// The clip, its frames left to right.
    pub clip: &'a Clip,
    /// Its text, one entry a line.
    pub text: Vec<String>,
}

/// A contact sheet: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactSheet<'a> {
    header: Vec<String>,
    rows: Vec<SheetRow<'a>>,
    scale: usize,
}

/// Pixel positions of a contact sheet's parts.
#[derive(Debug, Clone, PartialEq)]
struct SheetLayout {
    width: usize,
    height: usize,
    /// Width of the text column, padding included.
    text_width: usize,
    /// First pixel column of the frames.
    frames_x: usize,
    /// Top of the frame-number band.
    numbers_y: usize,
    /// Top and height of each row.
    rows: Vec<(usize, usize)>,
    /// Frames a row (the longest clip's).
    frames: usize,
    /// A frame's size in pixels.
    frame: (usize, usize),
}

impl<'a> ContactSheet<'a> {
    /// An empty sheet whose frames are magnified `scale` times (1 to 64).
    pub fn new(scale: usize) -> Self {
        Self {
            header: Vec::new(),
            rows: Vec::new(),
            scale,
        }
    }

    /// Adds a header line (e.g. the seed, steps, sampler and guidance).
    pub fn header(mut self, line: impl Into<String>) -> Self {
        self.header.push(line.into());
        self
    }

    /// Adds a row: a clip and its lines of text.
    pub fn row<S: Into<String>>(
        mut self,
        clip: &'a Clip,
        text: impl IntoIterator<Item = S>,
    ) -> Self {
        self.rows.push(SheetRow {
            clip,
            text: text.into_iter().map(Into::into).collect(),
        });
        self
    }

    fn layout(&self) -> Result<SheetLayout, FigureError> {
        let what = "contact sheet";
        let input = |reason: String| FigureError::Input { what, reason };
        let first = self
            .rows
            .first()
            .ok_or_else(|| input("it has no clips".into()))?
            .clip;
        if !(1..=64).contains(&self.scale) {
            return Err(input(format!(
                "the scale must be 1 to 64, got {}",
                self.scale
            )));
        }
        if let Some(other) = self
            .rows
            .iter()
            .find(|r| (r.clip.height, r.clip.width) != (first.height, first.width))
        {
            return Err(input(format!(
                "its clips differ in size: {}x{} and {}x{}",
                first.width, first.height, other.clip.width, other.clip.height
            )));
        }
        let frames = self.rows.iter().map(|r| r.clip.frames).max().unwrap_or(0);
        let frame = (first.width * self.scale, first.height * self.scale);
        if frames == 0 || frame.0 == 0 || frame.1 == 0 {
            return Err(input("its clips have no pixels".into()));
        }
        let mut text_width = text_width("frame", SHEET_TEXT)?;
        for line in self.rows.iter().flat_map(|r| &r.text) {
            text_width = text_width.max(self::text_width(line, SHEET_TEXT)?);
        }
        let text_width = text_width.min(SHEET_MAX_TEXT) + 2 * SHEET_PAD;
        let frames_x = SHEET_PAD + text_width;
        let strip = frames * (frame.0 + SHEET_GAP) - SHEET_GAP;
        let mut header_width = 0;
        for line in &self.header {
            header_width = header_width.max(self::text_width(line, SHEET_HEADER)?);
        }
        let width = (frames_x + strip).max(SHEET_PAD + header_width) + SHEET_PAD;
        let numbers_y = SHEET_PAD + self.header.len() * SHEET_HEADER_LINE;
        let mut y = numbers_y + SHEET_LINE + 4;
        let mut rows = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            let height = frame.1.max(row.text.len() * SHEET_LINE + 8);
            rows.push((y, height));
            y += height + SHEET_GAP;
        }
        let height = y - SHEET_GAP + SHEET_PAD;
        check_size(what, width, height, (1, 1))?;
        Ok(SheetLayout {
            width,
            height,
            text_width,
            frames_x,
            numbers_y,
            rows,
            frames,
            frame,
        })
    }

    /// Draws the sheet.
    pub fn render(&self) -> Result<Image, FigureError> {
        let layout = self.layout()?;
        let mut image = Image::filled(layout.width, layout.height, BACKGROUND);
        let (fw, fh) = layout.frame;
        let top_left = TextStyle::new(SHEET_TEXT);
        for (i, line) in self.header.iter().enumerate() {
            let y = SHEET_PAD + i * SHEET_HEADER_LINE;
            let at = (SHEET_PAD as i64, y as i64);
            draw_text(&mut image, line, at, TextStyle::new(SHEET_HEADER))?;
        }
        let numbers = TextStyle::new(SHEET_TEXT).colour(GREY_TEXT);
        let y = layout.numbers_y as i64;
        let at = ((layout.frames_x - SHEET_PAD) as i64, y);
        draw_text(
            &mut image,
            "frame",
            at,
            numbers.anchor(Align::End, Align::Start),
        )?;
        for f in 0..layout.frames {
            let x = layout.frames_x + f * (fw + SHEET_GAP) + fw / 2;
            let centred = numbers.anchor(Align::Middle, Align::Start);
            draw_text(&mut image, &f.to_string(), (x as i64, y), centred)?;
        }
        let max_text = layout.text_width - 2 * SHEET_PAD;
        for (i, (row, &(top, height))) in self.rows.iter().zip(&layout.rows).enumerate() {
            if i % 2 == 1 {
                image.fill_rect(0..layout.width, top..top + height, ZEBRA);
            }
            let y0 = top + (height - fh) / 2;
            for f in 0..row.clip.frames {
                let frame =
                    Image::from_raw(fw as u32, fh as u32, frame_rgb(row.clip, f, self.scale))
                        .expect("3 bytes a pixel");
                image.paste(&frame, layout.frames_x + f * (fw + SHEET_GAP), y0);
            }
            let text_top = top + (height - row.text.len() * SHEET_LINE) / 2;
            for (j, line) in row.text.iter().enumerate() {
                let at = (
                    (2 * SHEET_PAD) as i64,
                    (text_top + j * SHEET_LINE + 1) as i64,
                );
                draw_text(&mut image, &fit(line, max_text)?, at, top_left)?;
            }
        }
        Ok(image)
    }

    /// Draws the sheet and writes it as a PNG.
    pub fn write(&self, path: &Path) -> Result<(), FigureError> {
        Ok(self.render()?.write_png(path)?)
    }
}

/// `line`, cut with "…" to at most `width` pixels of sheet text.
fn fit(line: &str, width: usize) -> Result<String, FigureError> {
    if text_width(line, SHEET_TEXT)? <= width {
        return Ok(line.to_string());
    }
    let mut chars: Vec<char> = line.chars().collect();
    while chars.pop().is_some() {
        let cut: String = chars.iter().chain(['…'].iter()).collect();
        if text_width(&cut, SHEET_TEXT)? <= width {
            return Ok(cut);
        }
    }
    Ok("…".into())
}

/// Writes a contact sheet of `clips`, each row's prompt beside it, under a `header` line.
pub fn write_prompt_sheet(
    path: &Path,
    header: &str,
    clips: &[Clip],
    prompts: &[String],
    scale: usize,
) -> Result<(), FigureError> {
    if clips.len() != prompts.len() {
        return Err(FigureError::Input {
            what: "contact sheet",
            reason: format!("{} clips but {} prompts", clips.len(), prompts.len()),
        });
    }
    clips
        .iter()
        .zip(prompts)
        .fold(
            ContactSheet::new(scale).header(header),
            |sheet, (clip, prompt)| sheet.row(clip, [prompt.as_str()]),
        )
        .write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dark(p: [u8; 3]) -> bool {
        p.iter().all(|&c| c < 140)
    }

    /// Pixels of `colour` and where they are.
    fn pixels_of(image: &Image, want: Rgb) -> Vec<(usize, usize)> {
        (0..(image.height() as usize))
            .flat_map(|y| (0..(image.width() as usize)).map(move |x| (x, y)))
            .filter(|&(x, y)| image.pixel(x, y) == want)
            .collect()
    }

    fn count_dark(image: &Image, xs: Range<usize>, ys: Range<usize>) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| dark(image.pixel(x, y)))
            .count()
    }

    #[test]
    fn chart_of_a_known_series_draws_inside_its_axes() {
        // A sine with noise, so that the raw series shows beside its running mean.
        let noise = |i: usize| if i.is_multiple_of(2) { 0.2 } else { -0.2 };
        let points: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, 0.8 * (i as f64 / 10.0).sin() + noise(i)))
            .collect();
        let drawn = LineChart::new("a sine", "step", "value")
            .series("sin", points)
            .render(480, 300)
            .unwrap();
        let (image, layout) = (&drawn.image, &drawn.layout);
        assert_eq!(
            (
                (image.width() as usize),
                (image.height() as usize),
                image.as_raw().len()
            ),
            (480, 300, 480 * 300 * 3)
        );
        assert!(!layout.log_y, "a series through 0 is linear");
        let (xs, ys) = layout.plot_area.clone();
        assert!(
            xs.start > 30 && xs.end < 480 && ys.start > 20 && ys.end < 280,
            "{layout:?}"
        );

        // The running mean (dark blue) and the raw series (pale blue) are drawn, only inside
        // the plot area (the 2-pixel running mean may touch the axis line beside it). Lines
        // are anti-aliased: pixels are told by their hue.
        let blue = |p: Rgb| p[2] as i32 - p[0] as i32 > 25;
        let dark_blue = |p: Rgb| blue(p) && p[0] < 90;
        let pale_blue = |p: Rgb| blue(p) && p[0] > 130;
        let inside = |x: usize, y: usize| {
            let (x, y) = (x as i32, y as i32);
            (xs.start - 1..=xs.end).contains(&x) && (ys.start - 1..=ys.end).contains(&y)
        };
        let all: Vec<(usize, usize)> = (0..(image.height() as usize))
            .flat_map(|y| (0..(image.width() as usize)).map(move |x| (x, y)))
            .collect();
        let curve: Vec<(usize, usize)> = all
            .iter()
            .copied()
            .filter(|&(x, y)| blue(image.pixel(x, y)))
            .collect();
        let count =
            |f: &dyn Fn(Rgb) -> bool| curve.iter().filter(|&&(x, y)| f(image.pixel(x, y))).count();
        assert!(
            count(&dark_blue) > 300 && count(&pale_blue) > 300,
            "{} dark, {} pale",
            count(&dark_blue),
            count(&pale_blue)
        );
        for &(x, y) in &curve {
            assert!(
                inside(x, y),
                "curve pixel ({x}, {y}) outside the plot area {layout:?}"
            );
        }
        // The curve spans the plot area: its pixels reach near both sides.
        let min_x = curve.iter().map(|p| p.0).min().unwrap() as i32;
        let max_x = curve.iter().map(|p| p.0).max().unwrap() as i32;
        assert!(
            min_x - xs.start < 5 && xs.end - max_x < 5,
            "{min_x}..{max_x} in {xs:?}"
        );

        // Tick labels and axis names: the areas left of and below the plot are not blank.
        let left = count_dark(
            image,
            0..xs.start as usize - 2,
            ys.start as usize..ys.end as usize,
        );
        let below = count_dark(
            image,
            xs.start as usize..xs.end as usize,
            ys.end as usize + 2..300,
        );
        let title = count_dark(image, 0..480, 0..ys.start as usize);
        assert!(
            left > 150 && below > 150 && title > 60,
            "left {left}, below {below}, title {title}"
        );
        // The y ticks are round values within the data, one of them 0.
        assert!(layout.y_ticks.contains(&0.0), "{:?}", layout.y_ticks);
        assert!(layout.y_ticks.iter().all(|v| (-1.1..=1.1).contains(v)));
        assert_eq!(layout.x_ticks.first(), Some(&0.0));
        assert_eq!(layout.note, None);
    }

    #[test]
    fn log_chart_draws_its_three_decades() {
        let points: Vec<(f64, f64)> = (0..=60)
            .map(|i| (i as f64 * 10.0, 10f64.powf(-(i as f64) / 20.0)))
            .collect();
        let drawn = LineChart::new("loss", "step", "MSE")
            .series("loss", points)
            .render(640, 360)
            .unwrap();
        let layout = &drawn.layout;
        assert!(layout.log_y, "values over three decades choose a log axis");
        assert_eq!(layout.y_ticks, vec![0.001, 0.01, 0.1, 1.0]);
        assert_eq!(layout.y_labels, ["0.001", "0.01", "0.1", "1"]);
        // Equal steps between the decades' grid lines, each a grey line across the plot.
        let rows = &layout.y_tick_rows;
        let gaps: Vec<i32> = rows.windows(2).map(|w| w[0] - w[1]).collect();
        assert!(
            gaps.iter().all(|&g| (g - gaps[0]).abs() <= 1 && g > 40),
            "{rows:?}"
        );
        let (xs, _) = layout.plot_area.clone();
        for &row in rows {
            let grey = (xs.start..xs.end)
                .filter(|&x| drawn.image.pixel(x as usize, row as usize) == GRID)
                .count();
            assert!(
                grey > (xs.end - xs.start) as usize / 2,
                "row {row}: {grey} grid pixels"
            );
        }
        // The axis says it is logarithmic: more text in the y-label area than for the same
        // chart drawn linear is not a stable test, so check the label itself.
        let linear = LineChart::new("loss", "step", "MSE")
            .series("loss", vec![(0.0, 0.001), (1.0, 1.0)])
            .y_scale(YScale::Linear)
            .render(640, 360)
            .unwrap();
        assert!(!linear.layout.log_y);
        assert_ne!(linear.image, drawn.image);
    }

    #[test]
    fn log_ticks_add_multiples_when_few_decades_are_in_range() {
        assert_eq!(log_ticks(-3.0, 0.0), vec![0.001, 0.01, 0.1, 1.0]);
        assert_eq!(
            log_ticks(0.08f64.log10(), 0.97f64.log10()),
            vec![0.1, 0.2, 0.5]
        );
        let narrow = log_ticks(0.3f64.log10(), 0.75f64.log10());
        assert_eq!(narrow.len(), 5, "{narrow:?}");
        assert_eq!(log_label(2e-4), "0.0002");
        assert_eq!(log_label(2e-5), "2e-5");
        assert_eq!(log_label(3e5), "300000");
        assert_eq!(log_label(1e-7), "1e-7");
        assert_eq!(
            nice_ticks(0.0, 8000.0, 7),
            vec![0.0, 2000.0, 4000.0, 6000.0, 8000.0]
        );
        assert_eq!(linear_label(0.25, 0.05), "0.25");
        assert_eq!(linear_label(4000.0, 1000.0), "4000");
    }

    #[test]
    fn empty_and_non_finite_series_give_a_note_not_a_panic() {
        let chart = |points: Vec<(f64, f64)>| {
            LineChart::new("loss", "step", "MSE")
                .series("loss", points)
                .render(320, 200)
        };
        let empty = chart(Vec::new()).unwrap();
        assert_eq!(
            empty.layout.note.as_deref(),
            Some("nothing to draw: no points")
        );
        let nan = chart(vec![
            (0.0, f64::NAN),
            (f64::INFINITY, 1.0),
            (2.0, f64::NEG_INFINITY),
        ])
        .unwrap();
        assert_eq!(
            nan.layout.note.as_deref(),
            Some("nothing to draw: 3 points, NaN or infinite")
        );
        assert!(nan.layout.y_ticks.is_empty() && nan.layout.x_ticks.is_empty());
        // The note is written: the plot area is not blank although nothing is drawn.
        let (xs, ys) = nan.layout.plot_area.clone();
        assert!(
            count_dark(
                &nan.image,
                xs.start as usize..xs.end as usize,
                ys.start as usize..ys.end as usize
            ) > 50
        );
        let some = chart(vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5), (3.0, 0.4)]).unwrap();
        assert_eq!(
            some.layout.note.as_deref(),
            Some("1 point left out (NaN or infinite)")
        );
        // Extreme values are drawn, or noted, without a panic.
        for points in [
            vec![(0.0, f64::MAX), (1.0, -f64::MAX)],
            vec![(-f64::MAX, 1.0), (f64::MAX, 2.0)],
            vec![(0.0, 1e-300), (1.0, 1e300)],
            vec![(5.0, 5.0)],
        ] {
            chart(points).unwrap();
        }
        assert_eq!(linear_label(2.5e7, 5e6), "2.5e7");
        let no_series = LineChart::new("t", "x", "y").render(320, 200).unwrap();
        assert!(no_series.layout.note.is_some());
        // Zero and negative values on a forced log axis are left out, not drawn.
        let log = LineChart::new("t", "x", "y")
            .series("s", vec![(0.0, 0.0), (1.0, -1.0), (2.0, 0.1), (3.0, 1.0)])
            .y_scale(YScale::Log)
            .render(320, 200)
            .unwrap();
        assert_eq!(
            log.layout.note.as_deref(),
            Some("2 points left out (NaN, infinite or ≤ 0)")
        );
    }

    #[test]
    fn sizes_are_validated() {
        let chart = LineChart::new("t", "x", "y").series("s", vec![(0.0, 1.0), (1.0, 2.0)]);
        for (w, h) in [(0, 0), (100, 300), (300, 100), (MAX_SIDE + 1, 300)] {
            let err = chart.render(w, h).unwrap_err().to_string();
            assert!(err.contains(&format!("{w}x{h}")), "{err}");
        }
        let clip = Clip::black(2, 4, 4);
        let err = ContactSheet::new(1).render().unwrap_err().to_string();
        assert!(err.contains("no clips"), "{err}");
        let err = ContactSheet::new(0)
            .row(&clip, ["a"])
            .render()
            .unwrap_err()
            .to_string();
        assert!(err.contains("scale"), "{err}");
        let other = Clip::black(2, 5, 4);
        let err = ContactSheet::new(1)
            .row(&clip, ["a"])
            .row(&other, ["b"])
            .render()
            .unwrap_err()
            .to_string();
        assert!(err.contains("differ in size"), "{err}");
        let err = write_prompt_sheet(Path::new("x.png"), "", &[clip], &[], 1).unwrap_err();
        assert!(err.to_string().contains("1 clips but 0 prompts"), "{err}");
    }

    #[test]
    fn marks_split_the_running_mean_and_are_drawn() {
        let points: Vec<(f64, f64)> = (1..=40)
            .map(|i| (i as f64, if i <= 20 { 1.0 } else { 3.0 }))
            .collect();
        let marks = [Mark {
            x: 20.0,
            label: "resumed".into(),
        }];
        let mean = running_mean(&points, &marks, 5);
        // No value between the two levels: the mean restarts at the mark.
        assert!(mean.iter().all(|p| p.1 == 1.0 || p.1 == 3.0), "{mean:?}");
        let drawn = LineChart::new("t", "step", "y")
            .series("s", points)
            .marks(marks)
            .render(400, 260)
            .unwrap();
        let mark = pixels_of(&drawn.image, MARK);
        // The line crosses the plot area (the legend box pales its top).
        assert!(mark.len() > 60, "{} mark pixels", mark.len());
    }

    fn clip_of(colour: [u8; 3]) -> Clip {
        let mut clip = Clip::black(4, 8, 8);
        for f in 0..4 {
            clip.set_pixel(f, 2, 2 + f, colour);
        }
        clip
    }

    #[test]
    fn pictures_compose_frames_stacks_and_pastes_and_encode_as_png() {
        let clip = clip_of([200, 10, 20]); // 4 frames of 8×8, frame f lit at (row 2, column 2 + f)
        let strip = Image::frames(&clip, 2, 3);
        assert_eq!(
            ((strip.width() as usize), (strip.height() as usize)),
            (4 * 16 + 3 * 3, 16)
        );
        // Frame 3 starts at x = 3·(16 + 3); its lit pixel is magnified to 2×2.
        assert_eq!(strip.pixel(3 * 19 + 2 * 5, 2 * 2 + 1), [200, 10, 20]);
        assert_eq!(strip.pixel(16, 0), BACKGROUND, "the gap is background");
        assert_eq!(strip.pixel(0, 0), [0, 0, 0]);
        let stacked = Image::stacked(&[strip.clone(), Image::filled(5, 4, [1, 2, 3])]);
        assert_eq!(
            ((stacked.width() as usize), (stacked.height() as usize)),
            ((strip.width() as usize), 20)
        );
        assert_eq!(stacked.pixel(4, 19), [1, 2, 3]);
        assert_eq!(
            stacked.pixel(5, 19),
            BACKGROUND,
            "narrower pictures are padded"
        );
        // Pasting is clipped at the right and bottom edges.
        let mut small = Image::filled(3, 3, [0, 0, 0]);
        small.paste(&Image::filled(4, 4, [9, 9, 9]), 2, 1);
        assert_eq!(small.pixel(2, 2), [9, 9, 9]);
        assert_eq!(small.pixel(1, 2), [0, 0, 0]);
        let png = stacked.png().unwrap();
        let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(decoded.as_raw(), stacked.as_raw());
    }

    #[test]
    fn sheet_has_frames_and_the_text_of_each_row() {
        let (a, b) = (clip_of([200, 10, 20]), clip_of([10, 200, 20]));
        let sheet = |first: &str| {
            ContactSheet::new(2)
                .header("seed 0 · 50 DDIM steps · guidance 3")
                .row(&a, [first])
                .row(&b, ["a green circle moving right"])
        };
        let layout = sheet("a red circle moving up").layout().unwrap();
        let one = sheet("a red circle moving up").render().unwrap();
        let two = sheet("a blue square moving left").render().unwrap();
        assert_eq!(
            ((one.width() as usize), (one.height() as usize)),
            (layout.width, layout.height)
        );
        assert_eq!(layout.frame, (16, 16));
        assert_eq!(layout.frames, 4);
        // Frame 3 of row 0: its pixel (2, 5), magnified twice.
        let (top, height) = layout.rows[0];
        let y0 = top + (height - 16) / 2;
        let x0 = layout.frames_x + 3 * (16 + SHEET_GAP);
        assert_eq!(one.pixel(x0 + 5 * 2 + 1, y0 + 2 * 2 + 1), [200, 10, 20]);
        assert_eq!(one.pixel(x0, y0), [0, 0, 0]);
        // Each row's text band holds text, and different prompts draw differently.
        let band = |image: &Image, row: usize| {
            let (top, height) = layout.rows[row];
            let xs = 0..layout.frames_x;
            let ys = top..top + height;
            let dark = count_dark(image, xs.clone(), ys.clone());
            let pixels: Vec<[u8; 3]> = ys
                .flat_map(|y| xs.clone().map(move |x| (x, y)))
                .map(|(x, y)| image.pixel(x, y))
                .collect();
            (dark, pixels)
        };
        let (dark_one, pixels_one) = band(&one, 0);
        let (dark_two, pixels_two) = band(&two, 0);
        assert!(dark_one > 100 && dark_two > 100, "{dark_one}, {dark_two}");
        assert_ne!(pixels_one, pixels_two, "two prompts drew the same band");
        assert_eq!(band(&one, 1).1, band(&two, 1).1, "row 1 did not change");
        // The header and the frame numbers are drawn above the rows.
        assert!(count_dark(&one, 0..(one.width() as usize), 0..layout.numbers_y) > 100);
        let numbers = count_dark(
            &one,
            layout.frames_x..(one.width() as usize),
            layout.numbers_y..top,
        );
        assert!(numbers > 20, "{numbers} pixels of frame numbers");
    }

    #[test]
    fn long_text_is_cut_to_the_column() {
        let clip = clip_of([255; 3]);
        let long = "word ".repeat(200);
        let layout = ContactSheet::new(1)
            .row(&clip, [long.as_str()])
            .layout()
            .unwrap();
        assert_eq!(layout.text_width, SHEET_MAX_TEXT + 2 * SHEET_PAD);
        let cut = fit(&long, SHEET_MAX_TEXT).unwrap();
        assert!(cut.ends_with('…') && cut.len() < long.len(), "{cut}");
        ContactSheet::new(1)
            .row(&clip, [long.as_str()])
            .render()
            .unwrap();
    }

    #[test]
    fn sheet_and_chart_are_written_as_png() {
        let tmp = tempfile::tempdir().unwrap();
        let clip = clip_of([255; 3]);
        let path = tmp.path().join("sheet.png");
        write_prompt_sheet(
            &path,
            "seed 1",
            std::slice::from_ref(&clip),
            &["a".into()],
            1,
        )
        .unwrap();
        let back = image::open(&path).unwrap();
        let layout = ContactSheet::new(1)
            .header("seed 1")
            .row(&clip, ["a"])
            .layout()
            .unwrap();
        assert_eq!(
            (back.width() as usize, back.height() as usize),
            (layout.width, layout.height)
        );
        let path = tmp.path().join("chart.png");
        LineChart::new("t", "x", "y")
            .series("s", vec![(0.0, 1.0), (1.0, 2.0)])
            .write(&path, 320, 200)
            .unwrap();
        assert!(path.is_file());
        let err = LineChart::new("t", "x", "y")
            .write(Path::new("/nonexistent-dir/c.png"), 320, 200)
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/c.png"), "{err}");
    }
}
