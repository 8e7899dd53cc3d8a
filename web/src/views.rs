//! The two views under the classifier: the t-SNE map of the test embeddings with the live face
//! placed on it, and the mixing explorer. Both read the files `train-native embed --web`
//! writes; their plain-Rust halves (`tsne.rs`, `explore.rs`) are tested natively.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use mimic_core::mix::{LabelMetric, MixKind};
use wasm_bindgen::Clamped;
use web_sys::{HtmlCanvasElement, ImageData, RequestCache};

use crate::dom;
use crate::explore::{mix_pair, MixRequest, MixResult};
use crate::tsne::{Placement, TsneFile, TsneMap, PLACE_K};

/// The backend the explorer mixes on (the classifier's).
type B = burn::backend::Flex;

/// The map written by `train-native embed --web`, relative to the page.
const TSNE_URL: &str = "web/tsne.json";
/// Size of the map's canvas, in canvas pixels.
const MAP_W: f64 = 640.0;
/// Size of the map's canvas, in canvas pixels.
const MAP_H: f64 = 440.0;
/// Free border around the points at zoom 1.
const MAP_MARGIN: f64 = 20.0;
/// Zoom limits of the map.
const ZOOM_RANGE: (f64, f64) = (0.5, 40.0);
/// A point counts as hovered within this many canvas pixels.
const HOVER_RADIUS: f64 = 8.0;
/// Class colours (Tableau 10), in class order.
const COLOURS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// Thumbnails are shown at this many screen pixels per image pixel.
const THUMB_SCALE: u32 = 2;

/// The colour of class `c`.
fn colour(c: usize) -> &'static str {
    COLOURS[c % COLOURS.len()]
}

/// The map and its thumbnails, loaded once.
pub struct MapData {
    map: TsneMap,
    sprite_url: String,
    /// The sprite's grey values, row-major.
    sprite: Vec<u8>,
    sprite_size: (u32, u32),
}

impl MapData {
    /// The grey pixels of point `index`'s thumbnail.
    fn thumb_pixels(&self, index: usize) -> Vec<u8> {
        let (x0, y0) = self.map.thumb_origin(index);
        let (side, width) = (self.map.web.thumb as usize, self.sprite_size.0 as usize);
        (0..side)
            .flat_map(|y| {
                let start = (y0 as usize + y) * width + x0 as usize;
                self.sprite[start..start + side].iter().copied()
            })
            .collect()
    }

    /// CSS that shows point `index`'s thumbnail from the sprite at `scale`.
    fn thumb_style(&self, index: usize, scale: u32) -> String {
        let (x, y) = self.map.thumb_origin(index);
        let (w, h) = self.sprite_size;
        let side = self.map.web.thumb * scale;
        format!(
            "background-image: url({}); background-position: -{}px -{}px; \
             background-size: {}px {}px; width: {side}px; height: {side}px",
            self.sprite_url,
            x * scale,
            y * scale,
            w * scale,
            h * scale
        )
    }
}

/// Fetches the map, its features and its sprite, and decodes the sprite's pixels.
async fn load_map() -> Result<MapData, String> {
    let json = dom::fetch_bytes(TSNE_URL, RequestCache::NoCache).await?;
    let file = TsneFile::parse(&String::from_utf8_lossy(&json))?;
    let web = file.web.clone().ok_or("tsne.json names no page files")?;
    let features_url = format!("web/{}", web.features);
    let features = dom::fetch_bytes(&features_url, RequestCache::NoCache).await?;
    let map = TsneMap::new(file, &features).map_err(|e| format!("{features_url}: {e}"))?;

    let sprite_url = format!("web/{}", web.sprite);
    let (rgba, w, h) = dom::fetch_rgba(&sprite_url, RequestCache::NoCache).await?;
    let needed = map.thumb_origin(map.points.len().saturating_sub(1));
    if needed.0 + web.thumb > w as u32 || needed.1 + web.thumb > h as u32 {
        return Err(format!(
            "{sprite_url} ({w}x{h}) is too small for {} thumbnails",
            map.points.len()
        ));
    }
    Ok(MapData {
        map,
        sprite_url,
        sprite: rgba.chunks(4).map(|p| p[0]).collect(),
        sprite_size: (w as u32, h as u32),
    })
}

/// Both views, shown once their files are loaded. `live` holds the pooled features of the
/// face the classifier saw last (the largest one), or `None`.
#[component]
pub fn Views(live: RwSignal<Option<Vec<f32>>>) -> impl IntoView {
    let data = RwSignal::new(None::<Arc<MapData>>);
    let error = RwSignal::new(None::<String>);
    spawn_local(async move {
        match load_map().await {
            Ok(d) => data.set(Some(Arc::new(d))),
            Err(e) => error.set(Some(format!("The t-SNE map could not be loaded: {e}"))),
        }
    });

    view! {
        {move || error.get().map(|e| view! { <p class="message" id="views-error">{e}</p> })}
        {move || {
            data.get().map(|d| view! { <TsneView data=d.clone() live=live/> <MixExplorer data=d/> })
        }}
    }
}

/// Map coordinates to canvas pixels: a fit of the map's bounds, then zoom and pan.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Camera {
    centre: (f64, f64),
    fit: f64,
    zoom: f64,
    pan: (f64, f64),
}

impl Camera {
    fn fitting(map: &TsneMap) -> Self {
        let (lo, hi) = map.bounds();
        let span = |d: usize| f64::from(hi[d] - lo[d]).max(1e-6);
        Self {
            centre: (
                f64::from(lo[0] + hi[0]) / 2.0,
                f64::from(lo[1] + hi[1]) / 2.0,
            ),
            fit: ((MAP_W - 2.0 * MAP_MARGIN) / span(0)).min((MAP_H - 2.0 * MAP_MARGIN) / span(1)),
            zoom: 1.0,
            pan: (0.0, 0.0),
        }
    }

    fn screen(self, x: f32, y: f32) -> (f64, f64) {
        let s = self.fit * self.zoom;
        (
            MAP_W / 2.0 + (f64::from(x) - self.centre.0) * s + self.pan.0,
            MAP_H / 2.0 + (f64::from(y) - self.centre.1) * s + self.pan.1,
        )
    }

    /// Zooms by `factor` keeping the canvas point `at` still.
    fn zoomed(self, factor: f64, at: (f64, f64)) -> Self {
        let zoom = (self.zoom * factor).clamp(ZOOM_RANGE.0, ZOOM_RANGE.1);
        let k = zoom / self.zoom;
        let keep = |m: f64, c: f64, p: f64| m - c - (m - c - p) * k;
        Self {
            zoom,
            pan: (
                keep(at.0, MAP_W / 2.0, self.pan.0),
                keep(at.1, MAP_H / 2.0, self.pan.1),
            ),
            ..self
        }
    }
}

/// A mouse position in canvas pixels (the canvas may be drawn smaller than it is).
fn canvas_point(canvas: &HtmlCanvasElement, ev: &web_sys::MouseEvent) -> (f64, f64) {
    let scale = MAP_W / f64::from(canvas.client_width().max(1));
    (
        f64::from(ev.offset_x()) * scale,
        f64::from(ev.offset_y()) * scale,
    )
}

/// The t-SNE map: points coloured by class, drag to pan, wheel to zoom, hover for the image;
/// the live face is a ringed marker at the mean of its nearest points.
#[component]
fn TsneView(data: Arc<MapData>, live: RwSignal<Option<Vec<f32>>>) -> impl IntoView {
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let camera = RwSignal::new(Camera::fitting(&data.map));
    let hover = RwSignal::new(None::<(usize, f64, f64)>);
    let dragging = StoredValue::new(None::<(f64, f64)>);
    let placed = {
        let data = data.clone();
        Memo::new(move |_| live.get().and_then(|f| data.map.place(&f, PLACE_K)))
    };

    {
        let data = data.clone();
        Effect::new(move |_| {
            let (cam, hovered, placement) = (camera.get(), hover.get(), placed.get());
            if let Some(canvas) = canvas.get() {
                let _ = draw_map(
                    &canvas,
                    &data.map,
                    &cam,
                    hovered.map(|h| h.0),
                    placement.as_ref(),
                );
            }
        });
    }

    let on_wheel = move |ev: web_sys::WheelEvent| {
        ev.prevent_default();
        let Some(canvas) = canvas.get_untracked() else {
            return;
        };
        let at = canvas_point(&canvas, &ev);
        camera.update(|c| *c = c.zoomed((-ev.delta_y() * 0.0015).exp(), at));
    };
    let on_down = move |ev: web_sys::PointerEvent| {
        if let Some(canvas) = canvas.get_untracked() {
            let _ = canvas.set_pointer_capture(ev.pointer_id());
            dragging.set_value(Some(canvas_point(&canvas, &ev)));
        }
    };
    let hit_data = data.clone();
    let on_move = move |ev: web_sys::PointerEvent| {
        let Some(canvas) = canvas.get_untracked() else {
            return;
        };
        let at = canvas_point(&canvas, &ev);
        if let Some(from) = dragging.get_value() {
            camera.update(|c| c.pan = (c.pan.0 + at.0 - from.0, c.pan.1 + at.1 - from.1));
            dragging.set_value(Some(at));
            return;
        }
        let cam = camera.get_untracked();
        let nearest = hit_data
            .map
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (x, y) = cam.screen(p.x, p.y);
                (i, (x - at.0).hypot(y - at.1))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|&(_, d)| d <= HOVER_RADIUS);
        let css = (f64::from(ev.offset_x()), f64::from(ev.offset_y()));
        hover.set(nearest.map(|(i, _)| (i, css.0, css.1)));
    };
    let on_up = move |_: web_sys::PointerEvent| dragging.set_value(None);
    let on_leave = move |_: web_sys::PointerEvent| hover.set(None);
    let reset_data = data.clone();
    let on_reset = move |_| camera.set(Camera::fitting(&reset_data.map));

    let n_points = data.map.points.len();
    let counts = data.map.counts();
    let legend = data
        .map
        .classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let swatch = format!("background: {}", colour(c));
            view! {
                <li data-class=c.to_string()>
                    <span class="swatch" style=swatch></span>
                    {format!("{name} ({})", counts[c])}
                </li>
            }
        })
        .collect_view();
    let tip_data = data.clone();
    let tooltip = move || {
        hover.get().map(|(i, x, y)| {
            let p = &tip_data.map.points[i];
            let style = format!("left: {:.0}px; top: {:.0}px", x + 14.0, y + 14.0);
            view! {
                <div class="tsne-tip" id="tsne-tip" style=style data-index=i.to_string()>
                    <div class="thumb" style=tip_data.thumb_style(i, THUMB_SCALE)></div>
                    <strong>{tip_data.map.classes[p.class].clone()}</strong>
                    <small>{p.id.clone()}</small>
                </div>
            }
        })
    };
    let live_data = data.clone();
    let live_line = move || match placed.get() {
        None => "Upload a photo or start the webcam to place a face on the map.".to_string(),
        Some(p) => {
            let names: Vec<&str> = p
                .neighbours
                .iter()
                .map(|&i| live_data.map.classes[live_data.map.points[i].class].as_str())
                .collect();
            format!(
                "The face sits among its {PLACE_K} nearest test images: {}.",
                names.join(", ")
            )
        }
    };

    view! {
        <section class="tsne" id="tsne" data-testid="tsne" data-points=n_points.to_string()
            data-live-x=move || placed.get().map(|p| format!("{:.4}", p.x))
            data-live-y=move || placed.get().map(|p| format!("{:.4}", p.y))>
            <h2>"Where the face sits among the test images (t-SNE)"</h2>
            <p class="hint-left">
                {format!("{n_points} FERPlus test images, mapped by t-SNE of the model's pooled \
                    features. Drag to pan, scroll to zoom, hover a point to see its image. ")}
                <button class="small" id="tsne-reset" on:click=on_reset>"Reset view"</button>
            </p>
            <div class="tsne-body">
                <div class="tsne-stage">
                    <canvas id="tsne-canvas" node_ref=canvas width=MAP_W.to_string()
                        height=MAP_H.to_string() on:wheel=on_wheel on:pointerdown=on_down
                        on:pointermove=on_move on:pointerup=on_up on:pointerleave=on_leave>
                    </canvas>
                    {tooltip}
                </div>
                <ul class="legend" id="tsne-legend">{legend}</ul>
            </div>
            <p class="live" id="tsne-live">{live_line}</p>
        </section>
    }
}

/// Draws the points, then the hovered one and the live face on top.
fn draw_map(
    canvas: &HtmlCanvasElement,
    map: &TsneMap,
    cam: &Camera,
    hovered: Option<usize>,
    live: Option<&Placement>,
) -> Result<(), String> {
    let ctx = dom::context_2d(canvas)?;
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, MAP_W, MAP_H);
    let tau = std::f64::consts::TAU;
    let radius = (2.5 * cam.zoom.sqrt()).clamp(2.0, 6.0);
    ctx.set_global_alpha(0.85);
    for p in &map.points {
        let (x, y) = cam.screen(p.x, p.y);
        ctx.set_fill_style_str(colour(p.class));
        ctx.begin_path();
        let _ = ctx.arc(x, y, radius, 0.0, tau);
        ctx.fill();
    }
    ctx.set_global_alpha(1.0);
    if let Some(i) = hovered {
        let (x, y) = cam.screen(map.points[i].x, map.points[i].y);
        ctx.set_stroke_style_str("#1b1f24");
        ctx.set_line_width(2.0);
        ctx.begin_path();
        let _ = ctx.arc(x, y, radius + 3.0, 0.0, tau);
        ctx.stroke();
    }
    if let Some(p) = live {
        // Lines to the neighbours it was placed by, then the marker.
        let (x, y) = cam.screen(p.x, p.y);
        ctx.set_stroke_style_str("rgba(27, 31, 36, 0.45)");
        ctx.set_line_width(1.0);
        for &i in &p.neighbours {
            let (nx, ny) = cam.screen(map.points[i].x, map.points[i].y);
            ctx.begin_path();
            ctx.move_to(x, y);
            ctx.line_to(nx, ny);
            ctx.stroke();
        }
        ctx.set_fill_style_str("#1b1f24");
        ctx.begin_path();
        let _ = ctx.arc(x, y, 9.0, 0.0, tau);
        ctx.fill();
        ctx.set_fill_style_str("#1fd17a");
        ctx.begin_path();
        let _ = ctx.arc(x, y, 5.5, 0.0, tau);
        ctx.fill();
        ctx.set_font("bold 13px sans-serif");
        ctx.set_fill_style_str("#1b1f24");
        let _ = ctx.fill_text("you", x + 12.0, y + 4.0);
    }
    Ok(())
}

/// The mixing explorer: two images, λ, Mixup or CutMix, the soft label, and whether the mix
/// is a positive of an anchor at threshold t, all computed by `mimic_core::mix::mix_sample`.
#[component]
fn MixExplorer(data: Arc<MapData>) -> impl IntoView {
    let samples = data.map.one_per_class();
    let n_classes = data.map.classes.len();
    let first = RwSignal::new(samples.first().map_or(0, |&i| data.map.points[i].class));
    let second = RwSignal::new(samples.get(1).map_or(0, |&i| data.map.points[i].class));
    let lambda = RwSignal::new(0.7_f64);
    let kind = RwSignal::new(MixKind::Mixup);
    let anchor = RwSignal::new(first.get_untracked());
    let threshold = RwSignal::new(0.5_f32);
    let metric = RwSignal::new(LabelMetric::Linf);
    let box_seed = RwSignal::new(1_u64);
    let result = RwSignal::new(None::<MixResult>);
    let error = RwSignal::new(None::<String>);
    let generation = StoredValue::new(0_u64);
    let mixed = NodeRef::<leptos::html::Canvas>::new();

    // The point shown for a class.
    let sample_of = {
        let samples = samples.clone();
        let data = data.clone();
        move |class: usize| {
            samples
                .iter()
                .copied()
                .find(|&i| data.map.points[i].class == class)
                .unwrap_or(0)
        }
    };

    // Recompute on every input change; a newer request makes an older answer stale.
    {
        let data = data.clone();
        let sample_of = sample_of.clone();
        Effect::new(move |_| {
            let classes = [first.get(), second.get()];
            let req = MixRequest {
                images: classes.map(|c| data.thumb_pixels(sample_of(c))),
                side: data.map.web.thumb as usize,
                classes,
                n_classes,
                kind: kind.get(),
                lambda: lambda.get(),
                box_seed: box_seed.get(),
                anchor: anchor.get(),
                threshold: threshold.get(),
                metric: metric.get(),
            };
            let id = generation.get_value() + 1;
            generation.set_value(id);
            spawn_local(async move {
                let answer = mix_pair::<B>(&req, &Default::default()).await;
                if generation.get_value() != id {
                    return;
                }
                match answer {
                    Ok(r) => {
                        error.set(None);
                        result.set(Some(r));
                    }
                    Err(e) => error.set(Some(e)),
                }
            });
        });
    }
    let side = data.map.web.thumb;
    Effect::new(move |_| {
        if let (Some(r), Some(canvas)) = (result.get(), mixed.get()) {
            if let Err(e) = draw_grey(&canvas, &r.pixels, side) {
                error.set(Some(e));
            }
        }
    });

    let class_options = {
        let classes = data.map.classes.clone();
        move |selected: RwSignal<usize>, only: Option<Vec<usize>>| {
            classes
                .iter()
                .enumerate()
                .filter(|(c, _)| only.as_ref().is_none_or(|o| o.contains(c)))
                .map(|(c, name)| {
                    view! {
                        <option value=c.to_string() selected=move || selected.get() == c>
                            {name.clone()}
                        </option>
                    }
                })
                .collect_view()
        }
    };
    let sample_classes: Vec<usize> = samples.iter().map(|&i| data.map.points[i].class).collect();
    let parse_into = |signal: RwSignal<usize>| {
        move |ev: web_sys::Event| {
            if let Ok(v) = event_target_value(&ev).parse() {
                signal.set(v);
            }
        }
    };
    let on_first = parse_into(first);
    let on_second = parse_into(second);
    let on_anchor = parse_into(anchor);
    let on_lambda = move |ev: web_sys::Event| {
        if let Ok(v) = event_target_value(&ev).parse() {
            lambda.set(v);
        }
    };
    let on_threshold = move |ev: web_sys::Event| {
        if let Ok(v) = event_target_value(&ev).parse() {
            threshold.set(v);
        }
    };
    let on_kind = move |ev: web_sys::Event| {
        kind.set(match event_target_value(&ev).as_str() {
            "cutmix" => MixKind::CutMix,
            _ => MixKind::Mixup,
        });
    };
    let on_metric = move |ev: web_sys::Event| {
        if let Ok(m) = LabelMetric::parse(&event_target_value(&ev)) {
            metric.set(m);
        }
    };
    let on_new_box = move |_| box_seed.update(|s| *s += 1);

    let thumb_data = data.clone();
    let thumb = move |which: RwSignal<usize>, id: &'static str| {
        let data = thumb_data.clone();
        let sample_of = sample_of.clone();
        view! {
            <div class="thumb" id=id style=move || data.thumb_style(sample_of(which.get()), 3)>
            </div>
        }
    };
    let label_names = data.map.classes.clone();
    let bars = move || {
        result.get().map(|r| {
            label_names
                .iter()
                .zip(r.label)
                .map(|(name, p)| {
                    let width = format!("width: {:.1}%", 100.0 * p);
                    view! {
                        <li class="bar" data-label=name.clone() data-prob=p.to_string()>
                            <span class="name">{name.clone()}</span>
                            <span class="track"><span class="fill" style=width></span></span>
                            <span class="pct">{format!("{:.1} %", 100.0 * p)}</span>
                        </li>
                    }
                })
                .collect_view()
        })
    };
    let anchor_names = data.map.classes.clone();
    let decision = move || {
        result.get().map(|r| {
            // What the result was decided with, not what the controls say now.
            let name = anchor_names.get(r.anchor).cloned().unwrap_or_default();
            let t = r.threshold;
            let metric_name = match r.metric {
                LabelMetric::Linf => "L∞",
                LabelMetric::L1 => "L1",
            };
            let (verdict, compare, class) = if r.positive {
                ("Positive", "≤", "decision positive")
            } else {
                ("Negative", ">", "decision negative")
            };
            let text = format!(
                "{verdict} for an anchor labelled {name}: {metric_name} distance {:.3} \
                 {compare} t = {t:.2}",
                r.distance
            );
            view! {
                <p class=class id="mix-decision" data-positive=r.positive.to_string()
                    data-distance=r.distance.to_string()>{text}</p>
            }
        })
    };
    let lambda_line = move || {
        result.get().map(|r| {
            let text = match r.cut {
                // CutMix draws a box for the asked λ and clips it at the border, so the
                // effective λ can differ; rows and columns are 1-based and inclusive here.
                Some(b) if b.y1 > b.y0 && b.x1 > b.x0 => format!(
                    "λ = {:.3} (pasted box rows {}–{}, columns {}–{}; asked {:.2})",
                    r.lambda,
                    b.y0 + 1,
                    b.y1,
                    b.x0 + 1,
                    b.x1,
                    lambda.get()
                ),
                Some(_) => format!("λ = {:.3} (empty box; asked {:.2})", r.lambda, lambda.get()),
                None => format!("λ = {:.3}", r.lambda),
            };
            view! { <span id="mix-lambda-value" data-lambda=r.lambda.to_string()>{text}</span> }
        })
    };

    view! {
        <section class="mixer" id="mixer" data-testid="mixer">
            <h2>"Mixing explorer"</h2>
            <p class="hint-left">"Two test images mixed by the training code's own Mixup / \
                CutMix, the soft label it gets, and whether the contrastive loss counts it as \
                a positive of an anchor."</p>
            <div class="mix-grid">
                <div class="mix-inputs">
                    <label>"Image A " <select id="mix-a" on:change=on_first>
                        {class_options(first, Some(sample_classes.clone()))}</select></label>
                    <label>"Image B " <select id="mix-b" on:change=on_second>
                        {class_options(second, Some(sample_classes))}</select></label>
                    <label>"λ (share of A) "
                        <input id="mix-lambda" type="range" min="0" max="1" step="0.01"
                            prop:value=move || lambda.get().to_string() on:input=on_lambda/>
                    </label>
                    {lambda_line}
                    <fieldset class="kinds">
                        <label><input type="radio" name="mix-kind" id="mix-kind-mixup"
                            value="mixup" prop:checked=move || kind.get() == MixKind::Mixup
                            on:change=on_kind/>" Mixup"</label>
                        <label><input type="radio" name="mix-kind" id="mix-kind-cutmix"
                            value="cutmix" prop:checked=move || kind.get() == MixKind::CutMix
                            on:change=on_kind/>" CutMix"</label>
                        <button class="small" id="mix-new-box" on:click=on_new_box
                            disabled=move || kind.get() != MixKind::CutMix>"New box"</button>
                    </fieldset>
                    <label>"Anchor class " <select id="mix-anchor" on:change=on_anchor>
                        {class_options(anchor, None)}</select></label>
                    <label>"Threshold t "
                        <input id="mix-threshold" type="range" min="0" max="1" step="0.05"
                            prop:value=move || threshold.get().to_string() on:input=on_threshold/>
                        {move || format!(" {:.2}", threshold.get())}
                    </label>
                    <label>"Label distance " <select id="mix-metric" on:change=on_metric>
                        <option value="linf">"L∞ (largest class difference)"</option>
                        <option value="l1">"L1 (sum of differences)"</option>
                    </select></label>
                </div>
                <div class="mix-images">
                    <figure>{thumb(first, "mix-a-thumb")}<figcaption>"A"</figcaption></figure>
                    <figure>{thumb(second, "mix-b-thumb")}<figcaption>"B"</figcaption></figure>
                    <figure>
                        <canvas id="mix-canvas" node_ref=mixed width=side.to_string()
                            height=side.to_string()></canvas>
                        <figcaption>"mixed"</figcaption>
                    </figure>
                </div>
                <div class="mix-out">
                    <ul class="mix-label" id="mix-label">{bars}</ul>
                    {decision}
                    {move || error.get().map(|e| view! { <p class="message">{e}</p> })}
                </div>
            </div>
        </section>
    }
}

/// Draws `side` x `side` grey values in [0, 1] onto the canvas.
fn draw_grey(canvas: &HtmlCanvasElement, pixels: &[f32], side: u32) -> Result<(), String> {
    let rgba: Vec<u8> = pixels
        .iter()
        .flat_map(|&v| {
            let g = (v * 255.0).round().clamp(0.0, 255.0) as u8;
            [g, g, g, 255]
        })
        .collect();
    let image = ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), side, side)
        .map_err(|e| dom::js_error(&e))?;
    dom::context_2d(canvas)?
        .put_image_data(&image, 0.0, 0.0)
        .map_err(|e| dom::js_error(&e))
}
