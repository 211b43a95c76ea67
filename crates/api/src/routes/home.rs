//! `/`: a plain server-rendered page listing the rooms and the shops with their
//! products, so a fresh `hawker demo` shows something real before the web app
//! (`web/`) exists. No script, no external assets.

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use domain::catalog::ProductStatus;
use domain::room::RoomStatus;
use store::{PageRequest, RoomFilter};

use crate::AppState;
use crate::error::ApiResult;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/", get(home))
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn home(State(state): State<AppState>) -> ApiResult<Html<String>> {
    let store = state.store();
    let first = |limit| PageRequest { after: None, limit };
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Hawker</title><style>body{font-family:system-ui,sans-serif;max-width:60rem;\
         margin:auto;padding:1rem}ul.products{display:grid;grid-template-columns:\
         repeat(auto-fill,minmax(12rem,1fr));gap:1rem;list-style:none;padding:0}\
         img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:.5rem}</style></head>\
         <body><h1>Hawker</h1>",
    );
    for (status, heading) in [
        (RoomStatus::Live, "Live now"),
        (RoomStatus::Scheduled, "Upcoming"),
    ] {
        let filter = RoomFilter {
            shop: None,
            status: Some(status),
        };
        let rooms = store.rooms(&filter, &first(20)).await?.items;
        if rooms.is_empty() {
            continue;
        }
        html.push_str(&format!("<h2>{heading}</h2><ul>"));
        for room in rooms {
            html.push_str(&format!("<li>{}</li>", esc(room.title.as_str())));
        }
        html.push_str("</ul>");
    }
    for shop in store.shops(&first(10)).await?.items {
        html.push_str(&format!(
            "<h2>{} <small>@{}</small></h2><p>{}</p><ul class=\"products\">",
            esc(shop.name.as_str()),
            esc(shop.handle.as_str()),
            esc(shop.description.as_str())
        ));
        let products = store
            .products(&shop.id, &[ProductStatus::Active], &first(24))
            .await?;
        for p in products.items {
            let image = p
                .images
                .first()
                .map(|id| format!("<img src=\"/images/{}\" alt=\"\">", esc(id)))
                .unwrap_or_default();
            let price = p
                .variants
                .iter()
                .map(|v| v.price)
                .min_by_key(|m| m.amount)
                .map(|m| m.to_string())
                .unwrap_or_default();
            let stock: i64 = p.variants.iter().map(|v| v.stock_on_hand).sum();
            html.push_str(&format!(
                "<li>{image}<strong>{}</strong><br>from {} &middot; {stock} in stock</li>",
                esc(p.title.as_str()),
                esc(&price)
            ));
        }
        html.push_str("</ul>");
    }
    html.push_str(
        "<p><a href=\"/api/openapi.json\">API (OpenAPI)</a> &middot; \
         <a href=\"/metrics\">metrics</a></p></body></html>",
    );
    Ok(Html(html))
}
