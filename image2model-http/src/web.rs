//! The web page at `/`: upload, live progress, a 3D preview and downloads.
//! Its files (in `web/` at the workspace root) are embedded at build time and
//! served from `/static/`, so the page's CSP can stay `'self'` with no inline
//! script.

use poem::http::{StatusCode, header};
use poem::web::Path;
use poem::{IntoResponse, Response, handler};

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const VIEWER_JS: &str = include_str!("../../web/viewer.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// `GET /`.
#[handler]
pub fn index() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(INDEX_HTML)
}

/// `GET /static/:file`: only the embedded files; anything else is 404.
#[handler]
pub fn asset(Path(file): Path<String>) -> Response {
    let (body, mime) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "viewer.js" => (VIEWER_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    Response::builder()
        .content_type(mime)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
}
