//! The page: model loading, photo upload / drag-and-drop, the webcam loop, per-face bars and
//! the `?bench` mode. Browser-only state (the detector, the model, the camera) lives in a
//! thread-local [`Runtime`]; the view reads plain signals.

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use mimic_core::data::DecodedImage;
use mimic_core::weights::WebManifest;
use wasm_bindgen::JsCast;
use web_sys::{HtmlCanvasElement, HtmlVideoElement, MediaStream, RequestCache};

use crate::backend::Engine;
use crate::dom;
use crate::face::{crop_face, FaceBox, FaceFinder, Grey};
use crate::views::Views;

/// The manifest written by `train-native export-web`, relative to the page.
const MANIFEST_URL: &str = "web/model.json";
/// The fixed face of the `?bench` mode (a 48x48 FERPlus test image).
const BENCH_FACE_URL: &str = "web/bench-face.png";
/// Photos are drawn at most this many pixels a side (larger ones are downscaled).
const MAX_PHOTO_SIDE: f64 = 1280.0;
/// Camera frames are drawn at most this many pixels wide.
const MAX_CAMERA_SIDE: f64 = 640.0;
/// Uploads larger than this (64 MB) are refused before decoding.
const MAX_UPLOAD_BYTES: f64 = 64e6;
/// Inferences timed by `?bench` when no count is given.
const BENCH_RUNS: usize = 50;
/// The most inferences `?bench=N` takes.
const MAX_BENCH_RUNS: usize = 10_000;

#[derive(Default)]
struct Runtime {
    finder: Option<FaceFinder>,
    classifier: Option<Rc<Engine>>,
    camera: Option<MediaStream>,
    /// Bumped whenever the camera starts or stops, so an old frame loop knows to end.
    camera_session: u32,
}

thread_local! {
    static RUNTIME: RefCell<Runtime> = RefCell::new(Runtime::default());
}

/// One face's result as the view shows it.
#[derive(Clone, Debug, PartialEq)]
struct FaceView {
    probs: Vec<(String, f32)>,
    top: String,
    score: f64,
}

/// The signals the view reads; all `Copy`.
#[derive(Clone, Copy)]
struct Ui {
    status: RwSignal<String>,
    ready: RwSignal<bool>,
    message: RwSignal<Option<String>>,
    faces: RwSignal<Vec<FaceView>>,
    timing: RwSignal<String>,
    frames: RwSignal<u32>,
    camera_on: RwSignal<bool>,
    /// True while the browser is asked for the camera (the button waits for the answer).
    camera_opening: RwSignal<bool>,
    bench: RwSignal<String>,
    model_line: RwSignal<String>,
    /// Pooled features of the largest face analysed last, for the t-SNE map.
    live: RwSignal<Option<Vec<f32>>>,
}

impl Ui {
    fn new() -> Self {
        Self {
            status: RwSignal::new("Loading the face detector and the model…".into()),
            ready: RwSignal::new(false),
            message: RwSignal::new(None),
            faces: RwSignal::new(Vec::new()),
            timing: RwSignal::new(String::new()),
            frames: RwSignal::new(0),
            camera_on: RwSignal::new(false),
            camera_opening: RwSignal::new(false),
            bench: RwSignal::new(String::new()),
            model_line: RwSignal::new(String::new()),
            live: RwSignal::new(None),
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    let ui = Ui::new();
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let video = NodeRef::<leptos::html::Video>::new();
    let bench_runs = dom::query_param("bench").map(|n| bench_runs(&n));

    spawn_local(async move {
        match load(ui).await {
            Ok(()) => {
                let result = match bench_runs {
                    Some(Ok(runs)) => bench(ui, runs).await,
                    Some(Err(e)) => Err(e),
                    None => Ok(()),
                };
                if let Err(e) = result {
                    ui.message.set(Some(e.clone()));
                    ui.bench.set(serde_json::json!({ "error": e }).to_string());
                }
            }
            Err(e) => {
                ui.status.set("The model could not be loaded.".into());
                ui.message.set(Some(e));
            }
        }
    });

    // `ignored`: how many other files came with it (a drop of several).
    let on_file = move |file: web_sys::File, ignored: u32| {
        let Some(canvas) = canvas.get_untracked() else {
            return;
        };
        spawn_local(async move {
            stop_camera(ui);
            ui.message.set(None);
            if let Err(e) = analyse_photo(ui, &canvas, file, ignored).await {
                // Nothing of the previous photo stays on screen beside the error.
                clear_results(ui, &canvas);
                ui.message.set(Some(e));
            }
        });
    };
    let on_change = move |ev: web_sys::Event| {
        let input: Option<web_sys::HtmlInputElement> = ev.target().and_then(|t| t.dyn_into().ok());
        if let Some(file) = input
            .as_ref()
            .and_then(|i| i.files())
            .and_then(|f| f.get(0))
        {
            on_file(file, 0);
        }
        if let Some(input) = input {
            input.set_value(""); // the same file can be chosen again
        }
    };
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        let files = ev.data_transfer().and_then(|d| d.files());
        match files.as_ref().and_then(|f| f.get(0)) {
            Some(file) => on_file(file, files.map_or(1, |f| f.length()) - 1),
            None => ui.message.set(Some("Drop an image file here.".into())),
        }
    };
    let on_camera = move |_| {
        if ui.camera_opening.get_untracked() {
            return; // still waiting for the browser's answer to the last click
        }
        if ui.camera_on.get_untracked() {
            stop_camera(ui);
            return;
        }
        let (Some(canvas), Some(video)) = (canvas.get_untracked(), video.get_untracked()) else {
            return;
        };
        // Set before the task starts, so that a second click right after this one is ignored.
        ui.camera_opening.set(true);
        spawn_local(async move {
            ui.message.set(None);
            if let Err(e) = run_camera(ui, canvas, video).await {
                stop_camera(ui);
                ui.message.set(Some(e));
            }
        });
    };

    view! {
        <header>
            <h1>"mimic — facial expressions in your browser"</h1>
            <p class="status" id="status">{move || ui.status.get()}</p>
            <p class="model" id="model">{move || ui.model_line.get()}</p>
        </header>
        <section class="controls">
            <button id="camera" on:click=on_camera
                disabled=move || !ui.ready.get() || ui.camera_opening.get()>
                {move || if ui.camera_on.get() { "Stop the webcam" } else { "Start the webcam" }}
            </button>
            <label class="upload">
                "Upload a photo: "
                <input id="upload" type="file" accept="image/*" on:change=on_change
                    disabled=move || !ui.ready.get()/>
            </label>
        </section>
        {move || ui.message.get().map(|m| view! { <p class="message" id="message" role="alert">{m}</p> })}
        <section class="stage" on:dragover=|ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
            <canvas id="view" node_ref=canvas width="640" height="480"></canvas>
            <video node_ref=video class="hidden" muted=true playsinline=true autoplay=true></video>
            <p class="hint">"…or drop a photo here. Every face found gets a box and its probabilities."</p>
        </section>
        <p class="timing" id="timing" data-frames=move || ui.frames.get().to_string()>
            {move || ui.timing.get()}
        </p>
        <section class="faces" id="faces">
            {move || {
                ui.faces
                    .get()
                    .into_iter()
                    .enumerate()
                    .map(|(i, face)| face_card(i, face))
                    .collect_view()
            }}
        </section>
        <Views live=ui.live/>
        {move || {
            let text = ui.bench.get();
            (!text.is_empty()).then(|| view! { <pre id="bench">{text}</pre> })
        }}
    }
}

fn face_card(index: usize, face: FaceView) -> impl IntoView {
    let bars = face
        .probs
        .into_iter()
        .map(|(label, p)| {
            let width = format!("width: {:.1}%", 100.0 * p);
            let name = label.clone();
            view! {
                <li class="bar" data-label=label data-prob=p.to_string()>
                    <span class="name">{name}</span>
                    <span class="track"><span class="fill" style=width></span></span>
                    <span class="pct">{format!("{:.1} %", 100.0 * p)}</span>
                </li>
            }
        })
        .collect_view();
    view! {
        <div class="face" data-face=index.to_string()>
            <h3>{format!("Face {}: {}", index + 1, face.top)}
                <small>{format!(" (detector score {:.1})", face.score)}</small></h3>
            <ul>{bars}</ul>
        </div>
    }
}

/// Parses the detector's model, fetches and loads the classifier, and runs a warm-up pass.
async fn load(ui: Ui) -> Result<(), String> {
    let started = dom::now_ms();
    let finder = FaceFinder::new()?;
    let manifest_bytes = dom::fetch_bytes(MANIFEST_URL, RequestCache::NoCache).await?;
    let manifest = WebManifest::from_json(&String::from_utf8_lossy(&manifest_bytes), MANIFEST_URL)
        .map_err(|e| e.to_string())?;
    // The checksum in the URL makes a cached copy valid exactly as long as the manifest
    // names it, so the weights are downloaded once and re-used until they change.
    let url = format!("web/{}?v={}", manifest.weights, manifest.weights_fnv64);
    let bytes = dom::fetch_bytes(&url, RequestCache::ForceCache).await?;
    let force_cpu = dom::query_param("cpu").is_some();
    let (classifier, why_cpu) = Engine::load(manifest, &bytes, force_cpu)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let loaded = dom::now_ms();

    // Warm-up: the first inference pays for allocations (and, on WebGPU, for compiling the
    // kernels); do it before the user waits on it.
    let size = classifier.manifest().model.img_size;
    let blank = DecodedImage {
        width: size,
        height: size,
        channels: 1,
        pixels: vec![128; size * size],
    };
    classifier.classify(&[blank]).await?;
    let warm = dom::now_ms();

    let m = classifier.manifest();
    let accuracy = match (m.test_accuracy, &m.test_split) {
        (Some(a), Some(split)) => format!("{:.1} % test accuracy on {split}", 100.0 * a),
        (Some(a), None) => format!("{:.1} % test accuracy", 100.0 * a),
        _ => "no reported test accuracy".into(),
    };
    ui.model_line.set(format!(
        "Model: ViT {}px/{} ({} blocks, width {}), {} weights of {:.1} MB, {accuracy}.",
        m.model.img_size,
        m.model.patch_size,
        m.model.depth,
        m.model.d_model,
        format!("{:?}", m.dtype).to_lowercase(),
        m.weights_bytes as f64 / 1e6
    ));
    let backend = match why_cpu {
        Some(why) => format!("{} ({why})", classifier.name()),
        None => classifier.name(),
    };
    ui.status.set(format!(
        "Ready. Backend: {backend}. Loaded in {:.0} ms; first inference {:.0} ms.",
        loaded - started,
        warm - loaded
    ));
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        rt.finder = Some(finder);
        rt.classifier = Some(Rc::new(classifier));
    });
    ui.ready.set(true);
    Ok(())
}

fn classifier() -> Result<Rc<Engine>, String> {
    RUNTIME
        .with(|rt| rt.borrow().classifier.clone())
        .ok_or_else(|| "the model is not loaded yet".to_string())
}

/// Decodes an uploaded or dropped file, draws it (downscaled when large) and analyses it.
async fn analyse_photo(
    ui: Ui,
    canvas: &HtmlCanvasElement,
    file: web_sys::File,
    ignored: u32,
) -> Result<(), String> {
    let name = file.name();
    let kind = file.type_();
    if !kind.is_empty() && !kind.starts_with("image/") {
        return Err(format!(
            "“{name}” is not an image ({kind}). Choose a JPEG, PNG, WebP, GIF or BMP photo."
        ));
    }
    if file.size() > MAX_UPLOAD_BYTES {
        return Err(format!(
            "“{name}” is {:.0} MB; photos over {:.0} MB are refused.",
            file.size() / 1e6,
            MAX_UPLOAD_BYTES / 1e6
        ));
    }
    let bitmap = dom::decode_blob(&file)
        .await
        .map_err(|e| format!("“{name}” could not be read as an image ({e})."))?;
    let (w, h) = (f64::from(bitmap.width()), f64::from(bitmap.height()));
    let scale = (MAX_PHOTO_SIDE / w.max(h)).min(1.0);
    let (cw, ch) = ((w * scale).round().max(1.0), (h * scale).round().max(1.0));
    canvas.set_width(cw as u32);
    canvas.set_height(ch as u32);
    let ctx = dom::context_2d(canvas)?;
    ctx.draw_image_with_image_bitmap_and_dw_and_dh(&bitmap, 0.0, 0.0, cw, ch)
        .map_err(|e| dom::js_error(&e))?;
    bitmap.close();
    let found = analyse(ui, canvas).await?;
    let mut notes = Vec::new();
    if ignored > 0 {
        notes.push(format!(
            "Only “{name}” was analysed; the {ignored} other dropped file{} {} ignored.",
            if ignored == 1 { "" } else { "s" },
            if ignored == 1 { "was" } else { "were" }
        ));
    }
    if scale < 1.0 {
        notes.push(format!(
            "“{name}” ({w}×{h}) was downscaled to {cw}×{ch} for analysis."
        ));
    }
    if found == 0 {
        notes.push(format!(
            "No face found in “{name}”. Faces should be upright, frontal and at least about 40 \
             pixels wide."
        ));
    }
    ui.message.set((!notes.is_empty()).then(|| notes.join(" ")));
    Ok(())
}

/// Finds the faces in what the canvas shows, classifies them, draws their boxes on the canvas
/// and publishes the results. Returns the number of faces.
async fn analyse(ui: Ui, canvas: &HtmlCanvasElement) -> Result<usize, String> {
    let t0 = dom::now_ms();
    let (rgba, w, h) = dom::canvas_rgba(canvas)?;
    let grey = Grey::from_rgba(&rgba, w, h);
    let boxes: Vec<FaceBox> = RUNTIME
        .with(|rt| rt.borrow_mut().finder.as_mut().map(|f| f.find(&grey)))
        .ok_or_else(|| "the face detector is not loaded yet".to_string())?;
    let t1 = dom::now_ms();
    let crops: Vec<DecodedImage> = boxes.iter().map(|b| crop_face(&grey, b)).collect();
    let classifier = classifier()?;
    let scores = classifier.classify_with_features(&crops).await?;
    let probs = scores.probs;
    let t2 = dom::now_ms();
    let largest = (0..boxes.len()).max_by(|&a, &b| {
        (boxes[a].width * boxes[a].height).total_cmp(&(boxes[b].width * boxes[b].height))
    });
    ui.live.set(largest.map(|i| scores.features[i].clone()));

    let labels = &classifier.manifest().labels;
    let ctx = dom::context_2d(canvas)?;
    let line = (w.max(h) as f64 / 320.0).max(2.0);
    ctx.set_line_width(line);
    ctx.set_font(&format!("{}px sans-serif", (line * 7.0).round()));
    let faces: Vec<FaceView> = boxes
        .iter()
        .zip(&probs)
        .enumerate()
        .map(|(i, (b, p))| {
            let best = (0..p.len())
                .max_by(|&a, &c| p[a].total_cmp(&p[c]))
                .unwrap_or(0);
            let top = format!("{} {:.0} %", labels[best], 100.0 * p[best]);
            ctx.set_stroke_style_str("#1fd17a");
            ctx.stroke_rect(b.x.into(), b.y.into(), b.width.into(), b.height.into());
            ctx.set_fill_style_str("#1fd17a");
            let _ = ctx.fill_text(
                &format!("{} {top}", i + 1),
                b.x.into(),
                f64::from(b.y) - line * 2.0,
            );
            FaceView {
                probs: labels.iter().cloned().zip(p.iter().copied()).collect(),
                top,
                score: b.score,
            }
        })
        .collect();
    let n = faces.len();
    ui.timing.set(if n == 0 {
        format!(
            "{:.0} ms per frame (detection {:.0} ms); no face in view",
            t2 - t0,
            t1 - t0
        )
    } else {
        format!(
            "{:.0} ms per frame: detection {:.0} ms, classification {:.1} ms per face ({n} face{})",
            t2 - t0,
            t1 - t0,
            (t2 - t1) / n as f64,
            if n == 1 { "" } else { "s" }
        )
    });
    ui.faces.set(faces);
    ui.frames.update(|f| *f += 1);
    Ok(n)
}

/// Opens the camera and analyses its frames until it is stopped. The caller sets
/// `ui.camera_opening`; this clears it once the browser has answered.
async fn run_camera(
    ui: Ui,
    canvas: HtmlCanvasElement,
    video: HtmlVideoElement,
) -> Result<(), String> {
    ui.status.update(|s| {
        if !s.ends_with("Opening the camera…") {
            s.push_str(" Opening the camera…");
        }
    });
    let asked_in = RUNTIME.with(|rt| rt.borrow().camera_session);
    let opened = dom::open_camera().await;
    ui.camera_opening.set(false);
    ui.status
        .update(|s| *s = s.trim_end_matches(" Opening the camera…").to_string());
    let stream = opened?;
    if RUNTIME.with(|rt| rt.borrow().camera_session) != asked_in {
        // A photo was chosen while the browser asked for the camera: the photo wins.
        dom::stop_camera(&stream);
        return Ok(());
    }
    video.set_src_object(Some(&stream));
    video.set_muted(true);
    let session = RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        rt.camera_session += 1;
        if let Some(old) = rt.camera.replace(stream) {
            dom::stop_camera(&old); // never leave a stream running unseen
        }
        rt.camera_session
    });
    ui.camera_on.set(true);
    ui.frames.set(0);
    if let Ok(promise) = video.play() {
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
    while RUNTIME.with(|rt| rt.borrow().camera_session) == session {
        if dom::video_ready(&video) {
            let (w, h) = (
                f64::from(video.video_width()),
                f64::from(video.video_height()),
            );
            let scale = (MAX_CAMERA_SIDE / w.max(h)).min(1.0);
            let (cw, ch) = ((w * scale).round(), (h * scale).round());
            if canvas.width() != cw as u32 || canvas.height() != ch as u32 {
                canvas.set_width(cw as u32);
                canvas.set_height(ch as u32);
            }
            let ctx = dom::context_2d(&canvas)?;
            ctx.draw_image_with_html_video_element_and_dw_and_dh(&video, 0.0, 0.0, cw, ch)
                .map_err(|e| dom::js_error(&e))?;
            analyse(ui, &canvas).await?;
        }
        // Yield to the browser between frames so the page stays responsive.
        dom::sleep(10).await;
    }
    Ok(())
}

/// Clears the canvas, the face cards, the timing line and the live face on the map.
fn clear_results(ui: Ui, canvas: &HtmlCanvasElement) {
    if let Ok(ctx) = dom::context_2d(canvas) {
        ctx.clear_rect(0.0, 0.0, canvas.width().into(), canvas.height().into());
    }
    ui.faces.set(Vec::new());
    ui.timing.set(String::new());
    ui.live.set(None);
}

/// The run count of `?bench=N`: N from 1 to [`MAX_BENCH_RUNS`], or [`BENCH_RUNS`] for a bare
/// `?bench`.
fn bench_runs(value: &str) -> Result<usize, String> {
    if value.is_empty() {
        return Ok(BENCH_RUNS);
    }
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_BENCH_RUNS).contains(n))
        .ok_or_else(|| {
            format!("?bench takes a number of runs from 1 to {MAX_BENCH_RUNS}, not “{value}”.")
        })
}

fn stop_camera(ui: Ui) {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        rt.camera_session += 1;
        if let Some(stream) = rt.camera.take() {
            dom::stop_camera(&stream);
        }
    });
    ui.camera_on.set(false);
}

/// `?bench[=N]`: times N single-face inferences on a fixed face and prints the figures as JSON.
async fn bench(ui: Ui, runs: usize) -> Result<(), String> {
    let (rgba, w, h) = dom::fetch_rgba(BENCH_FACE_URL, RequestCache::Default).await?;
    let grey = Grey::from_rgba(&rgba, w, h);
    let face = [DecodedImage {
        width: w,
        height: h,
        channels: 1,
        pixels: grey.pixels,
    }];
    let classifier = classifier()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = dom::now_ms();
        classifier.classify(&face).await?;
        times.push(dom::now_ms() - t);
        dom::sleep(0).await;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let report = serde_json::json!({
        "backend": classifier.name(),
        "on_gpu": classifier.on_gpu(),
        "runs": runs,
        "face_px": [w, h],
        "ms_per_face_median": median,
        "ms_per_face_mean": mean,
        "ms_per_face_min": sorted[0],
        "ms_per_face_max": sorted[sorted.len() - 1],
        "status": ui.status.get_untracked(),
    });
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    web_sys::console::log_1(&text.clone().into());
    ui.bench.set(text);
    Ok(())
}
