//! Product and room images: uploaded by content (JPEG, PNG or WebP, recognised
//! from their bytes), stored once under `images/` in the node's file storage
//! (its data directory, or a folder every node shares) by their SHA-256, and
//! served with long cache lifetimes since a given URL never changes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use domain::catalog::ImageFormat;
use domain::ids::ShopId;
use objects::Objects;
use serde::Serialize;
use sha2::{Digest, Sha256};
use store::Store;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::hex;
use crate::error::{ApiError, ApiResult, Code};

/// An uploaded image. Use `id` in a product's or room's `images`/`cover_image`.
#[derive(Serialize, ToSchema)]
pub struct ImageView {
    /// SHA-256 of the content, hex.
    pub id: String,
    pub url: String,
    pub content_type: &'static str,
    pub byte_size: usize,
}

/// Where an image's bytes are kept (the layout the data directory always had).
fn image_key(id: &str) -> String {
    format!("images/{}/{id}", &id[..2])
}

fn is_image_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks an upload by its content, writes it (atomically, once per content) and
/// records it for the shop; the bytes are kept before the record is, so no
/// recorded image lacks them.
pub async fn save_image(
    store: &Store,
    objects: &Objects,
    shop: &ShopId,
    bytes: Bytes,
) -> ApiResult<ImageView> {
    let format = ImageFormat::sniff(&bytes).ok_or(Code::UnsupportedImage)?;
    let id = hex(&Sha256::digest(&bytes));
    let byte_size = bytes.len();
    objects
        .put_once(&image_key(&id), bytes)
        .await
        .map_err(ApiError::from)?;
    store
        .add_image(shop, &id, format.content_type(), byte_size as i64)
        .await?;
    Ok(ImageView {
        url: format!("/images/{id}"),
        id,
        content_type: format.content_type(),
        byte_size,
    })
}

/// Uploads an image to a shop: send the file's bytes as the body. The format is
/// recognised from the content, whatever the name or Content-Type says.
#[utoipa::path(post, path = "/api/v1/shops/{shop}/images", tag = "catalog",
    params(("shop" = String, Path, description = "Shop id or handle")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "JPEG, PNG or WebP bytes, at most the configured size (10 MiB by default)"),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = ImageView),
        (status = 401, description = "`unauthenticated`", body = crate::error::ErrorBody),
        (status = 403, description = "`forbidden`: not your shop", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
        (status = 415, description = "`unsupported_image`", body = crate::error::ErrorBody),
        (status = 503, description = "`storage_unavailable`: the file storage did not take it; nothing was saved", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn upload_image(
    State(state): State<AppState>,
    current: crate::extract::CurrentUser,
    UrlPath(shop): UrlPath<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<ImageView>)> {
    let shop = super::catalog::owned_shop(&state, &current, &shop).await?;
    let image = save_image(state.store(), state.objects(), &shop.id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(image)))
}

pub(crate) fn serve_router() -> Router<AppState> {
    Router::new().route("/images/{id}", get(serve_image))
}

async fn serve_image(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !is_image_id(&id) {
        return Err(Code::NotFound.into());
    }
    let content_type = state
        .store()
        .image_content_type(&id)
        .await?
        .ok_or(Code::NotFound)?;
    let etag = format!("\"{id}\"");
    let cache = [
        (
            header::CACHE_CONTROL,
            "public, max-age=31536000, immutable".to_owned(),
        ),
        (header::ETAG, etag.clone()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let file = state
        .objects()
        .read(&image_key(&id))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            tracing::error!(image = %id, place = state.objects().place(), "a recorded image is missing from the file storage");
            ApiError::from(Code::NotFound)
        })?;
    let length = (header::CONTENT_LENGTH, file.size.to_string());
    let body = axum::body::Body::from_stream(file.stream);
    Ok((cache, [(header::CONTENT_TYPE, content_type), length], body).into_response())
}
