//! `GET /admin`: the admin console, a static page (HTML, one script, one stylesheet) compiled into
//! the binary from `src/admin_console/`. It holds no data and no secrets: the browser signs in
//! with a token it keeps in `sessionStorage` and reads everything from the admin API
//! (`/api/v1/admin/…`) and the tenant's activity channel on `/ws`.
//!
//! Every answer carries a Content-Security-Policy that allows only this origin's own script and
//! stylesheet, and connections only back to this server (HTTP and its WebSocket), so data
//! rendered by the page can never run as code and the token is never sent anywhere else.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::problem::ApiError;

const INDEX_HTML: &str = include_str!("../admin_console/index.html");
const CONSOLE_JS: &str = include_str!("../admin_console/console.js");
const CONSOLE_CSS: &str = include_str!("../admin_console/console.css");

/// `GET /admin` and `GET /admin/`: the page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    asset_response(&req, "text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /admin/{file}`: the page's script and stylesheet; anything else is 404.
pub async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (content_type, body) = match file.as_str() {
        "console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
        "index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        other => {
            return Err(ApiError::NotFound(format!(
                "no admin console asset {other:?}"
            )))
        }
    };
    Ok(asset_response(&req, content_type, body))
}

fn asset_response(req: &HttpRequest, content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, csp(req)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // The assets change only with the binary; revalidating each time keeps an upgrade visible.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The policy: nothing but this origin. `connect-src` names the WebSocket origin of the host the
/// browser asked for as well, because older browsers do not let `'self'` cover `ws:`/`wss:`.
fn csp(req: &HttpRequest) -> String {
    let host = req.connection_info().host().to_owned();
    // The Host header is the client's; only a plain host[:port] goes into the header.
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let ws = if plain {
        format!(" ws://{host} wss://{host}")
    } else {
        String::new()
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}
