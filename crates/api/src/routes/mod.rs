//! The JSON API under `/api/v1/`, with its OpenAPI description generated from
//! the handlers' annotations so the document cannot drift from the code.

pub(crate) mod accounts;
pub(crate) mod catalog;
pub(crate) mod images;
pub(crate) mod live;
pub(crate) mod moderation;
pub(crate) mod orders;
pub(crate) mod pages;
pub(crate) mod payments;
pub(crate) mod rooms;
pub(crate) mod sales;
pub(crate) mod stats;
pub(crate) mod video;

use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::error::{ApiError, Code, ErrorBody};
use crate::{ApiConfig, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hawker API",
        description = "Self-hosted live shopping. Money is `{amount, currency}` with `amount` in \
            integer minor units. Errors are `{\"error\": {\"code\", \"message\"}}`; the `code` \
            values are listed in the `Code` schema. Sign in with a session cookie (browsers) \
            or `Authorization: Bearer <token>` (a session token or a personal API token).",
    ),
    components(schemas(ErrorBody, Code)),
    modifiers(&Security),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// Adds the errors any route can answer (bad input, limits, server trouble) to
/// every operation, beside the route-specific ones its annotation lists. Runs on
/// the finished document, once every route is in it.
pub(crate) fn document_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    {
        let common = [
            (
                "400",
                "`invalid_json`, `invalid_query`, `invalid_cursor` or `bad_request`",
            ),
            ("413", "`payload_too_large`"),
            ("415", "`unsupported_media_type`"),
            (
                "422",
                "`invalid_body`, `invalid_field` and the route's own validation codes",
            ),
            ("429", "`rate_limited`"),
            ("500", "`internal`"),
            ("503", "`unavailable` or `timeout`"),
        ];
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                for (status, description) in common {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(
                                        "application/json",
                                        utoipa::openapi::ContentBuilder::new()
                                            .schema(Some(RefOr::Ref(
                                                utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                                            )))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

pub(crate) fn api_router(config: &ApiConfig) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(catalog::router(config))
        .merge(rooms::router())
        .merge(live::router())
        .merge(moderation::router())
        .merge(sales::router())
        .merge(orders::router())
        .merge(payments::router())
        .merge(video::router())
        .merge(stats::router())
}

/// `?limit=&cursor=` on every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub(crate) fn request(&self) -> Result<store::PageRequest, ApiError> {
        if let Some(c) = &self.cursor
            && (c.is_empty()
                || c.len() > 64
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            return Err(Code::InvalidCursor.into());
        }
        Ok(store::PageRequest {
            after: self.cursor.clone(),
            limit: self.limit.unwrap_or(20),
        })
    }
}

/// A page of a list, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> From<store::Page<T>> for Page<T> {
    fn from(p: store::Page<T>) -> Self {
        Self {
            items: p.items,
            next_cursor: p.next,
        }
    }
}

/// Deserialises a field that may be absent (leave as is), `null` (clear) or a value.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
