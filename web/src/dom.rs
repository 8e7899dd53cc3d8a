//! Thin wrappers over the browser APIs the page uses: fetch, timers, the clock, canvases,
//! images and the camera. Errors come back as sentences for the page to show.

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    CanvasRenderingContext2d, HtmlCanvasElement, HtmlVideoElement, ImageBitmap, MediaStream,
    MediaStreamConstraints, RequestCache, RequestInit, Response,
};

pub fn window() -> web_sys::Window {
    web_sys::window().expect("the page runs in a window")
}

/// Milliseconds from the page's time origin (`performance.now()`; `Instant` does not exist
/// on wasm32).
pub fn now_ms() -> f64 {
    window().performance().map_or(0.0, |p| p.now())
}

/// The text of a JavaScript error value.
pub fn js_error(value: &JsValue) -> String {
    if let Some(err) = value.dyn_ref::<js_sys::Error>() {
        let name = String::from(err.name());
        let message = String::from(err.message());
        return if message.is_empty() {
            name
        } else {
            format!("{name}: {message}")
        };
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// The `name` of a DOMException-like error (e.g. `NotAllowedError`), if it has one.
pub fn error_name(value: &JsValue) -> String {
    js_sys::Reflect::get(value, &JsValue::from_str("name"))
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_default()
}

/// Fetches `url` as bytes. `cache` chooses the HTTP cache mode (`ForceCache` for files whose
/// URL carries their checksum, `NoCache` for the manifest).
pub async fn fetch_bytes(url: &str, cache: RequestCache) -> Result<Vec<u8>, String> {
    let init = RequestInit::new();
    init.set_cache(cache);
    let response = JsFuture::from(window().fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| format!("cannot fetch {url}: {}", js_error(&e)))?;
    let response: Response = response
        .dyn_into()
        .map_err(|_| format!("{url}: not a response"))?;
    if !response.ok() {
        return Err(format!("cannot fetch {url}: HTTP {}", response.status()));
    }
    let buffer = response
        .array_buffer()
        .map_err(|e| format!("{url}: {}", js_error(&e)))?;
    let buffer = JsFuture::from(buffer)
        .await
        .map_err(|e| format!("cannot read {url}: {}", js_error(&e)))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// Waits `ms` milliseconds without blocking the page.
pub async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(promise).await;
}

/// A canvas that is not part of the page.
pub fn scratch_canvas(width: u32, height: u32) -> Result<HtmlCanvasElement, String> {
    let document = window().document().ok_or("no document")?;
    let canvas: HtmlCanvasElement = document
        .create_element("canvas")
        .map_err(|e| js_error(&e))?
        .dyn_into()
        .map_err(|_| "not a canvas".to_string())?;
    canvas.set_width(width);
    canvas.set_height(height);
    Ok(canvas)
}

/// Fetches an image and decodes it with the browser's decoders: its RGBA pixels, width and
/// height.
pub async fn fetch_rgba(url: &str, cache: RequestCache) -> Result<(Vec<u8>, usize, usize), String> {
    let bytes = fetch_bytes(url, cache).await?;
    let parts = js_sys::Array::of1(&Uint8Array::from(bytes.as_slice()));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).map_err(|e| js_error(&e))?;
    let bitmap = decode_blob(&blob)
        .await
        .map_err(|e| format!("{url} is not an image the browser can read ({e})"))?;
    let canvas = scratch_canvas(bitmap.width(), bitmap.height())?;
    context_2d(&canvas)?
        .draw_image_with_image_bitmap(&bitmap, 0.0, 0.0)
        .map_err(|e| js_error(&e))?;
    bitmap.close();
    canvas_rgba(&canvas)
}

/// The 2-D context of a canvas.
pub fn context_2d(canvas: &HtmlCanvasElement) -> Result<CanvasRenderingContext2d, String> {
    // The page reads its canvases back (getImageData) after every frame: ask for a context
    // that is kept in memory for that. Only the first call on a canvas decides.
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"willReadFrequently".into(), &JsValue::TRUE);
    canvas
        .get_context_with_context_options("2d", &options)
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into().ok())
        .ok_or_else(|| "this browser gives no 2-D canvas context".to_string())
}

/// Decodes an uploaded file (or any blob) with the browser's own decoders.
pub async fn decode_blob(blob: &web_sys::Blob) -> Result<ImageBitmap, String> {
    let promise = window()
        .create_image_bitmap_with_blob(blob)
        .map_err(|e| js_error(&e))?;
    let bitmap = JsFuture::from(promise).await.map_err(|e| js_error(&e))?;
    bitmap
        .dyn_into()
        .map_err(|_| "the browser returned no image".to_string())
}

/// RGBA pixels of the whole canvas.
pub fn canvas_rgba(canvas: &HtmlCanvasElement) -> Result<(Vec<u8>, usize, usize), String> {
    let (w, h) = (canvas.width(), canvas.height());
    let data = context_2d(canvas)?
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(|e| js_error(&e))?;
    Ok((data.data().0, w as usize, h as usize))
}

/// Asks for the camera. The error says what happened in words a user can act on.
pub async fn open_camera() -> Result<MediaStream, String> {
    let devices = window().navigator().media_devices().map_err(|_| {
        "this page cannot use a camera here (it needs https or localhost)".to_string()
    })?;
    let constraints = MediaStreamConstraints::new();
    constraints.set_video(&JsValue::TRUE);
    constraints.set_audio(&JsValue::FALSE);
    let promise = devices
        .get_user_media_with_constraints(&constraints)
        .map_err(|e| js_error(&e))?;
    let stream = JsFuture::from(promise)
        .await
        .map_err(|e| match error_name(&e).as_str() {
            "NotAllowedError" | "SecurityError" => {
                "Camera access was denied. Allow the camera for this page, or upload a photo \
                 instead."
                    .to_string()
            }
            "NotFoundError" | "OverconstrainedError" => {
                "No camera was found. Connect one, or upload a photo instead.".to_string()
            }
            "NotReadableError" | "AbortError" => {
                "The camera is in use by another program or failed to start.".to_string()
            }
            _ => format!("The camera could not be opened: {}", js_error(&e)),
        })?;
    stream
        .dyn_into()
        .map_err(|_| "the browser returned no camera stream".to_string())
}

/// Stops every track of a camera stream (the camera light goes off).
pub fn stop_camera(stream: &MediaStream) {
    for track in stream.get_tracks().iter() {
        if let Ok(track) = track.dyn_into::<web_sys::MediaStreamTrack>() {
            track.stop();
        }
    }
}

/// Whether the video has a frame to draw.
pub fn video_ready(video: &HtmlVideoElement) -> bool {
    video.ready_state() >= 2 && video.video_width() > 0 && video.video_height() > 0
}

/// The page's query string parameter `name`: `Some("")` for a bare `?name`.
pub fn query_param(name: &str) -> Option<String> {
    let search = window().location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    params.get(name)
}
